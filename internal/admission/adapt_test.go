package admission

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"

	"github.com/gatherproxy/gather/internal/metrictest"
)

// adaptive returns a Limiter with a SchedTarget of 10ms, as if configured but without the
// goroutine that reads the runtime (the tests call adapt), its bound at cfg.MaxInFlight and its
// clock standing still.
func adaptive(cfg Config, reg prometheus.Registerer) *Limiter {
	l := New(cfg, reg)
	l.cfg.SchedTarget = 10 * time.Millisecond
	start := time.Now()
	l.now = func() time.Time { return start }
	return l
}

// bound is l's CPU bound, read under its lock.
func (l *Limiter) bound() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limit
}

// TestBoundFollowsScheduler: over SchedTarget the bound drops in proportion, by a tenth to a
// half, never below MaxInFlight/16; slots held over it are not handed on when they free;
// between half the target and the target it stays; under half it grows by a sixteenth and
// hands the new slots to the queries waiting at once (by a quarter under a quarter of it), if
// it held some back. The clock stands still: every slot is fresh.
func TestBoundFollowsScheduler(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	l := adaptive(Config{MaxInFlight: 16, MaxWait: 20 * time.Millisecond}, reg)
	limit := l.bound
	var releases []func()
	for range 16 {
		releases = append(releases, mustAcquire(t, l, 1))
	}
	l.adapt(11 * time.Millisecond) // a tenth at least
	if got := limit(); got != 14 {
		t.Fatalf("bound %d after an interval a little over the target, want 14", got)
	}
	l.adapt(12500 * time.Microsecond) // 10/12.5
	if got := limit(); got != 11 {
		t.Fatalf("bound %d after an interval 1.25 times the target, want 11", got)
	}
	l.limit = 16
	l.adapt(time.Second) // a half at most
	if got := limit(); got != 8 {
		t.Fatalf("bound %d after an interval 100 times the target, want 8", got)
	}
	l.limit = 12
	if got := metrictest.Sum(t, reg, "gather_admission_limit_queries", nil); got != 12 {
		t.Errorf("gather_admission_limit_queries %v, want 12", got)
	}
	releases[0]()
	_, err := l.Acquire(from(t.Context(), 2))
	if !errors.Is(err, ErrShed) || !strings.Contains(err.Error(), "at most 12 units of query weight admitted per 250ms") {
		t.Fatalf("with 15 held of a bound of 12: %v, want shed, naming the bound", err)
	}
	if got := retryHint(err); got != 100*time.Millisecond {
		t.Errorf("retry hint %v for a caller holding none of the slots, want RetryAfter", got)
	}
	_, err = l.Acquire(from(t.Context(), 1))
	if got, want := retryHint(err), 100*time.Millisecond*16/12; got != want {
		t.Errorf("retry hint %v for the caller holding the 15 slots, at a bound of 12 of 16, want RetryAfter x 16/12 = %v", got, want)
	}
	if got := metrictest.Sum(t, reg, "gather_admission_shed_total", map[string]string{"reason": ReasonCPU}); got != 2 {
		t.Errorf("gather_admission_shed_total{reason=cpu} %v, want 2", got)
	}
	for _, r := range releases[1:5] {
		r()
	}
	releases = append(releases[5:], mustAcquire(t, l, 2)) // 11 held: admitted at once
	l.adapt(7 * time.Millisecond)
	if got := limit(); got != 12 {
		t.Errorf("bound %d after an interval between half the target and the target, want it kept at 12", got)
	}
	for range 10 {
		l.adapt(time.Second)
	}
	if got := limit(); got != 1 {
		t.Errorf("bound %d after a long overload, want the floor 16/16 = 1", got)
	}

	// Under a quarter of the target, with queries held back: the bound grows by a quarter, and
	// the queries waiting get the new slots.
	l.cfg.MaxWait = time.Minute
	waiting := acquireMany(t.Context(), l, 3, 2)
	awaitWaiting(t, l, 2)
	for limit() < 14 {
		l.adapt(time.Millisecond)
	}
	for range 2 {
		o := <-waiting
		if o.err != nil {
			t.Fatal(o.err)
		}
		releases = append(releases, o.release)
	}
	// None held back: the bound does not grow, and stays within twice the fresh slots held.
	before := limit()
	for range 20 {
		l.adapt(time.Millisecond)
	}
	if got := limit(); got != before {
		t.Errorf("bound %d after intervals with no query held back, want it kept at %d", got, before)
	}
	for _, r := range releases {
		r()
	}
	assertIdle(t, l)
}

