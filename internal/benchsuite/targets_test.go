package benchsuite

import (
	"strings"
	"testing"

	"github.com/gatherproxy/gather/internal/loadgen"
)

// report returns a report with the scenarios the targets read: ceiling, gather and naive at fan-out
// 4 for both top_ks, gather's QPS at relGather × ceiling/5, naive's at relNaive × ceiling/5, and
// gather's added latency as given.
func report(relGather, relNaive float64, addedP50, addedP99 int64) *Report {
	r := &Report{}
	for _, k := range TopKs {
		c := 10000.0
		r.Scenarios = append(r.Scenarios,
			Scenario{Kind: KindCeiling, TopK: k, QPS: c},
			Scenario{Kind: KindGather, FanOut: TargetFanOut, TopK: k, QPS: relGather * c / 5, Rate: relGather * c / 10,
				Overhead:  loadgen.Summary{Count: 100, P50US: addedP50, P99US: addedP99},
				HopAtRate: &loadgen.Summary{Count: 100, P50US: 90, P99US: 450}},
			Scenario{Kind: KindNaive, FanOut: TargetFanOut, TopK: k, QPS: relNaive * c / 5},
			Scenario{Kind: KindGather, FanOut: 16, TopK: k, QPS: 1}, // other fan-outs do not count
		)
	}
	return r
}

func TestJudgeThroughputAndLatency(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name              string
		r                 *Report
		wantQPS, wantLat  string
		wantQPSDetailPart string
	}{
		{"all met", report(0.9, 0.5, 100, 900), Met, Met, "0.90 × ceiling/5 (10000/5 = 2000)"},
		{"below 0.8 of the ceiling", report(0.79, 0.5, 149, 999), NotMet, Met, "0.79 ×"},
		{"behind naive", report(0.9, 0.95, 100, 900), NotMet, Met, "naive 1900 q/s"},
		{"p50 too high", report(0.9, 0.5, 150, 900), Met, NotMet, ""},
		{"p99 too high", report(0.9, 0.5, 100, 1000), Met, NotMet, ""},
		{"nothing measured", &Report{}, NotMeasured, NotMeasured, "not measured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			Judge(tc.r, nil)
			if len(tc.r.Targets) != 6 || tc.r.Targets[4].Status != NotMeasured || tc.r.Targets[5].Status != NotMeasured {
				t.Fatalf("%d verdicts, want 6, the tail's two not measured: %+v", len(tc.r.Targets), tc.r.Targets)
			}
			q, l := tc.r.Targets[0], tc.r.Targets[1]
			if q.Status != tc.wantQPS || !strings.Contains(q.Detail, tc.wantQPSDetailPart) {
				t.Errorf("QPS verdict %s (%s), want %s mentioning %q", q.Status, q.Detail, tc.wantQPS, tc.wantQPSDetailPart)
			}
			if l.Status != tc.wantLat || (l.Status != NotMeasured && !strings.Contains(l.Detail, "raw hop with that answer at that rate: p50 90µs, p99 450µs")) {
				t.Errorf("latency verdict %s (%s), want %s", l.Status, l.Detail, tc.wantLat)
			}
		})
	}
}

func mergeResults(ltNS, sortNS, allocsK10, allocsK1000 float64) []GoBench {
	const pkg = "github.com/gatherproxy/gather/internal/merge"
	b := func(name string, ns, allocs float64) GoBench {
		return GoBench{Pkg: pkg, Name: name, Metrics: map[string]float64{"ns/op": ns, "allocs/op": allocs}}
	}
	return []GoBench{
		b("BenchmarkMerge/N=64/K=10/impl=losertree", 1000, allocsK10),
		b("BenchmarkMerge/N=64/K=10/impl=sort", 10000, 0),
		b("BenchmarkMerge/N=64/K=1000/impl=losertree", ltNS, allocsK1000),
		b("BenchmarkMerge/N=64/K=1000/impl=sort", sortNS, 0),
	}
}

func TestJudgeMerge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		gb   []GoBench
		want string
	}{
		{"fast, allocations per merge only", mergeResults(1000, 10000, 2, 2), Met},
		{"under 10x", mergeResults(1001, 10000, 2, 2), NotMet},
		{"allocates per hit", mergeResults(1000, 100000, 2, 1002), NotMet},
		{"no results", nil, NotMeasured},
		{"only some results", mergeResults(1, 2, 3, 4)[2:], NotMeasured},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := &Report{}
			Judge(r, tc.gb)
			if v := r.Targets[2]; v.Status != tc.want {
				t.Errorf("merge verdict %s (%s), want %s", v.Status, v.Detail, tc.want)
			}
		})
	}
}

func TestJudgeMemory(t *testing.T) {
	t.Parallel()
	heap := func(perQuery float64) *HeapResult { return &HeapResult{Queries: 400, HeapPerQuery: perQuery} }
	idle := func(ready int, rssGrowth uint64) *IdleResult {
		return &IdleResult{Requested: ready, Ready: ready, RSSBefore: 10 << 20, RSSAfter: 10<<20 + rssGrowth}
	}
	for _, tc := range []struct {
		name       string
		heap       *HeapResult
		idle       *IdleResult
		want, part string
	}{
		{"both met", heap(63 << 10), idle(10000, 299<<20), Met, "RSS +299 MiB"},
		{"heap too big", heap(64 << 10), idle(10000, 100<<20), NotMet, "64.0 KiB"},
		{"connections too costly", heap(1 << 10), idle(10000, 300<<20), NotMet, "RSS +300 MiB"},
		{"extrapolated from fewer", heap(1 << 10), idle(100, 4<<20), NotMet, "400 MiB for 10000 (extrapolated)"},
		{"idle skipped", heap(1 << 10), &IdleResult{Skipped: "no limit"}, NotMeasured, "skipped: no limit"},
		{"heap skipped, idle too costly", nil, idle(10000, 400<<20), NotMet, "not measured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := &Report{Heap: tc.heap, Idle: tc.idle}
			Judge(r, nil)
			if v := r.Targets[3]; v.Status != tc.want || !strings.Contains(v.Detail, tc.part) {
				t.Errorf("memory verdict %s (%s), want %s mentioning %q", v.Status, v.Detail, tc.want, tc.part)
			}
		})
	}
}
