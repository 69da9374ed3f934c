package benchsuite

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/gatherproxy/gather/internal/loadgen"
)

// Verdict statuses.
const (
	Met         = "MET"
	NotMet      = "NOT MET"
	NotMeasured = "NOT MEASURED"
)

// The targets' thresholds (issue 10, then issue 9's tail).
const (
	// TargetFanOut is the fan-out of the latency target and of the raw hop measured at gather's
	// rate.
	TargetFanOut = 4
	// TargetCPUPerRPC bounds the proxy's CPU per query at fan-outs CPUFanOuts, top_k 10, as a
	// multiple of (N+1) × the raw hop's (the ceiling server's CPU per query).
	TargetCPUPerRPC = 1.15
	// TargetNaiveLead: gather's QPS at least this many times naive's, at top_k 100, by fan-out.
	TargetAddedP50 = 1.5 // the added latency's p50 at most this many times the raw hop's p50 at the same rate
	TargetAddedP99 = 2   // and its p99 at most this many times the raw hop's p99
	// TargetHitsDecoded bounds the hits decoded per query at fan-out HitsFanOut, top_k
	// HitsTopK, as a multiple of top_k.
	TargetHitsDecoded = 3
	HitsFanOut        = 64
	HitsTopK          = 100
	// TargetMergeSpeedup is how much faster than sorting the merge must be at N=64, K=1000.
	TargetMergeSpeedup = 10
	// TargetHeapPerQuery bounds the proxy's heap per in-flight query at N=8, K=100.
	TargetHeapPerQuery = 64 << 10
	// TargetIdleConns and TargetIdleRSS: that many idle QS connections must cost the proxy at
	// most that much resident memory.
	TargetIdleConns = 10_000
	TargetIdleRSS   = 100 << 20
	// TargetCancelP99US bounds the p99 of BenchmarkCancelPropagation (QS cancel to the last
	// shard call's end).
	TargetCancelP99US = 10_000
	// TargetTailCut is how many times lower than with hedging off p99 and p99.9 must be with
	// hedging on, for at most TargetTailExtra extra shard calls and a p50 at most
	// TargetTailP50 times hedging off's.
	TargetTailCut   = 10
	TargetTailExtra = 0.05
	TargetTailP50   = 1.05
	// TargetHungP99 bounds the p99 with a hung replica per shard, as a multiple of the healthy
	// run's with hedging on.
	TargetHungP99 = 2
)

// The fan-outs, top_k and least ratios of the per-query targets.
var (
	// CPUFanOuts are the fan-outs of the CPU-per-query target (top_k 10).
	CPUFanOuts = []int{4, 16}
	// TargetRelCeiling is the least QPS as a fraction of ceiling/(N+1), by fan-out (top_k 10).
	TargetRelCeiling = map[int]float64{4: 0.9, 16: 0.85}
	// TargetNaiveLead is the least gather QPS ÷ naive QPS, by fan-out (top_k 100).
	TargetNaiveLead = map[int]float64{16: 1.5, 64: 3}
)

// Verdict is how a measurement compares with one target.
type Verdict struct {
	Target string `json:"target"`
	// Status is Met, NotMet or NotMeasured.
	Status string `json:"status"`
	// Detail gives the measured numbers the status rests on.
	Detail string `json:"detail"`
}

// check is one part of a target.
type check struct {
	status, detail string
}

// verdict combines the parts of a target: NOT MET if any part is not met, else NOT MEASURED if
// any part was not measured, else MET.
func verdict(target string, parts ...check) Verdict {
	v := Verdict{Target: target, Status: Met}
	details := make([]string, 0, len(parts))
	for _, p := range parts {
		switch {
		case p.status == NotMet:
			v.Status = NotMet
		case p.status == NotMeasured && v.Status == Met:
			v.Status = NotMeasured
		}
		details = append(details, p.detail)
	}
	v.Detail = strings.Join(details, "; ")
	return v
}

func metIf(ok bool) string {
	if ok {
		return Met
	}
	return NotMet
}