// TestPercentile: the upper bound of the bucket holding the quantile; an unbounded last bucket
// gives its lower bound; too few events give nothing.
func TestPercentile(t *testing.T) {
	t.Parallel()
	buckets := []float64{0, 0.001, 0.01, math.Inf(1)}
	for _, tc := range []struct {
		counts []uint64
		want   time.Duration
		ok     bool
	}{
		{[]uint64{99, 1, 0}, time.Millisecond, true},
		{[]uint64{90, 9, 1}, 10 * time.Millisecond, true},
		{[]uint64{0, 0, 100}, 10 * time.Millisecond, true},
		{[]uint64{40, 0, 0}, 0, false},
	} {
		var total uint64
		for _, c := range tc.counts {
			total += c
		}
		got, ok := percentile(buckets, tc.counts, total, 0.99)
		if got != tc.want || ok != tc.ok {
			t.Errorf("counts %v: %v %v, want %v %v", tc.counts, got, ok, tc.want, tc.ok)
		}
	}
}

// TestAdaptationStops: a Limiter with SchedTarget reads the scheduler in a goroutine of its own,
// which Close stops (goleak checks it at the end of the package's tests); Close twice is fine.
func TestAdaptationStops(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	l := New(Config{SchedTarget: 10 * time.Millisecond}, reg)
	var s schedSampler
	if !s.init() {
		t.Skip("this runtime has no " + schedMetric)
	}
	deadline := time.Now().Add(10 * time.Second)
	for busy := 0; testutil.ToFloat64(l.sched) == 0 && time.Now().Before(deadline); busy++ {
		ch := make(chan int)
		for i := range 100 { // scheduler events for the sampler to count
			go func() { ch <- i }()
		}
		for range 100 {
			<-ch
		}
		time.Sleep(10 * time.Millisecond)
	}
	if testutil.ToFloat64(l.sched) == 0 {
		t.Error("no scheduler latency read in 10s")
	}
	l.Close()
	l.Close()
}

// TestBoundCountsFreshSlots: the CPU bound counts only the slots admitted within freshFor and
// still held. A slot that ages past it makes room (at the next Acquire, or the next interval for
// the queries waiting); a fresh slot released makes room at once; an aged one released does not
// count twice. MaxInFlight still bounds every slot.
func TestBoundCountsFreshSlots(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	l := New(Config{MaxInFlight: 8, MaxWait: 20 * time.Millisecond}, reg)
	l.cfg.SchedTarget = 10 * time.Millisecond // as if configured, without the goroutine that reads the runtime
	var clock atomic.Int64
	start := time.Now()
	l.now = func() time.Time { return start.Add(time.Duration(clock.Load())) }
	later := func(d time.Duration) { clock.Add(int64(d)) }
	fresh := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.fresh
	}

	old := []func(){mustAcquire(t, l, 1), mustAcquire(t, l, 1)}
	l.adapt(time.Second)
	l.adapt(time.Second) // 8 -> 4 -> 2: the floor 8/16 is 1
	if _, err := l.Acquire(from(t.Context(), 2)); !errors.Is(err, ErrShed) || !strings.Contains(err.Error(), "CPU is overloaded") {
		t.Fatalf("2 fresh slots of a bound of 2: %v, want shed by the CPU bound", err)
	}
	later(freshFor + time.Millisecond)
	young := []func(){mustAcquire(t, l, 2), mustAcquire(t, l, 2)} // the first two have aged
	if got := fresh(); got != 2 {
		t.Fatalf("%d fresh slots, want 2", got)
	}
	old[0]() // aged: makes no room
	if got := fresh(); got != 2 {
		t.Fatalf("%d fresh slots after an aged slot was released, want 2", got)
	}
	young[0]() // fresh: room for one
	young = append(young[1:], mustAcquire(t, l, 3))

	// A query that waits gets the room that aging makes at the next interval.
	l.cfg.MaxWait = time.Minute
	waiting := acquireAsync(t.Context(), l, 4)
	awaitWaiting(t, l, 1)
	later(freshFor + time.Millisecond)
	l.adapt(7 * time.Millisecond) // between half the target and the target: the bound stays
	o := <-waiting
	if o.err != nil {
		t.Fatal(o.err)
	}
	young = append(young, o.release)
	if got := fresh(); got != 1 {
		t.Errorf("%d fresh slots, want the one just granted", got)
	}

	// Fresh or not, MaxInFlight bounds them all.
	l.cfg.MaxWait = 20 * time.Millisecond
	later(freshFor + time.Millisecond)
	for l.state().inFlight < 8 {
		later(freshFor + time.Millisecond)
		young = append(young, mustAcquire(t, l, 5))
	}
	later(freshFor + time.Millisecond)
	if _, err := l.Acquire(from(t.Context(), 6)); !errors.Is(err, ErrShed) || !strings.Contains(err.Error(), "all 8 query slots busy") {
		t.Fatalf("8 slots held, none fresh: %v, want shed by MaxInFlight", err)
	}
	for _, r := range append(old[1:], young...) {
		r()
	}
	later(freshFor + time.Millisecond)
	l.adapt(7 * time.Millisecond)
	if got := fresh(); got != 0 {
		t.Errorf("%d fresh slots with none held, want 0", got)
	}
	l.mu.Lock()
	recent := len(l.recent)
	l.mu.Unlock()
	if recent != 0 {
		t.Errorf("%d slots remembered after freshFor, want 0", recent)
	}
	assertIdle(t, l)
}

