// Package replica chooses which replica of a shard serves each attempt of a shard call, and keeps
// replicas that keep failing out of the choice for a while.
//
// Choice: each replica has a load score, a peak-sensitive moving average of its time to first
// frame (Finagle's PeakEwma: a slower sample replaces the average at once, a faster one is blended
// in by the time since the last sample, and the average decays toward zero while nothing is
// measured, so an avoided replica is eventually tried again) times its attempts in flight plus
// one. Pick takes two candidates at random and returns the one with the lower load (the power of
// two choices). Replicas start pessimistic, so that none is flooded before it has been measured
// (ES #147579): a new Set's at InitialCost, a replica back from ejection or whose connection came
// back at twice the worst score of its siblings (at least InitialCost); they ramp up as that
// decays and measurements come in.
//
// Ejection (Envoy's outlier detection, adapted to the two or three replicas a shard has): a
// replica is ejected after ConsecutiveFailures failed attempts in a row, or when its success
// rate over an interval is far below its siblings'; for EjectBase × n (n: times ejected), at most
// EjectMax. It then returns on probation: one failure ejects it again, for longer, and
// ProbationSuccesses successes clear it. Ejection never takes the last usable replica of a shard,
// nor more than half of them (a replica that is not Ready is not usable).
//
// A Set is safe for concurrent use. Every method takes its one mutex for a few hundred
// nanoseconds; with Config.Now and Config.Rand fixed it is deterministic.
package replica

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// MaxReplicas is the most replicas a Set holds: a Mask has a bit for each.
const MaxReplicas = 64

// Mask is a set of replicas by index, bit i for replica i.
type Mask uint64

// Has reports whether i is in m.
func (m Mask) Has(i int) bool { return m&(1<<uint(i)) != 0 }

// With returns m with i added.
func (m Mask) With(i int) Mask { return m | 1<<uint(i) }

// Mode says what an attempt may be sent to.
type Mode int

const (
	// Primary is for a shard call's first attempt and its retries: a Ready replica (see
	// Config.Health) that is not ejected if there is one, else any replica not tried yet, not
	// ejected first, so that a call always has somewhere to go while a replica remains.
	Primary Mode = iota
	// Hedge is for a hedge: only a Ready replica that is not ejected and not slow, that is, that
	// usually sends its first frame within the hedge delay (see Set.FirstFrame). When every such
	// replica is slow, the whole shard is, and a hedge would only add to its load.
	Hedge
)

// Errors of Pick.
var (
	// ErrNoCandidate: every replica has been tried, or (Hedge) none is Ready and not ejected.
	ErrNoCandidate = errors.New("no replica left to try")
	// ErrSlow (Hedge only): there are candidates, but each of them usually sends its first frame
	// later than the hedge delay: the whole shard is slow.
	ErrSlow = errors.New("every other replica is as slow as the one waiting")
)

// Health is what a replica's connection allows.
type Health int

const (
	// Ready: it can take an attempt now (a gRPC connection READY or IDLE).
	Ready Health = iota
	// Connecting: not yet, but it is not known to be down.
	Connecting
	// Down: it cannot be reached (TRANSIENT_FAILURE, SHUTDOWN). A replica that comes back from
	// Down starts pessimistic, as a new one.
	Down
)

// Outcome is what an ended attempt says about its replica.
type Outcome int

const (
	// Neutral attempts say nothing about the replica's health: the query was cancelled or its
	// deadline passed, another attempt won the race, the query's hit budget ran out.
	Neutral Outcome = iota
	// Success: the stream ended cleanly, or the proxy stopped reading it once it had enough.
	Success
	// Failure counts toward ejection: the shard's own error, UNAVAILABLE, RESOURCE_EXHAUSTED, a
	// protocol violation, a cut by the per-shard deadline or the idle timeout, also when the
	// error came as the trailer of a stream that had sent hits.
	Failure
)