// Judge compares r with the targets, issue 10's and issue 9's two (the tail scenario), and
// stores the verdicts in r.Targets; gb are the Go benchmark results (from `go test -bench`), also
// stored in r. Every ratio of two scenarios is taken within each round and judged on its median
// over the rounds, with its range shown. A target that rests on something not measured (a part
// or fan-out that did not run, a counter the proxy lacks) is NotMeasured.
func Judge(r *Report, gb []GoBench) {
	r.GoBench = gb
	r.Targets = []Verdict{judgeCPU(r), judgeQPS(r), judgeNaive(r), judgeAdded(r), judgeHits(r), judgeIdle(r),
		judgeNoRegression(r, gb), judgeTail(r.Tail), judgeHung(r.Tail)}
}

// sorted returns m's keys in order.
func sorted(m map[int]float64) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// ratioText formats a ratio's median and range over the rounds.
func ratioText(sp Spread) string {
	s := fmt.Sprintf("%.2f×", sp.Median)
	if sp.N > 1 {
		s += fmt.Sprintf(" (%.2f–%.2f over %d rounds)", sp.Min, sp.Max, sp.N)
	}
	return s
}

func judgeCPU(r *Report) Verdict {
	const k = 10
	target := fmt.Sprintf("proxy CPU per query ≤ %.2f × (N+1) × the raw hop's, at fan-out %s, top_k %d", TargetCPUPerRPC, joinInts(CPUFanOuts), k)
	var parts []check
	for _, n := range CPUFanOuts {
		sp := r.paired(key{KindGather, n, k}, key{KindCeiling, 0, k}, func(g, c *Scenario) float64 {
			if c.ServerCPUPerQueryUS <= 0 {
				return nan
			}
			return g.ServerCPUPerQueryUS / (float64(n+1) * c.ServerCPUPerQueryUS)
		})
		if sp.N == 0 {
			parts = append(parts, check{NotMeasured, fmt.Sprintf("fan-out %d: not measured", n)})
			continue
		}
		g, c := r.group(KindGather, n, k), r.group(KindCeiling, 0, k)
		us := func(f func(*Scenario) float64, g *group) string {
			return loadgen.FormatMicros(int64(g.spread(f).Median))
		}
		cpu := func(sc *Scenario) float64 { return sc.ServerCPUPerQueryUS }
		parts = append(parts, check{metIf(sp.Median <= TargetCPUPerRPC), fmt.Sprintf(
			"fan-out %d: proxy %s per query against %d × %s: %s", n, us(cpu, g), n+1, us(cpu, c), ratioText(sp))})
	}
	return verdict(target, parts...)
}

func judgeQPS(r *Report) Verdict {
	const k = 10
	var want []string
	for _, n := range sorted(TargetRelCeiling) {
		want = append(want, fmt.Sprintf("%.2f at fan-out %d", TargetRelCeiling[n], n))
	}
	target := fmt.Sprintf("QPS ≥ ceiling/(N+1) × %s, top_k %d", strings.Join(want, ", "), k)
	var parts []check
	for _, n := range sorted(TargetRelCeiling) {
		sp := r.paired(key{KindGather, n, k}, key{KindCeiling, 0, k}, func(g, c *Scenario) float64 {
			return ratio(g.QPS*float64(n+1), c.QPS)
		})
		if sp.N == 0 {
			parts = append(parts, check{NotMeasured, fmt.Sprintf("fan-out %d: not measured", n)})
			continue
		}
		g, c := r.group(KindGather, n, k), r.group(KindCeiling, 0, k)
		qps := func(sc *Scenario) float64 { return sc.QPS }
		parts = append(parts, check{metIf(sp.Median >= TargetRelCeiling[n]), fmt.Sprintf(
			"fan-out %d: %.0f q/s against ceiling %.0f/%d: %s ceiling/(N+1)", n, g.spread(qps).Median, c.spread(qps).Median, n+1, ratioText(sp))})
	}
	return verdict(target, parts...)
}