// TestBoundFollowsDemand: the CPU bound starts at its floor; it grows only in intervals in which
// it held a query back, and in one that held none back it comes down to twice the most fresh
// slots held, to the floor at least.
func TestBoundFollowsDemand(t *testing.T) {
	t.Parallel()
	started := New(Config{MaxInFlight: 64, SchedTarget: time.Hour}, prometheus.NewRegistry())
	started.mu.Lock()
	initial := started.limit // no query came: any interval has kept it at the floor
	started.mu.Unlock()
	started.Close()
	if initial != 4 {
		t.Errorf("bound %d at the start, want the floor 64/16 = 4", initial)
	}

	l := adaptive(Config{MaxInFlight: 64, MaxWait: 20 * time.Millisecond}, prometheus.NewRegistry())
	l.limit = l.floor()
	limit := l.bound
	var releases []func()
	for range 4 {
		releases = append(releases, mustAcquire(t, l, 1))
	}
	if _, err := l.Acquire(from(t.Context(), 1)); !errors.Is(err, ErrShed) || retryHint(err) != time.Second {
		t.Fatalf("4 fresh slots of a bound of 4 (of 64): %v, want shed, with a retry hint of 1s (100ms x 16, capped)", err)
	}
	l.adapt(time.Millisecond)
	if got := limit(); got != 5 {
		t.Fatalf("bound %d after an interval that held a query back, want 5", got)
	}
	l.adapt(time.Millisecond)
	l.adapt(4 * time.Millisecond)
	if got := limit(); got != 5 {
		t.Fatalf("bound %d after intervals that held none back, want 5", got)
	}
	releases = append(releases, mustAcquire(t, l, 1))
	if _, err := l.Acquire(from(t.Context(), 1)); !errors.Is(err, ErrShed) {
		t.Fatalf("5 fresh slots of a bound of 5: %v, want shed", err)
	}
	l.adapt(4 * time.Millisecond) // under half the target: a sixteenth, at least 1
	if got := limit(); got != 6 {
		t.Fatalf("bound %d, want 6", got)
	}
	for limit() < 10 { // held back each time: grows by a quarter under a quarter of the target
		for l.state().inFlight < limit() {
			releases = append(releases, mustAcquire(t, l, 1))
		}
		if _, err := l.Acquire(from(t.Context(), 1)); !errors.Is(err, ErrShed) {
			t.Fatalf("%d fresh slots of a bound of %d: %v, want shed", l.state().inFlight, limit(), err)
		}
		l.adapt(time.Millisecond)
	}
	for _, r := range releases[3:] {
		r()
	}
	releases = releases[:3]
	l.adapt(time.Millisecond) // the interval before held 10
	l.adapt(time.Millisecond) // this one 3
	if got := limit(); got != 6 {
		t.Errorf("bound %d with 3 fresh slots held and none held back, want 2 x 3", got)
	}
	for _, r := range releases {
		r()
	}
	l.adapt(time.Millisecond)
	l.adapt(time.Millisecond)
	if got := limit(); got != 4 {
		t.Errorf("bound %d with nothing held, want the floor 4", got)
	}
	assertIdle(t, l)
}

// topKRequest is a request that asks for k hits.
type topKRequest struct{ k uint32 }

func (r *topKRequest) GetTopK() uint32 { return r.k }

