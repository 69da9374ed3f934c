package sockdiag

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// ParseMetrics reads the Collector's families back out of a Prometheus text exposition (format
// 0.0.4: what promhttp serves to a client that sends no Accept header; OpenMetrics and protobuf
// are not understood). Every other family is skipped without being parsed, so one odd line
// elsewhere on the page does no harm, and labels other than state are ignored.
//
// The result's Time is zero. If the page says gather_sockdiag_up 0 the Snapshot has Available
// false and an Err wrapping ErrUnavailable, and the returned error is nil: the page was read
// fine. The error is non-nil, wrapping ErrMalformed, when the page has no gather_sockdiag_up
// (the collector is not registered), a sample of ours cannot be parsed, or one appears twice;
// it wraps the reader's error when reading fails. A state missing from the page counts zero;
// an unknown state label, from a newer gather, is skipped.
func ParseMetrics(r io.Reader) (Snapshot, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var (
		snap          Snapshot
		up            = -1.0
		haveO, haveD  bool
		seen          = make(map[string]bool)
		sockets, unow StateCounts
	)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := splitName(line)
		switch name {
		case metricUp, metricSockets, metricUnowned, metricOverflows, metricDrops:
		default:
			continue
		}
		s, err := parseSample(rest)
		if err != nil {
			return Snapshot{}, fmt.Errorf("%w: metrics line %d: %s: %w", ErrMalformed, n, name, err)
		}
		key := name + "{" + s.state + "}"
		if seen[key] {
			return Snapshot{}, fmt.Errorf("%w: metrics line %d: %s: duplicate series", ErrMalformed, n, key)
		}
		seen[key] = true
		switch name {
		case metricUp:
			if s.value != 0 && s.value != 1 {
				return Snapshot{}, fmt.Errorf("%w: metrics line %d: %s is %v, want 0 or 1", ErrMalformed, n, name, s.value)
			}
			up = s.value
		case metricSockets, metricUnowned:
			if !s.hasState {
				return Snapshot{}, fmt.Errorf("%w: metrics line %d: %s: no state label", ErrMalformed, n, name)
			}
			st, ok := stateFromLabel(s.state)
			if !ok {
				continue
			}
			v, err := toCount(s.value, math.MaxInt)
			if err != nil {
				return Snapshot{}, fmt.Errorf("%w: metrics line %d: %s: %w", ErrMalformed, n, key, err)
			}
			if name == metricSockets {
				sockets[st] = int(v)
			} else {
				unow[st] = int(v)
			}
		case metricOverflows, metricDrops:
			v, err := toCount(s.value, math.MaxUint64)
			if err != nil {
				return Snapshot{}, fmt.Errorf("%w: metrics line %d: %s: %w", ErrMalformed, n, name, err)
			}
			if name == metricOverflows {
				snap.ListenOverflows, haveO = v, true
			} else {
				snap.ListenDrops, haveD = v, true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return Snapshot{}, fmt.Errorf("read metrics: %w", err)
	}
	switch up {
	case -1:
		return Snapshot{}, fmt.Errorf("%w: no %s sample: is the sockdiag collector registered?", ErrMalformed, metricUp)
	case 0:
		err := fmt.Errorf("%w: the process reports %s 0", ErrUnavailable, metricUp)
		return Snapshot{Err: err}, nil
	}
	snap.Available = true
	snap.Sockets, snap.ListenerUnowned = sockets, unow
	snap.ListenStatsAvailable = haveO && haveD
	if !snap.ListenStatsAvailable {
		snap.ListenOverflows, snap.ListenDrops = 0, 0
	}
	return snap, nil
}

// splitName splits a sample line into the metric name and the rest (labels, value, timestamp).
func splitName(line string) (name, rest string) {
	i := strings.IndexAny(line, "{ \t")
	if i < 0 {
		return line, ""
	}
	return line[:i], line[i:]
}

// sample is a parsed sample line after its name.
type sample struct {
	state    string
	hasState bool
	value    float64
}

// parseSample parses `{l1="v1",...} value [timestamp]`, keeping only the state label.
func parseSample(s string) (sample, error) {
	var out sample
	s = strings.TrimLeft(s, " \t")
	if strings.HasPrefix(s, "{") {
		labels, rest, err := parseLabels(s)
		if err != nil {
			return sample{}, err
		}
		out.state, out.hasState = labels[labelState]
		s = rest
	}
	f := strings.Fields(s)
	if len(f) != 1 && len(f) != 2 {
		return sample{}, fmt.Errorf("want a value and an optional timestamp, got %q", s)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return sample{}, fmt.Errorf("value: %w", err)
	}
	out.value = v
	return out, nil
}

var errLabels = errors.New("bad label set")

// parseLabels parses a label set `{name="value",...}` at the start of s, with the escapes \\, \"
// and \n in values and an optional trailing comma, and returns the labels and what follows "}".
func parseLabels(s string) (map[string]string, string, error) {
	labels := make(map[string]string)
	i := 1 // past '{'
	skipSpace := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
	}
	for {
		skipSpace()
		if i >= len(s) {
			return nil, "", fmt.Errorf("%w: no closing brace", errLabels)
		}
		if s[i] == '}' {
			return labels, s[i+1:], nil
		}
		start := i
		for i < len(s) && s[i] != '=' && s[i] != ' ' && s[i] != '\t' {
			i++
		}
		name := s[start:i]
		skipSpace()
		if name == "" || i >= len(s) || s[i] != '=' {
			return nil, "", fmt.Errorf("%w: want name=\"value\" at offset %d", errLabels, start)
		}
		i++
		skipSpace()
		if i >= len(s) || s[i] != '"' {
			return nil, "", fmt.Errorf("%w: label %s: value not quoted", errLabels, name)
		}
		i++
		var v strings.Builder
		for {
			if i >= len(s) {
				return nil, "", fmt.Errorf("%w: label %s: unterminated value", errLabels, name)
			}
			c := s[i]
			i++
			if c == '"' {
				break
			}
			if c == '\\' && i < len(s) {
				c = s[i]
				i++
				if c == 'n' {
					c = '\n'
				}
			}
			v.WriteByte(c)
		}
		labels[name] = v.String()
		skipSpace()
		if i < len(s) && s[i] == ',' {
			i++
		} else if i < len(s) && s[i] != '}' {
			return nil, "", fmt.Errorf("%w: want ',' or '}' after label %s", errLabels, name)
		}
	}
}

// toCount converts a sample value to a count no larger than limit.
func toCount(v float64, limit uint64) (uint64, error) {
	if math.IsNaN(v) || v < 0 || v != math.Trunc(v) || v >= float64(limit) {
		return 0, fmt.Errorf("value %v is not a count", v)
	}
	return uint64(v), nil
}
