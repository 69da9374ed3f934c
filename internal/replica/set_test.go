package replica

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// clock is a fake clock that moves only when told.
type clock struct{ t time.Time }

func (c *clock) Now() time.Time          { return c.t }
func (c *clock) Advance(d time.Duration) { c.t = c.t.Add(d) }

// newSet returns a Set of n replicas on a fake clock with a fixed seed, all Ready unless health
// says otherwise, and the ejections it makes.
func newSet(n int, cfg Config) (*Set, *clock, *[]int) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	var ejected []int
	cfg.Now = clk.Now
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewPCG(1, 2))
	}
	cfg.OnEject = func(i int, _ time.Duration) { ejected = append(ejected, i) }
	return NewSet(n, cfg), clk, &ejected
}

// setCost sets replica i's score as if it had just been measured at d.
func setCost(s *Set, i int, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reps[i].cost, s.reps[i].stamp = float64(d), s.now()
}

// measure gives replica i a first frame after ttff through a whole attempt.
func measure(t *testing.T, s *Set, i int, ttff time.Duration) {
	t.Helper()
	s.mu.Lock()
	s.reps[i].pending++ // as Pick would
	s.mu.Unlock()
	s.FirstFrame(i, ttff, 0)
	s.Done(i, Success, true, ttff, 0)
}

// pickDone picks a replica for a one-off attempt and ends it at once, without a measurement.
func pickDone(t *testing.T, s *Set) int {
	t.Helper()
	i, err := s.Pick(0, Primary)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.reps[i].pending--
	s.mu.Unlock()
	return i
}

// TestPickTwoChoices: of two candidates drawn at random, the one with the lower load wins, so the
// slowest replica of three is never chosen while the others are idle, and load spreads as
// attempts pile up on the fastest; the same seed gives the same choices.
func TestPickTwoChoices(t *testing.T) {
	t.Parallel()
	s, _, _ := newSet(3, Config{})
	for i, d := range []time.Duration{time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond} {
		setCost(s, i, d)
	}
	var got [3]int
	for range 3000 {
		got[pickDone(t, s)]++
	}
	// Replica 0 wins every pair it is in (2 of 3), replica 1 the pair {1, 2}.
	if got[2] != 0 || got[0] < 1800 || got[0] > 2200 || got[1] < 800 {
		t.Errorf("picks %v, want about [2000 1000 0]", got)
	}

	// In flight: of two replicas at 1ms and 5ms, the first takes attempts until 1ms × (in flight
	// + 1) passes 5ms, then they share.
	s2, _, _ := newSet(2, Config{})
	setCost(s2, 0, time.Millisecond)
	setCost(s2, 1, 5*time.Millisecond)
	var held [2]int
	for range 10 {
		i, err := s2.Pick(0, Primary)
		if err != nil {
			t.Fatal(err)
		}
		held[i]++
	}
	if held[0] < 5 || held[0] > 9 || held[1] < 1 {
		t.Errorf("10 attempts held as %v, want about 8 and 2 (all on the faster one: in flight ignored)", held)
	}

	a, _, _ := newSet(4, Config{Rand: rand.New(rand.NewPCG(7, 7))})
	b, _, _ := newSet(4, Config{Rand: rand.New(rand.NewPCG(7, 7))})
	for range 100 {
		if x, y := pickDone(t, a), pickDone(t, b); x != y {
			t.Fatalf("same seed, different choices: %d and %d", x, y)
		}
	}
}

// TestPickCandidates: a Primary attempt avoids tried, ejected and not Ready replicas while a
// candidate remains, and falls back to them rather than to nothing; a Hedge does not.
func TestPickCandidates(t *testing.T) {
	t.Parallel()
	health := []Health{Ready, Down, Connecting}
	s, _, _ := newSet(3, Config{Health: func(i int) Health { return health[i] }})
	for range 20 {
		if i := pickDone(t, s); i != 0 {
			t.Fatalf("picked %d, want the only Ready replica 0", i)
		}
	}
	if i, err := s.Pick(Mask(0).With(0), Hedge); err == nil {
		t.Errorf("hedge picked %d with no other Ready replica, want ErrNoCandidate", i)
	}
	i, err := s.Pick(Mask(0).With(0), Primary)
	if err != nil || i == 0 {
		t.Errorf("primary with 0 tried: %d, %v; want 1 or 2 rather than nothing", i, err)
	}
	if _, err := s.Pick(Mask(0).With(0).With(1).With(2), Primary); !errors.Is(err, ErrNoCandidate) {
		t.Errorf("all tried: %v, want ErrNoCandidate", err)
	}
}

