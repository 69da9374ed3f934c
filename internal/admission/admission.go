package admission

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gatherproxy/gather/internal/peerid"
)

// DefaultMaxInFlight is MaxInFlight when it is not set.
const DefaultMaxInFlight = 256

// Config sets the bound. The zero value of a field means its default.
type Config struct {
	// MaxInFlight is how many queries may run at once, shared fairly among callers. Default 256.
	MaxInFlight int
	// MaxWait is how long a query may wait for a slot before it is shed. Default 50ms.
	MaxWait time.Duration
	// RetryAfter is the delay suggested to shed callers (google.rpc.RetryInfo). Default 100ms.
	RetryAfter time.Duration
	// SchedTarget, if positive, adds a second bound that follows the process's CPU (see
	// Limiter.adapt): on the queries admitted within the last freshFor (250ms) and still
	// running, where a query spends its CPU. When runnable goroutines wait longer than
	// SchedTarget for a CPU (the 99th percentile of the Go scheduler's latencies over the last
	// adaptInterval), the bound drops, down to MaxInFlight/minFraction, where it starts; when
	// they wait under half of it and the bound holds queries back, it grows, up to MaxInFlight.
	// MaxInFlight still bounds every query running. Default 0: MaxInFlight is the only bound.
	SchedTarget time.Duration
	// Weight, with SchedTarget, is how many units of the CPU bound a query takes, from its
	// request (at least 1; see ByTopK): the bound counts units, not queries, so that a few
	// queries that cost many times the usual one cannot overload the CPU while it admits them
	// by the dozen. Nil: every query weighs 1.
	Weight func(req any) int
}

func (c Config) withDefaults() Config {
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 50 * time.Millisecond
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = 100 * time.Millisecond
	}
	return c
}

// ErrShed is wrapped by the error of every query refused for lack of a slot.
var ErrShed = errors.New("proxy at capacity")

// ErrOverShare is also wrapped by the error of a query shed because its caller held its fair
// share or more while callers holding fewer waited.
var ErrOverShare = errors.New("caller over its fair share")

// The values of the reason label of gather_admission_shed_total.
const (
	ReasonFull      = "full"       // the caller was under its share; no slot freed within MaxWait
	ReasonOverShare = "over_share" // the caller held its share or more; freed slots went to others
	ReasonCPU       = "cpu"        // under its share, a slot was free, but the CPU bound (SchedTarget) was reached
)

// Limiter admits queries. Create it with New; it is safe for concurrent use. Close it once it
// admits no more, to stop its adaptation.
type Limiter struct {
	cfg  Config
	shed map[string]prometheus.Counter // by reason
	wait prometheus.Histogram
	// adaptation (Config.SchedTarget): its goroutine, stopped by Close
	stop    chan struct{}
	closing sync.Once
	stopped sync.WaitGroup
	sched   prometheus.Gauge // the last interval's 99th percentile, in seconds

	mu       sync.Mutex
	limit    int                   // the CPU bound on fresh slots now (SchedTarget only; MaxInFlight without)
	inFlight int                   // slots held
	waiting  int                   // queries waiting for a slot
	callers  map[peerid.ID]*caller // callers with demand: holding a slot or waiting for one
	queue    callerQueue           // callers with a query waiting, fewest slots held first
	seq      uint64                // arrival order of waiting queries
	spare    []*caller             // records of callers whose demand ended, for reuse
	// fresh slots, counted with SchedTarget only: held slots admitted within the last freshFor
	fresh   int              // in units of weight (Config.Weight)
	peak    int              // the most fresh units held since the last adaptation
	limited bool             // the CPU bound held back a query since the last adaptation
	recent  []admitted       // the slots admitted within freshFor, oldest first; recent[0] has number base
	base    uint64           // the number of recent[0]; slots are numbered as admitted
	now     func() time.Time // time.Now; tests set their own
}

// admitted is a slot admitted within the last freshFor, fresh until released or aged.
type admitted struct {
	at     time.Time
	c      *caller // its caller while fresh; nil once released or aged
	weight int
}

// caller is one caller with demand.
type caller struct {
	id    peerid.ID
	held  int
	fresh int     // the units of its fresh slots (SchedTarget)
	first *waiter // its waiting queries, oldest first
	last  *waiter
	index int // in Limiter.queue; -1 when it has no query waiting
}

