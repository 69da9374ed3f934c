package synthetic_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gatherproxy/gather/internal/synthetic"
)

func TestParseLatency(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string // the model, printed
	}{
		{"", "fixed:0s"},
		{"none", "fixed:0s"},
		{"0", "fixed:0s"},
		{"2ms", "fixed:2ms"},
		{" 250us ", "fixed:250µs"},
		{"fixed:2ms", "fixed:2ms"},
		{"fixed:0s", "fixed:0s"},
		{"fixed: 1h", "fixed:1h0m0s"},
		{"lognormal:2ms,0.5", "lognormal:2ms,0.5"},
		{"lognormal: 1ms , 0 ", "lognormal:1ms,0"},
		{"slow:2ms,1in100,x10", "slow:2ms,1in100,x10"},
		{"slow:0s,1in1,x1", "slow:0s,1in1,x1"},
		{"slow:1ms, 1in3, x2.5", "slow:1ms,1in3,x2.5"},
	}
	for _, tt := range tests {
		l, err := synthetic.ParseLatency(tt.in, 0)
		if err != nil {
			t.Errorf("ParseLatency(%q): %v", tt.in, err)
			continue
		}
		if got := fmt.Sprint(l); got != tt.want {
			t.Errorf("ParseLatency(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestParseLatencyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string // in the error message
	}{
		{"soon", `"soon": want one of none | D`},
		{"-1ms", "delay -1ms is outside [0, 1h0m0s]"},
		{"2h", "delay 2h0m0s is outside"},
		{"gauss:2ms", `unknown model "gauss": want fixed, lognormal or slow`},
		{"fixed:", `delay "" is not a duration`},
		{"fixed:2ms,3ms", "fixed takes one delay"},
		{"fixed:-2ms", "delay -2ms is outside"},
		{"lognormal:2ms", "lognormal takes a median and a sigma"},
		{"lognormal:2ms,0.5,1", "lognormal takes a median and a sigma"},
		{"lognormal:fast,0.5", `median "fast" is not a duration`},
		{"lognormal:0s,0.5", "median must be above 0"},
		{"lognormal:2ms,wide", `sigma "wide" is not a finite number`},
		{"lognormal:2ms,-1", `sigma "-1" is not a finite number of at least 0`},
		{"lognormal:2ms,NaN", `sigma "NaN"`},
		{"lognormal:2ms,Inf", `sigma "Inf"`},
		{"slow:2ms,1in100", "slow takes a base delay, 1inN and xF"},
		{"slow:2ms,100,x10", `"100" is not 1inN`},
		{"slow:2ms,1in0,x10", `"1in0" is not 1inN`},
		{"slow:2ms,1in1.5,x10", `"1in1.5" is not 1inN`},
		{"slow:2ms,1in100,10", `"10" is not xF`},
		{"slow:2ms,1in100,x0.5", "factor 0.5 is not a finite number of at least 1"},
		{"slow:2ms,1in100,xInf", "factor +Inf"},
		{"slow:-2ms,1in100,x10", "base delay -2ms is outside"},
		{"slow:1s,1in100,x100000", "above 1h0m0s"},
	}
	for _, tt := range tests {
		l, err := synthetic.ParseLatency(tt.in, 0)
		if err == nil {
			t.Errorf("ParseLatency(%q) = %v, want an error with %q", tt.in, l, tt.want)
			continue
		}
		if !errors.Is(err, synthetic.ErrBadLatency) {
			t.Errorf("ParseLatency(%q) error %v does not wrap ErrBadLatency", tt.in, err)
		}
		if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), fmt.Sprintf("%q", strings.TrimSpace(tt.in))) {
			t.Errorf("ParseLatency(%q) error = %q, want it to quote the input and say %q", tt.in, err, tt.want)
		}
	}
}

func TestParseLatencySeedShiftsModels(t *testing.T) {
	t.Parallel()
	a, _ := synthetic.ParseLatency("slow:1ms,1in10,x5", 0)
	b, _ := synthetic.ParseLatency("slow:1ms,1in10,x5", 4)
	if fmt.Sprint(samples(a, 10)) == fmt.Sprint(samples(b, 10)) {
		t.Error("seeds 0 and 4 make the same calls slow")
	}
	c, _ := synthetic.ParseLatency("lognormal:1ms,1", 0)
	d, _ := synthetic.ParseLatency("lognormal:1ms,1", 4)
	if fmt.Sprint(samples(c, 10)) == fmt.Sprint(samples(d, 10)) {
		t.Error("seeds 0 and 4 give the same lognormal draws")
	}
}
