package hedge

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatherproxy/gather/internal/replica"
)

// unit is one token in the bucket's fixed point.
const unit = 1_000_000

// budgetSlices is how many slices of Config.BudgetWindow the bucket counts shard calls in.
const budgetSlices = 10

// Budget is the token bucket that bounds hedges and retries together, one per proxy: each shard
// call deposits Config.Budget tokens, each hedge or budgeted retry spends one, and the bucket
// holds at most what the shard calls of the last Config.BudgetWindow deposited (at least
// Config.BudgetCap). Over any stretch of traffic, hedges and retries are then at most Budget
// times the shard calls of that stretch and of the window before it. Deposits and spends take no
// lock: an atomic compare-and-swap, and once per slice of the window (a tenth of it) the cap is
// recomputed under a lock that no other path takes. A nil *Budget is off.
type Budget struct {
	per, least int64 // in units
	now        func() time.Time
	epoch      time.Time
	slice      time.Duration
	tokens     atomic.Int64
	cap        atomic.Int64                // in units: what the bucket holds at most now
	current    atomic.Int64                // the slice being counted (time since epoch / slice)
	calls      [budgetSlices]atomic.Uint64 // deposits per slice, a ring
	rotate     sync.Mutex
}

// NewBudget returns a bucket holding Config.BudgetCap tokens, or nil (off) if cfg turns hedging
// off.
func NewBudget(cfg Config) *Budget {
	cfg = cfg.WithDefaults()
	if !cfg.Enabled() {
		return nil
	}
	b := &Budget{per: int64(cfg.Budget * unit), least: int64(cfg.BudgetCap * unit), now: cfg.Now, epoch: cfg.Now(),
		slice: max(cfg.BudgetWindow/budgetSlices, time.Nanosecond)}
	b.tokens.Store(b.least)
	b.cap.Store(b.least)
	return b
}

// tick starts the slice that now falls in if it is a new one: the slices that left the window
// are emptied, the cap recomputed from the calls still in it, and what the bucket holds over the
// new cap dropped. It returns the slice.
func (b *Budget) tick() int64 {
	s := int64(b.now().Sub(b.epoch) / b.slice)
	if s <= b.current.Load() {
		return s
	}
	b.rotate.Lock()
	defer b.rotate.Unlock()
	cur := b.current.Load()
	if s <= cur {
		return s
	}
	for i := max(cur+1, s-budgetSlices+1); i <= s; i++ {
		b.calls[i%budgetSlices].Store(0)
	}
	b.current.Store(s)
	var calls uint64
	for i := range b.calls {
		calls += b.calls[i].Load()
	}
	c := max(b.least, int64(min(float64(calls)*float64(b.per), math.MaxInt64/2)))
	b.cap.Store(c)
	for {
		t := b.tokens.Load()
		if t <= c || b.tokens.CompareAndSwap(t, c) {
			return s
		}
	}
}

// Deposit adds one shard call's share.
func (b *Budget) Deposit() {
	if b == nil {
		return
	}
	b.calls[b.tick()%budgetSlices].Add(1)
	for {
		t := b.tokens.Load()
		n := max(min(t+b.per, b.cap.Load()), t) // never takes away: tick drops what is over the cap
		if n == t || b.tokens.CompareAndSwap(t, n) {
			return
		}
	}
}

// Spend takes one token, if there is one.
func (b *Budget) Spend() bool { return b.spend(false) }

// SpendSpeculative takes one token if the bucket keeps at least half of what it may hold (in
// whole tokens) after it: for a hedge at the hedge delay, a bet that the call is in the tail.
// The lower half is kept for calls that have waited far longer and are stuck (Decide's again):
// when the machine slows every call down at once, the bets on calls that are merely late
// would otherwise spend the bucket before the stuck ones ask.
func (b *Budget) SpendSpeculative() bool { return b.spend(true) }

func (b *Budget) spend(speculative bool) bool {
	if b == nil {
		return false
	}
	b.tick()
	keep := int64(0)
	if speculative {
		keep = b.cap.Load() / unit / 2 * unit
	}
	for {
		t := b.tokens.Load()
		if t-unit < keep {
			return false
		}
		if b.tokens.CompareAndSwap(t, t-unit) {
			return true
		}
	}
}

// Refund gives back a token spent for an attempt that did not start.
func (b *Budget) Refund() {
	if b == nil {
		return
	}
	for {
		t := b.tokens.Load()
		if b.tokens.CompareAndSwap(t, min(t+unit, max(b.cap.Load(), t))) {
			return
		}
	}
}

// Tokens is how many tokens the bucket holds now (0 when off).
func (b *Budget) Tokens() float64 {
	if b == nil {
		return 0
	}
	return float64(b.tokens.Load()) / unit
}

// Denial says why a hedge was not started.
type Denial int

// Reasons a hedge is denied.
const (
	Allowed Denial = iota
	// DeniedBudget: the bucket was empty.
	DeniedBudget
	// DeniedSlowShard: every replica left usually sends its first frame later than the hedge
	// delay: the whole shard is slow, and hedging would add to its load for nothing.
	DeniedSlowShard
	// DeniedNoCandidate: no other replica is ready and not ejected.
	DeniedNoCandidate
	// DeniedDeadline: the time left to the per-shard deadline is shorter than a hedge is expected
	// to take to its first frame.
	DeniedDeadline
)

// String is the reason as metrics label it.
func (d Denial) String() string {
	switch d {
	case Allowed:
		return "allowed"
	case DeniedBudget:
		return "budget"
	case DeniedSlowShard:
		return "slow_shard"
	case DeniedNoCandidate:
		return "no_candidate"
	case DeniedDeadline:
		return "deadline"
	}
	return "unknown"
}

// Ask is what kind of request for a hedge Decide weighs.
type Ask int

const (
	// AskFirst: the call has waited the hedge delay, a bet that it is in the tail; it may spend
	// only the upper half of the bucket (Budget.SpendSpeculative).
	AskFirst Ask = iota
	// AskAgain: a request after a denial, the call having waited far longer; it may spend any
	// token (Budget.Spend).
	AskAgain
	// AskFailover: the replica the call waits on has been ejected since the call started
	// (found stalled or failing): the hedge is no bet on the tail but a move off a replica known
	// bad, and spends no token. Each call moves at most once, and a shard ejects at most half of
	// its replicas, so failovers are bounded by the calls in flight on the replicas ejected.
	AskFailover
)

// Decide is the hedge policy, for a shard call that has had no first frame after the hedge delay.
// left is the time to its per-shard deadline, expect what a hedge is expected to take to its
// first frame (Delay.Typical); ask what kind of request it is; pick chooses the replica
// (replica.Set.PickHedge, or Set.Pick for a failover). In order: no hedge if left < expect; one
// token from b as ask allows, or no hedge; then the replica, or the token back and no hedge. It
// returns the replica picked, or why there is none.
func Decide(b *Budget, left, expect time.Duration, ask Ask, pick func() (int, error)) (int, Denial) {
	if left < expect {
		return 0, DeniedDeadline
	}
	spent := false
	switch ask {
	case AskFirst:
		spent = b.SpendSpeculative()
	case AskAgain:
		spent = b.Spend()
	}
	if ask != AskFailover && !spent {
		return 0, DeniedBudget
	}
	i, err := pick()
	if err != nil {
		if spent {
			b.Refund()
		}
		if errors.Is(err, replica.ErrSlow) {
			return 0, DeniedSlowShard
		}
		return 0, DeniedNoCandidate
	}
	return i, Allowed
}
