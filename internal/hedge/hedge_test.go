package hedge

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gatherproxy/gather/internal/replica"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newDelay(cfg Config) (*Delay, *clock) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	cfg.Now = clk.Now
	return NewDelay(cfg), clk
}

// TestBuckets: every duration falls in a bucket whose top is at most 12.5% (or 1µs) above it.
func TestBuckets(t *testing.T) {
	t.Parallel()
	prev := -1
	for d := time.Duration(0); d < 200*time.Second; d = d*21/20 + time.Microsecond {
		i := bucketOf(d)
		if i < prev || i >= numBuckets {
			t.Fatalf("%v: bucket %d after %d", d, i, prev)
		}
		prev = i
		top := bucketTop(i)
		if d < 134*time.Second && (top <= d.Truncate(time.Microsecond) || top > d+d/8+time.Microsecond) {
			t.Fatalf("%v: bucket %d tops at %v", d, i, top)
		}
	}
}

// TestDelayPercentile: the delay is the configured percentile of the window, recomputed when a
// new slice starts, never below the floor, Initial until there are enough samples, and samples
// older than the window no longer count.
func TestDelayPercentile(t *testing.T) {
	t.Parallel()
	d, clk := newDelay(Config{})
	if got := d.Current(); got != DefaultInitial {
		t.Fatalf("no samples: %v, want Initial %v", got, DefaultInitial)
	}
	record := func(n int, v time.Duration) {
		for range n {
			d.Record(v)
		}
	}
	record(95, 2*time.Millisecond)
	record(5, 100*time.Millisecond)
	if got := d.Current(); got != DefaultInitial {
		t.Fatalf("before the first refresh: %v, want Initial", got)
	}
	clk.Advance(DefaultRefresh)
	d.Record(2 * time.Millisecond) // starts the next slice: the delay is recomputed
	if got := d.Current(); got < 2*time.Millisecond || got > 2250*time.Microsecond {
		t.Errorf("p95 of 95 × 2ms and 5 × 100ms: %v, want 2ms (the top of its bucket)", got)
	}
	if got := d.Typical(); got < 2*time.Millisecond || got > 2250*time.Microsecond {
		t.Errorf("median %v, want 2ms", got)
	}

	p99, clk99 := newDelay(Config{Percentile: 99})
	for range 95 {
		p99.Record(2 * time.Millisecond)
	}
	for range 5 {
		p99.Record(100 * time.Millisecond)
	}
	clk99.Advance(DefaultRefresh)
	p99.Record(time.Millisecond)
	if got := p99.Current(); got < 100*time.Millisecond || got > 113*time.Millisecond {
		t.Errorf("p99: %v, want 100ms", got)
	}

	// The window moves on: 30s later only new samples count, not these.
	record(100, 500*time.Millisecond)
	for range 7 {
		clk.Advance(DefaultRefresh)
		record(40, 20*time.Millisecond)
	}
	if got := d.Current(); got < 20*time.Millisecond || got > 23*time.Millisecond {
		t.Errorf("35s later, every recent sample at 20ms: %v, want 20ms", got)
	}

	// The floor.
	f, fclk := newDelay(Config{})
	for range 100 {
		f.Record(10 * time.Microsecond)
	}
	fclk.Advance(DefaultRefresh)
	f.Record(10 * time.Microsecond)
	if got := f.Current(); got != DefaultFloor {
		t.Errorf("every sample at 10µs: %v, want the floor %v", got, DefaultFloor)
	}

	// Too few samples: the last delay stays.
	clk.Advance(time.Minute)
	record(5, time.Second)
	clk.Advance(DefaultRefresh)
	d.Record(time.Second)
	if got := d.Current(); got < 20*time.Millisecond || got > 23*time.Millisecond {
		t.Errorf("6 samples after a quiet minute: %v, want the last delay (20ms) kept", got)
	}
}

// TestDelayConcurrent: Record from many goroutines while slices turn over (for the race
// detector).
func TestDelayConcurrent(t *testing.T) {
	t.Parallel()
	d, clk := newDelay(Config{Refresh: time.Millisecond, Window: 5 * time.Millisecond, MinSamples: 1})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				if i%100 == g {
					clk.Advance(time.Millisecond)
				}
				d.Record(time.Duration(i) * time.Microsecond)
				_ = d.Current()
			}
		})
	}
	wg.Wait()
	if d.Current() <= 0 {
		t.Error("no delay")
	}
}

// TestBudget: the bucket starts with BudgetCap tokens, each deposit adds Budget tokens up to the
// cap, each spend takes one; Off makes no bucket.
func TestBudget(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Unix(1_700_000_000, 0)} // never moves: the cap stays BudgetCap
	b := NewBudget(Config{Budget: 0.05, BudgetCap: 2, Now: clk.Now})
	for i := range 2 {
		if !b.Spend() {
			t.Fatalf("spend %d of a full bucket of 2 refused", i+1)
		}
	}
	if b.Spend() {
		t.Fatal("spent from an empty bucket")
	}
	for range 19 {
		b.Deposit()
	}
	if b.Spend() {
		t.Fatalf("spent after 19 deposits of 0.05 (%.2f tokens)", b.Tokens())
	}
	b.Deposit()
	if !b.Spend() {
		t.Fatalf("refused after 20 deposits of 0.05 (%.2f tokens)", b.Tokens())
	}
	for range 1000 {
		b.Deposit()
	}
	if got := b.Tokens(); got != 2 {
		t.Errorf("%v tokens after 1000 deposits, want the cap 2", got)
	}
	b.Refund()
	if got := b.Tokens(); got != 2 {
		t.Errorf("a refund took the bucket to %v, over its cap", got)
	}
	if off := NewBudget(Config{Budget: Off}); off != nil || off.Spend() || off.Tokens() != 0 {
		t.Error("Off: a bucket that spends")
	}
	if def := NewBudget(Config{}); def == nil || def.Tokens() != DefaultBudgetCap {
		t.Errorf("default: %v", def)
	}
}

