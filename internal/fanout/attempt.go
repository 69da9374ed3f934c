package fanout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/hedge"
	"github.com/gatherproxy/gather/internal/replica"
)

// shardCall is one shard's part of a query: its attempts, and what they share. The shard call's
// goroutine (Start's) runs the first attempt and the retries one after the other; a hedge runs in
// a goroutine of its own, started by the timer, which the shard call's goroutine joins before it
// returns. Everything under mu is shared by those goroutines and the timer's function.
type shardCall struct {
	call     *Call
	s        *shard
	cur      *Cursor
	res      *Result
	req      *shardv1.SearchRequest
	ctx      context.Context // the caller's context, cut at the per-shard deadline
	deadline time.Time
	idle     time.Duration
	// delay is the hedge delay the call started with; 0 if it cannot hedge (one replica, or
	// hedging off).
	delay time.Duration
	span  trace.Span
	// contract and the hit budget apply to the winner's hits only.
	contract contract
	// timer fires after the hedge delay until an attempt delivers its first message (phaseHedge),
	// then after the idle timeout (phaseIdle, reset on every message with hits), or at drainAt
	// while the winner waits for the merge to ask for more (phaseParked): one timer serves all
	// three, as they never run at once.
	timer *time.Timer
	// drainAt is when the winner stops waiting only for demand (see drained): a quarter of the
	// way to the per-shard deadline. A merge held up that long is waiting for a slow shard, which
	// the deadline may cut; the shards that have sent what the merge may still need must then not
	// be cut with it unread. When those shards are stuck, the three quarters of the time left
	// leave the reading ample room on a loaded machine (an eighth, 25ms of a 200ms shard timeout,
	// and a half did not always suffice under the race detector on a busy machine), and a healthy
	// query is over long before.
	drainAt time.Time
	start   time.Time
	// wake wakes the winner waiting in await or drained: drainAt passed, it was outranked, or
	// quietEnd passed (see drained). It holds one wake-up. Made by the first wait (wakeChan),
	// under mu: a call whose shard has sent nothing yet does not hold one.
	wake chan struct{}
	// lastGiven is the last hit the winner gave the cursor; written and read by the winner's
	// goroutine only.
	lastGiven Hit

	mu        sync.Mutex
	phase     phase
	skipFires int  // the timer's function is due this many times for firings made moot
	readOn    bool // the winner no longer waits for demand (see drained)
	denied    bool // a hedge was denied (and is asked for again, see startHedge)
	done      bool // no attempt starts any more
	winner    *attempt
	last      *attempt // the attempt that ended last without winning
	live      [2]*attempt
	tried     replica.Mask
	attempts  int
	hedges    sync.WaitGroup // the hedge's goroutine, if one was started

	primary attempt  // the first attempt, then each retry in turn
	hedge   *attempt // made when a hedge starts
}

type phase int

const (
	phaseNone    phase = iota // the timer is stopped
	phaseHedge                // the timer is the hedge delay
	phaseHedged               // the hedge delay passed
	phaseIdle                 // an attempt won; the timer is the idle timeout
	phaseParked               // the winner waits for demand; the timer is drainAt
	phaseQuiet                // past drainAt, the winner waits to be outranked; the timer is quietEnd
	phaseDrained              // drainAt or quietEnd passed
)

// attempt is one stream of a shard call, on one replica. Its fields are written by the goroutine
// that runs it (and by prepare, under the shard call's lock, before it runs).
type attempt struct {
	ep     *endpoint
	index  int // of ep in its shard's replicas
	source Source
	slot   int // in shardCall.live
	ctx    context.Context
	cancel context.CancelCauseFunc
	start  time.Time
	framed bool  // it delivered its first message, or ended cleanly without one
	local  bool  // err came from starting the stream: the request never reached the replica
	err    error // what ended it; nil for a clean end
	// pull is its stream when it is a Pull stream (Config.PullFanOut); nil for Search.
	pull grpc.BidiStreamingClient[shardv1.PullRequest, shardv1.SearchResponse]
	// codec is the attempt's own: it counts the hits of a message before decoding it.
	codec codec
	force grpc.ForceCodecV2CallOption
	opts  [1]grpc.CallOption
}