// Defaults of Config.
const (
	DefaultDecay               = 10 * time.Second
	DefaultInitialCost         = 30 * time.Millisecond
	DefaultConsecutiveFailures = 5
	DefaultEjectBase           = 30 * time.Second
	DefaultEjectMax            = 300 * time.Second
	DefaultProbationSuccesses  = 3
	DefaultRateInterval        = 10 * time.Second
	DefaultRateMinRequests     = 20
	DefaultRateRatio           = 0.7
	DefaultStallAfter          = 250 * time.Millisecond
)

// What makes a replica stalled besides Config.StallAfter: at least stallWaiting attempts
// waiting on it, and stallOutpaced first frames of its siblings for attempts that started after
// its oldest waiting one, the first of them at least 1/stallFactor of that one's age ago.
const (
	stallWaiting  = 3
	stallOutpaced = 10
	stallFactor   = 2
)

// Config holds a Set's tunables; the zero value of a field means its default.
type Config struct {
	// Decay is the time constant of the load score and of the slow share: what was measured
	// this long ago weighs 1/e of what is measured now. Default 10s.
	Decay time.Duration
	// InitialCost is the time to first frame assumed of a replica nothing is known about, and
	// the least a returning replica starts at. Default 30ms.
	InitialCost time.Duration
	// ConsecutiveFailures failed attempts in a row eject a replica. Default 5.
	ConsecutiveFailures int
	// EjectBase × n is how long the n-th ejection of a replica lasts, at most EjectMax. n goes
	// back to 0 once the replica has been healthy (not ejected, off probation) for EjectMax.
	// Defaults 30s and 300s.
	EjectBase, EjectMax time.Duration
	// ProbationSuccesses successful attempts clear a returning replica's probation. Default 3.
	ProbationSuccesses int
	// Every RateInterval, a replica with at least RateMinRequests ended attempts whose success
	// rate is below RateRatio times that of its siblings together (with at least as many
	// attempts) is ejected. Envoy compares with the mean minus 1.9 standard deviations over at
	// least 5 hosts, which a shard of two or three replicas never has. Defaults 10s, 20, 0.7.
	RateInterval    time.Duration
	RateMinRequests int
	RateRatio       float64
	// StallAfter: a replica is stalled, and ejected at once rather than after its calls have
	// failed, when attempts wait on it for their first frame (stallWaiting or more), the oldest
	// for StallAfter, it has sent no first frame for an attempt that started after that oldest
	// one (those that started before may still answer: it went slow with them in flight; one
	// that has never answered, or whose connection is not READY, is not stalled), and its
	// siblings have sent stallOutpaced first frames for attempts that started later, over at
	// least half the time the oldest has waited. A replica that hangs is then routed around
	// within a fraction of a second, and the calls stuck on it can move (Set.Ejected) before
	// their deadline. A stall of the whole machine holds the siblings' first frames back as
	// long, then lets them all come at once; a replica that is merely slow still sends some.
	// Default 250ms.
	StallAfter time.Duration
	// Health reports what replica i's connection allows now. It is called with the Set's lock
	// held, for every replica on every Pick. Default: always Ready.
	Health func(i int) Health
	// OnEject is called, with the Set's lock held, when replica i is ejected for d.
	OnEject func(i int, d time.Duration)
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Rand draws the two candidates. Default: a generator seeded at random.
	Rand *rand.Rand
}

