package sockdiag

import (
	"errors"
	"fmt"
	"io"
	"math"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// ParseMetrics reads the Collector's families back out of a Prometheus text exposition (format
// 0.0.4: what promhttp serves to a client that sends no Accept header), parsed with the
// Prometheus project's own parser (expfmt); labels other than state are ignored.
//
// The result's Time is zero. If the page says gather_sockdiag_up 0 the Snapshot has Available
// false and an Err wrapping ErrUnavailable, and the returned error is nil: the page was read
// fine. The error is non-nil, wrapping ErrMalformed, when the page cannot be parsed, has no
// gather_sockdiag_up (the collector is not registered), or has a sample of ours that is not a
// count or appears twice; it wraps the reader's error when reading fails. A state missing from
// the page counts zero; an unknown state label, from a newer gather, is skipped.
func ParseMetrics(r io.Reader) (Snapshot, error) {
	rr := &readErr{r: r}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(rr)
	if rr.err != nil {
		return Snapshot{}, fmt.Errorf("read metrics: %w", rr.err)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	up := families[metricUp].GetMetric()
	switch {
	case len(up) == 0:
		return Snapshot{}, fmt.Errorf("%w: no %s sample: is the sockdiag collector registered?", ErrMalformed, metricUp)
	case len(up) > 1:
		return Snapshot{}, fmt.Errorf("%w: %s: duplicate series", ErrMalformed, metricUp)
	}
	switch v := value(up[0]); v {
	case 0:
		return Snapshot{Err: fmt.Errorf("%w: the process reports %s 0", ErrUnavailable, metricUp)}, nil
	case 1:
	default:
		return Snapshot{}, fmt.Errorf("%w: %s is %v, want 0 or 1", ErrMalformed, metricUp, v)
	}
	snap := Snapshot{Available: true}
	for name, counts := range map[string]*StateCounts{metricSockets: &snap.Sockets, metricUnowned: &snap.ListenerUnowned} {
		seen := map[State]bool{}
		for _, m := range families[name].GetMetric() {
			label, ok := stateLabel(m)
			if !ok {
				return Snapshot{}, fmt.Errorf("%w: %s: no state label", ErrMalformed, name)
			}
			st, ok := stateFromLabel(label)
			if !ok {
				continue
			}
			if seen[st] {
				return Snapshot{}, fmt.Errorf("%w: %s{state=%q}: duplicate series", ErrMalformed, name, label)
			}
			seen[st] = true
			v, err := toCount(value(m), math.MaxInt)
			if err != nil {
				return Snapshot{}, fmt.Errorf("%w: %s{state=%q}: %w", ErrMalformed, name, label, err)
			}
			counts[st] = int(v)
		}
	}
	var have [2]bool
	for i, c := range []struct {
		name string
		dst  *uint64
	}{{metricOverflows, &snap.ListenOverflows}, {metricDrops, &snap.ListenDrops}} {
		ms := families[c.name].GetMetric()
		if len(ms) == 0 {
			continue
		}
		if len(ms) > 1 {
			return Snapshot{}, fmt.Errorf("%w: %s: duplicate series", ErrMalformed, c.name)
		}
		v, err := toCount(value(ms[0]), math.MaxUint64)
		if err != nil {
			return Snapshot{}, fmt.Errorf("%w: %s: %w", ErrMalformed, c.name, err)
		}
		*c.dst, have[i] = v, true
	}
	snap.ListenStatsAvailable = have[0] && have[1]
	if !snap.ListenStatsAvailable {
		snap.ListenOverflows, snap.ListenDrops = 0, 0
	}
	return snap, nil
}

// readErr remembers a read error, which the parser would report as a parse error.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		r.err = err
	}
	return n, err
}

// value is a sample's value whatever its family's type.
func value(m *dto.Metric) float64 {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	default:
		return m.GetUntyped().GetValue()
	}
}

func stateLabel(m *dto.Metric) (string, bool) {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == "state" {
			return lp.GetValue(), true
		}
	}
	return "", false
}

// toCount converts a sample value to a count no larger than limit.
func toCount(v float64, limit uint64) (uint64, error) {
	if math.IsNaN(v) || v < 0 || v != math.Trunc(v) || v >= float64(limit) {
		return 0, fmt.Errorf("value %v is not a count", v)
	}
	return uint64(v), nil
}
