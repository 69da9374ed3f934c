package benchsuite

import (
	"math"
	"testing"
)

func TestSpreadOf(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   []float64
		want Spread
		text string
	}{
		{nil, Spread{}, "n/a"},
		{[]float64{math.NaN()}, Spread{}, "n/a"},
		{[]float64{3}, Spread{Median: 3, Min: 3, Max: 3, N: 1}, "3"},
		{[]float64{5, 1, 3}, Spread{Median: 3, Min: 1, Max: 5, N: 3}, "3 (1–5)"},
		{[]float64{4, 1, math.NaN(), 2, 10}, Spread{Median: 3, Min: 1, Max: 10, N: 4}, "3 (1–10)"},
	} {
		got := spreadOf(tc.in)
		if got != tc.want {
			t.Errorf("spreadOf(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
		if text := got.format(fmtUS); text != tc.text {
			t.Errorf("spreadOf(%v) formats as %q, want %q", tc.in, text, tc.text)
		}
	}
}

// TestRatiosWithinRounds checks that a ratio is taken within each round: the rounds' ceilings
// differ as much as gather does, and the ratio does not.
func TestRatiosWithinRounds(t *testing.T) {
	t.Parallel()
	r := &Report{Rounds: 3}
	for round, c := range []float64{10000, 5000, 8000} {
		r.Scenarios = append(r.Scenarios,
			Scenario{Kind: KindGather, FanOut: 4, TopK: 10, Round: round, QPS: 0.9 * c / 5},
			Scenario{Kind: KindCeiling, TopK: 10, Round: round, QPS: c})
	}
	r.relateToCeiling()
	sp := r.paired(key{KindGather, 4, 10}, key{KindCeiling, 0, 10}, func(g, c *Scenario) float64 { return g.QPS * 5 / c.QPS })
	if math.Abs(sp.Min-0.9) > 1e-9 || math.Abs(sp.Max-0.9) > 1e-9 || sp.N != 3 {
		t.Errorf("paired ratio %+v, want 0.9 in each of 3 rounds", sp)
	}
	g := r.group(KindGather, 4, 10)
	if rel := g.spread(func(sc *Scenario) float64 { return sc.RelCeiling }); math.Abs(rel.Min-0.9) > 1e-9 || math.Abs(rel.Max-0.9) > 1e-9 {
		t.Errorf("RelCeiling %+v, want 0.9 in each round", rel)
	}
}