// run runs one shard's part of the call to its end, feeding cur and filling res. ctx is the
// call's context with the shard call's span.
func (call *Call) run(ctx context.Context, span trace.Span, s *shard, deadline time.Time, req *shardv1.SearchRequest,
	cur *Cursor, res *Result) {
	c := call.client
	start := time.Now()
	if len(s.replicas) == 0 {
		res.ReplicaIndex, res.Status, res.Err = -1, StatusUnavailable, ErrNoReplica
		call.failed.Add(1)
		return
	}
	sctx, cancel := context.WithDeadlineCause(ctx, deadline, ErrShardDeadline)
	defer cancel()
	sc := &shardCall{call: call, s: s, cur: cur, res: res, req: req, ctx: sctx, deadline: deadline,
		idle: c.cfg.IdleTimeout, span: span, drainAt: start.Add(deadline.Sub(start) / 4), start: start,
		contract: contract{lim: &c.limits, topK: req.GetTopK(), sets: c}}
	defer sc.contract.release()
	if s.delay != nil {
		c.budget.Deposit()
		sc.delay = s.delay.Current()
		sc.phase = phaseHedge
		sc.timer = time.AfterFunc(sc.delay, sc.onTimer)
	} else {
		sc.timer = time.AfterFunc(time.Hour, sc.onTimer)
		sc.timer.Stop()
	}
	defer sc.timer.Stop()

	sc.attemptAll()

	a := sc.winner // no lock: every attempt has ended
	if a == nil {
		a = sc.last
	}
	res.Replica, res.ReplicaIndex, res.Source, res.Attempts = a.ep.addr, a.index, a.source, sc.attempts
	res.Latency = time.Since(start)
	res.Status, res.Err = classify(ctx, a.ctx, a.err)
	if res.Status == StatusOK && a.err != nil && (errors.Is(context.Cause(ctx), ErrStoppedEarly) || errors.Is(context.Cause(a.ctx), ErrStoppedEarly)) {
		res.StoppedEarly = true
	}
	if res.Err != nil {
		res.Err = &cleanError{msg: CleanText(res.Err.Error()), err: res.Err}
	}
	if res.Status != StatusOK {
		call.failed.Add(1)
	}
	for _, a := range [2]*attempt{&sc.primary, sc.hedge} {
		if a != nil && a.cancel != nil {
			a.cancel(nil)
		}
	}
}

// attemptAll runs the first attempt, then retries while they are due, each time after the hedge
// (if one started) has ended too; it returns once every attempt has ended and none can start.
func (sc *shardCall) attemptAll() {
	a := sc.begin(SourcePrimary) // never nil: a shard has a replica
	for a != nil {
		sc.runAttempt(a)
		sc.mu.Lock()
		hedged := sc.hedge != nil
		sc.mu.Unlock()
		if hedged {
			sc.hedges.Wait() // the hedge decides now: it answers, or it fails too
		}
		due, spent := sc.retry()
		if !due {
			break
		}
		if a = sc.begin(SourceRetry); a == nil && spent {
			sc.call.client.budget.Refund()
		}
	}
	sc.mu.Lock()
	sc.done = true
	sc.mu.Unlock()
	sc.hedges.Wait() // Add happens under mu before done, so never concurrently with this Wait
}

