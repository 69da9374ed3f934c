package admission

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// from returns a context whose caller is the connection from 127.0.0.1:port.
func from(ctx context.Context, port int) context.Context {
	return peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}})
}

// state is the limiter's bookkeeping, read under its lock.
type state struct {
	inFlight, waiting, callers int
	held                       map[int]int // by port
}

func (l *Limiter) state() state {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := state{inFlight: l.inFlight, waiting: l.waiting, callers: len(l.callers), held: map[int]int{}}
	for id, c := range l.callers {
		var port int
		if _, err := fmt.Sscanf(id.Name[strings.LastIndexByte(id.Name, ':')+1:], "%d", &port); err != nil {
			panic(err)
		}
		s.held[port] = c.held
	}
	return s
}

// awaitWaiting polls until n queries wait; it fails the test after 10s.
func awaitWaiting(t *testing.T, l *Limiter, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.state().waiting != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d queries waiting, want %d", l.state().waiting, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// assertIdle checks that every slot came back and no caller is left.
func assertIdle(t *testing.T, l *Limiter) {
	t.Helper()
	if s := l.state(); s.inFlight != 0 || s.waiting != 0 || s.callers != 0 || len(l.queue) != 0 {
		t.Errorf("not idle: %+v, %d callers queued", s, len(l.queue))
	}
}

// acquireAsync starts Acquire for the caller at port and delivers the outcome on the channel.
type outcome struct {
	release func()
	err     error
}

func acquireAsync(ctx context.Context, l *Limiter, port int) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		r, err := l.Acquire(from(ctx, port))
		ch <- outcome{r, err}
	}()
	return ch
}

// acquireMany starts n Acquires for the caller at port and delivers their outcomes, in the
// order they finish, on the channel.
func acquireMany(ctx context.Context, l *Limiter, port, n int) <-chan outcome {
	ch := make(chan outcome, n)
	for range n {
		go func() {
			r, err := l.Acquire(from(ctx, port))
			ch <- outcome{r, err}
		}()
	}
	return ch
}

func mustAcquire(t *testing.T, l *Limiter, port int) func() {
	t.Helper()
	r, err := l.Acquire(from(t.Context(), port))
	if err != nil {
		t.Fatalf("caller %d: %v", port, err)
	}
	return r
}

// retryHint is the RetryInfo delay of err's status, 0 without one.
func retryHint(err error) time.Duration {
	for _, d := range status.Convert(err).Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			return r.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

func TestShedsPastTheBound(t *testing.T) {
	t.Parallel()
	l := New(Config{MaxInFlight: 2, MaxWait: 20 * time.Millisecond, RetryAfter: 250 * time.Millisecond}, prometheus.NewRegistry())
	r1 := mustAcquire(t, l, 1)
	r2 := mustAcquire(t, l, 1)
	_, err := l.Acquire(from(t.Context(), 1))
	if !errors.Is(err, ErrShed) || errors.Is(err, ErrOverShare) {
		t.Fatalf("third query: got %v, want ErrShed (full: a caller alone is never over its share)", err)
	}
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "all 2 query slots busy") {
		t.Errorf("got %v, want ResourceExhausted saying the proxy is full", st)
	}
	if got := retryHint(err); got != 250*time.Millisecond {
		t.Errorf("retry hint %v, want 250ms", got)
	}
	if got := testutil.ToFloat64(l.shed[ReasonFull]); got != 1 {
		t.Errorf("full sheds %v, want 1", got)
	}
	if s := l.state(); s.inFlight != 2 || s.waiting != 0 {
		t.Errorf("after the shed: %+v, want 2 in flight, none waiting", s)
	}
	r1()
	r3 := mustAcquire(t, l, 1)
	r2()
	r3()
	assertIdle(t, l)
}