// recvStream is the grpc.ServerStream of a call whose one request asks for k hits.
type recvStream struct {
	fakeStream
	k uint32
}

func (s recvStream) RecvMsg(m any) error {
	m.(*topKRequest).k = s.k
	return nil
}

// TestBoundWeighsQueries: with Config.Weight, the CPU bound counts units, not queries; a
// server-streaming call is weighed by the request its handler receives, and is shed from
// RecvMsg; a query is admitted while the fresh units are under the bound, whatever its weight,
// which then counts in full.
func TestBoundWeighsQueries(t *testing.T) {
	t.Parallel()
	for k, want := range map[uint32]int{0: 1, 10: 1, 39: 1, 40: 2, 200: 6, 1000: 26} {
		if got := ByTopK(&topKRequest{k}); got != want {
			t.Errorf("ByTopK(top_k %d) = %d, want %d", k, got, want)
		}
	}
	if got := ByTopK("no top_k"); got != 1 {
		t.Errorf("ByTopK of a request without top_k = %d, want 1", got)
	}

	l := adaptive(Config{MaxInFlight: 256, MaxWait: 5 * time.Millisecond, Weight: ByTopK}, prometheus.NewRegistry())
	l.mu.Lock()
	l.limit = 16
	l.mu.Unlock()
	const service, method = "gather.query.v1.QueryService", "/gather.query.v1.QueryService/SearchStream"
	stream := l.StreamServerInterceptor(service)
	info := &grpc.StreamServerInfo{FullMethod: method, IsServerStream: true}
	unary := l.UnaryServerInterceptor(service)
	uinfo := &grpc.UnaryServerInfo{FullMethod: "/gather.query.v1.QueryService/Search"}

	// call runs one query for k hits from the caller at port until hold is closed; admitted
	// receives nil once its handler has its slot, or the error that ended it.
	hold := make(chan struct{})
	call := func(port int, k uint32, viaStream bool) <-chan error {
		admitted := make(chan error, 1)
		go func() {
			var err error
			if viaStream {
				err = stream(nil, recvStream{fakeStream{ctx: from(t.Context(), port)}, k}, info, func(_ any, ss grpc.ServerStream) error {
					var req topKRequest
					if err := ss.RecvMsg(&req); err != nil {
						return err
					}
					admitted <- nil
					<-hold
					return nil
				})
			} else {
				_, err = unary(from(t.Context(), port), &topKRequest{k}, uinfo, func(context.Context, any) (any, error) {
					admitted <- nil
					<-hold
					return nil, nil
				})
			}
			if err != nil {
				admitted <- err
			}
		}()
		return admitted
	}
	fresh := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.fresh
	}
	mustRun := func(port int, k uint32, viaStream bool) {
		t.Helper()
		if err := <-call(port, k, viaStream); err != nil {
			t.Fatalf("caller %d, top_k %d: %v", port, k, err)
		}
	}
	mustShed := func(port int, k uint32, viaStream bool) {
		t.Helper()
		if err := <-call(port, k, viaStream); !errors.Is(err, ErrShed) || !strings.Contains(err.Error(), "CPU is overloaded") {
			t.Fatalf("caller %d, top_k %d with %d of 16 units fresh: %v, want shed by the CPU bound", port, k, fresh(), err)
		}
	}

	mustRun(1, 200, true)
	mustRun(2, 200, true) // 12 units
	for range 4 {
		mustRun(3, 10, false) // 16 units
	}
	mustShed(4, 10, false)
	mustShed(5, 200, true)
	if got := fresh(); got != 16 {
		t.Fatalf("%d fresh units, want 16", got)
	}
	endAll := func() { // lets every handler return and waits for their slots
		t.Helper()
		close(hold)
		deadline := time.Now().Add(10 * time.Second)
		for l.state().inFlight != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d slots still held after every handler returned", l.state().inFlight)
			}
			time.Sleep(time.Millisecond)
		}
	}
	endAll()

	hold = make(chan struct{})
	for range 15 {
		mustRun(6, 10, false)
	}
	mustRun(7, 1000, true) // 15 units held: room for one more query, which weighs 26
	mustShed(8, 10, false)
	if got := fresh(); got != 41 {
		t.Fatalf("%d fresh units, want 41", got)
	}
	endAll()
	if got := fresh(); got != 0 {
		t.Errorf("%d fresh units with nothing held, want 0", got)
	}
	assertIdle(t, l)
}