// TestPessimisticStart: a replica back from ejection starts at twice the worst score of its
// siblings and so is not flooded: under a steady 8 attempts in flight it takes a small share at
// first, and more as its score decays toward what it is measured at.
func TestPessimisticStart(t *testing.T) {
	t.Parallel()
	s, clk, ejected := newSet(3, Config{})
	for range 5 {
		s.mu.Lock()
		s.reps[2].pending++
		s.mu.Unlock()
		s.Done(2, Failure, false, 100*time.Microsecond, 0)
	}
	if len(*ejected) != 1 {
		t.Fatalf("ejections %v, want replica 2 once", *ejected)
	}
	// Traffic for the 30s of the ejection: replicas 0 and 1 answer in 2ms.
	const step = 10 * time.Millisecond
	inFlight := make([]int, 0, 8)
	tick := func() int {
		i, err := s.Pick(0, Primary)
		if err != nil {
			t.Fatal(err)
		}
		s.FirstFrame(i, 2*time.Millisecond, 0) // its first frame comes at once, the stream goes on
		inFlight = append(inFlight, i)
		if len(inFlight) == 8 {
			j := inFlight[0]
			inFlight = inFlight[1:]
			s.Done(j, Success, true, 80*time.Millisecond, 0)
		}
		clk.Advance(step)
		return i
	}
	for range int(30 * time.Second / step) {
		if tick() == 2 {
			t.Fatal("an ejected replica was picked")
		}
	}
	if snap := s.Snapshot(2); !snap.Probation || snap.Score < DefaultInitialCost {
		t.Fatalf("back from ejection: %+v, want on probation at a score of at least %v", snap, DefaultInitialCost)
	}
	share := func(d time.Duration) float64 {
		n, got := int(d/step), 0
		for range n {
			if tick() == 2 {
				got++
			}
		}
		return float64(got) / float64(n)
	}
	first, later := share(2*time.Second), share(2*time.Second)
	for range int(20 * time.Second / step) {
		tick()
	}
	last := share(5 * time.Second)
	if first > 0.1 || last <= first || last <= later {
		t.Errorf("share of the returning replica: %.2f in its first 2s, %.2f in the next, %.2f 22s later; want a small start that grows", first, later, last)
	}
}

// TestConnectionBackStartsPessimistic: a replica whose connection was down, and whose score
// decayed meanwhile, starts pessimistic when it is Ready again.
func TestConnectionBackStartsPessimistic(t *testing.T) {
	t.Parallel()
	health := []Health{Ready, Ready}
	s, clk, _ := newSet(2, Config{Health: func(i int) Health { return health[i] }})
	measure(t, s, 0, 2*time.Millisecond)
	measure(t, s, 1, 2*time.Millisecond)
	health[1] = Down
	pickDone(t, s)
	clk.Advance(2 * time.Minute) // replica 1's score decays to nothing
	health[1] = Ready
	for range 5 {
		measure(t, s, 0, 2*time.Millisecond)
		if i := pickDone(t, s); i != 0 {
			t.Fatalf("picked the replica that just came back (%d) over the measured one", i)
		}
	}
}

// TestDecayTriesAvoidedReplicaAgain: a replica avoided after one slow answer is tried again once
// its score has decayed below its sibling's, as no new measurement refreshes it.
func TestDecayTriesAvoidedReplicaAgain(t *testing.T) {
	t.Parallel()
	s, clk, _ := newSet(2, Config{})
	measure(t, s, 1, 500*time.Millisecond)
	var when time.Duration
	for elapsed := time.Duration(0); elapsed < 3*time.Minute; elapsed += 100 * time.Millisecond {
		i := pickDone(t, s)
		if i == 1 {
			when = elapsed
			break
		}
		measure(t, s, 0, 2*time.Millisecond)
		clk.Advance(100 * time.Millisecond)
	}
	// 500ms × e^(-t/10s) falls below 2ms after 55s.
	if when < 40*time.Second || when > 70*time.Second {
		t.Errorf("the slow replica was tried again after %v, want after about 55s (never: 0s)", when)
	}
}

