package benchsuite

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"strings"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/gatherproxy/gather/internal/loadgen"
)

// The deployment the cost model is projected to: ProjectShards shards of ProjectReplicas
// replicas each, at ProjectQPS queries per second. A query calls one replica of each shard
// (hedging adds its few extra calls), so the replicas multiply the shards' capacity, not the
// proxy's work.
const (
	ProjectShards   = 100
	ProjectReplicas = 3
	ProjectQPS      = 10_000
)

// CostModel is the proxy's CPU per query (srv CPU/q, the median over the rounds) fitted to the
// measurements of gather at every fan-out N and top_k K:
//
//	cpu(N, K) = FixedUS + PerTopKUS·K + PerShardCallUS·N + PerHitUS·H
//
// with H the hits the proxy received per query (N·K when it does not count them): a cost per
// query (the QS call, the answer of K hits), per shard call, and per hit received. The fit is
// least squares on the relative error, so the small fan-outs weigh as much as the large ones.
type CostModel struct {
	FixedUS        float64 `json:"fixed_us"`
	PerTopKUS      float64 `json:"per_top_k_us"`
	PerShardCallUS float64 `json:"per_shard_call_us"`
	PerHitUS       float64 `json:"per_hit_us"`
	// Points are the measurements fitted; MaxRelErr is the largest |fitted − median| / median.
	Points    []CostPoint `json:"points"`
	MaxRelErr float64     `json:"max_rel_err"`
	// Projections are the model at ProjectShards, each top_k.
	Projections []CostProjection `json:"projections"`
}

// CostPoint is one measured fan-out and top_k.
type CostPoint struct {
	FanOut int `json:"fan_out"`
	TopK   int `json:"top_k"`
	// Hits is the median hits received per query (N·K without the counter).
	Hits     float64 `json:"hits"`
	CPUUS    Spread  `json:"cpu_us"`
	FittedUS float64 `json:"fitted_us"`
}

// CostProjection is the model's proxy CPU at a fan-out and top_k, and the cores it takes at
// ProjectQPS.
type CostProjection struct {
	FanOut int `json:"fan_out"`
	TopK   int `json:"top_k"`
	// HitsPerShardCall is the hits received per shard call assumed: as measured at the largest
	// fan-out at that top_k.
	HitsPerShardCall float64 `json:"hits_per_shard_call"`
	CPUUS            float64 `json:"cpu_us"`
	Cores            float64 `json:"cores"`
}

// at is the model's CPU per query at fan-out n, top_k k and h hits received per query.
func (c *CostModel) at(n, k int, h float64) float64 {
	return c.FixedUS + c.PerTopKUS*float64(k) + c.PerShardCallUS*float64(n) + c.PerHitUS*h
}

// hitsPerCall is the hits received per shard call at top_k k, as measured at the largest fan-out
// at that top_k (k if there is no measurement).
func (c *CostModel) hitsPerCall(k int) float64 {
	best, h := 0, float64(k)
	for _, p := range c.Points {
		if p.TopK == k && p.FanOut > best {
			best, h = p.FanOut, p.Hits/float64(p.FanOut)
		}
	}
	return h
}

