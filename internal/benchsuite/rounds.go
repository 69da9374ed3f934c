package benchsuite

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Spread is one measurement over the rounds: its median, least and largest value, and how many
// rounds measured it (N 0: none did).
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// spreadOf summarizes vs, leaving out NaNs (rounds that could not measure the value).
func spreadOf(vs []float64) Spread {
	vs = slices.DeleteFunc(slices.Clone(vs), math.IsNaN)
	if len(vs) == 0 {
		return Spread{}
	}
	slices.Sort(vs)
	n := len(vs)
	med := vs[n/2]
	if n%2 == 0 {
		med = (vs[n/2-1] + vs[n/2]) / 2
	}
	return Spread{Median: med, Min: vs[0], Max: vs[n-1], N: n}
}

// format writes the median with f, and the range after it when there were several rounds:
// "4610 (4420–4700)".
func (sp Spread) format(f func(float64) string) string {
	switch {
	case sp.N == 0:
		return "n/a"
	case sp.N == 1 || sp.Min == sp.Max:
		return f(sp.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", f(sp.Median), f(sp.Min), f(sp.Max))
}

// group is one scenario (a server at a fan-out and top_k) over the rounds.
type group struct {
	Kind   Kind
	FanOut int
	TopK   int
	Rounds []*Scenario
}

// Label names the group's scenario.
func (g *group) Label() string {
	return (&Scenario{Kind: g.Kind, FanOut: g.FanOut, TopK: g.TopK}).Label()
}

// spread is f over the group's rounds; f returns NaN for a round without the value.
func (g *group) spread(f func(*Scenario) float64) Spread {
	vs := make([]float64, len(g.Rounds))
	for i, sc := range g.Rounds {
		vs[i] = f(sc)
	}
	return spreadOf(vs)
}

// kindOrder is the order of the servers in the table at one fan-out.
var kindOrder = map[Kind]int{KindCeiling: 0, KindGather: 1, KindNaive: 2}

// groups returns the scenarios grouped over the rounds, by fan-out, then server, then top_k.
func (r *Report) groups() []*group {
	var out []*group
	for i := range r.Scenarios {
		sc := &r.Scenarios[i]
		idx := slices.IndexFunc(out, func(g *group) bool { return g.Kind == sc.Kind && g.FanOut == sc.FanOut && g.TopK == sc.TopK })
		if idx < 0 {
			out = append(out, &group{Kind: sc.Kind, FanOut: sc.FanOut, TopK: sc.TopK})
			idx = len(out) - 1
		}
		out[idx].Rounds = append(out[idx].Rounds, sc)
	}
	slices.SortFunc(out, func(a, b *group) int {
		return cmp.Or(cmp.Compare(a.FanOut, b.FanOut), cmp.Compare(kindOrder[a.Kind], kindOrder[b.Kind]), cmp.Compare(a.TopK, b.TopK))
	})
	return out
}

// group returns the scenario of kind at fanOut (any, for the ceiling) and topK over the rounds,
// or nil if it did not run.
func (r *Report) group(kind Kind, fanOut, topK int) *group {
	for _, g := range r.groups() {
		if g.Kind == kind && g.TopK == topK && (kind == KindCeiling || g.FanOut == fanOut) {
			return g
		}
	}
	return nil
}

// scenarioIn returns the scenario of kind at fanOut (any, for the ceiling) and topK measured in
// round, or nil.
func (r *Report) scenarioIn(round int, kind Kind, fanOut, topK int) *Scenario {
	for i := range r.Scenarios {
		if sc := &r.Scenarios[i]; sc.Round == round && sc.Kind == kind && sc.TopK == topK && (kind == KindCeiling || sc.FanOut == fanOut) {
			return sc
		}
	}
	return nil
}

// ceilingNear returns the ceiling at topK of round if it has run, else that of the latest round
// that has one, else nil.
func (r *Report) ceilingNear(round, topK int) *Scenario {
	if c := r.scenarioIn(round, KindCeiling, 0, topK); c != nil {
		return c
	}
	var last *Scenario
	for i := range r.Scenarios {
		if sc := &r.Scenarios[i]; sc.Kind == KindCeiling && sc.TopK == topK {
			last = sc
		}
	}
	return last
}

// relateToCeiling sets every scenario's RelCeiling against the ceiling of its own round (during
// a round it was set against the nearest one measured so far).
func (r *Report) relateToCeiling() {
	for i := range r.Scenarios {
		sc := &r.Scenarios[i]
		if sc.Kind == KindCeiling {
			continue
		}
		if c := r.ceilingNear(sc.Round, sc.TopK); c != nil && c.QPS > 0 {
			sc.RelCeiling = sc.QPS * float64(sc.FanOut+1) / c.QPS
		}
	}
}

// key names a scenario: a server at a fan-out (0 for the ceiling) and top_k.
type key struct {
	kind         Kind
	fanOut, topK int
}

// paired is f of the scenarios a and b measured in the same round, over the rounds where both
// ran (and f is not NaN): a ratio of two measurements side by side, judged on its median.
func (r *Report) paired(a, b key, f func(a, b *Scenario) float64) Spread {
	var vs []float64
	for round := range max(r.Rounds, 1) {
		x := r.scenarioIn(round, a.kind, a.fanOut, a.topK)
		y := r.scenarioIn(round, b.kind, b.fanOut, b.topK)
		if x != nil && y != nil {
			vs = append(vs, f(x, y))
		}
	}
	return spreadOf(vs)
}

// nan is the value of a round that could not measure something.
var nan = math.NaN()

// optional is *v, or NaN if v is nil.
func optional(v *float64) float64 {
	if v == nil {
		return nan
	}
	return *v
}

// heapAt returns the heap measurement at fan-out n and top_k k, or nil.
func (r *Report) heapAt(n, k int) *HeapResult {
	for i := range r.HeapScaling {
		if h := &r.HeapScaling[i]; h.FanOut == n && h.TopK == k {
			return h
		}
	}
	return nil
}