// TestCensoredAttemptsRouteAroundHang: attempts cut before their first frame (a hedge won)
// record lower bounds that double each time, so a replica that hangs is avoided after a few
// attempts even while its sibling has several in flight.
func TestCensoredAttemptsRouteAroundHang(t *testing.T) {
	t.Parallel()
	s, _, _ := newSet(2, Config{})
	setCost(s, 0, 2*time.Millisecond)
	setCost(s, 1, 2*time.Millisecond)
	s.mu.Lock()
	s.reps[0].pending = 5 // the healthy replica is busy: 2ms × 6 = 12ms
	s.mu.Unlock()
	picked := 0
	for range 20 {
		i, err := s.Pick(0, Primary)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			s.mu.Lock()
			s.reps[0].pending--
			s.mu.Unlock()
			continue
		}
		picked++
		s.Done(1, Neutral, false, 10*time.Millisecond, 0) // hedged after 10ms and lost
	}
	if picked > 3 {
		t.Errorf("the hanging replica took %d of 20 attempts, want at most 3", picked)
	}
}

// TestHedgeAvoidsSlowReplicas: a replica whose recent first frames came later than the hedge
// delay is not a hedge candidate (ErrSlow), until that is forgotten.
func TestHedgeAvoidsSlowReplicas(t *testing.T) {
	t.Parallel()
	s, clk, _ := newSet(2, Config{})
	const delay = 5 * time.Millisecond
	tried := Mask(0).With(0)
	for k := range 3 {
		if _, err := s.Pick(tried, Hedge); err != nil {
			t.Fatalf("after %d late answers: %v, want replica 1 still a candidate", k, err)
		}
		s.FirstFrame(1, 50*time.Millisecond, delay)
		s.Done(1, Success, true, 50*time.Millisecond, delay)
	}
	if _, err := s.Pick(tried, Hedge); !errors.Is(err, ErrSlow) {
		t.Errorf("after 3 late answers: %v, want ErrSlow", err)
	}
	if i, err := s.Pick(tried, Primary); err != nil || i != 1 {
		t.Errorf("a primary still goes to a slow replica: %d, %v", i, err)
	}
	s.Done(1, Neutral, false, 0, 0)
	clk.Advance(10 * time.Second)
	if _, err := s.Pick(tried, Hedge); err != nil {
		t.Errorf("10s later: %v, want replica 1 a candidate again", err)
	}
	// A slow replica is still a hedge for an attempt that has waited twice its usual 50ms: that
	// attempt is slow even for this shard.
	s3, _, _ := newSet(2, Config{})
	for range 3 {
		s3.FirstFrame(1, 50*time.Millisecond, delay)
		s3.Done(1, Success, true, 50*time.Millisecond, delay)
	}
	if _, err := s3.PickHedge(tried, 60*time.Millisecond); !errors.Is(err, ErrSlow) {
		t.Errorf("slow replica, the attempt waiting 60ms: %v, want ErrSlow", err)
	}
	if i, err := s3.PickHedge(tried, 100*time.Millisecond); err != nil || i != 1 {
		t.Errorf("slow replica, the attempt waiting 100ms: %d, %v; want replica 1", i, err)
	}
	// A cut attempt counts as late once it has waited the delay.
	s2, _, _ := newSet(2, Config{})
	for range 3 {
		_, _ = s2.Pick(tried, Primary) // counts the attempt in flight
		s2.Done(1, Neutral, false, delay, delay)
	}
	if _, err := s2.Pick(tried, Hedge); !errors.Is(err, ErrSlow) {
		t.Errorf("after 3 attempts cut at the delay: %v, want ErrSlow", err)
	}
}

// TestSlowIsAMajority: a replica is slow when most of its recent attempts were late, not when a
// few in a row were: a stall of the machine that makes every attempt in flight late at once does
// not stop hedging to a replica that answered hundreds of calls in time just before.
func TestSlowIsAMajority(t *testing.T) {
	t.Parallel()
	s, clk, _ := newSet(2, Config{})
	const delay = 5 * time.Millisecond
	tried := Mask(0).With(0)
	answer := func(ttff time.Duration) {
		s.mu.Lock()
		s.reps[1].pending++
		s.mu.Unlock()
		s.FirstFrame(1, ttff, delay)
		s.Done(1, Success, true, ttff, delay)
	}
	for range 200 { // a second of first frames in time
		answer(2 * time.Millisecond)
		clk.Advance(5 * time.Millisecond)
	}
	for range 8 { // a stall: eight late at once
		answer(30 * time.Millisecond)
	}
	if _, err := s.Pick(tried, Hedge); err != nil {
		t.Fatalf("after 200 answers in time and a stall of 8 late ones: %v, want replica 1 a candidate", err)
	}
	s.Done(1, Neutral, false, 0, 0)
	for range 400 { // two seconds of late first frames: the replica is slow now
		answer(30 * time.Millisecond)
		clk.Advance(5 * time.Millisecond)
	}
	if _, err := s.Pick(tried, Hedge); !errors.Is(err, ErrSlow) {
		t.Errorf("after 2s of late answers: %v, want ErrSlow", err)
	}
}

