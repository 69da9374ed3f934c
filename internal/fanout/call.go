package fanout

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
)

// Request is one query to fan out.
type Request struct {
	Query string
	TopK  uint32
	// ShardTimeout, when positive, caps the configured per-shard timeout.
	ShardTimeout time.Duration
	// Arrived is when the query reached the proxy, before it waited for an admission slot
	// (admission.Arrived); zero means when Start is called. The shard timeout counts from it,
	// so that a query that waited for a slot is answered when it would have been without the
	// wait, not that much closer to its caller's deadline; but at least half of the timeout is
	// left to the shards however long the wait.
	Arrived time.Time
}

// Hit is one shard hit as the merge sees it: the hit, as received, and the index of the shard in
// the call's Topology().Shards() order.
type Hit struct {
	*ShardHit
	Shard int
}

// Less orders hits the way gather's answers are ordered: score descending, then doc_id
// ascending, then shard ascending.
func Less(a, b Hit) bool {
	if a.Score != b.Score {
		return a.Score > b.Score
	}
	if a.DocID != b.DocID {
		return a.DocID < b.DocID
	}
	return a.Shard < b.Shard
}

// Causes of a shard call's end that the fan-out itself decides; Result.Err wraps one of them.
// The first four are also the cancellation causes of the call's context, and say through
// EndReason how lifecycle metrics should record the call: as cut by a deadline, stopped early or
// beaten by another attempt, not as cancelled by a caller.
var (
	// ErrShardDeadline: the shard did not finish within its per-shard deadline.
	ErrShardDeadline error = &cause{"per-shard deadline exceeded", "deadline_exceeded"}
	// ErrIdle: the shard sent nothing for longer than the idle timeout.
	ErrIdle error = &cause{"shard idle too long", "deadline_exceeded"}
	// ErrStoppedEarly: the caller had enough hits and stopped the call (not a failure).
	ErrStoppedEarly error = &cause{"stopped early: top_k complete", "stopped_early"}
	// ErrHedgeLost: another attempt of the shard call (a hedge, or the attempt a hedge raced)
	// delivered its first message first, and this one was cancelled (not a failure). It is never
	// the Err of a Result: the winner's outcome is.
	ErrHedgeLost error = &cause{"another attempt of the shard call answered first", "hedge_lost"}
	// ErrOrder: the shard broke the ordering contract.
	ErrOrder = errors.New("ordering contract broken")
	// ErrTooMany: the shard sent more than top_k hits.
	ErrTooMany = errors.New("more hits than top_k")
	// ErrOverLimit: the shard sent a message or a hit over one of the size limits of Config; like
	// ErrOrder and ErrTooMany, a protocol violation.
	ErrOverLimit = errors.New("over a size limit")
	// ErrBudget: the query's hit budget (Config.MaxQueryHitBytes, shared by its shard calls) ran
	// out while the shard was sending.
	ErrBudget = errors.New("query hit budget exhausted")
)

type cause struct{ msg, reason string }

func (c *cause) Error() string { return c.msg }

// EndReason is the lifecycle end reason of a call cancelled with this cause.
func (c *cause) EndReason() string { return c.reason }

// Status is how one shard call ended.
type Status int

// Shard call outcomes; they map one to one onto gather.query.v1.ShardStatus.
const (
	StatusOK Status = iota + 1
	StatusDeadlineExceeded
	StatusUnavailable
	StatusCanceled
	StatusFailed
	StatusProtocolViolation
	StatusResourceExhausted
)

// Source is which attempt of a shard call answered for it.
type Source int

// Sources of a shard's answer.
const (
	// SourcePrimary: the call's first attempt.
	SourcePrimary Source = iota + 1
	// SourceHedge: the attempt started on another replica because the first had sent nothing
	// after the hedge delay.
	SourceHedge
	// SourceRetry: an attempt started after another failed with UNAVAILABLE or
	// RESOURCE_EXHAUSTED before its first message.
	SourceRetry
)

// String is the source in lower case, as spans and logs show it.
func (s Source) String() string {
	switch s {
	case SourcePrimary:
		return "primary"
	case SourceHedge:
		return "hedge"
	case SourceRetry:
		return "retry"
	}
	return "unspecified"
}