func judgeNaive(r *Report) Verdict {
	const k = 100
	var want []string
	for _, n := range sorted(TargetNaiveLead) {
		want = append(want, fmt.Sprintf("%.1f× at fan-out %d", TargetNaiveLead[n], n))
	}
	target := fmt.Sprintf("QPS ahead of the naive fan-out by %s, top_k %d", strings.Join(want, ", "), k)
	var parts []check
	for _, n := range sorted(TargetNaiveLead) {
		sp := r.paired(key{KindGather, n, k}, key{KindNaive, n, k}, func(g, nv *Scenario) float64 { return ratio(g.QPS, nv.QPS) })
		if sp.N == 0 {
			parts = append(parts, check{NotMeasured, fmt.Sprintf("fan-out %d: not measured", n)})
			continue
		}
		qps := func(sc *Scenario) float64 { return sc.QPS }
		parts = append(parts, check{metIf(sp.Median >= TargetNaiveLead[n]), fmt.Sprintf("fan-out %d: %.0f q/s against naive %.0f: %s",
			n, r.group(KindGather, n, k).spread(qps).Median, r.group(KindNaive, n, k).spread(qps).Median, ratioText(sp))})
	}
	return verdict(target, parts...)
}

func judgeAdded(r *Report) Verdict {
	target := fmt.Sprintf("latency added over the slowest shard at half the saturating load, fan-out %d: p50 ≤ %.1f× and p99 ≤ %.0f× a raw hop's at the same rate",
		TargetFanOut, TargetAddedP50, float64(TargetAddedP99))
	var parts []check
	for _, k := range TopKs {
		var p50s, p99s []float64
		g := r.group(KindGather, TargetFanOut, k)
		if g != nil {
			for _, sc := range g.Rounds {
				if h := sc.HopAtRate; h != nil && h.Count > 0 && sc.Overhead.Count > 0 {
					p50s = append(p50s, ratio(float64(sc.Overhead.P50US), float64(h.P50US)))
					p99s = append(p99s, ratio(float64(sc.Overhead.P99US), float64(h.P99US)))
				}
			}
		}
		if len(p50s) == 0 {
			parts = append(parts, check{NotMeasured, fmt.Sprintf("top_k %d: not measured", k)})
			continue
		}
		p50, p99 := spreadOf(p50s), spreadOf(p99s)
		med := func(f func(*Scenario) float64) string { return loadgen.FormatMicros(int64(g.spread(f).Median)) }
		parts = append(parts, check{metIf(p50.Median <= TargetAddedP50 && p99.Median <= TargetAddedP99), fmt.Sprintf(
			"top_k %d: added p50 %s, p99 %s; raw hop p50 %s, p99 %s: p50 %s, p99 %s", k,
			med(func(sc *Scenario) float64 { return float64(sc.Overhead.P50US) }), med(func(sc *Scenario) float64 { return float64(sc.Overhead.P99US) }),
			med(func(sc *Scenario) float64 { return hopValue(sc, func(h *loadgen.Summary) int64 { return h.P50US }) }),
			med(func(sc *Scenario) float64 { return hopValue(sc, func(h *loadgen.Summary) int64 { return h.P99US }) }),
			ratioText(p50), ratioText(p99))})
	}
	return verdict(target, parts...)
}

// hopValue is f of sc's raw hop at its rate, NaN if there is none.
func hopValue(sc *Scenario, f func(*loadgen.Summary) int64) float64 {
	if sc.HopAtRate == nil || sc.HopAtRate.Count == 0 {
		return nan
	}
	return float64(f(sc.HopAtRate))
}

func judgeHits(r *Report) Verdict {
	// Judged on the hits received, every hit the proxy parses out of a shard message: decoding
	// only doc_id and score (decode less) makes the payload count 0 whatever the shards send,
	// while the target asks how much of the fan-out's N × top_k the proxy still reads.
	target := fmt.Sprintf("hits received (parsed) per query ≤ %d × top_k at fan-out %d, top_k %d, at saturation", TargetHitsDecoded, HitsFanOut, HitsTopK)
	g := r.group(KindGather, HitsFanOut, HitsTopK)
	if g == nil {
		return verdict(target, check{NotMeasured, fmt.Sprintf("fan-out %d did not run", HitsFanOut)})
	}
	dec := g.spread(func(sc *Scenario) float64 { return optional(sc.HitsDecodedPerQuery) })
	rec := g.spread(func(sc *Scenario) float64 { return optional(sc.HitsReceivedPerQuery) })
	num := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	detail := fmt.Sprintf("received %s per query (N × top_k = %d), payloads decoded %s", rec.format(num), HitsFanOut*HitsTopK, dec.format(num))
	if rec.N == 0 {
		return verdict(target, check{NotMeasured, detail + ": the proxy has no " + mHitsReceived})
	}
	return verdict(target, check{metIf(rec.Median <= TargetHitsDecoded*HitsTopK), detail})
}