// fail ends n failed attempts on replica i.
func fail(s *Set, i, n int) {
	for range n {
		s.mu.Lock()
		s.reps[i].pending++
		s.mu.Unlock()
		s.Done(i, Failure, false, time.Millisecond, 0)
	}
}

func succeed(s *Set, i, n int) {
	for range n {
		s.mu.Lock()
		s.reps[i].pending++
		s.mu.Unlock()
		s.Done(i, Success, true, time.Millisecond, 0)
	}
}

// TestEjectionAndProbation: 5 failures in a row eject a replica for 30s × n (at most 300s); it
// comes back on probation, where one failure ejects it again and 3 successes clear it.
func TestEjectionAndProbation(t *testing.T) {
	t.Parallel()
	s, clk, ejected := newSet(3, Config{})
	fail(s, 0, 4)
	succeed(s, 0, 1)
	fail(s, 0, 4)
	if len(*ejected) != 0 {
		t.Fatalf("ejected %v after failures not in a row", *ejected)
	}
	fail(s, 0, 1)
	if len(*ejected) != 1 || !s.Snapshot(0).Ejected {
		t.Fatalf("ejections %v after 5 failures in a row, want replica 0", *ejected)
	}
	for range 50 {
		if i := pickDone(t, s); i == 0 {
			t.Fatal("an ejected replica was picked")
		}
	}
	want := []time.Duration{30 * time.Second, 60 * time.Second, 90 * time.Second}
	for n, d := range want {
		clk.Advance(d - time.Millisecond)
		if !s.Snapshot(0).Ejected {
			t.Fatalf("ejection %d over before %v", n+1, d)
		}
		clk.Advance(time.Millisecond)
		if snap := s.Snapshot(0); snap.Ejected || !snap.Probation {
			t.Fatalf("after %v: %+v, want back on probation", d, snap)
		}
		if n < len(want)-1 {
			fail(s, 0, 1) // one failure on probation ejects it again, for longer
		}
	}
	succeed(s, 0, 2)
	if !s.Snapshot(0).Probation {
		t.Fatal("probation cleared after 2 successes, want 3")
	}
	succeed(s, 0, 1)
	if s.Snapshot(0).Probation {
		t.Fatal("still on probation after 3 successes")
	}
	fail(s, 0, 4)
	if s.Snapshot(0).Ejected {
		t.Fatal("ejected after 4 failures once off probation")
	}
	// The cap: ejections keep getting longer up to 300s.
	for n := 4; n <= 12; n++ {
		fail(s, 0, 5)
		want := min(30*time.Second*time.Duration(n), 300*time.Second)
		clk.Advance(want - time.Millisecond)
		if !s.Snapshot(0).Ejected {
			t.Fatalf("ejection %d over before %v", n, want)
		}
		clk.Advance(time.Millisecond)
		if s.Snapshot(0).Ejected {
			t.Fatalf("ejection %d lasted longer than %v", n, want)
		}
		succeed(s, 0, 3)
	}
	// Healthy for EjectMax: the next ejection is short again.
	clk.Advance(DefaultEjectMax)
	fail(s, 0, 5)
	clk.Advance(DefaultEjectBase)
	if s.Snapshot(0).Ejected {
		t.Error("after 5 minutes healthy, an ejection lasted longer than 30s")
	}
}

// TestEjectionLimits: never the last Ready replica of a shard, never more than half of them.
func TestEjectionLimits(t *testing.T) {
	t.Parallel()
	health := []Health{Ready, Down}
	s, _, ejected := newSet(2, Config{Health: func(i int) Health { return health[i] }})
	fail(s, 0, 20)
	if len(*ejected) != 0 {
		t.Errorf("ejected %v: the last Ready replica", *ejected)
	}

	s4, _, ejected4 := newSet(4, Config{})
	for i := range 4 {
		fail(s4, i, 5)
	}
	if len(*ejected4) != 2 {
		t.Errorf("ejected %v of 4 replicas that all failed, want 2 (half)", *ejected4)
	}
	s3, _, ejected3 := newSet(3, Config{})
	fail(s3, 0, 5)
	fail(s3, 1, 5)
	if len(*ejected3) != 1 {
		t.Errorf("ejected %v of 3, want 1 (at most half)", *ejected3)
	}
}

