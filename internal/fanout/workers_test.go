package fanout

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestWorkersReuse: calls made one after the other run on the same worker, not on a goroutine
// each; the worker exits once it has been idle for workerIdle.
func TestWorkersReuse(t *testing.T) {
	w := newWorkers()
	defer w.Close()
	before := runtime.NumGoroutine()
	for range 100 {
		done := make(chan struct{})
		w.Go(func() { close(done) })
		<-done
		// Let the worker get back to waiting, as it would between two queries.
		waitFor(t, "the worker waits", func() bool { return w.waiting() == 1 })
	}
	if n := w.started.Load(); n != 1 {
		t.Fatalf("%d workers started for 100 calls one after the other, want 1", n)
	}
	waitFor(t, "the idle worker exits", func() bool { return w.live.Load() == 0 && runtime.NumGoroutine() <= before })
}

// TestWorkersShrinkUnderSteadyLoad: after a burst of 20 calls at once, a load of one call at a
// time keeps one worker; the others exit after workerIdle although calls keep coming.
func TestWorkersShrinkUnderSteadyLoad(t *testing.T) {
	w := newWorkers()
	defer w.Close()
	release := make(chan struct{})
	var burst sync.WaitGroup
	burst.Add(20)
	for range 20 {
		w.Go(func() { burst.Done(); <-release })
	}
	burst.Wait()
	close(release)
	waitFor(t, "the burst's workers wait", func() bool { return w.waiting() == 20 })
	for end := time.Now().Add(3 * workerIdle / 2); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		done := make(chan struct{})
		w.Go(func() { close(done) })
		<-done
	}
	if n := w.live.Load(); n > 2 {
		t.Errorf("%d workers alive after %v of one call at a time, want at most 2", n, 3*workerIdle/2)
	}
}

// TestWorkersCloseWaits: Close makes the idle workers exit and waits for the busy ones, which
// exit when their call ends; a call made after Close still runs.
func TestWorkersCloseWaits(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	w := newWorkers()
	release := make(chan struct{})
	var ran sync.WaitGroup
	ran.Add(3)
	w.Go(func() { ran.Done(); <-release }) // busy until released
	idle := make(chan struct{})
	w.Go(func() { ran.Done(); close(idle) }) // then idle
	<-idle
	closed := make(chan struct{})
	go func() { w.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a call was running")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-closed
	after := make(chan struct{})
	w.Go(func() { ran.Done(); close(after) })
	<-after
	ran.Wait()
}