// begin prepares the first attempt or a retry on a replica not tried yet, or returns nil if none
// is left.
func (sc *shardCall) begin(source Source) *attempt {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	i := 0
	if set := sc.s.set; set != nil {
		var err error
		if i, err = set.Pick(sc.tried, replica.Primary); err != nil {
			return nil
		}
	} else if sc.tried.Has(0) {
		return nil
	}
	if source == SourceRetry && sc.span.IsRecording() {
		// Before prepare: the attempt that failed may be the one the retry reuses.
		sc.span.AddEvent("gather.retry", trace.WithAttributes(attribute.String("gather.replica", sc.s.replicas[i].addr),
			attribute.String("gather.after", CleanText(sc.last.err.Error()))))
	}
	sc.prepare(&sc.primary, i, source, 0)
	return &sc.primary
}

// prepare makes a ready to run on replica i. Called with mu held.
func (sc *shardCall) prepare(a *attempt, i int, source Source, slot int) {
	c := sc.call.client
	if a.cancel != nil {
		a.cancel(nil) // the retry's predecessor: its stream has ended
	}
	a.ep, a.index, a.source, a.slot, a.framed, a.local, a.err = sc.s.replicas[i], i, source, slot, false, false, nil
	a.ctx, a.cancel = context.WithCancelCause(sc.ctx)
	a.codec = codec{base: c.codec, topK: int(sc.req.GetTopK()), maxFields: c.cfg.MaxFields, decoded: c.metrics.decoded,
		spans: a.codec.spans}
	a.force.CodecV2 = &a.codec
	a.opts[0] = &a.force
	a.start = time.Now()
	sc.live[slot] = a
	sc.tried = sc.tried.With(i)
	sc.attempts++
	sc.s.m.selections[i].Inc()
}

// retry reports whether another attempt is due after every attempt so far ended without an
// answer, and whether a token was spent for it: the last one failed with UNAVAILABLE or
// RESOURCE_EXHAUSTED before its first message, the per-shard deadline has not passed, a replica
// is left to try, and a token was spent, unless the request never reached the replica (grpc-go
// had no connection to it), which costs the shards nothing and is retried without one, as
// grpc-go's transparent retries are.
func (sc *shardCall) retry() (due, spent bool) {
	sc.mu.Lock()
	a, won, tried := sc.last, sc.winner != nil, bits.OnesCount64(uint64(sc.tried))
	sc.mu.Unlock()
	if won || a == nil || a.framed || sc.ctx.Err() != nil || tried >= len(sc.s.replicas) {
		return false, false
	}
	switch code := status.Code(a.err); {
	case a.local && code == codes.Unavailable:
		return true, false
	case code != codes.Unavailable && code != codes.ResourceExhausted:
		return false, false
	}
	if !sc.call.client.budget.Spend() {
		sc.s.m.retry[outcomeDenied].Inc()
		return false, false
	}
	return true, true
}

// onTimer is the timer's function: after the hedge delay, it starts a hedge if the policy
// allows; after the idle timeout, it cancels the winner.
func (sc *shardCall) onTimer() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.skipFires > 0 {
		sc.skipFires--
		return
	}
	switch sc.phase {
	case phaseHedge:
		sc.phase = phaseHedged
		if sc.winner == nil && !sc.done {
			sc.startHedge()
		}
	case phaseIdle:
		sc.winner.cancel(fmt.Errorf("%w (%s)", ErrIdle, sc.idle))
	case phaseParked:
		if time.Now().Before(sc.drainAt) {
			return // an idle timeout that fired as the winner parked
		}
		sc.phase = phaseDrained
		sc.poke()
	case phaseQuiet:
		if end := sc.quietEnd(); time.Now().Before(end) {
			sc.timer.Reset(time.Until(end)) // a shard gave since, or an idle timeout fired
			return
		}
		sc.phase, sc.readOn = phaseDrained, true
		sc.poke()
	}
}

