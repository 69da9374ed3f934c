package chaos

import (
	"context"
	"sync"
	"time"
)

// stallMeter measures how late the chaos process itself runs: a goroutine that asks to wake every
// stallTick and records the longest delay past it. All of chaos's clients share the machine with
// the proxy; a worker query that reached its timeout while the load generator could not run
// for a second says that the machine stalled, not only the proxy.
type stallMeter struct {
	mu      sync.Mutex
	longest time.Duration
	at      time.Time
}

// stallTick is how often the meter wakes.
const stallTick = 10 * time.Millisecond

// run measures until ctx ends.
func (m *stallMeter) run(ctx context.Context) {
	t := time.NewTimer(stallTick)
	defer t.Stop()
	due := time.Now().Add(stallTick)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.observe(now.Sub(due), now)
			due = now.Add(stallTick)
			t.Reset(stallTick)
		}
	}
}

func (m *stallMeter) observe(late time.Duration, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if late > m.longest {
		m.longest, m.at = late, now
	}
}

// worst returns the longest delay and when it ended.
func (m *stallMeter) worst() (time.Duration, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.longest, m.at
}