// Result reports one shard's part of a call. It is final once Call.Close has returned.
type Result struct {
	Shard   string
	Replica string // the address of the replica that answered, or else of the attempt that ended last
	// ReplicaIndex is that replica's position in the shard's configured list, from 0; -1 when
	// the shard had no replica (ErrNoReplica).
	ReplicaIndex int
	// Source is the kind of that attempt, and Attempts how many the call made (first attempt,
	// hedge, retries).
	Source   Source
	Attempts int
	Status   Status
	// Err is nil for StatusOK. Its text is safe to pass on as it is (CleanText): short, valid
	// UTF-8, without control characters, whatever the shard sent.
	Err          error
	Hits         int
	Bytes        int64 // the cost of the hits accepted, counted against MaxQueryHitBytes
	Latency      time.Duration
	StoppedEarly bool
	TotalMatches uint64
	Documents    uint64
}

// cleanError gives an error the text CleanText makes of it; it unwraps to the original.
type cleanError struct {
	msg string
	err error
}

func (e *cleanError) Error() string { return e.msg }
func (e *cleanError) Unwrap() error { return e.err }

// Call is one fanned-out query. Its cursors are read by one goroutine (the merge); Stop, Failed,
// Close may be called from any goroutine. The caller must call Close, which cancels whatever is
// still running and waits for every receiving goroutine.
type Call struct {
	ctx     context.Context // the caller's context
	cancel  context.CancelCauseFunc
	client  *Client
	topo    *Topology // held until Close
	cursors []*Cursor
	results []Result
	// deadline is the per-shard deadline (see Deadline).
	deadline time.Time
	// pull is the first message of the shards' Pull streams (Config.PullFanOut); nil: the
	// shards are called with Search.
	pull   *shardv1.PullRequest
	failed atomic.Int32
	budget atomic.Int64 // what is left of MaxQueryHitBytes
	// bar ranks the hits the shards gave the merge, for the streams read without demand.
	bar   bar
	wg    sync.WaitGroup
	close sync.Once
}

// Start sends the request to every shard concurrently and returns at once. The per-shard
// deadline is the smallest of the configured shard timeout and req.ShardTimeout (when
// positive), both counted from req.Arrived (see Request), and of the caller's deadline minus a
// reserve for merging: MergeReserve, 5% of the caller's remaining time, or 1.5 times the worst
// lag of recent answers past their shard deadline (see Answered; at most half the remaining
// time), whichever is larger.
//
// The call uses the topology current when it starts (Topology) to its end.
func (c *Client) Start(ctx context.Context, req Request) *Call {
	callCtx, cancel := context.WithCancelCause(ctx)
	t := c.acquire()
	shards := t.shards
	call := &Call{
		ctx:     ctx,
		cancel:  cancel,
		client:  c,
		topo:    t,
		cursors: make([]*Cursor, len(shards)),
		results: make([]Result, len(shards)),
	}
	call.budget.Store(c.cfg.MaxQueryHitBytes)
	call.bar.init(int(req.TopK))
	deadline := c.deadline(ctx, req, time.Now()) // assigned once: the goroutines copy it
	call.deadline = deadline
	// One request message serves every shard: grpc-go only reads a message it sends.
	sreq := &shardv1.SearchRequest{Query: req.Query, TopK: req.TopK, FirstBatchHits: FirstBatch(len(shards), req.TopK)}
	if n := c.cfg.PullFanOut; n > 0 && len(shards) >= n && sreq.FirstBatchHits > 0 {
		call.pull = &shardv1.PullRequest{Search: sreq}
	}
	curs := make([]Cursor, len(shards)) // one allocation for all the cursors
	for i, s := range shards {
		cur := &curs[i]
		cur.ch, cur.demand, cur.shard = make(chan []ShardHit, c.cfg.Buffer), make(chan struct{}, 1), i
		call.cursors[i] = cur
		call.results[i].Shard = s.name
	}
	for i, s := range shards {
		cur := call.cursors[i]
		call.wg.Add(1)
		c.work.Go(func() {
			defer call.wg.Done()
			defer close(cur.ch)
			sctx, span := callCtx, trace.Span(noop.Span{})
			if c.tracing {
				sctx, span = c.cfg.Tracer.Start(callCtx, s.spanName, s.spanOpts...)
			}
			defer span.End()
			res := &call.results[i]
			call.run(sctx, span, s, deadline, sreq, cur, res)
			annotate(span, res)
		})
	}
	return call
}