// TestLightCallerNotStarved: a heavy caller holds every slot and has more queries queued than
// there are slots; the next slot that frees goes to a light caller that asked later.
func TestLightCallerNotStarved(t *testing.T) {
	t.Parallel()
	const slots = 4
	l := New(Config{MaxInFlight: slots, MaxWait: time.Minute}, prometheus.NewRegistry())
	const heavy, light = 1, 2
	var held []func()
	for range slots {
		held = append(held, mustAcquire(t, l, heavy)) // alone, it may use every slot
	}
	var queued []<-chan outcome
	for i := range slots {
		queued = append(queued, acquireAsync(t.Context(), l, heavy))
		awaitWaiting(t, l, i+1) // in this order
	}
	lightGot := acquireAsync(t.Context(), l, light)
	awaitWaiting(t, l, slots+1)

	held[0]() // the heavy caller's queries waited longer, but the light caller holds fewer
	o := <-lightGot
	if o.err != nil {
		t.Fatalf("light caller: %v", o.err)
	}
	if s := l.state(); s.held[light] != 1 || s.held[heavy] != slots-1 || s.waiting != slots {
		t.Fatalf("after one release: %+v, want light 1, heavy %d, %d waiting", s, slots-1, slots)
	}
	// The light caller asks again: it holds 1, the heavy one 3, so it is first again.
	lightAgain := acquireAsync(t.Context(), l, light)
	awaitWaiting(t, l, slots+1)
	held[1]()
	o2 := <-lightAgain
	if o2.err != nil {
		t.Fatalf("light caller, second query: %v", o2.err)
	}
	// Now 2 and 2: the heavy caller's oldest query wins the tie.
	held[2]()
	first := <-queued[0]
	if first.err != nil {
		t.Fatalf("heavy caller's oldest query: %v", first.err)
	}
	for _, r := range []func(){held[3], o.release, o2.release, first.release} {
		r()
	}
	for _, q := range queued[1:] {
		res := <-q
		if res.err != nil {
			t.Fatalf("heavy caller: %v", res.err)
		}
		res.release()
	}
	assertIdle(t, l)
}

// TestLightCallerWaitsForItsShare: a caller under its fair share is next in line for a slot, so
// its oldest query waits past MaxWait (up to fairWaits times it) rather than being shed while the
// heavy caller's long queries hold every slot; its other queries, and a caller alone at the
// bound, are shed after MaxWait as before.
func TestLightCallerWaitsForItsShare(t *testing.T) {
	t.Parallel()
	const wait = 50 * time.Millisecond
	l := New(Config{MaxInFlight: 2, MaxWait: wait}, prometheus.NewRegistry())
	const heavy, light = 1, 2
	h1, h2 := mustAcquire(t, l, heavy), mustAcquire(t, l, heavy)
	start := time.Now()
	lightGot := acquireAsync(t.Context(), l, light)
	awaitWaiting(t, l, 1)
	// A second query of the light caller is not its oldest: shed after MaxWait.
	if _, err := l.Acquire(from(t.Context(), light)); !errors.Is(err, ErrShed) {
		t.Fatalf("light caller's second query: got %v, want shed", err)
	}
	for time.Since(start) < 3*wait {
		select {
		case o := <-lightGot:
			t.Fatalf("light caller under its share ended after %s (MaxWait %s): %v", time.Since(start), wait, o.err)
		case <-time.After(time.Millisecond):
		}
	}
	h1()
	o := <-lightGot
	if o.err != nil {
		t.Fatalf("light caller: %v", o.err)
	}
	// 1 and 1: the light caller is at its share now, so its next query is shed after MaxWait;
	// and a third caller's share would be 2/3 of a slot: with more callers than slots nobody
	// has a share to wait for.
	if _, err := l.Acquire(from(t.Context(), light)); !errors.Is(err, ErrShed) {
		t.Fatalf("light caller at its share: got %v, want shed", err)
	}
	if _, err := l.Acquire(from(t.Context(), 3)); !errors.Is(err, ErrShed) {
		t.Fatalf("third caller: got %v, want shed", err)
	}
	h2()
	o.release()
	assertIdle(t, l)
}

