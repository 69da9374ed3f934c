package bounds_test

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gatherproxy/gather/internal/bounds"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	bytes := bounds.Range{Min: 1, Max: 64 << 10, Unit: bounds.Bytes, Why: "queries are words"}
	dur := bounds.Range{Min: int64(time.Millisecond), Max: int64(5 * time.Minute), Unit: bounds.Duration}
	for _, tc := range []struct {
		r    bounds.Range
		v    int64
		want string // "" means in range
	}{
		{bytes, 0, ""},
		{bytes, 1, ""},
		{bytes, 64 << 10, ""},
		{bytes, 64<<10 + 1, "65537 bytes is above the maximum of 65536 bytes (64 KiB): queries are words"},
		{bytes, 2 << 20, "2097152 bytes (2 MiB) is above the maximum of 65536 bytes (64 KiB): queries are words"},
		{bytes, -1, "-1 bytes is negative: queries are words"},
		{dur, int64(time.Second), ""},
		{dur, int64(10000 * time.Hour), "10000h0m0s is above the maximum of 5m0s"},
		{dur, int64(time.Microsecond), "1µs is below the minimum of 1ms"},
		{bounds.Range{Max: 10}, 11, "11 is above the maximum of 10"},
	} {
		err := tc.r.Check(tc.v)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v.Check(%d) = %v, want nil", tc.r, tc.v, err)
		case tc.want != "" && (err == nil || err.Error() != tc.want):
			t.Errorf("%+v.Check(%d) = %v, want %q", tc.r, tc.v, err, tc.want)
		}
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	r := bounds.Range{Min: 1, Max: 100, Why: "because"}
	d := bounds.Range{Max: int64(time.Minute), Unit: bounds.Duration}
	parse := func(args ...string) (int, time.Duration, error) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var n int
		var w time.Duration
		r.IntVar(fs, &n, "n", 7, "a number")
		d.DurationVar(fs, &w, "wait", time.Second, "a wait")
		err := fs.Parse(args)
		return n, w, err
	}
	if n, w, err := parse(); err != nil || n != 7 || w != time.Second {
		t.Errorf("defaults: %d, %v, %v", n, w, err)
	}
	if n, w, err := parse("-n", "100", "-wait", "1m"); err != nil || n != 100 || w != time.Minute {
		t.Errorf("at the ceilings: %d, %v, %v", n, w, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-n", "101"}, `invalid value "101" for flag -n: 101 is above the maximum of 100: because`},
		{[]string{"-n", "x"}, `invalid value "x" for flag -n: not an integer`},
		{[]string{"-n", "-3"}, `-3 is negative`},
		{[]string{"-wait", "2m"}, `invalid value "2m" for flag -wait: 2m0s is above the maximum of 1m0s`},
		{[]string{"-wait", "soon"}, `not a duration`},
	} {
		if _, _, err := parse(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestDecimal: decimal settings are checked in millionths and printed as decimals.
func TestDecimal(t *testing.T) {
	t.Parallel()
	r := bounds.Range{Min: bounds.Millionths(50), Max: bounds.Millionths(99.9), Unit: bounds.Decimal, Why: "a percentile"}
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{95, ""},
		{99.9, ""},
		{0, ""},
		{99.95, "99.95 is above the maximum of 99.9: a percentile"},
		{10, "10 is below the minimum of 50: a percentile"},
		{-0.5, "-0.5 is negative: a percentile"},
	} {
		err := r.Check(bounds.Millionths(tc.v))
		if (tc.want == "") != (err == nil) || (err != nil && err.Error() != tc.want) {
			t.Errorf("%v: got %v, want %q", tc.v, err, tc.want)
		}
	}
	if got := bounds.Millionths(1e-9); got != 1 {
		t.Errorf("Millionths(1e-9) = %d, want 1: a positive value is never 0", got)
	}
}