// waiter is one query waiting for a slot.
type waiter struct {
	c          *caller
	weight     int
	seq        uint64
	ready      chan struct{} // closed when granted
	granted    bool
	slot       uint64 // the slot's number, once granted
	prev, next *waiter
}

// New returns a Limiter whose metrics are registered with reg.
func New(cfg Config, reg prometheus.Registerer) *Limiter {
	cfg = cfg.withDefaults()
	l := &Limiter{cfg: cfg, callers: make(map[peerid.ID]*caller), limit: cfg.MaxInFlight, stop: make(chan struct{}),
		now: time.Now}
	if cfg.SchedTarget > 0 {
		l.limit = l.floor() // and it grows as the queries that come need it and the CPU allows
	}
	f := promauto.With(reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gather_admission_limit_queries",
		Help: "With admission_sched_target, the bound on queries admitted in the last 250ms and still running, which follows the CPU: gather_admission_max_in_flight_queries, or less while the CPU is overloaded. Counted in units of weight: a query for top_k hits weighs 1 + top_k/40.",
	}, l.locked(func() float64 { return float64(l.limit) }))
	if cfg.SchedTarget > 0 {
		l.sched = f.NewGauge(prometheus.GaugeOpts{
			Name: "gather_admission_sched_latency_p99_seconds",
			Help: "The 99th percentile of how long the process's runnable goroutines waited for a CPU over the last adaptation interval; above admission_sched_target the bound is lowered.",
		})
		f.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gather_admission_fresh_queries",
			Help: "Queries admitted in the last 250ms and still running, which gather_admission_limit_queries bounds, in units of weight (a query for top_k hits weighs 1 + top_k/40).",
		}, l.locked(func() float64 { return float64(l.fresh) }))
		l.stopped.Add(1)
		go l.adaptLoop()
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gather_admission_in_flight_queries", Help: "Queries admitted and running now.",
	}, l.locked(func() float64 { return float64(l.inFlight) }))
	f.NewGauge(prometheus.GaugeOpts{
		Name: "gather_admission_max_in_flight_queries", Help: "The configured bound on queries running at once.",
	}).Set(float64(cfg.MaxInFlight))
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gather_admission_waiting_queries", Help: "Queries waiting for a slot now (each for at most admission_wait).",
	}, l.locked(func() float64 { return float64(l.waiting) }))
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gather_admission_callers",
		Help: "Callers with demand (holding a slot or waiting for one). Each caller's fair share is max_in_flight_queries divided by this.",
	}, l.locked(func() float64 { return float64(len(l.callers)) }))
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gather_admission_largest_caller_queries",
		Help: "The most slots one caller holds now; near max_in_flight_queries while others are shed means one caller has the proxy to itself.",
	}, l.locked(func() float64 {
		most := 0
		for _, c := range l.callers {
			most = max(most, c.held)
		}
		return float64(most)
	}))
	shed := f.NewCounterVec(prometheus.CounterOpts{
		Name: "gather_admission_shed_total",
		Help: "Queries refused with RESOURCE_EXHAUSTED, by reason: full (no slot freed within admission_wait), over_share (the caller held its fair share or more while callers holding fewer waited) or cpu (the bound that follows the CPU, admission_sched_target, held it back).",
	}, []string{"reason"})
	l.shed = map[string]prometheus.Counter{
		ReasonFull: shed.WithLabelValues(ReasonFull), ReasonOverShare: shed.WithLabelValues(ReasonOverShare),
		ReasonCPU: shed.WithLabelValues(ReasonCPU),
	}
	l.wait = f.NewHistogram(prometheus.HistogramOpts{
		Name:    "gather_admission_wait_seconds",
		Help:    "How long admitted or shed queries waited for a slot (0 for those admitted at once).",
		Buckets: []float64{.00001, .0001, .001, .005, .01, .025, .05, .1, .25},
	})
	return l
}

func (l *Limiter) locked(f func() float64) func() float64 {
	return func() float64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		return f()
	}
}

// Acquire waits for a slot for the caller of ctx (peerid.FromContext), at most MaxWait, and
// returns the function that frees it; calling that function more than once frees the slot once.
// It fails with a RESOURCE_EXHAUSTED status (wrapping ErrShed, and ErrOverShare when the caller
// was over its share, with RetryInfo) when no slot came to the caller in time, or with the
// status of ctx's error when ctx ends first. It can be called from an interceptor or from a
// handler that holds its slot beyond the handler's return, as long as release is called.
func (l *Limiter) Acquire(ctx context.Context) (release func(), err error) {
	return l.acquire(ctx, 1)
}

