package benchsuite

import (
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatherproxy/gather/internal/loadgen"
)

// latencies returns the summary, with its histogram, of n latencies: the given share (0 to 1) of
// them at slow, the rest spread evenly over [base, 2·base).
func latencies(n int, base, slow time.Duration, share float64) loadgen.Summary {
	h := loadgen.NewHistogram()
	k := int(math.Round(share * float64(n)))
	for i := range n - k {
		_ = h.RecordValue((base + base*time.Duration(i)/time.Duration(n)).Microseconds())
	}
	for range k {
		_ = h.RecordValue(slow.Microseconds())
	}
	return loadgen.Summarize(h)
}

// tailResult is a tail scenario with the given latencies and shard calls per query (over 10,000
// queries) for hedging off and on, the hung setting's p99 and a floor.
func tailResult(off, on, hung loadgen.Summary, callsOff, callsOn float64) *TailResult {
	set := func(key string, l loadgen.Summary, calls float64) TailSetting {
		return TailSetting{Key: key, Label: tailLabel(key), Latency: l, Queries: 10_000, ShardCalls: calls * 10_000,
			Counts:  loadgen.Counts{Completed: l.Count, OK: l.Count},
			Hedges:  map[string]float64{"won": 380, "lost": 100, "denied": 7},
			Denied:  map[string]float64{"budget": 5, "slow_shard": 2},
			Rounds:  []TailRound{{Round: 1, Latency: l, LoadAvg: 1.5, Queries: 10_000, ShardCalls: calls * 10_000, HedgeDelayUS: 2300}},
			Retries: 0}
	}
	return &TailResult{Shards: TailShards, Replicas: TailReplicas, Latency: TailLatency, Rate: 800, Rounds: 1, RoundSeconds: 6,
		Settings: []TailSetting{set(TailOff, off, callsOff), set(TailOn, on, callsOn), set(TailHung, hung, 4.001),
			set(TailFloor, latencies(10_000, 2*time.Millisecond, 0, 0), 4)}}
}

func TestJudgeTail(t *testing.T) {
	t.Parallel()
	const n = 10_000
	ms := time.Millisecond
	off := latencies(n, 3*ms, 105*ms, 0.04) // p99 and p99.9 at 105ms, p50 about 4.5ms
	good := latencies(n, 3*ms, 9*ms, 0.04)  // every slow call cut to 9ms
	// Every slow call cut to 9ms but one in 200 queries, which keeps its 105ms: p99.9 not cut.
	h := loadgen.NewHistogram()
	for i := range n {
		v := int64(3000 + i%3000)
		switch {
		case i%200 == 0:
			v = 105_000
		case i%25 == 1:
			v = 9000
		}
		_ = h.RecordValue(v)
	}
	someSlow := loadgen.Summarize(h)
	for _, tc := range []struct {
		name      string
		on        loadgen.Summary
		callsOn   float64
		want      string
		wantParts []string
	}{
		{"met", good, 4.16, Met, []string{"p99 105ms → 9.01ms (11.7× lower)", "extra shard calls +4.00%", "at most 26.4× and 26.3× were reachable"}},
		{"p99.9 not cut", someSlow, 4.16, NotMet, []string{"p99.9 105ms → 105ms (1.0× lower)"}},
		{"too many extra calls", good, 4.24, NotMet, []string{"extra shard calls +6.00%"}},
		{"p50 worse", latencies(n, 3300*time.Microsecond, 9*ms, 0.04), 4.1, NotMet, []string{"p50 4.50ms → 4.95ms (+10.0%)"}},
		{"p99 cut 5×", latencies(n, 3*ms, 21*ms, 0.04), 4.1, NotMet, []string{"(5.0× lower)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := judgeTail(tailResult(off, tc.on, good, 4, tc.callsOn))
			if v.Status != tc.want {
				t.Errorf("%s: %s, want %s", v.Detail, v.Status, tc.want)
			}
			for _, p := range tc.wantParts {
				if !strings.Contains(v.Detail, p) {
					t.Errorf("detail %q lacks %q", v.Detail, p)
				}
			}
		})
	}
	if v := judgeTail(nil); v.Status != NotMeasured {
		t.Errorf("no tail scenario: %s, want %s", v.Status, NotMeasured)
	}
}

