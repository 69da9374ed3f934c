package admission

import (
	"math"
	"runtime/metrics"
	"time"
)

const (
	// adaptInterval is how often the bound follows the scheduler's latencies.
	adaptInterval = 100 * time.Millisecond
	// minFraction: the bound is never lowered below MaxInFlight/minFraction (and 1).
	minFraction = 16
	// adaptMinEvents: an interval with fewer scheduler events than this is an idle CPU (p99 0).
	adaptMinEvents = 50
	// freshFor is how long an admitted query counts against the CPU bound: the time in which
	// a query does its CPU work (fan-out, the merge, and in the demo the shards' searches), well
	// over a healthy query's few milliseconds. Past it, a query is waiting for a slow shard or
	// for its caller to read, and costs no CPU.
	freshFor = 250 * time.Millisecond
	// schedMetric is the Go runtime's histogram of the time goroutines spent runnable before they
	// ran.
	schedMetric = "/sched/latencies:seconds"
)

// adaptLoop adapts the bound every adaptInterval until Close.
func (l *Limiter) adaptLoop() {
	defer l.stopped.Done()
	var s schedSampler
	if !s.init() { // a runtime without the metric: MaxInFlight is the only bound
		l.mu.Lock()
		l.limit = l.cfg.MaxInFlight
		l.mu.Unlock()
		return
	}
	t := time.NewTicker(adaptInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		p99, ok := s.p99()
		if ok {
			l.sched.Set(p99.Seconds())
		}
		l.adapt(p99) // too few events: the CPU is idle, 0
	}
}

// adapt moves the CPU bound after an interval whose scheduler latencies had p99 as their 99th
// percentile:
//
//   - when p99 is over Config.SchedTarget, down in proportion (target/p99), by a half at most
//     and a tenth at least;
//   - else, if the bound held back no query in the interval, down to twice the most fresh
//     slots held in it: the bound follows the traffic down, so that a burst after a lull meets
//     a bound sized to the lull rather than one it grew to long ago (the congestion-window
//     validation of TCP, RFC 7661);
//   - else, when p99 is under a quarter of the target, up by a quarter, and under half of it up
//     by a sixteenth, to MaxInFlight at most;
//
// never below MaxInFlight/minFraction, where it also starts. Either way the slots admitted more
// than freshFor ago stop counting against it, and what room that and a higher bound make goes
// to the queries waiting at once.
//
// Why the scheduler: in a process whose CPU is overloaded, every goroutine waits its turn in the
// run queues, and each query's path is dozens of such turns (its handler, one goroutine per shard
// call, the transport's readers and writers): the wait adds up to seconds and queries miss their
// per-shard deadlines, degraded, although nothing is wrong with any shard. Admitting fewer
// queries sheds the excess, each with RESOURCE_EXHAUSTED and a retry hint, and keeps the ones
// admitted whole. The reduction is multiplicative and fast, the growth slower, the shape of
// TCP's congestion control and of Netflix's concurrency-limits.
//
// Why it starts low and follows the traffic down: at the onset of gather chaos's incident, 320
// clients arrive within a second at a process that was idle. A bound at MaxInFlight let 256
// queries in at once, some twenty runnable goroutines each; the scheduler's p99 went to 200ms
// for two intervals, every query of the first three seconds took 1-2s and some missed their
// per-shard deadline, before the bound, cut by half per interval, came down.
//
// Why only the fresh slots: a query spends its CPU at its start. One that has run freshFor is
// waiting, for a slow shard or for its caller to read its answer, and costs no CPU. The first
// version bounded every slot, and in gather chaos's incident with the shards slowed (one
// replica each), where queries hold their slots 2s waiting for the slowed shards and a hog's
// unread streams hold theirs for seconds, the bound fell to its floor of 16 slots, all held by
// waiting queries: nothing was admitted until one of them ended, and the probe, one query every
// 100ms, was shed for its whole budget in each of five runs. Counting fresh slots, the bound is
// on the queries that enter per freshFor, and a light caller is first in line for them (slots
// go to the waiting caller holding the fewest).
//
// Why weights (Config.Weight): at the onset of gather chaos's incident with two replicas per
// shard, the hog opens 256 streams for 200 hits of a query that matches nearly every passage,
// each costing the shards some 27 times a worker's query. Counted one each, the 16 fresh slots of
// the floor admitted enough of them to keep the scheduler's p99 at 168-400ms for three seconds,
// every query of those seconds took 1-2s, and calls that had landed on the slowed replica found
// the healthy one as slow and missed their per-shard deadline (degraded answers in 3 runs of 15).
// Weighed by top_k, the highest p99 of the incident's first 25s was 84-201ms in 15 runs,
// and no answer was degraded in any of them.
func (l *Limiter) adapt(p99 time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	target := l.cfg.SchedTarget
	switch {
	case p99 > target:
		f := min(max(float64(target)/float64(p99), 0.5), 0.9)
		l.limit = max(l.floor(), int(float64(l.limit)*f))
	case !l.limited:
		l.limit = max(l.floor(), min(l.limit, 2*l.peak))
	case p99 < target/4:
		l.limit = min(l.cfg.MaxInFlight, l.limit+max(1, l.limit/4))
	case p99 < target/2:
		l.limit = min(l.cfg.MaxInFlight, l.limit+max(1, l.limit/16))
	}
	l.ageLocked()
	l.limited, l.peak = false, l.fresh
	l.grantLocked()
}