// await waits, after the winner a gave the cursor a batch, until the merge asks for the shard's
// next message (Cursor.Next), a's stream ends (Stop, Close, the deadline) or drainAt passes, and
// then past drainAt as drained says. It returns at once when no hit can follow: the shard has
// sent top_k hits, or as many as it said matched, so the stream is read to its end (and ends
// cleanly, not stopped early). While it waits the idle timer is off: the proxy is not reading,
// so the shard's silence says nothing; it restarts when the wait ends.
func (sc *shardCall) await(a *attempt) error {
	if sc.sentAll() {
		return nil
	}
	if a.pull != nil {
		return sc.ahead(a)
	}
	if time.Now().Before(sc.drainAt) {
		if demanded, err := sc.park(a, phaseParked, sc.drainAt); demanded || err != nil {
			return err
		}
	}
	return sc.drained(a)
}

// ahead is await's wait for a Pull stream, whose next batch costs the shard a round trip and
// is sent only when asked: it waits for the merge to ask (it returns nil, and the batch is asked
// for), or for top_k hits given to the merge to outrank the last one the stream gave, so that the
// answer can take nothing more from it: it then half-closes the stream (closePull), so that its
// shard ends it OK, at once, rather than waiting to be cancelled when the query stops. Past
// drainAt it waits as drained says.
//
// Asking for a batch before the merge does (as soon as a stream's last hit given ranks among the
// top_k given, say) would let the round trips of the shards in the answer overlap rather than
// follow one another; tried, it parsed 672 hits per query at fan-out 64, top_k 100, at
// saturation (271-388 without), and at 20 queries/s the query's p50 was 20.1 ms against 20.6.
func (sc *shardCall) ahead(a *attempt) error {
	w, b := sc.barWaiter(), &sc.call.bar
	defer b.unwait(w)
	for time.Now().Before(sc.drainAt) {
		if b.outranks(w, true) {
			sc.call.client.metrics.outranked.Inc()
			return sc.closePull(a)
		}
		// woken by demand, when a give outranks w, or at drainAt
		if demanded, err := sc.park(a, phaseParked, sc.drainAt); demanded || err != nil {
			return err
		}
	}
	return sc.drained(a)
}

// park turns the timer from the idle timeout into phase p's, due at until, and waits for the
// merge to ask for the shard's next message (demanded), a wake-up (the timer's function, or the
// bar in drained), or the end of a's stream; the idle timeout then runs again.
func (sc *shardCall) park(a *attempt, p phase, until time.Time) (demanded bool, err error) {
	sc.mu.Lock()
	wake := sc.wakeLocked()
	sc.timer.Stop() // an idle timeout already under way finds p before until: moot (onTimer)
	sc.phase = p
	sc.timer.Reset(time.Until(until))
	sc.mu.Unlock()
	select {
	case <-sc.cur.demand:
		demanded = true
	case <-wake:
	case <-a.ctx.Done():
		return false, a.ctx.Err()
	}
	sc.mu.Lock()
	if !sc.timer.Stop() && sc.phase == p {
		sc.skipFires++ // it fired as the wait ended; its function waits for mu
	}
	sc.phase = phaseIdle
	sc.timer.Reset(sc.idle)
	sc.mu.Unlock()
	return demanded, nil
}

// drained is await's wait once drainAt has passed, when a merge held up that long is waiting for
// a slow shard that the per-shard deadline may cut: the winner a must not be cut with it, with
// hits unread that the answer needs. a's stream ends, stopped early (ErrStoppedEarly:
// StatusOK), once the query's top_k hits given to the merge, by any shard, rank before the last
// hit a gave (bar): the rest of a's stream ranks after that one, so the answer cannot take any
// of it. Until then a waits: its next message is read when the merge asks for it, or without
// demand once no shard has given its first batch for a quarter of the way to the per-shard
// deadline (the shards the merge waits for are then stuck, not just loaded), or three quarters
// of the way there, whichever comes first. From then on a reads its stream as it comes, as the
// fan-out did before it decoded on demand, asking before each message whether it is outranked.
//
// While first batches keep coming (at saturation every query is held up past drainAt, by shards
// merely slow), streams wait to be outranked by the batches still to come instead of reading
// messages the answer does not need: at fan-out 64 and top_k 100 at saturation, reading on at
// drainAt parsed 526 hits per query of 6,400 (BENCHMARKS.md, round two).
func (sc *shardCall) drained(a *attempt) error {
	w, b := sc.barWaiter(), &sc.call.bar
	defer b.unwait(w)
	for {
		sc.mu.Lock()
		readOn := sc.readOn
		sc.mu.Unlock()
		if b.outranks(w, !readOn) {
			a.cancel(ErrStoppedEarly)
			sc.call.client.metrics.outranked.Inc()
			return a.ctx.Err()
		}
		if readOn {
			return nil
		}
		// woken when outranked, or once quietEnd has passed
		if demanded, err := sc.park(a, phaseQuiet, sc.quietEnd()); demanded || err != nil {
			return err
		}
	}
}