// TestDecide: the deadline first, then the budget, then a replica; a token spent for a hedge
// that has no replica is given back; a failover needs no token.
func TestDecide(t *testing.T) {
	t.Parallel()
	b := NewBudget(Config{BudgetCap: 1})
	picked := func() (int, error) { return 3, nil }
	if _, why := Decide(b, 5*time.Millisecond, 10*time.Millisecond, AskFirst, picked); why != DeniedDeadline {
		t.Errorf("5ms left, 10ms expected: %v, want deadline", why)
	}
	for _, tc := range []struct {
		err  error
		want Denial
	}{{replica.ErrSlow, DeniedSlowShard}, {replica.ErrNoCandidate, DeniedNoCandidate}} {
		if _, why := Decide(b, time.Second, time.Millisecond, AskFirst, func() (int, error) { return 0, tc.err }); why != tc.want {
			t.Errorf("pick %v: %v, want %v", tc.err, why, tc.want)
		}
	}
	if i, why := Decide(b, time.Second, time.Millisecond, AskFirst, picked); why != Allowed || i != 3 {
		t.Errorf("got %d, %v; want replica 3 (the tokens given back)", i, why)
	}
	if _, why := Decide(b, time.Second, time.Millisecond, AskFirst, picked); why != DeniedBudget {
		t.Errorf("empty bucket: %v, want budget", why)
	}
	if _, why := Decide(nil, time.Second, time.Millisecond, AskAgain, picked); why != DeniedBudget {
		t.Errorf("no bucket: %v, want budget", why)
	}
	// A failover off an ejected replica spends nothing: allowed with the bucket empty, and a
	// failover with no replica to go to gives back nothing it did not take.
	if i, why := Decide(b, time.Second, time.Millisecond, AskFailover, picked); why != Allowed || i != 3 {
		t.Errorf("failover, empty bucket: %d, %v; want replica 3", i, why)
	}
	if _, why := Decide(b, time.Second, time.Millisecond, AskFailover, func() (int, error) { return 0, replica.ErrNoCandidate }); why != DeniedNoCandidate || b.Tokens() != 0 {
		t.Errorf("failover, no replica: %v with %v tokens after; want no_candidate and 0", why, b.Tokens())
	}
	if _, why := Decide(b, 5*time.Millisecond, 10*time.Millisecond, AskFailover, picked); why != DeniedDeadline {
		t.Errorf("failover, 5ms left, 10ms expected: %v, want deadline", why)
	}
}

// TestSpeculativeHedgesKeepHalf: hedges at the hedge delay stop when half the bucket is left;
// calls asking again after waiting far longer may spend the rest.
func TestSpeculativeHedgesKeepHalf(t *testing.T) {
	t.Parallel()
	b := NewBudget(Config{BudgetCap: 10})
	picked := func() (int, error) { return 1, nil }
	n := 0
	for ; n < 20; n++ {
		if _, why := Decide(b, time.Second, time.Millisecond, AskFirst, picked); why != Allowed {
			break
		}
	}
	if n != 5 {
		t.Errorf("%d first asks allowed of a bucket of 10, want 5", n)
	}
	n = 0
	for ; n < 20; n++ {
		if _, why := Decide(b, time.Second, time.Millisecond, AskAgain, picked); why != Allowed {
			break
		}
	}
	if n != 5 {
		t.Errorf("then %d asks again allowed, want the other 5", n)
	}
	if b1 := NewBudget(Config{BudgetCap: 1}); !b1.SpendSpeculative() {
		t.Error("a bucket of 1 keeps no half token: a first ask must be allowed")
	}
}

// TestBudgetCapFollowsTraffic: the bucket holds what the shard calls of the last BudgetWindow
// deposited, so a burst of late calls (a stall of the whole machine makes every call in flight
// late at once) does not empty it while hedges stay within the budget; after a quiet spell the
// cap is back to BudgetCap.
func TestBudgetCapFollowsTraffic(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	b := NewBudget(Config{Now: clk.Now}) // 5%, at least 10 tokens, over 10s
	// 1000 shard calls a second for 10s deposit 500 tokens.
	for range 10_000 {
		b.Deposit()
		clk.Advance(time.Millisecond)
	}
	spent := 0
	for b.Spend() {
		if spent++; spent > 10_000 {
			t.Fatal("the bucket never empties")
		}
	}
	if spent < 450 || spent > 510 {
		t.Errorf("spent %d tokens after 10,000 calls in 10s, want about 5%% of them (500)", spent)
	}
	// As many calls again, then a quiet spell longer than the window: what is left is the cap
	// of a proxy without traffic.
	for range 10_000 {
		b.Deposit()
		clk.Advance(time.Millisecond)
	}
	clk.Advance(DefaultBudgetWindow + time.Second)
	spent = 0
	for b.Spend() {
		spent++
	}
	if spent != DefaultBudgetCap {
		t.Errorf("spent %d tokens after a quiet spell, want the cap of %d", spent, DefaultBudgetCap)
	}
}