// floor is the lowest the CPU bound goes, MaxInFlight/minFraction (and 1).
func (l *Limiter) floor() int { return max(1, l.cfg.MaxInFlight/minFraction) }

// Close stops the adaptation of the bound (Config.SchedTarget) and waits for it to end. The
// Limiter still admits queries, with the bound it has.
func (l *Limiter) Close() {
	l.closing.Do(func() { close(l.stop) })
	l.stopped.Wait()
}

// schedSampler reads the scheduler's latency histogram and gives the 99th percentile of what was
// added to it since its last reading.
type schedSampler struct {
	sample []metrics.Sample
	prev   []uint64
	delta  []uint64
}

// init takes the first reading; it reports false if the runtime has no such metric.
func (s *schedSampler) init() bool {
	s.sample = []metrics.Sample{{Name: schedMetric}}
	metrics.Read(s.sample)
	if s.sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		return false
	}
	h := s.sample[0].Value.Float64Histogram()
	s.prev = append([]uint64(nil), h.Counts...)
	s.delta = make([]uint64, len(h.Counts))
	return true
}

// p99 is the 99th percentile of the latencies since the last call (the upper bound of its
// bucket), or false if there were fewer than adaptMinEvents.
func (s *schedSampler) p99() (time.Duration, bool) {
	metrics.Read(s.sample)
	h := s.sample[0].Value.Float64Histogram()
	if len(h.Counts) != len(s.prev) {
		return 0, false
	}
	var total uint64
	for i, c := range h.Counts {
		s.delta[i] = c - s.prev[i]
		total += s.delta[i]
	}
	copy(s.prev, h.Counts)
	return percentile(h.Buckets, s.delta, total, 0.99)
}

// percentile is the upper bound of the bucket (of buckets, boundaries as in
// metrics.Float64Histogram) that holds the q-quantile of counts, or false if total is under
// adaptMinEvents. An unbounded last bucket gives its lower bound.
func percentile(buckets []float64, counts []uint64, total uint64, q float64) (time.Duration, bool) {
	if total < adaptMinEvents {
		return 0, false
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var cum uint64
	for i, c := range counts {
		if cum += c; cum >= rank {
			b := buckets[i+1]
			if math.IsInf(b, 1) {
				b = buckets[i]
			}
			return time.Duration(b * float64(time.Second)), true
		}
	}
	return 0, false
}