// barWaiter is the winner as it waits on the bar: its last hit given and its wake channel.
func (sc *shardCall) barWaiter() waiter {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return waiter{last: sc.lastGiven, wake: sc.wakeLocked()}
}

// quietEnd is when a drained stream stops waiting to be outranked: a quarter of the way to the
// per-shard deadline after a shard of the query last gave its first batch, and three quarters of
// the way at the latest.
func (sc *shardCall) quietEnd() time.Time {
	span := sc.deadline.Sub(sc.start)
	end := sc.call.bar.quietSince().Add(span / 4)
	if latest := sc.start.Add(span * 3 / 4); latest.Before(end) {
		return latest
	}
	return end
}

// poke wakes the winner waiting in await or drained. Called with mu held.
func (sc *shardCall) poke() {
	select {
	case sc.wakeLocked() <- struct{}{}:
	default:
	}
}

// wakeLocked returns wake, made if need be. Called with mu held.
func (sc *shardCall) wakeLocked() chan struct{} {
	if sc.wake == nil {
		sc.wake = make(chan struct{}, 1)
	}
	return sc.wake
}

// maxAskInterval is the longest a call whose hedge was denied waits before it asks again: a
// replica ejected as stalled a second into the incident still has its calls of the first
// moment waiting, and they must move well before their per-shard deadline.
const maxAskInterval = 100 * time.Millisecond

// startHedge applies the hedge policy and starts the hedge in a goroutine of its own. Called
// with mu held.
//
// A denial other than for the deadline is not final: the call asks again each time its waiting
// attempt has waited half as long again (at most maxAskInterval), until the deadline is too
// near, and may then spend the tokens a first ask may not (hedge.Budget.SpendSpeculative); once
// the replica it waits on has been ejected (found stalled, see replica.Config.StallAfter, or
// failing), it moves to another without a token (hedge.AskFailover), at its next ask. The
// budget refills as calls are made, and a slow replica becomes a candidate once the attempt has
// waited twice its usual time (replica.Set.PickHedge): a call that hangs on a replica just as
// the budget ran dry, or just as the machine slowed every replica down, is not left to its
// per-shard deadline. The metrics and the span count the first denial of a call only.
func (sc *shardCall) startHedge() {
	s := sc.s
	waited, ask := sc.delay, hedge.AskFirst
	if sc.denied {
		ask = hedge.AskAgain
	}
	if w := sc.live[0]; w != nil {
		waited = time.Since(w.start)
		if s.set.Ejected(w.index) {
			ask = hedge.AskFailover
		}
	}
	i, why := hedge.Decide(sc.call.client.budget, time.Until(sc.deadline), s.delay.Typical(), ask,
		func() (int, error) {
			if ask == hedge.AskFailover {
				return s.set.Pick(sc.tried, replica.Primary)
			}
			return s.set.PickHedge(sc.tried, waited)
		})
	if why != hedge.Allowed {
		if !sc.denied {
			sc.denied = true
			s.m.hedge[outcomeDenied].Inc()
			s.m.denied[why].Inc()
			if sc.span.IsRecording() {
				sc.span.AddEvent("gather.hedge.denied", trace.WithAttributes(attribute.String("gather.reason", why.String())))
			}
		}
		if why != hedge.DeniedDeadline {
			sc.phase = phaseHedge
			sc.timer.Reset(max(min(waited/2, maxAskInterval), sc.delay))
		}
		return
	}
	a := &attempt{}
	sc.hedge = a
	sc.prepare(a, i, SourceHedge, 1)
	if ask == hedge.AskFailover {
		s.m.failovers.Inc()
	}
	sc.hedges.Add(1)
	go func() {
		defer sc.hedges.Done()
		sc.runAttempt(a)
	}()
	if sc.span.IsRecording() {
		sc.span.AddEvent("gather.hedge.start", trace.WithAttributes(attribute.String("gather.replica", a.ep.addr),
			attribute.Int64("gather.hedge.delay_us", sc.delay.Microseconds()), attribute.Bool("gather.hedge.failover", ask == hedge.AskFailover)))
	}
}