func TestJudgeHung(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	off := latencies(10_000, 3*ms, 105*ms, 0.04)
	on := latencies(10_000, 3*ms, 9*ms, 0.04)
	if v := judgeHung(tailResult(off, on, latencies(10_000, 3*ms, 17*ms, 0.04), 4, 4.1)); v.Status != Met ||
		!strings.Contains(v.Detail, "p99 17.0ms against 9.01ms (1.9×); against hedging off's 105ms: 0.16×") {
		t.Errorf("hung p99 1.9× the healthy one: %s (%s), want MET", v.Status, v.Detail)
	}
	if v := judgeHung(tailResult(off, on, off, 4, 4.1)); v.Status != NotMet {
		t.Errorf("hung p99 as hedging off's: %s (%s), want NOT MET", v.Status, v.Detail)
	}
	if v := judgeHung(&TailResult{}); v.Status != NotMeasured {
		t.Errorf("nothing measured: %s, want %s", v.Status, NotMeasured)
	}
}

// TestTailReport: the tail section of both reports holds a row per setting with its percentiles,
// extra shard calls and hedges, the rounds, the verdicts and, in Markdown, the plot.
func TestTailReport(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	r := sampleReport()
	r.Tail = tailResult(latencies(10_000, 3*ms, 105*ms, 0.04), latencies(10_000, 3*ms, 9*ms, 0.04),
		latencies(10_000, 3*ms, 17*ms, 0.04), 4, 4.1)
	r.Tail.Plot, r.Tail.PlotLink = "/somewhere/tail.png", "docs/tail.png"
	Judge(r, nil)
	if len(r.Targets) != verdicts || r.Targets[vTail].Status != Met || r.Targets[vHung].Status != Met {
		t.Fatalf("targets %+v; want %d, the tail ones met", r.Targets, verdicts)
	}
	var text, md strings.Builder
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"tail (issue 9): 4 shards × 2 replicas", "+2.50%", "380 / 100 / 0", "5 / 2 / 0",
		"floor: no slow calls, hedging off", "MET          tail, 4 shards × 2 replicas", "percentile plot: /somewhere/tail.png"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	for _, want := range []string{"| hedging on | 10000 | 4.5ms | 5.7ms | 9.01ms | 9.01ms | 9.01ms | 4.100 | +2.50% |", "![latency against percentile", "(docs/tail.png)",
		"| 1 | hedging off |", "| tail, 4 shards × 2 replicas"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown report lacks %q:\n%s", want, md.String())
		}
	}
}

// TestPercentileCurve: the curve's x is −log10(1 − q), so 90%, 99% and 99.9% fall at 1, 2 and 3;
// it rises with x and ends at the maximum.
func TestPercentileCurve(t *testing.T) {
	t.Parallel()
	h := loadgen.NewHistogram()
	for v := int64(1); v <= 10_000; v++ {
		_ = h.RecordValue(v * 10) // 10µs to 100ms, evenly
	}
	xys := percentileCurve(h)
	at := func(x float64) float64 {
		for _, p := range xys {
			if math.Abs(p.X-x) < plotStep/2 {
				return p.Y
			}
		}
		t.Fatalf("no point at x=%v", x)
		return 0
	}
	for _, tc := range []struct{ x, wantMS float64 }{{0, 0.01}, {1, 90}, {2, 99}, {3, 99.9}} {
		if got := at(tc.x); math.Abs(got-tc.wantMS) > tc.wantMS/500+0.001 {
			t.Errorf("at x=%v: %vms, want %vms", tc.x, got, tc.wantMS)
		}
	}
	for i := 1; i < len(xys); i++ {
		if xys[i].X <= xys[i-1].X || xys[i].Y < xys[i-1].Y {
			t.Fatalf("point %d (%v) after %v", i, xys[i], xys[i-1])
		}
	}
	if last := xys[len(xys)-1]; last.Y != float64(h.Max())/1000 || last.X <= 4 {
		t.Errorf("last point %v, want the maximum %vms past x=4", last, float64(h.Max())/1000)
	}
}

// TestWritePlot: the plot is a PNG of the configured size, whatever the file's extension.
func TestWritePlot(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	tr := tailResult(latencies(10_000, 3*ms, 105*ms, 0.04), latencies(10_000, 3*ms, 9*ms, 0.04),
		latencies(10_000, 3*ms, 17*ms, 0.04), 4, 4.1)
	path := filepath.Join(t.TempDir(), "tail.img")
	if err := tr.WritePlot(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 600 || b.Dy() < 300 || b.Dx() <= b.Dy() {
		t.Errorf("a %v image, want a wide one of at least 600×300", b)
	}
	if err := (&TailResult{}).WritePlot(path); err == nil {
		t.Error("a plot of nothing: no error")
	}
}