// fitCost fits the cost model to r's gather scenarios; nil if they cannot determine it (fewer
// than two fan-outs or two top_ks).
func fitCost(r *Report) *CostModel {
	c := &CostModel{}
	fanOuts, topKs := map[int]bool{}, map[int]bool{}
	for _, g := range r.groups() {
		if g.Kind != KindGather {
			continue
		}
		cpu := g.spread(func(sc *Scenario) float64 { return sc.ServerCPUPerQueryUS })
		if cpu.N == 0 || cpu.Median <= 0 {
			continue
		}
		h := g.spread(func(sc *Scenario) float64 { return optional(sc.HitsReceivedPerQuery) })
		hits := h.Median
		if h.N == 0 {
			hits = float64(g.FanOut * g.TopK)
		}
		c.Points = append(c.Points, CostPoint{FanOut: g.FanOut, TopK: g.TopK, Hits: hits, CPUUS: cpu})
		fanOuts[g.FanOut], topKs[g.TopK] = true, true
	}
	const params = 4
	if len(fanOuts) < 2 || len(topKs) < 2 || len(c.Points) < params {
		return nil
	}
	a := mat.NewDense(len(c.Points), params, nil)
	b := mat.NewVecDense(len(c.Points), nil)
	for i, p := range c.Points {
		w := 1 / p.CPUUS.Median // relative error
		a.SetRow(i, []float64{w, w * float64(p.TopK), w * float64(p.FanOut), w * p.Hits})
		b.SetVec(i, 1)
	}
	var x mat.VecDense
	if err := x.SolveVec(a, b); err != nil {
		return nil
	}
	c.FixedUS, c.PerTopKUS, c.PerShardCallUS, c.PerHitUS = x.AtVec(0), x.AtVec(1), x.AtVec(2), x.AtVec(3)
	for i := range c.Points {
		p := &c.Points[i]
		p.FittedUS = c.at(p.FanOut, p.TopK, p.Hits)
		c.MaxRelErr = max(c.MaxRelErr, math.Abs(p.FittedUS-p.CPUUS.Median)/p.CPUUS.Median)
	}
	for _, k := range TopKs {
		hp := c.hitsPerCall(k)
		cpu := c.at(ProjectShards, k, hp*ProjectShards)
		c.Projections = append(c.Projections, CostProjection{FanOut: ProjectShards, TopK: k, HitsPerShardCall: hp,
			CPUUS: cpu, Cores: cpu * ProjectQPS / 1e6})
	}
	return c
}

// String is the model's formula.
func (c *CostModel) String() string {
	return fmt.Sprintf("proxy CPU per query ≈ %s + %s·top_k + %s·N + %s·hits received (µs; fitted to %d points, largest error %.0f%%)",
		fmtUS(c.FixedUS), fmtUS(c.PerTopKUS), fmtUS(c.PerShardCallUS), fmtUS(c.PerHitUS), len(c.Points), 100*c.MaxRelErr)
}

// fmtUS formats microseconds with three significant digits, sign kept.
func fmtUS(v float64) string { return strings.TrimSuffix(fmt.Sprintf("%.3g", v), ".") }

// table is the cost model's points: measured against fitted.
func (c *CostModel) table() (header []string, rows [][]string) {
	header = []string{"N", "top_k", "hits recv/q", "proxy CPU/q (median, range)", "per shard call", "fitted", "error"}
	us := func(v float64) string { return loadgen.FormatMicros(int64(v)) }
	for _, p := range c.Points {
		rows = append(rows, []string{fmt.Sprint(p.FanOut), fmt.Sprint(p.TopK), fmt.Sprintf("%.0f", p.Hits), p.CPUUS.format(us),
			us(p.CPUUS.Median / float64(p.FanOut)), us(p.FittedUS), fmt.Sprintf("%+.0f%%", 100*(p.FittedUS/p.CPUUS.Median-1))})
	}
	return header, rows
}

// projectionLines say what the model implies for ProjectShards × ProjectReplicas at ProjectQPS.
func (c *CostModel) projectionLines() []string {
	var out []string
	for _, p := range c.Projections {
		out = append(out, fmt.Sprintf("%d shards × %d replicas at %d q/s, top_k %d (%.0f hits received per shard call): "+
			"%s of proxy CPU per query, %.1f cores of proxies (a query calls one replica of each shard: the replicas add shard capacity, not proxy work; hedging adds its extra calls)",
			ProjectShards, ProjectReplicas, ProjectQPS, p.TopK, p.HitsPerShardCall, loadgen.FormatMicros(int64(p.CPUUS)), p.Cores))
	}
	return out
}

// costPoints are one top_k's points for the plot, with their ranges as error bars.
type costPoints struct{ xys, lo, hi []float64 }