func judgeIdle(r *Report) Verdict {
	target := fmt.Sprintf("%d idle QS connections cost the proxy ≤ %s of RSS", TargetIdleConns, bytesIEC(TargetIdleRSS))
	switch i := r.Idle; {
	case i == nil:
		return verdict(target, check{NotMeasured, "idle connections: not measured"})
	case i.Skipped != "":
		return verdict(target, check{NotMeasured, "idle connections: skipped: " + i.Skipped})
	default:
		cost := i.RSSPerConn() * TargetIdleConns
		how := fmt.Sprintf("%d idle connections: RSS +%s", i.Ready, bytesIEC(float64(i.RSSAfter)-float64(i.RSSBefore)))
		if i.Ready != TargetIdleConns {
			how = fmt.Sprintf("%d idle connections cost RSS +%s, %s each: %s for %d (extrapolated)",
				i.Ready, bytesIEC(float64(i.RSSAfter)-float64(i.RSSBefore)), bytesIEC(i.RSSPerConn()), bytesIEC(cost), TargetIdleConns)
		}
		return verdict(target, check{metIf(cost <= TargetIdleRSS), how})
	}
}

func judgeNoRegression(r *Report, gb []GoBench) Verdict {
	target := fmt.Sprintf("no regression: merge ≥ %d× sort at N=64, K=1000 with no allocation per merged hit; heap per in-flight query ≤ %s at N=%d, K=%d; cancellation delay p99 < %s",
		TargetMergeSpeedup, bytesIEC(TargetHeapPerQuery), HeapFanOut, HeapTopK, loadgen.FormatMicros(TargetCancelP99US))
	parts := mergeChecks(gb)
	if h := r.Heap; h == nil {
		parts = append(parts, check{NotMeasured, "heap per query: not measured"})
	} else {
		parts = append(parts, check{metIf(h.HeapPerQuery <= TargetHeapPerQuery), fmt.Sprintf(
			"heap %s per in-flight query (%d queries)", bytesIEC(h.HeapPerQuery), h.Queries)})
	}
	if c, ok := findBench(gb, "/internal/faulttest", "BenchmarkCancelPropagation"); !ok || c.Metrics["p99-µs"] == 0 {
		parts = append(parts, check{NotMeasured, "cancellation delay: no BenchmarkCancelPropagation results (internal/faulttest)"})
	} else {
		p99 := c.Metrics["p99-µs"]
		parts = append(parts, check{metIf(p99 < TargetCancelP99US), fmt.Sprintf("cancellation delay p99 %s (p50 %s)",
			loadgen.FormatMicros(int64(p99)), loadgen.FormatMicros(int64(c.Metrics["p50-µs"])))})
	}
	return verdict(target, parts...)
}

// joinInts formats ns as "4 and 16", "4, 16 and 64".
func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprint(n)
	}
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// mergeChecks are the merge's part of the no-regression target, from BenchmarkMerge.
func mergeChecks(gb []GoBench) []check {
	const n, k, small = 64, 1000, 10
	lt, ok1 := mergeBench(gb, n, k, "losertree")
	so, ok2 := mergeBench(gb, n, k, "sort")
	ltSmall, ok3 := mergeBench(gb, n, small, "losertree")
	if !ok1 || !ok2 || !ok3 {
		return []check{{NotMeasured, "merge: no BenchmarkMerge results for N=64 (run go test -bench BenchmarkMerge ./internal/merge/)"}}
	}
	speedup := so.Metrics["ns/op"] / lt.Metrics["ns/op"]
	perHit := (lt.Metrics["allocs/op"] - ltSmall.Metrics["allocs/op"]) / float64(k-small)
	return []check{
		{metIf(speedup >= TargetMergeSpeedup), fmt.Sprintf("merge: losertree %.0f ns/op, sort %.0f ns/op: %.1f× faster",
			lt.Metrics["ns/op"], so.Metrics["ns/op"], speedup)},
		{metIf(perHit <= 0.001), fmt.Sprintf("losertree allocs/op %.0f at K=%d and %.0f at K=%d: %.3f allocations per merged hit",
			ltSmall.Metrics["allocs/op"], small, lt.Metrics["allocs/op"], k, perHit)},
	}
}

