package benchsuite

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"strconv"

	"github.com/HdrHistogram/hdrhistogram-go"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// The percentile plot's size and resolution.
const (
	plotWidth  = 8 * vg.Inch
	plotHeight = 4.5 * vg.Inch
	// plotStep is the distance between two points of a curve on the nines axis: 50 points per
	// decade of 1 − percentile.
	plotStep = 0.02
)

// plotStyle is how each setting is drawn: hedging off and on solid, the hung setting dashed, the
// floor dotted.
var plotStyle = map[string]struct {
	color  color.RGBA
	dashes []vg.Length
}{
	TailOff:   {color.RGBA{R: 0xc0, G: 0x30, B: 0x30, A: 0xff}, nil},
	TailOn:    {color.RGBA{R: 0x20, G: 0x60, B: 0xc0, A: 0xff}, nil},
	TailHung:  {color.RGBA{R: 0x20, G: 0x90, B: 0x40, A: 0xff}, []vg.Length{vg.Points(6), vg.Points(3)}},
	TailFloor: {color.RGBA{R: 0x80, G: 0x80, B: 0x80, A: 0xff}, []vg.Length{vg.Points(2), vg.Points(2)}},
}

// nines is where quantile q (0 ≤ q < 1) lies on the plot's horizontal axis: −log10(1 − q), so
// that 90%, 99%, 99.9% and 99.99% are evenly spaced at 1, 2, 3 and 4.
func nines(q float64) float64 { return -math.Log10(1 - q) }

// percentileCurve samples h (microseconds) at every plotStep of the nines axis, from the least
// latency (0%) up to the highest percentile its count resolves (1 − 1/count), then its maximum one step
// beyond; the latencies are in milliseconds.
func percentileCurve(h *hdrhistogram.Histogram) plotter.XYs {
	n := h.TotalCount()
	if n == 0 {
		return nil
	}
	top := math.Log10(float64(n))
	var xys plotter.XYs
	for x := 0.0; x <= top; x += plotStep {
		q := 1 - math.Pow(10, -x)
		xys = append(xys, plotter.XY{X: x, Y: float64(h.ValueAtQuantile(100*q)) / 1000})
	}
	xys = append(xys, plotter.XY{X: top + plotStep, Y: float64(h.Max()) / 1000})
	return xys
}

// ninesTicks labels the nines axis at 0%, 50%, 90%, 99%, ... up to hi.
type ninesTicks struct{}

func (ninesTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := []plot.Tick{{Value: 0, Label: "0%"}, {Value: nines(0.5), Label: "50%"}}
	labels := []string{"90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"}
	for i, l := range labels {
		if v := float64(i + 1); v >= lo && v <= hi {
			ticks = append(ticks, plot.Tick{Value: v, Label: l})
		}
	}
	return ticks
}

// logTicks125 labels a logarithmic axis at 1, 2 and 5 times each power of ten.
type logTicks125 struct{}

func (logTicks125) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range []float64{1, 2, 5} {
			if v := m * math.Pow(10, e); v >= lo && v <= hi {
				ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
			}
		}
	}
	return ticks
}

// WritePlot writes the tail scenario's latency distributions as a percentile plot to path, in
// PNG whatever path's extension: latency (log scale) against percentile on a "nines" axis, one
// curve per setting, from the merged histograms of every round.
func (t *TailResult) WritePlot(path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("gather: %d shards × %d replicas, latency %s, open loop %.0f q/s", t.Shards, t.Replicas, t.Latency, t.Rate)
	p.X.Label.Text = "percentile"
	p.X.Tick.Marker = ninesTicks{}
	p.Y.Label.Text = "latency (ms)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = logTicks125{}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	drawn := 0
	for i := range t.Settings {
		s := &t.Settings[i]
		if s.Latency.HDR == "" {
			continue
		}
		h, err := s.Latency.Histogram()
		if err != nil {
			return fmt.Errorf("%s: %w", s.Label, err)
		}
		xys := percentileCurve(h)
		if len(xys) == 0 {
			continue
		}
		line, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("%s: %w", s.Label, err)
		}
		st := plotStyle[s.Key]
		line.LineStyle = draw.LineStyle{Color: st.color, Width: vg.Points(1.5), Dashes: st.dashes}
		p.Add(line)
		p.Legend.Add(fmt.Sprintf("%s (p99 %s, p99.9 %s)", s.Label, fmtMS(s.Latency.P99US), fmtMS(s.Latency.P999US)), line)
		drawn++
	}
	if drawn == 0 {
		return errors.New("no latencies to plot")
	}
	p.X.Min = 0
	p.Y.Min = max(p.Y.Min, 0.1)
	return savePNG(p, path)
}

// savePNG writes p to path as a PNG of the suite's plot size.
func savePNG(p *plot.Plot, path string) error {
	w, err := p.WriterTo(plotWidth, plotHeight, "png")
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := w.WriteTo(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// fmtMS formats microseconds as milliseconds with up to three significant digits.
func fmtMS(us int64) string {
	ms := float64(us) / 1000
	switch {
	case ms >= 100:
		return fmt.Sprintf("%.0fms", ms)
	case ms >= 10:
		return fmt.Sprintf("%.1fms", ms)
	}
	return fmt.Sprintf("%.2fms", ms)
}