// TestFairWaitIsBounded: a caller under its share that no slot comes to is shed after fairWaits
// times MaxWait, with the full reason.
func TestFairWaitIsBounded(t *testing.T) {
	t.Parallel()
	const wait = 5 * time.Millisecond
	l := New(Config{MaxInFlight: 2, MaxWait: wait}, prometheus.NewRegistry())
	h1, h2 := mustAcquire(t, l, 1), mustAcquire(t, l, 1)
	start := time.Now()
	_, err := l.Acquire(from(t.Context(), 2))
	if !errors.Is(err, ErrShed) || errors.Is(err, ErrOverShare) {
		t.Fatalf("got %v, want shed as full", err)
	}
	if took := time.Since(start); took < fairWaits*wait {
		t.Errorf("shed after %s, want after the fair wait, %s", took, fairWaits*wait)
	}
	h1()
	h2()
	assertIdle(t, l)
}

// TestSharesRebalance: one caller alone takes every slot; two callers that arrive share the
// slots it frees equally; when one of them leaves, the other gets its slots, and a newcomer
// gets the next one.
func TestSharesRebalance(t *testing.T) {
	t.Parallel()
	const slots = 6
	l := New(Config{MaxInFlight: slots, MaxWait: time.Minute}, prometheus.NewRegistry())
	const a, b, c, d = 1, 2, 3, 4
	var aHeld []func()
	for range slots {
		aHeld = append(aHeld, mustAcquire(t, l, a))
	}
	cCtx, cLeaves := context.WithCancel(t.Context())
	defer cLeaves()
	bQ, cQ := acquireMany(t.Context(), l, b, slots), acquireMany(cCtx, l, c, slots)
	awaitWaiting(t, l, 2*slots)
	for _, r := range aHeld { // a is done: its slots go to b and c in turn
		r()
	}
	if s := l.state(); s.held[b] != slots/2 || s.held[c] != slots/2 || s.held[a] != 0 {
		t.Fatalf("after a left: %+v, want b and c at %d each", s.held, slots/2)
	}
	var bHeld, cHeld []func()
	for range slots / 2 {
		bHeld = append(bHeld, (<-bQ).release)
		cHeld = append(cHeld, (<-cQ).release)
	}
	// c leaves: its waiting queries give up, its slots go to b's waiting queries.
	cLeaves()
	for range slots / 2 {
		if o := <-cQ; status.Code(o.err) != codes.Canceled {
			t.Fatalf("c's waiting query: got %v, want Canceled", o.err)
		}
	}
	for _, r := range cHeld {
		r()
	}
	if s := l.state(); s.held[b] != slots || s.waiting != 0 || s.callers != 1 {
		t.Fatalf("after c left: %+v, want b holding every slot", s)
	}
	for range slots / 2 {
		bHeld = append(bHeld, (<-bQ).release)
	}
	dGot := acquireAsync(t.Context(), l, d)
	awaitWaiting(t, l, 1)
	bHeld[0]()
	o := <-dGot
	if o.err != nil {
		t.Fatal(o.err)
	}
	o.release()
	for _, r := range bHeld[1:] {
		r()
	}
	assertIdle(t, l)
}

