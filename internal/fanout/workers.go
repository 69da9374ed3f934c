package fanout

import (
	"slices"
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
	mu     sync.Mutex
	idle   []*worker // the workers waiting for a call, the one that waited least last
	closed bool
	wg     sync.WaitGroup // the workers

	// started counts the workers started, live those running (for the tests).
	started, live atomic.Int64
}

// worker is one worker's mailbox: Go hands it a call, or Close nil.
type worker struct {
	task chan func() // holds one: a worker taken from idle has nothing in it
}

func newWorkers() *workers { return &workers{} }

// Go runs f on the worker that waited least, or on a new one if none is waiting: the others
// keep waiting, and those not needed by the load of the last workerIdle exit (a worker per
// channel receive, in turn, would keep every worker a burst started alive under any steady
// load). After Close it runs f on a goroutine of its own, which Close does not wait for (the
// caller joins f, as Call.Close does).
func (w *workers) Go(f func()) {
	w.mu.Lock()
	if n := len(w.idle); n > 0 {
		wk := w.idle[n-1]
		w.idle[n-1] = nil
		w.idle = w.idle[:n-1]
		w.mu.Unlock()
		wk.task <- f
		return
	}
	if w.closed {
		w.mu.Unlock()
		go f()
		return
	}
	w.wg.Add(1)
	w.mu.Unlock()
	w.started.Add(1)
	w.live.Add(1)
	go w.work(&worker{task: make(chan func(), 1)}, f)
}

// work runs f, then the calls it is given, until it has waited workerIdle for one or the pool is
// closed.
func (w *workers) work(wk *worker, f func()) {
	defer w.wg.Done()
	defer w.live.Add(-1)
	var idle *time.Timer // made when the worker first waits
	defer func() {
		if idle != nil {
			idle.Stop()
		}
	}()
	for f != nil {
		f()
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return
		}
		w.idle = append(w.idle, wk)
		w.mu.Unlock()
		if idle == nil {
			idle = time.NewTimer(workerIdle)
		} else {
			idle.Reset(workerIdle)
		}
		select {
		case f = <-wk.task:
			continue
		case <-idle.C:
		}
		w.mu.Lock()
		if i := slices.Index(w.idle, wk); i >= 0 {
			w.idle = slices.Delete(w.idle, i, i+1)
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		f = <-wk.task // Go took wk as the timer fired: its call is on the way
	}
}

// Close makes the waiting workers exit and waits for them and for the busy ones, which exit once
// their call ends.
func (w *workers) Close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		for _, wk := range w.idle {
			wk.task <- nil
		}
		w.idle = nil
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// waiting is how many workers wait for a call.
func (w *workers) waiting() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.idle)
}