// ratio is a / b, or +Inf when b is 0 and a is not.
func ratio(a, b float64) float64 {
	if b == 0 {
		if a == 0 {
			return 1
		}
		return math.Inf(1)
	}
	return a / b
}

func judgeTail(t *TailResult) Verdict {
	target := fmt.Sprintf("tail, %d shards × %d replicas, %s, open loop at half saturation: hedging on cuts p99 and p99.9 "+
		"each ≥ %d× against hedging off, with ≤ %.0f%% extra shard calls and p50 ≤ %.0f%% higher",
		TailShards, TailReplicas, TailLatency, TargetTailCut, 100*TargetTailExtra, 100*(TargetTailP50-1))
	off, on := t.Setting(TailOff), t.Setting(TailOn)
	if off == nil || on == nil || off.Latency.Count == 0 || on.Latency.Count == 0 {
		return verdict(target, check{NotMeasured, "the tail scenario did not run"})
	}
	lo, l1 := off.Latency, on.Latency
	cut99, cut999 := ratio(float64(lo.P99US), float64(l1.P99US)), ratio(float64(lo.P999US), float64(l1.P999US))
	p50 := ratio(float64(l1.P50US), float64(lo.P50US))
	parts := []check{
		{metIf(cut99 >= TargetTailCut), fmt.Sprintf("p99 %s → %s (%.1f× lower)", fmtMS(lo.P99US), fmtMS(l1.P99US), cut99)},
		{metIf(cut999 >= TargetTailCut), fmt.Sprintf("p99.9 %s → %s (%.1f× lower)", fmtMS(lo.P999US), fmtMS(l1.P999US), cut999)},
	}
	if extra, ok := t.Extra(TailOn); ok {
		parts = append(parts, check{metIf(extra <= TargetTailExtra), fmt.Sprintf(
			"extra shard calls %+.2f%% (%.3f calls per query against %.3f; hedges won %.0f, lost %.0f, denied %.0f)",
			100*extra, on.CallsPerQuery(), off.CallsPerQuery(), on.Hedges["won"], on.Hedges["lost"], on.Hedges["denied"])})
	} else {
		parts = append(parts, check{NotMeasured, "extra shard calls: not measured (no proxy metrics)"})
	}
	parts = append(parts, check{metIf(p50 <= TargetTailP50), fmt.Sprintf("p50 %s → %s (%+.1f%%)", fmtMS(lo.P50US), fmtMS(l1.P50US), 100*(p50-1))})
	v := verdict(target, parts...)
	if f := t.Setting(TailFloor); f != nil && f.Latency.Count > 0 {
		v.Detail += fmt.Sprintf(" (the floor, no slow calls at all: p99 %s, p99.9 %s, so at most %.1f× and %.1f× were reachable)",
			fmtMS(f.Latency.P99US), fmtMS(f.Latency.P999US), ratio(float64(lo.P99US), float64(f.Latency.P99US)),
			ratio(float64(lo.P999US), float64(f.Latency.P999US)))
	}
	return v
}

func judgeHung(t *TailResult) Verdict {
	target := fmt.Sprintf("tail with one replica of each shard hung, hedging on: p99 ≤ %d× the healthy run's (hedging on)", TargetHungP99)
	on, hung, off := t.Setting(TailOn), t.Setting(TailHung), t.Setting(TailOff)
	if on == nil || hung == nil || on.Latency.Count == 0 || hung.Latency.Count == 0 {
		return verdict(target, check{NotMeasured, "the tail scenario did not run"})
	}
	r := ratio(float64(hung.Latency.P99US), float64(on.Latency.P99US))
	detail := fmt.Sprintf("p99 %s against %s (%.1f×)", fmtMS(hung.Latency.P99US), fmtMS(on.Latency.P99US), r)
	if off != nil && off.Latency.Count > 0 {
		detail += fmt.Sprintf("; against hedging off's %s: %.2f×", fmtMS(off.Latency.P99US), ratio(float64(hung.Latency.P99US), float64(off.Latency.P99US)))
	}
	if n := hung.Counts.Completed - hung.Counts.OK; n > 0 {
		detail += fmt.Sprintf("; %d of %d answers not ok", n, hung.Counts.Completed)
	}
	return verdict(target, check{metIf(r <= TargetHungP99), detail})
}