// deadline is the per-shard deadline of a call started at now (see Start).
func (c *Client) deadline(ctx context.Context, req Request, now time.Time) time.Time {
	timeout := c.cfg.ShardTimeout
	if req.ShardTimeout > 0 && req.ShardTimeout < timeout {
		timeout = req.ShardTimeout
	}
	deadline := now.Add(timeout)
	if !req.Arrived.IsZero() && req.Arrived.Before(now) {
		deadline = later(req.Arrived.Add(timeout), now.Add(timeout/2))
	}
	if d, ok := ctx.Deadline(); ok {
		// The reserve grows with the caller's budget (5% of it) and with how late answers
		// have recently been after their shard deadline (see answerLag), so a loaded proxy
		// still has time to merge and answer: a fixed 20ms is not enough when the CPU is
		// contended.
		reserve := c.reserve(d.Sub(now), now)
		if d.Add(-reserve).Before(deadline) {
			deadline = d.Add(-reserve)
		}
	}
	return deadline
}

// Deadline is the call's per-shard deadline. Pass it to Client.Answered with the time the
// merge was done, so that the reserve learns how late answers are under the current load.
func (call *Call) Deadline() time.Time { return call.deadline }

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Topology returns the topology the call fans out to: Cursors and Close's results are in its
// Shards order.
func (call *Call) Topology() *Topology { return call.topo }

// Cursors returns one cursor per shard, in Topology().Shards() order. Each is a sorted sequence of
// the shard's hits (merge.Sequence[Hit]) that ends when the shard's stream ends for any reason.
func (call *Call) Cursors() []*Cursor { return call.cursors }

// Failed reports how many shards have already ended in anything but StatusOK. It lets a caller
// that requires full coverage give up without waiting for the rest.
func (call *Call) Failed() int { return int(call.failed.Load()) }

// Stop cancels every shard call still running, recording them as stopped early (StatusOK). Use
// it once the merge has all the hits it needs.
func (call *Call) Stop() { call.cancel(ErrStoppedEarly) }

// Close cancels every shard call still running (as cancelled, unless Stop came first), waits for
// every receiving goroutine and returns the per-shard results in Topology().Shards() order. It is safe
// to call more than once; later calls return the same results.
func (call *Call) Close() []Result {
	call.close.Do(func() {
		call.cancel(context.Canceled)
		call.wg.Wait()
		// The hits go back to the Client's budget: the caller may still read them (the answer
		// it builds shares their strings), but that is bounded by its own answer limit.
		call.client.held.Add(-(call.client.cfg.MaxQueryHitBytes - call.budget.Load()))
		call.topo.release()
	})
	return call.results
}

// annotate records a shard call's result on its span.
func annotate(span trace.Span, r *Result) {
	if !span.IsRecording() {
		return
	}
	cut := r.Status == StatusDeadlineExceeded && (errors.Is(r.Err, ErrShardDeadline) || errors.Is(r.Err, ErrIdle))
	span.SetAttributes(
		attribute.String("gather.replica", r.Replica),
		attribute.String("gather.shard.source", r.Source.String()),
		attribute.Int("gather.shard.attempts", r.Attempts),
		attribute.Int("gather.shard.hits", r.Hits),
		attribute.String("gather.shard.status", r.Status.String()),
		attribute.Bool("gather.shard.cut_by_deadline", cut),
		attribute.Bool("gather.shard.stopped_early", r.StoppedEarly),
		attribute.Int64("gather.shard.total_matches", int64(r.TotalMatches)),
	)
	if r.StoppedEarly {
		span.AddEvent("stopped early: top_k complete")
	}
	if r.Err != nil {
		if r.Status == StatusCanceled || cut {
			span.AddEvent("cancelled", trace.WithAttributes(attribute.String("gather.cause", r.Err.Error())))
		}
		span.SetStatus(otelcodes.Error, r.Err.Error())
	}
}