// TestShedReasons: a caller over its share is told so; one under it is told the proxy is full.
func TestShedReasons(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	l := New(Config{MaxInFlight: 4, MaxWait: 5 * time.Millisecond}, reg)
	const heavy, light = 1, 2
	var held []func()
	for range 3 {
		held = append(held, mustAcquire(t, l, heavy))
	}
	held = append(held, mustAcquire(t, l, light))
	_, err := l.Acquire(from(t.Context(), heavy))
	if !errors.Is(err, ErrOverShare) || !errors.Is(err, ErrShed) {
		t.Errorf("heavy caller: got %v, want ErrOverShare", err)
	}
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "conn:127.0.0.1:1 holds 3 of the 4 query slots") ||
		!strings.Contains(msg, "fair share while 2 callers want slots is 2.0") {
		t.Errorf("heavy caller's message does not say why: %q", msg)
	}
	_, err = l.Acquire(from(t.Context(), light))
	if !errors.Is(err, ErrShed) || errors.Is(err, ErrOverShare) {
		t.Errorf("light caller: got %v, want ErrShed, full", err)
	}
	if f, o := testutil.ToFloat64(l.shed[ReasonFull]), testutil.ToFloat64(l.shed[ReasonOverShare]); f != 1 || o != 1 {
		t.Errorf("sheds: full %v, over_share %v; want 1 and 1", f, o)
	}
	for _, r := range held {
		r()
	}
	assertIdle(t, l)
}

func TestCallerGivesUpWhileWaiting(t *testing.T) {
	t.Parallel()
	l := New(Config{MaxInFlight: 1, MaxWait: time.Minute}, prometheus.NewRegistry())
	r1 := mustAcquire(t, l, 1)
	ctx, cancel := context.WithCancel(t.Context())
	got := acquireAsync(ctx, l, 2)
	awaitWaiting(t, l, 1)
	cancel()
	if o := <-got; status.Code(o.err) != codes.Canceled || errors.Is(o.err, ErrShed) {
		t.Fatalf("got %v, want Canceled (not a shed)", o.err)
	}
	if s := l.state(); s.waiting != 0 || s.callers != 1 {
		t.Errorf("after giving up: %+v, want nothing waiting and only the holder left", s)
	}
	r1()
	assertIdle(t, l)
}

// TestGrantedAsCallerGivesUp: a slot handed to a waiting query whose caller has just given up
// is passed on, not kept.
func TestGrantedAsCallerGivesUp(t *testing.T) {
	t.Parallel()
	l := New(Config{MaxInFlight: 1, MaxWait: time.Minute}, prometheus.NewRegistry())
	mustAcquire(t, l, 1) // freed below, by hand
	ctx, cancel := context.WithCancel(t.Context())
	got := acquireAsync(ctx, l, 2)
	awaitWaiting(t, l, 1)
	l.mu.Lock() // the waiter cannot look at its grant before both have happened
	cancel()
	var holder *caller
	for _, c := range l.callers {
		if c.held == 1 {
			holder = c
		}
	}
	l.releaseLocked(holder, 0) // hands the slot to the waiter
	l.mu.Unlock()
	if o := <-got; status.Code(o.err) != codes.Canceled {
		t.Fatalf("got %v, want Canceled", o.err)
	}
	assertIdle(t, l)
}

