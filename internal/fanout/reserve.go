package fanout

import (
	"sync"
	"sync/atomic"
	"time"
)

// answerLag keeps the worst time, over the last lagWindow, from a call's per-shard deadline to
// its answer being ready (Client.Answered): the merge, the joining of the shard calls and the
// wait for the CPU that a loaded proxy adds after its shards are cut. The per-shard deadline
// keeps back at least lagMargin times it from the caller's deadline (see Client.reserve), so that
// a query that reached the proxy late (after a wait for an admission slot, say) has its shards
// cut early enough to be answered before its caller gives up, rather than just after.
//
// A maximum over a window, not an average: under overload the lags spread from a millisecond
// to hundreds of them, and the query that misses its caller's deadline is the one that meets the
// worst of them. The window is lagSlots slices; the slice that starts empties the oldest.
type answerLag struct {
	mu    sync.Mutex
	slots [lagSlots]time.Duration // the worst lag seen in each slice, by slice number mod lagSlots
	last  int64                   // the slice number of the latest observation
	// cached is the maximum over slots, valid until the slice number reaches expires: read
	// without the mutex by every call's Start.
	cached  atomic.Int64
	expires atomic.Int64
}

const (
	// lagWindow is how long a lag counts, in lagSlots slices.
	lagWindow = 30 * time.Second
	lagSlots  = 6
	lagSlice  = lagWindow / lagSlots
	// lagMargin is how many times the worst recent lag the reserve holds: the next answer may be
	// later still, and its bytes have yet to reach the client.
	lagMargin = 1.5
)

// get is the worst lag of the window that ends at now.
func (l *answerLag) get(now time.Time) time.Duration {
	slice := now.UnixNano() / int64(lagSlice)
	if slice < l.expires.Load() {
		return time.Duration(l.cached.Load())
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.advance(slice)
	return time.Duration(l.cached.Load())
}

// advance empties the slices that left the window by slice and recomputes the cached maximum.
func (l *answerLag) advance(slice int64) {
	for s := max(l.last+1, slice-lagSlots+1); s <= slice; s++ {
		l.slots[s%lagSlots] = 0
	}
	l.last = max(l.last, slice)
	var worst time.Duration
	for _, v := range l.slots {
		worst = max(worst, v)
	}
	l.cached.Store(int64(worst))
	// The maximum holds until the oldest nonzero slice leaves the window; recomputing once per
	// slice is simpler and as good.
	l.expires.Store(l.last + 1)
}

// observe records a lag seen at now.
func (l *answerLag) observe(lag time.Duration, now time.Time) {
	slice := now.UnixNano() / int64(lagSlice)
	l.mu.Lock()
	defer l.mu.Unlock()
	if slice < l.last-lagSlots+1 {
		return // older than the window (a clock step back)
	}
	l.advance(slice)
	if i := slice % lagSlots; lag > l.slots[i] {
		l.slots[i] = lag
	}
	l.cached.Store(max(l.cached.Load(), int64(lag)))
}

// reserve is what the per-shard deadline keeps back from a caller's deadline remaining away at
// now: MergeReserve, 5% of remaining, and lagMargin times the worst recent lag, the latter at most
// half of remaining so that a caller always has half its time for the shards.
func (c *Client) reserve(remaining time.Duration, now time.Time) time.Duration {
	lag := time.Duration(float64(c.lag.get(now)) * lagMargin)
	return max(c.cfg.MergeReserve, remaining/20, min(lag, remaining/2))
}

// Answered records that a call whose per-shard deadline was deadline (Call.Deadline) had its
// answer ready at at: merged, every shard call joined, summarised. Only answers later than the
// deadline count: they are the ones a slow merge could make miss their caller's deadline. The
// caller's reading speed must not be part of it (the proxy passes the time before it writes),
// or one slow reader would make every other caller's shards get less time.
func (c *Client) Answered(deadline, at time.Time) {
	lag := at.Sub(deadline)
	if lag <= 0 {
		return
	}
	c.metrics.lag.Observe(lag.Seconds())
	c.lag.observe(lag, at)
}
