package benchsuite

import (
	"strings"
	"testing"

	"github.com/gatherproxy/gather/internal/loadgen"
)

// shape is what one round of report measures, relative to the ceiling (10,000 q/s at 20µs of
// server CPU per query).
type shape struct {
	relQPS   float64  // gather's QPS ÷ ceiling/(N+1), at every fan-out and top_k
	naive    float64  // gather's QPS ÷ naive's
	relCPU   float64  // gather's server CPU per query ÷ ((N+1) × the ceiling's)
	addedP50 int64    // gather's added latency at fan-out 4, against a raw hop's p50 of 100µs
	addedP99 int64    // and p99 of 1000µs
	received *float64 // hits received per query at fan-out 64, top_k 100
}

func ptr(v float64) *float64 { return &v }

// report returns a report of one round per shape: ceiling, gather and naive at fan-outs 4, 16
// and 64 for both top_ks.
func report(rounds ...shape) *Report {
	r := &Report{Rounds: len(rounds)}
	for i, sh := range rounds {
		for _, k := range TopKs {
			c := 10000.0
			r.Scenarios = append(r.Scenarios, Scenario{Kind: KindCeiling, TopK: k, Round: i, QPS: c, ServerCPUPerQueryUS: 20})
			for _, n := range []int{4, 16, 64} {
				g := Scenario{Kind: KindGather, FanOut: n, TopK: k, Round: i, QPS: sh.relQPS * c / float64(n+1),
					ServerCPUPerQueryUS: sh.relCPU * float64(n+1) * 20, HitsDecodedPerQuery: ptr(0),
					HitsReceivedPerQuery: sh.received}
				if n == TargetFanOut {
					g.Rate = g.QPS / 2
					g.Overhead = loadgen.Summary{Count: 100, P50US: sh.addedP50, P99US: sh.addedP99}
					g.HopAtRate = &loadgen.Summary{Count: 100, P50US: 100, P99US: 1000}
				}
				r.Scenarios = append(r.Scenarios, g,
					Scenario{Kind: KindNaive, FanOut: n, TopK: k, Round: i, QPS: g.QPS / sh.naive})
			}
		}
	}
	r.relateToCeiling()
	return r
}

// The verdicts' positions in Report.Targets.
const (
	vCPU = iota
	vQPS
	vNaive
	vAdded
	vHits
	vIdle
	vNoRegression
	vTail
	vHung
	verdicts
)