// TestSuccessRateEjection: a replica whose success rate over an interval is far below its
// siblings' is ejected, though its failures never came 5 in a row; one a little below is not.
func TestSuccessRateEjection(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		okPerFail int // successes between two failures
		want      bool
	}{
		{"50% against 100%", 1, true},
		{"90% against 100%", 9, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, clk, ejected := newSet(3, Config{})
			for range 40 {
				for j := range tc.okPerFail + 1 {
					if j == 0 {
						fail(s, 0, 1)
					} else {
						succeed(s, 0, 1)
					}
					succeed(s, 1, 1)
					succeed(s, 2, 1)
				}
				clk.Advance(100 * time.Millisecond)
			}
			clk.Advance(10 * time.Second)
			succeed(s, 1, 1) // the interval ends
			if got := len(*ejected) == 1 && (*ejected)[0] == 0; got != tc.want {
				t.Errorf("ejections %v, want replica 0 ejected: %v", *ejected, tc.want)
			}
		})
	}
}

// TestSilentReplicaAvoidedAtOnce: a replica measured fast that stops answering is avoided once
// its waiting attempts are older than its sibling's cost, long before any of them ends: here the
// sibling is measured at 30ms (a loaded machine), so without the waiting attempts' age the silent
// replica's 2ms would win until 15 attempts were piled on it.
func TestSilentReplicaAvoidedAtOnce(t *testing.T) {
	t.Parallel()
	s, clk, _ := newSet(2, Config{})
	setCost(s, 0, 2*time.Millisecond)
	setCost(s, 1, 30*time.Millisecond)
	silent := 0
	for range 100 {
		i, err := s.Pick(0, Primary)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			silent++ // never answers: no first frame, no end
		} else {
			s.FirstFrame(1, 30*time.Millisecond, 0)
			s.Done(1, Success, true, 30*time.Millisecond, 0)
		}
		clk.Advance(10 * time.Millisecond)
	}
	if silent > 4 {
		t.Errorf("the silent replica took %d of 100 attempts, want at most 4", silent)
	}
	if snap := s.Snapshot(0); snap.Score < time.Second {
		t.Errorf("silent replica's score %v after 1s of silence, want at least its waiting attempts' age", snap.Score)
	}
}

// TestEjectionNeedsARefuge: a replica is not ejected for failures in a row when its calls would
// go only to a sibling just back from an ejection that has not proved itself yet. In the chaos incident with one replica of a shard hung, the healthy one missed
// deadlines under overload and was ejected for 30s while the hung one, back on probation, took
// every call of the shard.
func TestEjectionNeedsARefuge(t *testing.T) {
	t.Parallel()
	s, clk, ejected := newSet(2, Config{})
	fail(s, 0, 5) // replica 0 hangs: ejected
	if len(*ejected) != 1 {
		t.Fatalf("ejections %v, want replica 0", *ejected)
	}
	clk.Advance(30 * time.Second) // back on probation
	if snap := s.Snapshot(0); snap.Ejected || !snap.Probation {
		t.Fatalf("replica 0: %+v, want back on probation", snap)
	}
	fail(s, 1, 10)
	if s.Snapshot(1).Ejected {
		t.Fatal("replica 1 ejected while its only sibling was on probation")
	}
	fail(s, 0, 1) // the probation call fails: replica 0 goes again, replica 1 keeps its calls
	if !s.Snapshot(0).Ejected || s.Snapshot(1).Ejected {
		t.Fatalf("after replica 0 failed on probation: %+v %+v, want 0 ejected, 1 in", s.Snapshot(0), s.Snapshot(1))
	}

	// In a row, the replica with fewer failures is the refuge: ejecting the other is allowed.
	s2, _, ejected2 := newSet(2, Config{})
	fail(s2, 1, 4)
	fail(s2, 0, 5)
	if len(*ejected2) != 1 || !s2.Snapshot(0).Ejected {
		t.Errorf("ejections %v, want replica 0 (5 in a row, its sibling 4)", *ejected2)
	}
}