// acquire is Acquire for a query of the given weight (Config.Weight).
func (l *Limiter) acquire(ctx context.Context, weight int) (release func(), err error) {
	id := peerid.FromContext(ctx)
	l.mu.Lock()
	c := l.callers[id]
	if c == nil {
		c = l.newCallerLocked(id)
	}
	l.ageLocked()
	if l.waiting == 0 && l.roomLocked() {
		n := l.admitLocked(c, weight)
		l.mu.Unlock()
		l.wait.Observe(0)
		return l.releaser(c, n), nil
	}
	w := &waiter{c: c, weight: weight, seq: l.seq, ready: make(chan struct{})}
	l.seq++
	l.enqueueLocked(w)
	l.mu.Unlock()

	start := time.Now()
	timer := time.NewTimer(l.cfg.MaxWait)
	defer timer.Stop()
	for {
		select {
		case <-w.ready:
		case <-timer.C:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		l.mu.Lock()
		more := !w.granted && l.patientLocked(w, time.Since(start))
		l.mu.Unlock()
		if !more {
			break
		}
		timer.Reset(l.cfg.MaxWait)
	}
	waited := time.Since(start)
	l.wait.Observe(waited.Seconds())

	l.mu.Lock()
	if w.granted { // possibly just as the timer fired: a slot is a slot
		l.mu.Unlock()
		release = l.releaser(c, w.slot)
		if ctx.Err() != nil {
			release()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return release, nil
	}
	l.dequeueLocked(w)
	held, callers, cpu := c.held, len(l.callers), l.cfg.SchedTarget > 0 && l.inFlight < l.cfg.MaxInFlight
	limit, fresh := l.limit, c.fresh
	l.forgetIfIdleLocked(c)
	l.mu.Unlock()
	if ctx.Err() != nil {
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return nil, l.shedError(id, held, callers, cpu, limit, fresh)
}

// fairWaits is how many times MaxWait a query may wait in all when its caller holds less than
// its fair share (see patientLocked): 1s at the default MaxWait.
const fairWaits = 20

// patientLocked reports whether w, not granted after waiting waited, should go on waiting: its
// caller holds less than its fair share, w is the caller's oldest waiting query, and it has
// waited less than fairWaits × MaxWait. Such a query is next in line for a freed slot (or shares
// the line with other callers under their share), so waiting beats being shed: when the slots
// are held by long queries of heavier callers and free in bursts, a light caller shed after
// MaxWait and retrying would miss the bursts that fall between its tries, and could be shed for
// its whole deadline. One query per caller waits this way, so what waits is bounded by the
// callers, each for a bounded time; with more callers than slots nobody has a share to wait for.
// The share is of MaxInFlight, the slots, also while the CPU bound is lower: that bound admits
// a number of queries per freshFor, and a caller under its share of the slots is first in line
// for them.
func (l *Limiter) patientLocked(w *waiter, waited time.Duration) bool {
	c := w.c
	return c.first == w && c.held < l.cfg.MaxInFlight/len(l.callers) && waited < fairWaits*l.cfg.MaxWait
}

// roomLocked reports whether a query may be admitted now: a slot is free, and, with
// SchedTarget, the fresh units held are under the CPU bound. It notes when the CPU bound alone
// held the query back.
//
// A query's weight does not decide whether it is admitted, only how much it counts once it is:
// a heavy query admitted near the bound takes it over, and the queries after it wait until its
// units age out or it ends, as if it had been admitted in turns. Waiting for the heavy query's
// weight to fit instead holds every caller queued behind it (slots go in order) until the fresh
// units drain, and a query for 1000 hits (26 units) outweighs the bound at its floor (16): in
// one of three runs of gather chaos's incident with the shards slowed, where the hog's and the
// stallers' heavy queries arrive at the onset, the probe was shed for its whole 3s budget; with
// this rule, 5 of 5 runs were CLEAN.
func (l *Limiter) roomLocked() bool {
	if l.inFlight >= l.cfg.MaxInFlight {
		return false
	}
	if l.cfg.SchedTarget > 0 && l.fresh >= l.limit {
		l.limited = true
		return false
	}
	return true
}

// admitLocked gives c a slot of the given weight and returns its number (0 without
// SchedTarget, which numbers none).
func (l *Limiter) admitLocked(c *caller, weight int) uint64 {
	c.held++
	l.inFlight++
	if l.cfg.SchedTarget <= 0 {
		return 0
	}
	l.fresh += weight
	l.peak = max(l.peak, l.fresh)
	c.fresh += weight
	l.recent = append(l.recent, admitted{at: l.now(), c: c, weight: weight})
	return l.base + uint64(len(l.recent)) - 1
}

// ageLocked stops counting as fresh the slots admitted more than freshFor ago. With SchedTarget
// only.
func (l *Limiter) ageLocked() {
	if l.cfg.SchedTarget <= 0 || len(l.recent) == 0 {
		return
	}
	cutoff := l.now().Add(-freshFor)
	n := 0
	for n < len(l.recent) && l.recent[n].at.Before(cutoff) {
		l.unfreshLocked(&l.recent[n])
		n++
	}
	if n == 0 {
		return
	}
	l.base += uint64(n)
	if n == len(l.recent) {
		l.recent = l.recent[:0] // keep the array
	} else {
		l.recent = l.recent[n:]
	}
}

// unfreshLocked stops counting r as fresh, once: it was released or has aged.
func (l *Limiter) unfreshLocked(r *admitted) {
	if r.c == nil {
		return
	}
	l.fresh -= r.weight
	r.c.fresh -= r.weight
	r.c = nil
}

// releaser returns the function that frees one slot of c, numbered slot, once.
func (l *Limiter) releaser(c *caller, slot uint64) func() {
	var once sync.Once
	return func() { once.Do(func() { l.release(c, slot) }) }
}

// release frees one slot of c: it goes to the waiting caller holding the fewest slots, if any.
func (l *Limiter) release(c *caller, slot uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releaseLocked(c, slot)
}

func (l *Limiter) releaseLocked(c *caller, slot uint64) {
	if l.cfg.SchedTarget > 0 && slot >= l.base {
		l.unfreshLocked(&l.recent[slot-l.base])
	}
	c.held--
	if c.index >= 0 {
		heap.Fix(&l.queue, c.index)
	}
	l.inFlight--
	l.grantLocked()
	l.forgetIfIdleLocked(c)
}

// grantLocked hands free slots, within the bounds, to the waiting callers holding the fewest.
// After a release that is the slot just freed, unless the CPU bound was lowered below the fresh
// slots held.
func (l *Limiter) grantLocked() {
	for len(l.queue) > 0 && l.roomLocked() {
		next := l.queue[0]
		w := next.first
		// admitLocked before dequeueLocked, which re-sorts next if it has other queries waiting
		w.slot = l.admitLocked(next, w.weight)
		l.dequeueLocked(w)
		w.granted = true
		close(w.ready)
	}
}

func (l *Limiter) newCallerLocked(id peerid.ID) *caller {
	var c *caller
	if n := len(l.spare); n > 0 {
		c, l.spare = l.spare[n-1], l.spare[:n-1]
	} else {
		c = &caller{}
	}
	*c = caller{id: id, index: -1}
	l.callers[id] = c
	return c
}

// forgetIfIdleLocked drops c once it neither holds a slot nor waits for one.
func (l *Limiter) forgetIfIdleLocked(c *caller) {
	if c.held > 0 || c.first != nil {
		return
	}
	delete(l.callers, c.id)
	if len(l.spare) < 64 {
		*c = caller{index: -1}
		l.spare = append(l.spare, c)
	}
}

// enqueueLocked appends w to its caller's queue and queues the caller if it was not.
func (l *Limiter) enqueueLocked(w *waiter) {
	c := w.c
	w.prev = c.last
	if c.last != nil {
		c.last.next = w
	} else {
		c.first = w
	}
	c.last = w
	l.waiting++
	if c.index < 0 {
		heap.Push(&l.queue, c)
	}
}

// dequeueLocked removes w from its caller's queue, and the caller from l.queue when it has no
// other query waiting.
func (l *Limiter) dequeueLocked(w *waiter) {
	c := w.c
	wasFirst := c.first == w
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		c.first = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		c.last = w.prev
	}
	w.prev, w.next = nil, nil
	l.waiting--
	switch {
	case c.first == nil:
		heap.Remove(&l.queue, c.index)
	case wasFirst:
		heap.Fix(&l.queue, c.index) // its oldest query changed
	}
}

// shedError is a RESOURCE_EXHAUSTED status, with RetryInfo, that wraps ErrShed (and
// ErrOverShare). held and callers are the caller's slots and the callers with demand when it
// gave up; cpu says a slot was free, and the CPU bound, limit, held it back, while the caller
// held fresh of the fresh slots.
func (l *Limiter) shedError(id peerid.ID, held, callers int, cpu bool, limit, fresh int) error {
	cfg := l.cfg
	retry := cfg.RetryAfter
	if cpu && fresh*callers >= limit {
		retry = l.cpuRetryAfter(limit)
	}
	reason, msg := ReasonFull, fmt.Sprintf("%v: all %d query slots busy and none freed within %s; retry after %s",
		ErrShed, cfg.MaxInFlight, cfg.MaxWait, retry)
	switch {
	// At or over the share (held >= max/callers, in integers); a caller alone is never over it.
	case callers > 1 && held*callers >= cfg.MaxInFlight:
		reason = ReasonOverShare
		msg = fmt.Sprintf("%v: %v: %s holds %d of the %d query slots, its fair share while %d callers want slots is %.1f, "+
			"and the slots that freed within %s went to callers holding fewer; retry after %s",
			ErrShed, ErrOverShare, id, held, cfg.MaxInFlight, callers, float64(cfg.MaxInFlight)/float64(callers), cfg.MaxWait, retry)
	case cpu:
		reason = ReasonCPU
		msg = fmt.Sprintf("%v: the CPU is overloaded: at most %d units of query weight admitted per %s for now (admission_sched_target), "+
			"and none came free within %s; retry after %s", ErrShed, limit, freshFor, cfg.MaxWait, retry)
	}
	l.shed[reason].Inc()
	st := status.New(codes.ResourceExhausted, msg)
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)}); err == nil {
		st = d
	}
	return &shedError{st: st, overShare: reason == ReasonOverShare}
}