func (p costPoints) Len() int                        { return len(p.xys) / 2 }
func (p costPoints) XY(i int) (float64, float64)     { return p.xys[2*i], p.xys[2*i+1] }
func (p costPoints) YError(i int) (float64, float64) { return p.lo[i], p.hi[i] }
func (p costPoints) add(x, y, lo, hi float64) costPoints {
	p.xys, p.lo, p.hi = append(p.xys, x, y), append(p.lo, y-lo), append(p.hi, hi-y)
	return p
}

// costColors are the plot's colours by top_k, in TopKs order.
var costColors = []color.RGBA{{R: 0x20, G: 0x60, B: 0xc0, A: 0xff}, {R: 0xc0, G: 0x30, B: 0x30, A: 0xff}}

// WritePlot writes the proxy's CPU per query against the fan-out (both axes logarithmic) to path
// as PNG: the medians with their ranges over the rounds, one colour per top_k, and the fitted model.
func (c *CostModel) WritePlot(path string) error {
	p := plot.New()
	p.Title.Text = "gather: proxy CPU per query against fan-out (points: medians and range over the rounds)"
	p.X.Label.Text = "fan-out N (shards per query)"
	p.Y.Label.Text = "proxy CPU per query (µs)"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = logTicks125{}, logTicks125{}
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	// floor keeps every plotted value positive, as a log scale needs: a fit to few or noisy
	// points can go below zero at small N (a negative fixed or top_k term), and a range can
	// reach 0.
	minN, maxN, drawn, floor := math.MaxInt, 0, 0, math.Inf(1)
	for _, pt := range c.Points {
		minN, maxN = min(minN, pt.FanOut), max(maxN, pt.FanOut)
		if pt.CPUUS.Median > 0 {
			floor = min(floor, pt.CPUUS.Median/2)
		}
	}
	if math.IsInf(floor, 1) {
		return errors.New("no points to plot")
	}
	for i, k := range TopKs {
		col := costColors[i%len(costColors)]
		var pts costPoints
		for _, pt := range c.Points {
			if pt.TopK == k {
				pts = pts.add(float64(pt.FanOut), max(pt.CPUUS.Median, floor), max(pt.CPUUS.Min, floor), max(pt.CPUUS.Max, floor))
			}
		}
		if pts.Len() == 0 {
			continue
		}
		sc, err := plotter.NewScatter(pts)
		if err != nil {
			return err
		}
		sc.GlyphStyle = draw.GlyphStyle{Color: col, Radius: vg.Points(3), Shape: draw.CircleGlyph{}}
		bars, err := plotter.NewYErrorBars(pts)
		if err != nil {
			return err
		}
		bars.Color = col
		hp := c.hitsPerCall(k)
		fit := plotter.NewFunction(func(n float64) float64 {
			return max(c.at(0, k, 0)+(c.PerShardCallUS+c.PerHitUS*hp)*n, floor)
		})
		fit.XMin, fit.XMax, fit.Samples = float64(minN), float64(maxN), 200
		fit.LineStyle = draw.LineStyle{Color: col, Width: vg.Points(1), Dashes: []vg.Length{vg.Points(4), vg.Points(2)}}
		p.Add(fit, bars, sc)
		p.Legend.Add(fmt.Sprintf("top_k %d", k), sc)
		drawn++
	}
	key := plotter.NewFunction(func(float64) float64 { return 1 }) // only its line, for the legend
	key.LineStyle = draw.LineStyle{Color: color.Gray{Y: 0x60}, Width: vg.Points(1), Dashes: []vg.Length{vg.Points(4), vg.Points(2)}}
	p.Legend.Add(fmt.Sprintf("fit: %s + %s·K + (%s + %s·hits per call)·N µs", fmtUS(c.FixedUS), fmtUS(c.PerTopKUS),
		fmtUS(c.PerShardCallUS), fmtUS(c.PerHitUS)), key)
	if drawn == 0 {
		return errors.New("no points to plot")
	}
	// Room around the points, for their error bars and the legend.
	p.X.Min, p.X.Max = float64(minN)*0.8, float64(maxN)*1.25
	p.Y.Min, p.Y.Max = p.Y.Min*0.8, p.Y.Max*2
	return savePNG(p, path)
}
