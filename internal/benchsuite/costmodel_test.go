package benchsuite

import (
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// costReport has gather at fan-outs 1 to 128 and both top_ks, two rounds each, whose CPU per
// query follows cpu exactly in round 0 and is 10% above it in round 1; hitsPerCall(k) hits
// received per shard call (nil: no counter).
func costReport(cpu func(n, k int, h float64) float64, hitsPerCall func(k int) *float64) *Report {
	r := &Report{Rounds: 2}
	for round := range 2 {
		for _, n := range []int{1, 4, 16, 64, 128} {
			for _, k := range TopKs {
				sc := Scenario{Kind: KindGather, FanOut: n, TopK: k, Round: round}
				h := float64(n * k)
				if hp := hitsPerCall(k); hp != nil {
					h = *hp * float64(n)
					sc.HitsReceivedPerQuery = ptr(h)
				}
				sc.ServerCPUPerQueryUS = cpu(n, k, h) * (1 + 0.1*float64(round))
				r.Scenarios = append(r.Scenarios, sc, Scenario{Kind: KindNaive, FanOut: n, TopK: k, Round: round, ServerCPUPerQueryUS: 1})
			}
		}
	}
	return r
}

func TestFitCost(t *testing.T) {
	t.Parallel()
	// The model's own form: the fit recovers it (the medians are 5% above round 0).
	const fixed, perK, perCall, perHit = 60.0, 0.5, 30.0, 0.4
	exact := func(n, k int, h float64) float64 { return fixed + perK*float64(k) + perCall*float64(n) + perHit*h }
	for _, tc := range []struct {
		name        string
		hitsPerCall func(k int) *float64
		wantHits    float64 // per shard call at top_k 100, in the projection
	}{
		{"no hit counters: N·K hits", func(int) *float64 { return nil }, 100},
		{"fewer hits received than fetched", func(k int) *float64 { return ptr(float64(k) / 4) }, 25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := fitCost(costReport(exact, tc.hitsPerCall))
			if c == nil {
				t.Fatal("no model")
			}
			for _, x := range []struct {
				name      string
				got, want float64
			}{
				{"fixed", c.FixedUS, 1.05 * fixed}, {"per top_k", c.PerTopKUS, 1.05 * perK},
				{"per shard call", c.PerShardCallUS, 1.05 * perCall}, {"per hit", c.PerHitUS, 1.05 * perHit},
				{"largest error", c.MaxRelErr, 0},
			} {
				if math.Abs(x.got-x.want) > 1e-6*math.Max(1, math.Abs(x.want)) {
					t.Errorf("%s: %v, want %v", x.name, x.got, x.want)
				}
			}
			if len(c.Points) != 10 {
				t.Errorf("%d points, want 10 (gather only)", len(c.Points))
			}
			p := c.Projections[len(c.Projections)-1]
			want := 1.05 * exact(ProjectShards, 100, tc.wantHits*ProjectShards)
			if p.TopK != 100 || p.HitsPerShardCall != tc.wantHits || math.Abs(p.CPUUS-want) > 1e-6*want ||
				math.Abs(p.Cores-want*ProjectQPS/1e6) > 1e-6*p.Cores {
				t.Errorf("projection %+v, want %vµs at top_k 100 with %v hits per call", p, want, tc.wantHits)
			}
		})
	}
}

func TestFitCostNeedsTwoFanOutsAndTopKs(t *testing.T) {
	t.Parallel()
	r := costReport(func(n, k int, _ float64) float64 { return float64(n + k) }, func(int) *float64 { return nil })
	var one []Scenario
	for _, sc := range r.Scenarios {
		if sc.FanOut == 4 {
			one = append(one, sc)
		}
	}
	r.Scenarios = one
	if c := fitCost(r); c != nil {
		t.Errorf("a model from one fan-out: %+v", c)
	}
}

func TestCostPlot(t *testing.T) {
	t.Parallel()
	c := fitCost(costReport(func(n, k int, h float64) float64 { return 50 + 20*float64(n) + 0.5*h }, func(int) *float64 { return nil }))
	if c == nil {
		t.Fatal("no model")
	}
	path := filepath.Join(t.TempDir(), "cost.png")
	if err := c.WritePlot(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("not a PNG: %v", err)
	}
	// A fit that goes below zero at small N, as CI's noisy quick run gave (3870 - 113·top_k):
	// a log scale cannot take it, and plotting must not panic.
	neg := *c
	neg.FixedUS, neg.PerTopKUS = 3870, -113
	neg.Points = append([]CostPoint(nil), c.Points...)
	neg.Points[0].CPUUS.Min = 0
	if err := neg.WritePlot(filepath.Join(t.TempDir(), "negative.png")); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	r := &Report{Cost: c}
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "cost model: proxy CPU per query ≈ ") ||
		!strings.Contains(out, "100 shards × 3 replicas at 10000 q/s, top_k 10") {
		t.Errorf("text report lacks the cost model:\n%s", out)
	}
}
