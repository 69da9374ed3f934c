// Package hedge decides when a shard call is worth a second attempt on another replica ("The
// Tail at Scale", Dean & Barroso 2013): the delay after which a call without a first frame is
// hedged (Delay, a percentile of the shard's recent times to first frame), the token bucket that
// bounds hedges and retries together (Budget, like gRPC A6's retry throttling and Finagle's
// RetryBudget), and the policy that checks both and the per-shard deadline (Decide).
//
// grpc-go does not hedge (gRFC A6 hedging is not implemented, and under A6 a call is committed
// once its response headers arrive, too early for a streaming fan-out), so package fanout hedges
// itself, with what this package says.
package hedge

import (
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	DefaultPercentile   = 95
	DefaultWindow       = 30 * time.Second
	DefaultRefresh      = 5 * time.Second
	DefaultFloor        = time.Millisecond
	DefaultInitial      = 50 * time.Millisecond
	DefaultMinSamples   = 20
	DefaultBudget       = 0.05
	DefaultBudgetCap    = 10
	DefaultBudgetWindow = 10 * time.Second
)

// Off, as Config.Budget, turns hedging and budgeted retries off.
const Off = -1

// Config holds the hedging tunables; the zero value of a field means its default.
type Config struct {
	// Percentile of a shard's recent times to first frame after which a shard call that has
	// none yet is hedged. Default 95.
	Percentile float64
	// Window is how far back the times to first frame count; the delay is recomputed every
	// Refresh, when a new slice of the window starts. Defaults 30s and 5s.
	Window, Refresh time.Duration
	// Floor is the shortest delay. Default 1ms.
	Floor time.Duration
	// Initial is the delay while the window holds fewer than MinSamples times and no delay has
	// been computed yet. Defaults 50ms and 20.
	Initial    time.Duration
	MinSamples int
	// Budget is how many tokens each shard call deposits in the bucket that hedges and retries
	// spend one each from: the most extra shard calls hedging and retries may add, as a
	// fraction of the shard calls. Default 0.05 (5%); Off (any negative value) turns hedging and
	// budgeted retries off.
	Budget float64
	// BudgetWindow and BudgetCap bound the bucket: it holds at most what the shard calls of
	// the last BudgetWindow deposited, and at least BudgetCap tokens, so that a burst of late
	// calls (a stall makes every call in flight late at once) is paid for by the calls before
	// it, while a burst after a quiet spell is bounded by BudgetCap. It starts with BudgetCap.
	// Defaults 10s (Finagle's RetryBudget keeps its deposits as long) and 10.
	BudgetWindow time.Duration
	BudgetCap    float64
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Percentile <= 0 {
		c.Percentile = DefaultPercentile
	}
	durations := []struct {
		v   *time.Duration
		def time.Duration
	}{{&c.Window, DefaultWindow}, {&c.Refresh, DefaultRefresh}, {&c.Floor, DefaultFloor}, {&c.Initial, DefaultInitial},
		{&c.BudgetWindow, DefaultBudgetWindow}}
	for _, d := range durations {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if c.MinSamples <= 0 {
		c.MinSamples = DefaultMinSamples
	}
	if c.Budget == 0 {
		c.Budget = DefaultBudget
	}
	if c.BudgetCap <= 0 {
		c.BudgetCap = DefaultBudgetCap
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Enabled reports whether c hedges at all.
func (c Config) Enabled() bool { return c.Budget >= 0 }

// Buckets of the histogram: log-linear over microseconds, 8 per power of two (a bucket is at
// most 12.5% wide), exact below 8µs, up to 2^27µs (134s), which is above the longest shard
// timeout that matters; longer times go to the last bucket.
const (
	subBits    = 3
	subBuckets = 1 << subBits
	maxExp     = 27
	numBuckets = (maxExp-subBits+1)*subBuckets + subBuckets
)

func bucketOf(d time.Duration) int {
	us := uint64(max(d, 0) / time.Microsecond)
	if us < subBuckets {
		return int(us)
	}
	e := bits.Len64(us) - 1 // ≥ subBits
	if e > maxExp {
		return numBuckets - 1
	}
	return (e-subBits+1)*subBuckets + int(us>>(e-subBits)&(subBuckets-1))
}

// bucketTop is the upper bound of bucket i: a percentile is reported as the top of its bucket,
// so the delay errs long (fewer hedges), by at most 12.5%.
func bucketTop(i int) time.Duration {
	if i < subBuckets {
		return time.Duration(i+1) * time.Microsecond
	}
	e := i/subBuckets + subBits - 1
	sub := uint64(i % subBuckets)
	return time.Duration((subBuckets+sub+1)<<(e-subBits)) * time.Microsecond
}

// Delay is the hedge delay of one shard: the configured percentile of the times to first frame
// recorded over the last Window, as a ring of Window/Refresh slices of a histogram. Record and
// Current take no lock: an atomic add and a few atomic loads; the percentile is recomputed by the
// first Record of each new slice, under a lock that no other path takes.
type Delay struct {
	cfg     Config
	epoch   time.Time
	slices  int
	counts  []atomic.Uint32 // slices × numBuckets
	current atomic.Int64    // the number of the slice being filled (time since epoch / Refresh)
	delay   atomic.Int64    // the hedge delay, ns
	typical atomic.Int64    // the median, ns: what a hedge is expected to take to its first frame
	rotate  sync.Mutex
}

// NewDelay returns the Delay of a shard with no times recorded yet.
func NewDelay(cfg Config) *Delay {
	cfg = cfg.WithDefaults()
	n := max(int((cfg.Window+cfg.Refresh-1)/cfg.Refresh), 1)
	d := &Delay{cfg: cfg, epoch: cfg.Now(), slices: n, counts: make([]atomic.Uint32, n*numBuckets)}
	d.delay.Store(int64(max(cfg.Initial, cfg.Floor)))
	d.typical.Store(int64(cfg.Initial))
	return d
}

// Record adds a time to first frame.
func (d *Delay) Record(ttff time.Duration) {
	slice := int64(d.cfg.Now().Sub(d.epoch) / d.cfg.Refresh)
	if slice > d.current.Load() {
		d.advance(slice)
	}
	d.counts[int(slice%int64(d.slices))*numBuckets+bucketOf(ttff)].Add(1)
}

// Current is the hedge delay now.
func (d *Delay) Current() time.Duration { return time.Duration(d.delay.Load()) }

// Typical is the median time to first frame of the window, or Initial before there is one.
func (d *Delay) Typical() time.Duration { return time.Duration(d.typical.Load()) }

// advance starts slice, emptying the slices that fell out of the window, and recomputes the
// delay from the slices still in it.
func (d *Delay) advance(slice int64) {
	d.rotate.Lock()
	defer d.rotate.Unlock()
	cur := d.current.Load()
	if slice <= cur {
		return
	}
	for s := max(cur+1, slice-int64(d.slices)+1); s <= slice; s++ {
		base := int(s%int64(d.slices)) * numBuckets
		for i := range numBuckets {
			d.counts[base+i].Store(0)
		}
	}
	d.current.Store(slice)
	var sum [numBuckets]uint64
	var total uint64
	for s := range d.slices {
		for i := range numBuckets {
			c := uint64(d.counts[s*numBuckets+i].Load())
			sum[i] += c
			total += c
		}
	}
	if total < uint64(d.cfg.MinSamples) {
		return // too few to say; the last delay computed (or Initial) stays
	}
	d.delay.Store(int64(max(percentile(&sum, total, d.cfg.Percentile), d.cfg.Floor)))
	d.typical.Store(int64(percentile(&sum, total, 50)))
}

// percentile is the top of the bucket that holds the p-th percentile of total samples.
func percentile(sum *[numBuckets]uint64, total uint64, p float64) time.Duration {
	rank := uint64(math.Ceil(p / 100 * float64(total)))
	rank = min(max(rank, 1), total)
	var seen uint64
	for i, c := range sum {
		if seen += c; seen >= rank {
			return bucketTop(i)
		}
	}
	return bucketTop(numBuckets - 1)
}