// win makes a the attempt that answers for the shard, if no other did first, cancels the others
// and turns the timer into the idle timer. It reports whether a won.
func (sc *shardCall) win(a *attempt) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.winner != nil {
		return false
	}
	sc.winner = a
	for _, o := range sc.live {
		if o != nil && o != a {
			o.cancel(ErrHedgeLost)
			if sc.span.IsRecording() {
				sc.span.AddEvent("gather.attempt.cancelled", trace.WithAttributes(attribute.String("gather.replica", o.ep.addr),
					attribute.String("gather.source", o.source.String()), attribute.String("gather.cause", ErrHedgeLost.Error())))
			}
		}
	}
	if (a.source != SourcePrimary || sc.hedge != nil) && sc.span.IsRecording() {
		sc.span.AddEvent("gather.attempt.won", trace.WithAttributes(attribute.String("gather.replica", a.ep.addr),
			attribute.String("gather.source", a.source.String())))
	}
	if sc.phase == phaseHedge && !sc.timer.Stop() {
		sc.skipFires++ // the hedge delay fired; its function waits for mu
	}
	sc.phase = phaseIdle
	sc.timer.Reset(sc.idle)
	return true
}

// runAttempt runs a to its end and records how it ended.
func (sc *shardCall) runAttempt(a *attempt) {
	if sc.call.pull != nil && !a.ep.noPull.Load() {
		if sc.pullAttempt(a) {
			sc.end(a)
			return
		}
		a.ep.noPull.Store(true) // an older shard: Search from now on
	}
	st, err := a.ep.client.Search(a.ctx, sc.req, a.opts[:]...)
	if err != nil {
		a.err, a.local = err, true
	} else {
		a.err = sc.stream(a, st)
	}
	sc.end(a)
}

// pullMore asks a Pull stream for its next batch.
var pullMore = &shardv1.PullRequest{}

// pullAttempt runs a as a Pull stream, which sends each batch after the first when asked
// (Config.PullFanOut). It returns false, with nothing recorded, when the replica answered
// UNIMPLEMENTED (a shard older than Pull) or PERMISSION_DENIED (an authorization policy written
// for Search alone) before sending anything: the caller runs a with Search instead, which
// reports the replica's refusal if it refuses Search too.
func (sc *shardCall) pullAttempt(a *attempt) bool {
	st, err := a.ep.client.Pull(a.ctx, a.opts[:]...)
	if err != nil {
		a.err, a.local = err, true
		return true
	}
	if err := ask(st, sc.call.pull); err != nil {
		a.err, a.local = err, true
		return true
	}
	a.pull = st
	a.err = sc.stream(a, st)
	if c := status.Code(a.err); !a.framed && a.ctx.Err() == nil && (c == codes.Unimplemented || c == codes.PermissionDenied) {
		a.err, a.pull = nil, nil
		return false
	}
	return true
}

