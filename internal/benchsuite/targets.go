package benchsuite

import (
	"fmt"
	"math"
	"strings"

	"github.com/gatherproxy/gather/internal/loadgen"
)

// Verdict statuses.
const (
	Met         = "MET"
	NotMet      = "NOT MET"
	NotMeasured = "NOT MEASURED"
)

// The targets' thresholds.
const (
	// TargetFanOut is the fan-out of the throughput and latency targets.
	TargetFanOut = 4
	// TargetRelCeiling is the least QPS at TargetFanOut, as a fraction of ceiling/(N+1).
	TargetRelCeiling = 0.8
	// TargetAddedP50US and TargetAddedP99US bound the latency added over the slowest shard at
	// half the saturating load.
	TargetAddedP50US = 150
	TargetAddedP99US = 1000
	// TargetMergeSpeedup is how much faster than sorting the merge must be at N=64, K=1000.
	TargetMergeSpeedup = 10
	// TargetHeapPerQuery bounds the proxy's heap per in-flight query at N=8, K=100.
	TargetHeapPerQuery = 64 << 10
	// TargetIdleConns and TargetIdleRSS: that many idle QS connections must cost the proxy less
	// resident memory than that.
	TargetIdleConns = 10_000
	TargetIdleRSS   = 300 << 20
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

// Judge compares r with the targets, issue 5's four and issue 9's two (the tail scenario), and
// stores the verdicts in r.Targets; gb are the Go benchmark results (from `go test -bench`), also
// stored in r. Each target lists the numbers it was judged on; one that rests on something not
// measured (a part of the suite that did not run) is NotMeasured.
func Judge(r *Report, gb []GoBench) {
	r.GoBench = gb
	r.Targets = []Verdict{judgeQPS(r), judgeAdded(r), judgeMerge(gb), judgeMemory(r), judgeTail(r.Tail), judgeHung(r.Tail)}
}

func (r *Report) scenario(kind Kind, fanOut, topK int) *Scenario {
	for i := range r.Scenarios {
		if sc := &r.Scenarios[i]; sc.Kind == kind && sc.TopK == topK && (kind == KindCeiling || sc.FanOut == fanOut) {
			return sc
		}
	}
	return nil
}

func judgeQPS(r *Report) Verdict {
	target := fmt.Sprintf("QPS at fan-out %d ≥ %.1f × ceiling/(N+1), and ahead of the naive baseline", TargetFanOut, TargetRelCeiling)
	var parts []check
	for _, k := range TopKs {
		g, c, n := r.scenario(KindGather, TargetFanOut, k), r.scenario(KindCeiling, 0, k), r.scenario(KindNaive, TargetFanOut, k)
		if g == nil || c == nil || n == nil || c.QPS == 0 {
			parts = append(parts, check{NotMeasured, fmt.Sprintf("top_k %d: not measured", k)})
			continue
		}
		per := c.QPS / float64(TargetFanOut+1)
		rel := g.QPS / per
		parts = append(parts, check{metIf(rel >= TargetRelCeiling && g.QPS > n.QPS), fmt.Sprintf(
			"top_k %d: %.0f q/s = %.2f × ceiling/%d (%.0f/%d = %.0f), naive %.0f q/s (gather %.2f× naive)",
			k, g.QPS, rel, TargetFanOut+1, c.QPS, TargetFanOut+1, per, n.QPS, g.QPS/n.QPS)})
	}
	return verdict(target, parts...)
}

func judgeAdded(r *Report) Verdict {
	target := fmt.Sprintf("added latency over the slowest shard at half the saturating load, fan-out %d: p50 < %dµs, p99 < %s",
		TargetFanOut, TargetAddedP50US, loadgen.FormatMicros(TargetAddedP99US))
	var parts []check
	for _, k := range TopKs {
		g := r.scenario(KindGather, TargetFanOut, k)
		if g == nil || g.Overhead.Count == 0 {
			parts = append(parts, check{NotMeasured, fmt.Sprintf("top_k %d: not measured", k)})
			continue
		}
		o := g.Overhead
		detail := fmt.Sprintf("top_k %d at %.0f/s: p50 %s, p99 %s", k, g.Rate, loadgen.FormatMicros(o.P50US), loadgen.FormatMicros(o.P99US))
		if h := g.HopAtRate; h != nil {
			detail += fmt.Sprintf(" (a raw hop with that answer at that rate: p50 %s, p99 %s)", loadgen.FormatMicros(h.P50US), loadgen.FormatMicros(h.P99US))
		}
		parts = append(parts, check{metIf(o.P50US < TargetAddedP50US && o.P99US < TargetAddedP99US), detail})
	}
	return verdict(target, parts...)
}

func judgeMerge(gb []GoBench) Verdict {
	const n, k, small = 64, 1000, 10
	target := fmt.Sprintf("merge ≥ %d× faster than concatenate-and-sort at N=%d, K=%d; no allocation per merged hit", TargetMergeSpeedup, n, k)
	lt, ok1 := mergeBench(gb, n, k, "losertree")
	so, ok2 := mergeBench(gb, n, k, "sort")
	ltSmall, ok3 := mergeBench(gb, n, small, "losertree")
	if !ok1 || !ok2 || !ok3 {
		return verdict(target, check{NotMeasured, "no BenchmarkMerge results for N=64 (run go test -bench BenchmarkMerge ./internal/merge/)"})
	}
	speedup := so.Metrics["ns/op"] / lt.Metrics["ns/op"]
	perHit := (lt.Metrics["allocs/op"] - ltSmall.Metrics["allocs/op"]) / float64(k-small)
	return verdict(target,
		check{metIf(speedup >= TargetMergeSpeedup), fmt.Sprintf("losertree %.0f ns/op, sort %.0f ns/op: %.1f× faster",
			lt.Metrics["ns/op"], so.Metrics["ns/op"], speedup)},
		check{metIf(perHit <= 0.001), fmt.Sprintf("losertree allocs/op %.0f at K=%d and %.0f at K=%d: %.3f allocations per merged hit",
			ltSmall.Metrics["allocs/op"], small, lt.Metrics["allocs/op"], k, perHit)})
}

func judgeMemory(r *Report) Verdict {
	target := fmt.Sprintf("proxy heap per in-flight query < %s at N=%d, K=%d; %d idle QS connections cost < %s",
		bytesIEC(TargetHeapPerQuery), HeapFanOut, HeapTopK, TargetIdleConns, bytesIEC(TargetIdleRSS))
	var parts []check
	if h := r.Heap; h == nil {
		parts = append(parts, check{NotMeasured, "heap per query: not measured"})
	} else {
		parts = append(parts, check{metIf(h.HeapPerQuery < TargetHeapPerQuery), fmt.Sprintf(
			"heap %s per in-flight query (%d queries)", bytesIEC(h.HeapPerQuery), h.Queries)})
	}
	switch i := r.Idle; {
	case i == nil:
		parts = append(parts, check{NotMeasured, "idle connections: not measured"})
	case i.Skipped != "":
		parts = append(parts, check{NotMeasured, "idle connections: skipped: " + i.Skipped})
	default:
		cost := i.RSSPerConn() * TargetIdleConns
		how := fmt.Sprintf("%d idle connections: RSS +%s", i.Ready, bytesIEC(float64(i.RSSAfter)-float64(i.RSSBefore)))
		if i.Ready != TargetIdleConns {
			how = fmt.Sprintf("%d idle connections cost RSS +%s, %s each: %s for %d (extrapolated)",
				i.Ready, bytesIEC(float64(i.RSSAfter)-float64(i.RSSBefore)), bytesIEC(i.RSSPerConn()), bytesIEC(cost), TargetIdleConns)
		}
		parts = append(parts, check{metIf(cost < TargetIdleRSS), how})
	}
	return verdict(target, parts...)
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
