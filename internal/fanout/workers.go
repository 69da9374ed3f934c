package fanout

import (
	"sync"
	"sync/atomic"
	"time"
)

// workerIdle is how long a worker waits for another shard call before it exits.
const workerIdle = time.Second

// workers runs the shard calls of every query on goroutines kept between calls.
//
// Why: a shard call's goroutine reaches grpc-go's NewStream some 40 frames deep, through the
// client interceptors, and a new goroutine starts with a stack of the average size the runtime
// saw at the last GC, which the proxy's many shallow goroutines (three per QS connection) keep
// small: every call grew its stack and copied it at least once. At fan-out 64, top_k 10 at
// saturation that copying (runtime.newstack) was 6% of the proxy's CPU. A worker keeps the stack
// it grew for the calls that follow, until a GC finds it idle and shrinks it.
//
// The pool is hand-written rather than a library's (ants, pond) because its end is part of the
// fan-out's lifecycle guarantee: Close returns only once every worker has exited, so a closed
// Client leaves no goroutine behind (goleak in the tests), and a worker exits by itself after
// workerIdle without a call, so a burst of calls does not leave its goroutines parked.
type workers struct {
	tasks chan func() // unbuffered: a send succeeds when a worker is waiting
	quit  chan struct{}

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // the workers

	// started counts the workers started, waiting those waiting for a call (for the tests).
	started, waiting atomic.Int64
}

func newWorkers() *workers {
	return &workers{tasks: make(chan func()), quit: make(chan struct{})}
}

// Go runs f on a waiting worker, or on a new one if none is waiting. After Close it runs f on a
// goroutine of its own, which Close does not wait for (the caller joins f, as Call.Close does).
func (w *workers) Go(f func()) {
	select {
	case w.tasks <- f:
		return
	default:
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		go f()
		return
	}
	w.wg.Add(1)
	w.mu.Unlock()
	w.started.Add(1)
	go w.work(f)
}

// work runs f, then the tasks it is given, until it has waited workerIdle for one or the pool is
// closed.
func (w *workers) work(f func()) {
	defer w.wg.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		f()
		idle.Reset(workerIdle)
		w.waiting.Add(1)
		select {
		case f = <-w.tasks:
			w.waiting.Add(-1)
		case <-idle.C:
			w.waiting.Add(-1)
			return
		case <-w.quit:
			w.waiting.Add(-1)
			return
		}
	}
}

// Close makes the waiting workers exit and waits for them and for the busy ones, which exit once
// their call ends.
func (w *workers) Close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.quit)
	}
	w.mu.Unlock()
	w.wg.Wait()
}
