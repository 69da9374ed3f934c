package synthetic

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ErrBadLatency is wrapped by every error of [ParseLatency].
var ErrBadLatency = errors.New("bad latency")

// LatencySyntax describes what [ParseLatency] accepts, for a flag's usage text.
const LatencySyntax = `none | D | fixed:D | lognormal:MEDIAN,SIGMA | slow:BASE,1inN,xF ` +
	`(e.g. fixed:2ms, lognormal:2ms,0.5, slow:2ms,1in100,x10)`

// ParseLatency parses a latency model from a flag value:
//
//	none, 0 or empty        no delay
//	2ms, fixed:2ms          always 2ms (any time.ParseDuration value)
//	lognormal:2ms,0.5       log-normal with median 2ms and sigma 0.5 ([LogNormal])
//	slow:2ms,1in100,x10     2ms, but one call in 100 takes 10×2ms = 20ms ([SlowOneIn])
//
// Spaces around the parts are ignored. seed seeds the random draws of lognormal and shifts which
// calls of slow are slow; give every shard its own. Delays must lie within [MaxLatency], sigma
// must be a finite number of at least 0, N a whole number of at least 1 and F a finite number of
// at least 1. Errors wrap [ErrBadLatency] and say which part is wrong. Every model returned
// prints itself (fmt.Stringer) in this syntax.
func ParseLatency(s string, seed uint64) (Latency, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "none" || s == "0" {
		return Fixed(0), nil
	}
	kind, args, ok := strings.Cut(s, ":")
	if !ok {
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("%w %q: want one of %s", ErrBadLatency, s, LatencySyntax)
		}
		if err := checkDelay("delay", d); err != nil {
			return nil, fmt.Errorf("%w %q: %w", ErrBadLatency, s, err)
		}
		return Fixed(d), nil
	}
	l, err := parseModel(strings.TrimSpace(kind), args, seed)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrBadLatency, s, err)
	}
	return l, nil
}

func parseModel(kind, args string, seed uint64) (Latency, error) {
	parts := strings.Split(args, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	switch kind {
	case "fixed":
		if len(parts) != 1 {
			return nil, errors.New("fixed takes one delay, e.g. fixed:2ms")
		}
		d, err := parseDelay("delay", parts[0])
		if err != nil {
			return nil, err
		}
		return Fixed(d), nil
	case "lognormal":
		if len(parts) != 2 {
			return nil, errors.New("lognormal takes a median and a sigma, e.g. lognormal:2ms,0.5")
		}
		median, err := parseDelay("median", parts[0])
		if err != nil {
			return nil, err
		}
		if median == 0 {
			return nil, errors.New("median must be above 0")
		}
		sigma, err := strconv.ParseFloat(parts[1], 64)
		if err != nil || sigma < 0 || math.IsInf(sigma, 0) || math.IsNaN(sigma) {
			return nil, fmt.Errorf("sigma %q is not a finite number of at least 0", parts[1])
		}
		return LogNormal(median, sigma, seed), nil
	case "slow":
		if len(parts) != 3 {
			return nil, errors.New("slow takes a base delay, 1inN and xF, e.g. slow:2ms,1in100,x10")
		}
		base, err := parseDelay("base delay", parts[0])
		if err != nil {
			return nil, err
		}
		n, ok := strings.CutPrefix(parts[1], "1in")
		every, err := strconv.Atoi(n)
		if !ok || err != nil || every < 1 {
			return nil, fmt.Errorf("%q is not 1inN with a whole N of at least 1, e.g. 1in100", parts[1])
		}
		f, ok := strings.CutPrefix(parts[2], "x")
		factor, err := strconv.ParseFloat(f, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("%q is not xF with a number F, e.g. x10", parts[2])
		}
		if _, err := slowDelay(factor, base); err != nil {
			return nil, err
		}
		return SlowOneIn(every, factor, base, seed), nil
	default:
		return nil, fmt.Errorf("unknown model %q: want fixed, lognormal or slow", kind)
	}
}

func parseDelay(what, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not a duration, e.g. 2ms", what, s)
	}
	return d, checkDelay(what, d)
}

func checkDelay(what string, d time.Duration) error {
	if d < 0 || d > MaxLatency {
		return fmt.Errorf("%s %v is outside [0, %v]", what, d, MaxLatency)
	}
	return nil
}