// end records a's end: on its replica's score and health, and in the hedge and retry metrics.
func (sc *shardCall) end(a *attempt) {
	outcome, elapsed := sc.verdict(a), time.Since(a.start)
	sc.mu.Lock()
	sc.live[a.slot] = nil
	won, other := sc.winner == a, sc.winner != nil
	if !won {
		sc.last = a
	}
	sc.mu.Unlock()
	s := sc.s
	if down := sc.call.client.cfg.OnReplicaDown; down != nil && !a.framed && a.ctx.Err() == nil && status.Code(a.err) == codes.Unavailable {
		down(s.name, a.ep.addr)
	}
	if s.set == nil {
		return
	}
	s.set.Done(a.index, outcome, a.framed, elapsed, sc.delay)
	o := outcomeFailed
	switch {
	case won:
		o = outcomeWon
	case other:
		o = outcomeLost
	}
	switch a.source {
	case SourceHedge:
		s.m.hedge[o].Inc()
	case SourceRetry:
		s.m.retry[o].Inc()
	}
}

// verdict is what a's end says about its replica (see replica.Outcome).
func (sc *shardCall) verdict(a *attempt) replica.Outcome {
	switch err := a.err; {
	case errors.Is(err, ErrBudget):
		return replica.Neutral // the query's, not the replica's
	case errors.Is(err, ErrOrder), errors.Is(err, ErrTooMany), errors.Is(err, ErrOverLimit):
		return replica.Failure
	case a.ctx.Err() != nil:
		cause := context.Cause(a.ctx)
		switch {
		case errors.Is(cause, ErrIdle), errors.Is(cause, ErrShardDeadline):
			return replica.Failure
		case errors.Is(cause, ErrStoppedEarly) && a.framed:
			return replica.Success
		}
		return replica.Neutral // lost the race, or the query was cancelled or ran out of time
	case err == nil:
		return replica.Success
	case errors.Is(err, ErrHedgeLost):
		return replica.Neutral
	}
	return replica.Failure // the replica's own error, or its connection's, also after hits
}

// hitStream is a shard call's stream of messages: Search's or Pull's.
type hitStream interface {
	Recv() (*shardv1.SearchResponse, error)
}