// TestNoSlotLeaks races releases against callers giving up, timing out and being admitted, on
// every path, and checks that every slot comes back. Which path a query takes depends on the
// scheduler; the assertions do not.
func TestNoSlotLeaks(t *testing.T) {
	t.Parallel()
	l := New(Config{MaxInFlight: 3, MaxWait: 200 * time.Microsecond}, prometheus.NewRegistry())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 300 {
				ctx, cancel := context.WithCancel(t.Context())
				if i%3 == 0 {
					go cancel() // gives up while waiting, or after it was granted a slot
				}
				r, err := l.Acquire(from(ctx, g%4))
				if err == nil {
					r()
					r() // a second call frees nothing
				}
				cancel()
			}
		})
	}
	wg.Wait()
	assertIdle(t, l)
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	l := New(Config{MaxInFlight: 3, MaxWait: time.Minute}, reg)
	a1 := mustAcquire(t, l, 1)
	a2 := mustAcquire(t, l, 1)
	b1 := mustAcquire(t, l, 2)
	waiting := acquireAsync(t.Context(), l, 3)
	awaitWaiting(t, l, 1)
	want := `
# HELP gather_admission_callers Callers with demand (holding a slot or waiting for one). Each caller's fair share is max_in_flight_queries divided by this.
# TYPE gather_admission_callers gauge
gather_admission_callers 3
# HELP gather_admission_in_flight_queries Queries admitted and running now.
# TYPE gather_admission_in_flight_queries gauge
gather_admission_in_flight_queries 3
# HELP gather_admission_largest_caller_queries The most slots one caller holds now; near max_in_flight_queries while others are shed means one caller has the proxy to itself.
# TYPE gather_admission_largest_caller_queries gauge
gather_admission_largest_caller_queries 2
# HELP gather_admission_waiting_queries Queries waiting for a slot now (each for at most admission_wait).
# TYPE gather_admission_waiting_queries gauge
gather_admission_waiting_queries 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gather_admission_callers",
		"gather_admission_in_flight_queries", "gather_admission_largest_caller_queries", "gather_admission_waiting_queries"); err != nil {
		t.Error(err)
	}
	a1()
	o := <-waiting
	for _, r := range []func(){a2, b1, o.release} {
		r()
	}
	assertIdle(t, l)
}

func TestInterceptorGuardsOnlyNamedServices(t *testing.T) {
	t.Parallel()
	l := New(Config{MaxInFlight: 1, MaxWait: time.Millisecond}, prometheus.NewRegistry())
	hold := mustAcquire(t, l, 1)
	defer hold()
	ic := l.UnaryServerInterceptor("gather.query.v1.QueryService")
	handler := func(context.Context, any) (any, error) { return "ok", nil }
	if _, err := ic(from(t.Context(), 2), nil, &grpc.UnaryServerInfo{FullMethod: "/gather.query.v1.QueryService/Search"}, handler); !errors.Is(err, ErrShed) {
		t.Errorf("guarded service: got %v, want shed", err)
	}
	if _, err := ic(from(t.Context(), 2), nil, &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"}, handler); err != nil {
		t.Errorf("health check was shed: %v", err)
	}
}

// fakeStream is the grpc.ServerStream of an interceptor test: only its context is used.
type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s fakeStream) Context() context.Context { return s.ctx }

// TestInterceptorsRecordArrival: the handler learns when its call arrived, before it waited for
// its slot, so that the wait counts against the query's own timeouts.
func TestInterceptorsRecordArrival(t *testing.T) {
	t.Parallel()
	l := New(Config{MaxInFlight: 1, MaxWait: time.Second}, prometheus.NewRegistry())
	const service, method = "gather.query.v1.QueryService", "/gather.query.v1.QueryService/Search"
	const wait = 50 * time.Millisecond
	check := func(kind string, ctx context.Context, began time.Time) {
		arrived, ok := Arrived(ctx)
		switch {
		case !ok:
			t.Errorf("%s: the handler's context has no arrival", kind)
		case arrived.Before(began) || time.Since(arrived) < wait:
			t.Errorf("%s: arrival %s after the call began, %s before the handler; want the call's start, before the wait",
				kind, arrived.Sub(began), time.Since(arrived))
		}
	}
	for _, kind := range []string{"unary", "stream"} {
		hold := mustAcquire(t, l, 1) // the call waits for this slot
		time.AfterFunc(wait, hold)
		began := time.Now()
		var err error
		if kind == "unary" {
			_, err = l.UnaryServerInterceptor(service)(from(t.Context(), 2), nil, &grpc.UnaryServerInfo{FullMethod: method},
				func(ctx context.Context, _ any) (any, error) { check(kind, ctx, began); return nil, nil })
		} else {
			err = l.StreamServerInterceptor(service)(nil, fakeStream{ctx: from(t.Context(), 2)}, &grpc.StreamServerInfo{FullMethod: method},
				func(_ any, ss grpc.ServerStream) error { check(kind, ss.Context(), began); return nil })
		}
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
	}
	if _, ok := Arrived(t.Context()); ok {
		t.Error("a context that went through no interceptor has an arrival")
	}
	assertIdle(t, l)
}