// TestStalledReplicaEjected: a replica that sends no first frame while calls wait on it, and its
// sibling answers 10 calls that started after them, over at least half the time the oldest
// has waited, is ejected once the oldest has waited StallAfter, before any of its calls fails;
// not when it still answers some, has two calls waiting, or the whole machine stalled.
func TestStalledReplicaEjected(t *testing.T) {
	t.Parallel()
	only := func(i int) Mask { return Mask(0).With(1 - i) } // tried: the other one
	// wait starts n attempts on replica 0 that get no first frame.
	wait := func(t *testing.T, s *Set, n int) {
		t.Helper()
		for range n {
			if i, err := s.Pick(only(0), Primary); err != nil || i != 0 {
				t.Fatalf("Pick: %d, %v", i, err)
			}
		}
	}
	// answer starts an attempt on replica 1 and gives it a first frame ttff later.
	answer := func(t *testing.T, s *Set, clk *clock, ttff time.Duration) {
		t.Helper()
		if i, err := s.Pick(only(1), Primary); err != nil || i != 1 {
			t.Fatalf("Pick: %d, %v", i, err)
		}
		clk.Advance(ttff)
		s.FirstFrame(1, ttff, 0)
		s.Done(1, Success, true, ttff, 0)
	}
	for _, tc := range []struct {
		name    string
		waiting int
		framed  bool // replica 0 answers one of its calls after they started
		before  bool // replica 0 answers, after they started, a call that started before them
		fresh   bool // replica 0 has never answered a call
		want    bool
	}{
		{name: "stalled", waiting: 3, want: true},
		{name: "stalled with a call from before", waiting: 3, before: true, want: true},
		{name: "two calls waiting", waiting: 2},
		{name: "never answered", waiting: 3, fresh: true},
		{name: "still answering", waiting: 6, framed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, clk, _ := newSet(2, Config{})
			if !tc.fresh {
				s.FirstFrame(0, 0, 0) // it answered once, before the test's calls
				clk.Advance(time.Millisecond)
			}
			epoch := clk.t
			if tc.before {
				wait(t, s, 1)
				clk.Advance(time.Millisecond)
				epoch = clk.t
			}
			wait(t, s, tc.waiting)
			if tc.before {
				clk.Advance(time.Millisecond)
				s.FirstFrame(0, 2*time.Millisecond, 0)
			}
			if tc.framed {
				clk.Advance(time.Millisecond)
				s.FirstFrame(0, time.Millisecond, 0)
			}
			// Replica 1 answers a call every 10ms in 5ms: 24 of them before StallAfter.
			for clk.t.Sub(epoch) < DefaultStallAfter-10*time.Millisecond {
				clk.Advance(5 * time.Millisecond)
				answer(t, s, clk, 5*time.Millisecond)
			}
			if s.Ejected(0) {
				t.Fatal("ejected before StallAfter")
			}
			for clk.t.Sub(epoch) < 2*DefaultStallAfter {
				clk.Advance(5 * time.Millisecond)
				answer(t, s, clk, 5*time.Millisecond)
			}
			if got := s.Ejected(0); got != tc.want {
				t.Errorf("replica 0 ejected %v after %d calls waited 500ms while replica 1 answered in 5ms, want %v",
					got, tc.waiting, tc.want)
			}
			if s.Ejected(1) {
				t.Error("the answering replica was ejected")
			}
		})
	}

	// The whole machine stalls for 400ms: the sibling's calls that started in it answer after
	// it, as late, and replica 0 answers its oldest call soon after.
	s, clk, _ := newSet(2, Config{})
	wait(t, s, 5)
	for range 20 {
		clk.Advance(20 * time.Millisecond)
		if i, err := s.Pick(only(1), Primary); err != nil || i != 1 {
			t.Fatalf("Pick: %d, %v", i, err)
		}
	}
	for k := range 20 { // the k-th started at 20(k+1)ms and answers at 400ms
		s.FirstFrame(1, time.Duration(380-20*k)*time.Millisecond, 0)
	}
	if s.Ejected(0) {
		t.Error("replica 0 ejected after a stall of the whole machine")
	}

	// The sibling's answer must be for a call that started after the oldest waiting one.
	s, clk, _ = newSet(2, Config{})
	setCost(s, 1, 5*time.Millisecond)
	if i, err := s.Pick(only(1), Primary); err != nil || i != 1 {
		t.Fatalf("Pick: %d, %v", i, err)
	}
	clk.Advance(time.Millisecond)
	wait(t, s, 5)
	clk.Advance(time.Second)
	s.FirstFrame(1, time.Second+time.Millisecond, 0) // started before them
	if s.Ejected(0) {
		t.Error("replica 0 ejected on an answer to a call older than its own")
	}
}
