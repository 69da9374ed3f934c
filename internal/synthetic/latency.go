package synthetic

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// MaxLatency bounds every delay: the constructors refuse longer ones, [ParseLatency] reports
// them as errors, and a [LogNormal] draw above it is cut to it.
const MaxLatency = time.Hour

// Latency chooses the delay of each call. Next is called once per call, from the call's own
// goroutine, so implementations must be safe for concurrent use. The models of this package also
// implement fmt.Stringer, printing themselves in [ParseLatency]'s syntax.
type Latency interface {
	Next() time.Duration
}

// Fixed returns a Latency that is always d. It panics if d is negative or above [MaxLatency].
func Fixed(d time.Duration) Latency {
	if d < 0 || d > MaxLatency {
		panic(fmt.Sprintf("synthetic.Fixed: delay %v outside [0, %v]", d, MaxLatency))
	}
	return fixed(d)
}

type fixed time.Duration

func (f fixed) Next() time.Duration { return time.Duration(f) }
func (f fixed) String() string      { return "fixed:" + time.Duration(f).String() }

// LogNormal returns a Latency whose delays follow a log-normal distribution: median·e^(sigma·Z)
// for a standard normal Z. Half the delays are below median; sigma sets the tail (0.5 puts p99 at
// about 3.2×median, 1 at about 10×). The draws come from a pseudo-random generator seeded with
// seed, so the sequence of values returned by Next is the same on every run for the same seed;
// give each shard its own seed, or they will all be slow on the same calls. Draws above
// [MaxLatency] are cut to it. LogNormal panics if median is not positive or above MaxLatency, or
// if sigma is negative, infinite or NaN.
func LogNormal(median time.Duration, sigma float64, seed uint64) Latency {
	if median <= 0 || median > MaxLatency {
		panic(fmt.Sprintf("synthetic.LogNormal: median %v outside (0, %v]", median, MaxLatency))
	}
	if !(sigma >= 0) || math.IsInf(sigma, 1) {
		panic(fmt.Sprintf("synthetic.LogNormal: sigma %v is not a finite non-negative number", sigma))
	}
	return &logNormal{
		median: median,
		sigma:  sigma,
		rng:    rand.New(rand.NewPCG(seed, 0x6c6f676e6f726d)),
	}
}

type logNormal struct {
	median time.Duration
	sigma  float64

	mu  sync.Mutex
	rng *rand.Rand
}

func (l *logNormal) Next() time.Duration {
	l.mu.Lock()
	z := l.rng.NormFloat64()
	l.mu.Unlock()
	v := float64(l.median) * math.Exp(l.sigma*z)
	if v >= float64(MaxLatency) {
		return MaxLatency
	}
	return time.Duration(v)
}

func (l *logNormal) String() string {
	return "lognormal:" + l.median.String() + "," + strconv.FormatFloat(l.sigma, 'g', -1, 64)
}

// SlowOneIn returns a Latency that is base on most calls and factor×base on one call in every:
// the Next calls numbered every, 2·every, ... (counting from 1), shifted by seed mod every, so
// that shards with different seeds are not all slow on the same query. The choice is a counter,
// not a random draw: exactly one call in every is slow. It panics if every is below 1, base is
// negative, factor is below 1 or not finite, or factor×base is above [MaxLatency].
func SlowOneIn(every int, factor float64, base time.Duration, seed uint64) Latency {
	if every < 1 {
		panic(fmt.Sprintf("synthetic.SlowOneIn: every %d is below 1", every))
	}
	slow, err := slowDelay(factor, base)
	if err != nil {
		panic("synthetic.SlowOneIn: " + err.Error())
	}
	return &slowOneIn{every: uint64(every), factor: factor, base: base, slow: slow, phase: seed % uint64(every)}
}

// slowDelay returns factor×base, or an error saying why it is not allowed.
func slowDelay(factor float64, base time.Duration) (time.Duration, error) {
	switch {
	case !(factor >= 1) || math.IsInf(factor, 1):
		return 0, fmt.Errorf("factor %v is not a finite number of at least 1", factor)
	case base < 0:
		return 0, fmt.Errorf("base delay %v is negative", base)
	}
	slow := float64(base) * factor
	if slow > float64(MaxLatency) {
		return 0, fmt.Errorf("slow delay %v×%v is above %v", base, factor, MaxLatency)
	}
	return time.Duration(slow), nil
}

type slowOneIn struct {
	every, phase uint64
	factor       float64
	base, slow   time.Duration
	calls        atomic.Uint64
}

func (s *slowOneIn) Next() time.Duration {
	if (s.calls.Add(1)+s.phase)%s.every == 0 {
		return s.slow
	}
	return s.base
}

func (s *slowOneIn) String() string {
	return "slow:" + s.base.String() + ",1in" + strconv.FormatUint(s.every, 10) +
		",x" + strconv.FormatFloat(s.factor, 'g', -1, 64)
}