// String returns the status as the proxy's ShardStatus names it, without the prefix.
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "OK"
	case StatusDeadlineExceeded:
		return "DEADLINE_EXCEEDED"
	case StatusUnavailable:
		return "UNAVAILABLE"
	case StatusCanceled:
		return "CANCELED"
	case StatusFailed:
		return "FAILED"
	case StatusProtocolViolation:
		return "PROTOCOL_VIOLATION"
	case StatusResourceExhausted:
		return "RESOURCE_EXHAUSTED"
	}
	return "UNSPECIFIED"
}

// classify turns the error that ended a shard stream into a Status. callCtx is the query's
// context (cancelled by Stop or Close or the caller), ictx the shard call's own.
func classify(callCtx, ictx context.Context, err error) (Status, error) {
	if err == nil {
		return StatusOK, nil
	}
	if errors.Is(err, ErrOrder) || errors.Is(err, ErrTooMany) || errors.Is(err, ErrOverLimit) {
		return StatusProtocolViolation, err
	}
	if errors.Is(err, ErrBudget) {
		return StatusResourceExhausted, err
	}
	if ictx.Err() != nil {
		cause := context.Cause(ictx)
		switch {
		case errors.Is(cause, ErrStoppedEarly):
			return StatusOK, nil
		case errors.Is(cause, ErrIdle), errors.Is(cause, ErrShardDeadline):
			return StatusDeadlineExceeded, cause
		case callCtx.Err() != nil && errors.Is(context.Cause(callCtx), context.DeadlineExceeded):
			return StatusDeadlineExceeded, fmt.Errorf("query deadline exceeded: %w", context.DeadlineExceeded)
		default:
			return StatusCanceled, fmt.Errorf("query cancelled: %w", context.Canceled)
		}
	}
	st := status.Convert(err)
	serr := fmt.Errorf("shard answered %s: %s", st.Code(), st.Message())
	switch st.Code() {
	case codes.Unavailable:
		return StatusUnavailable, serr
	case codes.DeadlineExceeded:
		// The shard only knows the deadline the call carried, which is the per-shard one: its
		// DEADLINE_EXCEEDED can arrive a moment before our own timer fires, and is the same cut.
		return StatusDeadlineExceeded, fmt.Errorf("%w: %w", ErrShardDeadline, serr)
	default:
		return StatusFailed, serr
	}
}

// Cursor is one shard's hits as a sorted sequence (merge.Sequence[Hit]). It is read by one
// goroutine; it ends when the shard's stream ends, however it ends.
//
// The shard's first message is decoded as soon as it arrives; each later one only once the
// cursor has used up the hits it was given and Next needs more (see shardCall.await): the merge
// calls Next on a shard only after taking its current hit into the answer, so a shard whose hits
// rank below the answer's last never costs the decoding of another message.
type Cursor struct {
	ch chan []ShardHit
	// demand asks the receiving goroutine for the shard's next message; it holds one request.
	demand chan struct{}
	fed    bool // a batch has arrived: later ones are decoded on demand
	batch  []ShardHit
	pos    int
	cur    Hit
	shard  int
}

// Next advances to the shard's next hit, blocking until it arrives or the shard call ends.
func (c *Cursor) Next() bool {
	c.pos++
	for c.pos >= len(c.batch) {
		if c.fed && len(c.ch) == 0 {
			select {
			case c.demand <- struct{}{}:
			default: // asked already
			}
		}
		b, ok := <-c.ch
		if !ok {
			c.batch, c.pos = nil, 0
			return false
		}
		c.batch, c.pos, c.fed = b, 0, true
	}
	c.cur = Hit{ShardHit: &c.batch[c.pos], Shard: c.shard}
	return true
}

// At returns the current hit.
func (c *Cursor) At() Hit { return c.cur }

// Buffered reports whether the next call to Next returns without waiting for the network: a hit
// is already received, or the stream has ended.
func (c *Cursor) Buffered() bool {
	return c.pos+1 < len(c.batch) || len(c.ch) > 0
}
