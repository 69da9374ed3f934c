package etcdtest

import (
	"sync"
	"testing"
	"time"
)

// Latest holds the last value a watcher delivered (a discovery.Topology, in gather's tests) and
// lets a test wait for one that satisfies a condition. Set is the watcher's callback.
type Latest[T any] struct {
	mu      sync.Mutex
	cur     T
	changed chan struct{} // signalled, without blocking, on each Set
}

// NewLatest returns an empty Latest.
func NewLatest[T any]() *Latest[T] { return &Latest[T]{changed: make(chan struct{}, 1)} }

// Set records v as the latest value.
func (l *Latest[T]) Set(v T) {
	l.mu.Lock()
	l.cur = v
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// Get returns the latest value.
func (l *Latest[T]) Get() T {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur
}

// WaitFor waits until the latest value satisfies cond and returns it, failing the test after
// within.
func (l *Latest[T]) WaitFor(t testing.TB, within time.Duration, what string, cond func(T) bool) T {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		cur := l.Get()
		if cond(cur) {
			return cur
		}
		select {
		case <-l.changed:
		case <-timer.C:
			t.Fatalf("no value with %s within %v; the last: %+v", what, within, cur)
		}
	}
}

// Holds fails the test if the latest value stops satisfying cond during d.
func (l *Latest[T]) Holds(t testing.TB, d time.Duration, what string, cond func(T) bool) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		if cur := l.Get(); !cond(cur) {
			t.Fatalf("the value lost %s: %+v", what, cur)
		}
		select {
		case <-l.changed:
		case <-timer.C:
			return
		}
	}
}