func TestJudgeRatios(t *testing.T) {
	t.Parallel()
	good := shape{relQPS: 0.95, naive: 3.5, relCPU: 1.1, addedP50: 140, addedP99: 1900, received: ptr(250)}
	with := func(f func(*shape)) shape { s := good; f(&s); return s }
	for _, tc := range []struct {
		name   string
		r      *Report
		want   map[int]string
		detail map[int]string
	}{
		{"all met", report(good), map[int]string{vCPU: Met, vQPS: Met, vNaive: Met, vAdded: Met, vHits: Met},
			map[int]string{vCPU: "fan-out 4: proxy 110µs per query against 5 × 20µs: 1.10×", vQPS: "fan-out 16: 559 q/s against ceiling 10000/17: 0.95×",
				vHits: "received 250 per query (N × top_k = 6400), payloads decoded 0"}},
		{"CPU too high", report(with(func(s *shape) { s.relCPU = 1.2 })), map[int]string{vCPU: NotMet, vQPS: Met}, nil},
		{"below 0.9 of the ceiling at fan-out 4", report(with(func(s *shape) { s.relQPS = 0.88 })), map[int]string{vQPS: NotMet}, nil},
		{"not far enough ahead of naive", report(with(func(s *shape) { s.naive = 2.9 })), map[int]string{vNaive: NotMet},
			map[int]string{vNaive: "fan-out 64: 146 q/s against naive 50: 2.90×"}},
		{"added p50 too high", report(with(func(s *shape) { s.addedP50 = 160 })), map[int]string{vAdded: NotMet},
			map[int]string{vAdded: "raw hop p50 100µs, p99 1ms: p50 1.60×, p99 1.90×"}},
		{"added p99 too high", report(with(func(s *shape) { s.addedP99 = 2100 })), map[int]string{vAdded: NotMet}, nil},
		{"every hit received", report(with(func(s *shape) { s.received = ptr(6400) })), map[int]string{vHits: NotMet}, nil},
		{"no received counter", report(with(func(s *shape) { s.received = nil })), map[int]string{vHits: NotMeasured},
			map[int]string{vHits: "received n/a per query"}},
		// One bad round of three: the median holds.
		{"median over rounds", report(good, with(func(s *shape) { s.relQPS, s.relCPU = 0.5, 2 }), good),
			map[int]string{vCPU: Met, vQPS: Met}, map[int]string{vQPS: "0.95× (0.50–0.95 over 3 rounds)"}},
		// Two bad rounds of three: the median falls.
		{"median falls", report(good, with(func(s *shape) { s.relQPS = 0.5 }), with(func(s *shape) { s.relQPS = 0.6 })),
			map[int]string{vQPS: NotMet}, map[int]string{vQPS: "0.60× (0.50–0.95 over 3 rounds)"}},
		{"nothing measured", &Report{}, map[int]string{vCPU: NotMeasured, vQPS: NotMeasured, vNaive: NotMeasured, vAdded: NotMeasured,
			vHits: NotMeasured, vIdle: NotMeasured, vNoRegression: NotMeasured, vTail: NotMeasured, vHung: NotMeasured}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			Judge(tc.r, nil)
			if len(tc.r.Targets) != verdicts {
				t.Fatalf("%d verdicts, want %d: %+v", len(tc.r.Targets), verdicts, tc.r.Targets)
			}
			for i, want := range tc.want {
				if v := tc.r.Targets[i]; v.Status != want {
					t.Errorf("verdict %d %s (%s), want %s", i, v.Status, v.Detail, want)
				}
			}
			for i, want := range tc.detail {
				if v := tc.r.Targets[i]; !strings.Contains(v.Detail, want) {
					t.Errorf("verdict %d: %q lacks %q", i, v.Detail, want)
				}
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

func cancelResult(p99US float64) GoBench {
	return GoBench{Pkg: "github.com/gatherproxy/gather/internal/faulttest", Name: "BenchmarkCancelPropagation",
		Metrics: map[string]float64{"p50-µs": 100, "p99-µs": p99US}}
}

func TestJudgeNoRegression(t *testing.T) {
	t.Parallel()
	heap := func(perQuery float64) *HeapResult {
		return &HeapResult{FanOut: 8, TopK: 100, Queries: 400, HeapPerQuery: perQuery}
	}
	ok := append(mergeResults(1000, 10000, 2, 2), cancelResult(400))
	for _, tc := range []struct {
		name       string
		heap       *HeapResult
		gb         []GoBench
		want, part string
	}{
		{"all met", heap(63 << 10), ok, Met, "cancellation delay p99 400µs (p50 100µs)"},
		{"merge under 10x", heap(1 << 10), append(mergeResults(1001, 10000, 2, 2), cancelResult(400)), NotMet, "10.0× faster"},
		{"merge allocates per hit", heap(1 << 10), append(mergeResults(1000, 100000, 2, 1002), cancelResult(400)), NotMet, "1.010 allocations per merged hit"},
		{"heap too big", heap(65 << 10), ok, NotMet, "65.0 KiB"},
		{"cancellation too slow", heap(1 << 10), append(mergeResults(1000, 10000, 2, 2), cancelResult(10_000)), NotMet, "p99 10ms"},
		{"no go benchmarks", heap(1 << 10), nil, NotMeasured, "no BenchmarkCancelPropagation"},
		{"no heap, merge too slow", nil, append(mergeResults(1001, 10000, 2, 2), cancelResult(400)), NotMet, "heap per query: not measured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := &Report{Heap: tc.heap}
			Judge(r, tc.gb)
			if v := r.Targets[vNoRegression]; v.Status != tc.want || !strings.Contains(v.Detail, tc.part) {
				t.Errorf("verdict %s (%s), want %s mentioning %q", v.Status, v.Detail, tc.want, tc.part)
			}
		})
	}
}

func TestJudgeIdle(t *testing.T) {
	t.Parallel()
	idle := func(ready int, rssGrowth uint64) *IdleResult {
		return &IdleResult{Requested: ready, Ready: ready, RSSBefore: 10 << 20, RSSAfter: 10<<20 + rssGrowth}
	}
	for _, tc := range []struct {
		name       string
		idle       *IdleResult
		want, part string
	}{
		{"met", idle(10000, 100<<20), Met, "RSS +100 MiB"},
		{"too costly", idle(10000, 101<<20), NotMet, "RSS +101 MiB"},
		{"extrapolated from fewer", idle(100, 2<<20), NotMet, "200 MiB for 10000 (extrapolated)"},
		{"skipped", &IdleResult{Skipped: "no limit"}, NotMeasured, "skipped: no limit"},
		{"not measured", nil, NotMeasured, "not measured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := &Report{Idle: tc.idle}
			Judge(r, nil)
			if v := r.Targets[vIdle]; v.Status != tc.want || !strings.Contains(v.Detail, tc.part) {
				t.Errorf("verdict %s (%s), want %s mentioning %q", v.Status, v.Detail, tc.want, tc.part)
			}
		})
	}
}