// stream reads a's stream. Its first message (or a clean end without one) makes it race for the
// shard call (win); the winner's messages then go to the cursor, the loser's are dropped. It
// returns the error that ended the stream (nil for a clean end, ErrHedgeLost for a loser).
//
// Each batch is checked against the contract, then its cost is taken from the query's budget;
// the hits that pass both go to the cursor, and a violation or the end of the budget ends the
// stream after them. A Pull stream is asked for each message after the first while a hit may
// still follow, and half-closed once outranked (see ahead). A message without hits is no
// progress: it does not reset the idle timer, except the first (the shard has finished
// searching; its counts are taken).
func (sc *shardCall) stream(a *attempt, st hitStream) error {
	c := sc.call.client
	resp, err := st.Recv()
	empty := errors.Is(err, io.EOF) && a.codec.refused == nil // a clean end without a message
	if err != nil && !empty {
		return recvError(a, err, c.cfg.MaxMessageBytes)
	}
	c.metrics.received.Add(float64(len(a.codec.hits)))
	a.framed = true
	if s := sc.s; s.set != nil {
		ttff := time.Since(a.start)
		s.set.FirstFrame(a.index, ttff, sc.delay)
		if s.delay != nil {
			s.delay.Record(ttff)
		}
	}
	if !sc.win(a) {
		return ErrHedgeLost // the winner has cancelled a.ctx, which releases the stream
	}
	if empty {
		return nil
	}
	res, cur := sc.res, sc.cur
	res.TotalMatches, res.Documents = resp.GetTotalMatches(), resp.GetDocuments()
	for first := true; ; first = false {
		if !first {
			if a.pull != nil && !sc.sentAll() { // a Pull stream sends its next batch when asked
				if err := ask(a.pull, pullMore); err != nil {
					return err
				}
			}
			if _, err = st.Recv(); err != nil {
				if a.codec.refused == nil && errors.Is(err, io.EOF) {
					return nil
				}
				return recvError(a, err, c.cfg.MaxMessageBytes)
			}
			c.metrics.received.Add(float64(len(a.codec.hits)))
		}
		hits := a.codec.hits
		if len(hits) == 0 {
			continue
		}
		sc.timer.Reset(sc.idle)
		n, cost, verr := sc.contract.check(hits)
		if k, taken, which := sc.call.take(hits[:n], cost); k < n {
			n, cost = k, taken
			if errors.Is(which, errProxyBudget) {
				verr = fmt.Errorf("%w: max_hit_bytes_in_flight (%d) used up by the queries in flight; %d hits of this shard kept",
					ErrBudget, c.cfg.MaxHitBytesInFlight, res.Hits+k)
			} else {
				verr = fmt.Errorf("%w: max_query_hit_bytes (%d) used up by the query's shards; %d hits of this shard kept",
					ErrBudget, c.cfg.MaxQueryHitBytes, res.Hits+k)
			}
		}
		if n < len(hits) {
			// The refused hits share their strings' allocation with the accepted ones, which
			// would keep them in memory, uncounted, as long as the query.
			hits = compact(hits[:n])
		}
		if n > 0 {
			res.Hits += n
			res.Bytes += cost
			select {
			case cur.ch <- hits:
			case <-a.ctx.Done():
				return a.ctx.Err()
			}
			sc.call.bar.give(cur.shard, hits, sc.lastGiven.ShardHit == nil)
			sc.lastGiven = Hit{ShardHit: &hits[len(hits)-1], Shard: cur.shard}
		}
		if verr != nil {
			// Returning ends the attempt: the caller's cancel tears the stream down.
			return verr
		}
		if n > 0 {
			if err := sc.await(a); err != nil {
				return err
			}
		}
	}
}

// sentAll reports whether the winner's shard has sent every hit it can: top_k, or as many as it
// said matched.
func (sc *shardCall) sentAll() bool {
	return uint64(sc.contract.sent) >= min(uint64(sc.req.GetTopK()), sc.res.TotalMatches)
}

// ask sends m on a Pull stream. A failed Send is io.EOF when the stream is already over, which
// Recv then says why: that is not ask's error.
func ask(st grpc.BidiStreamingClient[shardv1.PullRequest, shardv1.SearchResponse], m *shardv1.PullRequest) error {
	if err := st.Send(m); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// closePull ends a's Pull stream, outranked (see ahead), the way the protocol lets the caller
// end it: it half-closes the stream, so that the shard ends it OK instead of being cancelled,
// and reads it to its end, which the idle timeout bounds. The call then ends stopped early, as
// one cut when outranked does (drained); or with the error that ended the stream otherwise.
func (sc *shardCall) closePull(a *attempt) error {
	if err := a.pull.CloseSend(); err != nil {
		return err
	}
	for {
		_, err := a.pull.Recv() // a shard asked for nothing sends nothing more; what one sends is dropped
		switch {
		case err == nil:
		case a.codec.refused == nil && errors.Is(err, io.EOF):
			a.cancel(ErrStoppedEarly) // the stream is over: this only records why
			return a.ctx.Err()
		default:
			return recvError(a, err, sc.call.client.cfg.MaxMessageBytes)
		}
	}
}

// recvError is the error that ended a's stream as Recv reported it: the codec's refusal if
// there was one, else grpc-go's refusals translated (overLimit).
func recvError(a *attempt, err error, maxMessage int) error {
	if a.codec.refused != nil {
		return a.codec.refused
	}
	return overLimit(err, maxMessage)
}