func (c Config) withDefaults() Config {
	durations := []struct {
		v   *time.Duration
		def time.Duration
	}{{&c.Decay, DefaultDecay}, {&c.InitialCost, DefaultInitialCost}, {&c.EjectBase, DefaultEjectBase},
		{&c.EjectMax, DefaultEjectMax}, {&c.RateInterval, DefaultRateInterval}, {&c.StallAfter, DefaultStallAfter}}
	for _, d := range durations {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if c.ConsecutiveFailures <= 0 {
		c.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if c.ProbationSuccesses <= 0 {
		c.ProbationSuccesses = DefaultProbationSuccesses
	}
	if c.RateMinRequests <= 0 {
		c.RateMinRequests = DefaultRateMinRequests
	}
	if c.RateRatio <= 0 {
		c.RateRatio = DefaultRateRatio
	}
	if c.Health == nil {
		c.Health = func(int) Health { return Ready }
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return c
}

// Set is the replicas of one shard, by index from 0.
type Set struct {
	cfg   Config
	epoch time.Time
	decay float64 // cfg.Decay in nanoseconds

	mu       sync.Mutex
	reps     []state
	nextRate time.Duration // when the success rates are next compared
}

// state is one replica. Times are since the Set's epoch; costs are in nanoseconds.
type state struct {
	cost    float64       // the peak-EWMA time to first frame, as of stamp
	stamp   time.Duration // when cost was last set
	pending int           // attempts in flight
	// waiting holds the start times of the attempts in flight without a first frame yet, oldest
	// first, and waitSum their sum: their mean age is a lower bound of the replica's time to
	// first frame that holds before any of them ends (see load).
	waiting []time.Duration
	waitSum time.Duration
	// censored counts the attempts in a row that ended without a first frame; each doubles the
	// lower bound the next one records, up to 16 times its elapsed time.
	censored int
	// late and sampled count, decaying, the recent attempts without a first frame within the
	// hedge delay and all recent attempts measured against it, as of lateStamp: the replica is
	// slow while late is at least half of sampled, and of slowMinSamples.
	late, sampled float64
	lateStamp     time.Duration
	framedStart   time.Duration // the latest start of an attempt it sent a first frame for
	// outpaced counts the siblings' first frames that outpaced its oldest waiting attempt,
	// which started at outpacedSince, the first of them at outpacedFirst (see
	// Config.StallAfter).
	outpaced      int
	outpacedSince time.Duration
	outpacedFirst time.Duration
	down          bool // Health was Down when Pick last looked

	failures int // failed attempts in a row
	ok, bad  int // attempts ended this success-rate interval
	ejected  bool
	until    time.Duration // end of the ejection
	times    int           // ejections so far (n)
	// probation is how many successes a returning replica still needs; 0 is off probation.
	probation int
	healthy   time.Duration // since when it is neither ejected nor on probation
}

const (
	// slowMinSamples: a replica with few recent attempts needs at least half this many late
	// ones to be slow, however few attempts it had: 3 within a few seconds.
	slowMinSamples = 5
	minCost        = 1e3 // 1µs: a decayed score never reaches zero, so in-flight attempts still count
	maxDoubles     = 4   // a censored attempt records at most 2^4 times its elapsed time
)

// NewSet returns a Set of n replicas (1 to MaxReplicas), all of them new.
func NewSet(n int, cfg Config) *Set {
	if n < 1 || n > MaxReplicas {
		panic("replica: NewSet of a number of replicas out of range") // checked by every caller
	}
	cfg = cfg.withDefaults()
	s := &Set{cfg: cfg, epoch: cfg.Now(), decay: float64(cfg.Decay), reps: make([]state, n)}
	s.nextRate = cfg.RateInterval
	for i := range s.reps {
		r := &s.reps[i]
		r.cost, r.framedStart = float64(cfg.InitialCost), math.MinInt64
	}
	return s
}

// Len is the number of replicas.
func (s *Set) Len() int { return len(s.reps) }

func (s *Set) now() time.Duration { return s.cfg.Now().Sub(s.epoch) }

// decayed is r's cost at now.
func (s *Set) decayed(r *state, now time.Duration) float64 {
	return r.cost * math.Exp(-float64(now-r.stamp)/s.decay)
}

// load is r's load score at now: its decayed cost times its attempts in flight plus one. The
// cost is at least the mean age of its attempts still waiting for a first frame: a replica that
// has just stopped answering has a cost measured when it answered, and would keep being picked
// until its first waiting attempts ended, seconds later, while every call sent to it waits.
func (s *Set) load(r *state, now time.Duration) float64 {
	cost := s.decayed(r, now)
	if n := time.Duration(len(r.waiting)); n > 0 {
		cost = max(cost, float64(now-r.waitSum/n))
	}
	return max(cost, minCost) * float64(r.pending+1)
}

// answered takes the waiting attempt of r that started at start, by the caller's measure, off
// the waiting ones: the one whose recorded start is nearest (the caller's clock reading is taken
// just after Pick's).
func (r *state) answered(start time.Duration) {
	if len(r.waiting) == 0 {
		return
	}
	best := 0
	for i, t := range r.waiting {
		if (t - start).Abs() < (r.waiting[best] - start).Abs() {
			best = i
		}
	}
	r.waitSum -= r.waiting[best] // the recorded start, so the sum stays exact
	r.waiting = slices.Delete(r.waiting, best, best+1)
}

// started counts an attempt on r that started at now as waiting for its first frame.
func (r *state) started(now time.Duration) {
	r.waiting = append(r.waiting, now)
	r.waitSum += now
}

// slow reports whether at least half of r's recent attempts, and at least slowMinSamples/2
// attempts, were late at now. A share over the attempts of the last Decay or so, rather than a moving
// average over the last few attempts: a stall that makes a burst of attempts late at once (the
// whole machine, not the replica) does not make a replica slow that answered many more in time.
func (s *Set) slow(r *state, now time.Duration) bool {
	w := math.Exp(-float64(now-r.lateStamp) / s.decay)
	return r.late*w >= 0.5*max(r.sampled*w, slowMinSamples)
}

// pessimistic gives r the start of a new replica: twice the worst decayed cost of its siblings,
// at least InitialCost, so that it is not flooded before it has been measured.
func (s *Set) pessimistic(r *state, now time.Duration) {
	worst := float64(s.cfg.InitialCost)
	for i := range s.reps {
		if o := &s.reps[i]; o != r && !o.ejected {
			worst = max(worst, 2*s.decayed(o, now))
		}
	}
	r.cost, r.stamp, r.censored, r.late, r.sampled = worst, now, 0, 0, 0
}

// Pick chooses a replica not in tried for an attempt and counts the attempt in flight on it until
// Done. Of the candidates that mode allows, it takes two at random and returns the one with the
// lower load score (a single candidate is returned as it is). Errors: ErrNoCandidate, and in
// Hedge mode ErrSlow.
func (s *Set) Pick(tried Mask, mode Mode) (int, error) { return s.pick(tried, mode, 0) }

// PickHedge is Pick in Hedge mode for a call whose attempt has waited for its first frame for
// waited. A slow replica is a candidate once waited is at least twice its cost (its typical time
// to first frame, see Set.FirstFrame): the whole shard may be slow, but the waiting attempt is
// slow even for it, and is more likely stuck on its replica than about to answer. A whole shard
// that is uniformly slow is still not hedged: its attempts answer before they have waited that
// long.
func (s *Set) PickHedge(tried Mask, waited time.Duration) (int, error) {
	return s.pick(tried, Hedge, waited)
}

func (s *Set) pick(tried Mask, mode Mode, waited time.Duration) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.expire(now)
	var cand [MaxReplicas]int8
	n, open, slow := 0, 0, 0 // candidates; untried; Ready, not ejected but slow
	for i := range s.reps {
		r := &s.reps[i]
		h := s.cfg.Health(i)
		if h == Ready && r.down && !r.ejected {
			s.pessimistic(r, now) // its connection came back
		}
		r.down = h == Down
		if tried.Has(i) {
			continue
		}
		open++
		if h != Ready || r.ejected {
			continue
		}
		if mode == Hedge && s.slow(r, now) && float64(waited) < 2*s.decayed(r, now) {
			slow++
			continue
		}
		cand[n] = int8(i)
		n++
	}
	if n == 0 && mode == Primary && open > 0 {
		// Nothing Ready and healthy: any replica not ejected, then any at all, rather than none.
		for pass := 0; pass < 2 && n == 0; pass++ {
			for i := range s.reps {
				if !tried.Has(i) && (pass == 1 || !s.reps[i].ejected) {
					cand[n] = int8(i)
					n++
				}
			}
		}
	}
	switch {
	case n == 0 && slow > 0:
		return 0, ErrSlow
	case n == 0:
		return 0, ErrNoCandidate
	}
	pick := int(cand[0])
	if n > 1 {
		a := s.cfg.Rand.IntN(n)
		b := s.cfg.Rand.IntN(n - 1)
		if b >= a {
			b++
		}
		pick = int(cand[a])
		if other := int(cand[b]); s.load(&s.reps[other], now) < s.load(&s.reps[pick], now) {
			pick = other
		}
	}
	s.reps[pick].pending++
	s.reps[pick].started(now)
	return pick, nil
}

// FirstFrame records that an attempt on replica i got its first frame ttff after it started;
// lateAfter is the hedge delay then (0: none), against which the slow share is kept.
func (s *Set) FirstFrame(i int, ttff, lateAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	r := &s.reps[i]
	r.answered(now - ttff)
	w := math.Exp(-float64(now-r.stamp) / s.decay)
	if rtt := float64(ttff); rtt > r.cost*w {
		r.cost = rtt // peak-sensitive: a slower sample counts in full at once
	} else {
		r.cost = r.cost*w + rtt*(1-w)
	}
	r.stamp, r.censored, r.framedStart = now, 0, max(r.framedStart, now-ttff)
	if lateAfter > 0 {
		s.sampleLate(r, now, ttff > lateAfter)
	}
	s.outpaces(i, now, now-ttff)
}

// outpaces counts a first frame of replica i, for an attempt that started at start, against
// its siblings' oldest waiting attempts, and ejects those that are stalled (Config.StallAfter).
func (s *Set) outpaces(i int, now, start time.Duration) {
	for k := range s.reps {
		r := &s.reps[k]
		// A replica that has never answered, or whose connection is not up, is new or coming
		// back, not stalled: its first calls wait for the connection and a cold process (in a
		// replacement under load, one was ejected so and its twin took every call, then was
		// killed with them in flight). Failures in a row still eject it.
		if k == i || r.ejected || len(r.waiting) < stallWaiting || r.framedStart == math.MinInt64 || s.cfg.Health(k) != Ready {
			continue
		}
		oldest := r.waiting[0]
		if r.outpacedSince != oldest {
			r.outpaced, r.outpacedSince = 0, oldest
		}
		if oldest < start && r.framedStart < oldest {
			if r.outpaced++; r.outpaced == 1 {
				r.outpacedFirst = now
			}
			if age := now - oldest; r.outpaced >= stallOutpaced && age >= s.cfg.StallAfter && (now-r.outpacedFirst)*stallFactor >= age {
				s.eject(k, now, ejectStalled)
			}
		}
	}
}

// sampleLate counts one attempt of r, late or not, in its slow share.
func (s *Set) sampleLate(r *state, now time.Duration, late bool) {
	w := math.Exp(-float64(now-r.lateStamp) / s.decay)
	r.late, r.sampled, r.lateStamp = r.late*w, r.sampled*w+1, now
	if late {
		r.late++
	}
}

// Done records the end of an attempt on replica i that Pick counted in flight. firstFrame says
// whether it had one (FirstFrame was called); if not, elapsed, its time from start to end, is a
// lower bound of its time to first frame and raises the score if it is higher (doubled for each
// such attempt in a row before it, up to 16 times: an attempt that keeps being cut before its
// first frame is always cut early, so its elapsed time alone understates a replica that hangs),
// and counts as late if it is at least lateAfter. The outcome counts toward ejection.
func (s *Set) Done(i int, o Outcome, firstFrame bool, elapsed, lateAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	r := &s.reps[i]
	r.pending--
	if !firstFrame {
		r.answered(now - elapsed)
		bound := float64(elapsed) * float64(int(1)<<min(r.censored, maxDoubles))
		r.censored++
		if c := s.decayed(r, now); bound > c {
			r.cost, r.stamp = bound, now
		}
		if lateAfter > 0 && elapsed >= lateAfter {
			s.sampleLate(r, now, true)
		}
	}
	switch o {
	case Success:
		r.failures = 0
		r.ok++
		if r.probation > 0 {
			if r.probation--; r.probation == 0 {
				r.healthy = now
			}
		}
	case Failure:
		r.failures++
		r.bad++
		if !r.ejected && (r.probation > 0 || r.failures >= s.cfg.ConsecutiveFailures) {
			s.eject(i, now, ejectInARow)
		}
	}
	if now >= s.nextRate {
		s.compareRates(now)
	}
}

// expire returns the replicas whose ejection is over, on probation.
func (s *Set) expire(now time.Duration) {
	for i := range s.reps {
		if r := &s.reps[i]; r.ejected && now >= r.until {
			r.ejected, r.failures, r.probation = false, 0, s.cfg.ProbationSuccesses
			s.pessimistic(r, now)
		}
	}
}

// Why a replica is ejected.
type ejectReason int

const (
	ejectInARow  ejectReason = iota // ConsecutiveFailures failures in a row, or one on probation
	ejectRate                       // its success rate, far below its siblings'
	ejectStalled                    // stalled (Config.StallAfter)
)

// eject ejects replica i unless that would leave its shard without a refuge, another Ready
// replica with a better record, or eject more than half of them.
//
// A refuge is off probation and, when i is ejected for its failures in a row, has had fewer of
// them than i (ejected for its success rate, i's siblings' rate is better already; stalled, a
// sibling has just answered a call that started later; on probation, failing at all is the
// evidence):
// ejecting i only moves its calls to the others, and when the others are failing as much, or
// have only just come back from an ejection of their own and not yet proved themselves, that
// makes things worse. Under an
// overload that makes a healthy replica's calls miss their deadline, it would otherwise be
// ejected for 30s while its twin, back on probation from being ejected as hung, took every call.
func (s *Set) eject(i int, now time.Duration, why ejectReason) {
	r := &s.reps[i]
	ejected, others := 0, 0
	for j := range s.reps {
		o := &s.reps[j]
		switch {
		case o.ejected:
			ejected++
		case j != i && s.cfg.Health(j) == Ready && o.probation == 0 && (why != ejectInARow || r.probation > 0 || o.failures < r.failures):
			others++
		}
	}
	if others == 0 || (ejected+1)*2 > len(s.reps) {
		return // it stays in; a later failure tries again
	}
	if r.probation == 0 && r.times > 0 && now-r.healthy >= s.cfg.EjectMax {
		r.times = 0 // healthy for long enough: a new ejection starts short again
	}
	r.times++
	d := min(s.cfg.EjectBase*time.Duration(r.times), s.cfg.EjectMax)
	r.ejected, r.until, r.failures, r.probation = true, now+d, 0, 0
	if s.cfg.OnEject != nil {
		s.cfg.OnEject(i, d)
	}
}

// compareRates ejects the replicas whose success rate over the interval that ends now is far
// below their siblings', and starts the next interval.
func (s *Set) compareRates(now time.Duration) {
	least := s.cfg.RateMinRequests
	for i := range s.reps {
		r := &s.reps[i]
		if r.ejected || r.ok+r.bad < least {
			continue
		}
		var ok, all int
		for j := range s.reps {
			if o := &s.reps[j]; j != i && !o.ejected {
				ok, all = ok+o.ok, all+o.ok+o.bad
			}
		}
		if all < least {
			continue
		}
		if rate, siblings := float64(r.ok)/float64(r.ok+r.bad), float64(ok)/float64(all); rate < s.cfg.RateRatio*siblings {
			s.eject(i, now, ejectRate)
		}
	}
	for i := range s.reps {
		s.reps[i].ok, s.reps[i].bad = 0, 0
	}
	s.nextRate = now + s.cfg.RateInterval
}

// Ejected reports whether replica i is ejected now. An attempt waiting on a replica that has
// been ejected since it started may move to another without a hedge's token (the fan-out's
// failover): it is no bet on the tail, its replica has been found hung or failing.
func (s *Set) Ejected(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(s.now())
	return s.reps[i].ejected
}

// Snapshot is one replica's state, for metrics.
type Snapshot struct {
	// Score is the load score: the decayed time to first frame times the attempts in flight
	// plus one.
	Score time.Duration
	// Ejected is true while the replica is ejected; Probation while it is on probation.
	Ejected, Probation bool
	// Slow is true while the replica usually sends its first frame later than the hedge delay.
	Slow bool
}

// Snapshot returns the state of replica i now.
func (s *Set) Snapshot(i int) Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.expire(now)
	r := &s.reps[i]
	return Snapshot{Score: time.Duration(s.load(r, now)), Ejected: r.ejected, Probation: r.probation > 0, Slow: s.slow(r, now)}
}