// maxCPURetryAfter caps the retry hint of a query shed by the CPU bound.
const maxCPURetryAfter = time.Second

// cpuRetryAfter is the retry hint of a query shed while the CPU bound was limit, when its caller
// held its share of the fresh slots or more: RetryAfter times MaxInFlight/limit, at most
// maxCPURetryAfter (and at least RetryAfter). A caller under its share, next in line, is told
// RetryAfter: with 1s for everyone, the probe of gather chaos, one query every 100ms, was
// shed on each of its three tries of some queries. Refusing costs
// CPU too, on both sides: in gather chaos, with the bound near its floor, 320 clients retrying
// every 100ms were refused four times for each query answered (79,863 against 18,844 in one
// run), with the clients on the same two cores. A longer hint the lower the bound is the
// server pushback of gRFC A6 (grpc-retry-pushback-ms), here as google.rpc.RetryInfo, which
// gather's callers honour.
func (l *Limiter) cpuRetryAfter(limit int) time.Duration {
	d := l.cfg.RetryAfter * time.Duration(l.cfg.MaxInFlight) / time.Duration(max(1, limit))
	return max(l.cfg.RetryAfter, min(d, maxCPURetryAfter))
}

type shedError struct {
	st        *status.Status
	overShare bool
}

func (e *shedError) Error() string { return e.st.Message() }
func (e *shedError) Unwrap() []error {
	if e.overShare {
		return []error{ErrShed, ErrOverShare}
	}
	return []error{ErrShed}
}
func (e *shedError) GRPCStatus() *status.Status { return e.st }

// callerQueue is a heap of the callers with a query waiting: the fewest slots held first, ties
// to the caller whose oldest waiting query came first.
type callerQueue []*caller

func (q callerQueue) Len() int { return len(q) }
func (q callerQueue) Less(i, j int) bool {
	if q[i].held != q[j].held {
		return q[i].held < q[j].held
	}
	return q[i].first.seq < q[j].first.seq
}
func (q callerQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *callerQueue) Push(x any) {
	c := x.(*caller)
	c.index = len(*q)
	*q = append(*q, c)
}
func (q *callerQueue) Pop() any {
	old := *q
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	c.index = -1
	return c
}
