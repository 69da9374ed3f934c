package fanout

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/hedge"
	"github.com/gatherproxy/gather/internal/lifecycle"
	"github.com/gatherproxy/gather/internal/liveness"
	"github.com/gatherproxy/gather/internal/metrictest"
	"github.com/gatherproxy/gather/internal/replica"
	"github.com/gatherproxy/gather/internal/shardsvc"
	"github.com/gatherproxy/gather/internal/shardtest"
)

// step is how one call to a replica of a pool goes.
type step struct {
	delay time.Duration // before anything is sent
	hang  bool          // then wait until the call is cancelled
	code  codes.Code    // then fail with this code, before any message
	// trailer fails the call with UNAVAILABLE after its hits
	trailer bool
	// empty ends the call cleanly without a message
	empty bool
}

// pool is a shard's replicas on loopback gRPC servers that share one script: plan says how the
// k-th call to reach any of them (from 1) goes, on replica r.
type pool struct {
	plan      func(k int64, r int) step
	addrs     []string
	calls     atomic.Int64
	active    atomic.Int64
	cancelled []atomic.Int64 // by replica: calls that ended because the client cancelled
	hits      []*shardv1.Hit
	spans     *tracetest.SpanRecorder // the client's shard call spans
}

type poolReplica struct {
	shardv1.UnimplementedShardServiceServer
	p *pool
	r int
}

func startPool(t *testing.T, n int, plan func(k int64, r int) step) *pool {
	t.Helper()
	p := &pool{plan: plan, cancelled: make([]atomic.Int64, n), hits: shardtest.Hits("x", 5, 1)}
	for r := range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(liveness.Server{}.ServerOptions()...)
		shardv1.RegisterShardServiceServer(srv, &poolReplica{p: p, r: r})
		var wg sync.WaitGroup
		wg.Go(func() { _ = srv.Serve(lis) })
		t.Cleanup(func() {
			srv.Stop()
			wg.Wait()
		})
		p.addrs = append(p.addrs, lis.Addr().String())
	}
	return p
}

func (s *poolReplica) Search(req *shardv1.SearchRequest, stream shardv1.ShardService_SearchServer) error {
	p, ctx := s.p, stream.Context()
	p.active.Add(1)
	defer p.active.Add(-1)
	defer func() {
		if ctx.Err() != nil {
			p.cancelled[s.r].Add(1)
		}
	}()
	st := p.plan(p.calls.Add(1), s.r)
	if err := shardsvc.Wait(ctx, st.delay); err != nil {
		return err
	}
	if st.hang {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	if st.code != codes.OK {
		return status.Errorf(st.code, "pool: replica %d says %s", s.r, st.code)
	}
	if st.empty {
		return nil
	}
	if err := stream.Send(&shardv1.SearchResponse{Hits: p.hits[:min(len(p.hits), int(req.GetTopK()))], TotalMatches: 5}); err != nil {
		return err
	}
	if st.trailer {
		return status.Error(codes.Unavailable, "pool: gone after the hits")
	}
	return nil
}

// waitFor polls cond for at most 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// client makes a Client of one shard "s" on p's replicas, with its metrics on reg and the
// lifecycle recorder on its calls.
func (p *pool) client(t *testing.T, cfg Config) (*Client, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	lc := lifecycle.New(reg)
	cfg.Registerer = reg
	p.spans = tracetest.NewSpanRecorder()
	cfg.Tracer = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(p.spans)).Tracer("test")
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithChainStreamInterceptor(lc.StreamClientInterceptor()))
	c, err := New([]ShardSpec{{Name: "s", Replicas: p.addrs}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	// Every replica connected, as in a proxy that has been up for a moment: a hedge goes only to
	// a replica that is.
	waitFor(t, "every replica connected", func() bool {
		for _, st := range c.ReplicaStates()["s"] {
			if st != connectivity.Ready {
				return false
			}
		}
		return true
	})
	return c, reg
}

// query runs one query to the end and returns the hits read and the shard's result.
func query(t *testing.T, c *Client, req Request) (int, Result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if req.Query == "" {
		req.Query, req.TopK = "q", 10
	}
	call := c.Start(ctx, req)
	n := 0
	for cur := call.Cursors()[0]; cur.Next(); {
		n++
	}
	return n, call.Close()[0]
}

// answer is what query returned: the hits read and the shard's result.
type answer struct {
	n   int
	res Result
}

// queryAsync runs query in a goroutine of its own and delivers its answer on out.
func queryAsync(t *testing.T, c *Client, out chan<- answer) {
	go func() {
		n, res := query(t, c, Request{})
		out <- answer{n, res}
	}()
}

// value sums the samples of the metric family name whose labels include match, label and value
// pairs.
func value(t *testing.T, reg prometheus.Gatherer, name string, match ...string) float64 {
	t.Helper()
	labels := map[string]string{}
	for i := 0; i+1 < len(match); i += 2 {
		labels[match[i]] = match[i+1]
	}
	return metrictest.Sum(t, reg, name, labels)
}

// events are the names of the fan-out's hedge, attempt and retry events on the spans recorded so
// far.
func (p *pool) events() []string {
	var out []string
	for _, s := range p.spans.Ended() {
		for _, e := range s.Events() {
			if strings.HasPrefix(e.Name, "gather.hedge.") || strings.HasPrefix(e.Name, "gather.attempt.") || e.Name == "gather.retry" {
				out = append(out, e.Name)
			}
		}
	}
	return out
}

// TestHedge: a call with no first frame after the hedge delay is hedged on the other replica;
// whichever sends its first message first answers, and the other is cancelled at once, recorded
// as hedge_lost (not as a failure or a plain cancellation), its stream released on the replica.
func TestHedge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		plan    func(k int64, r int) step
		source  Source
		outcome string
		events  []string
	}{
		{"won", func(k int64, _ int) step { return step{hang: k == 1} }, SourceHedge, "won",
			[]string{"gather.hedge.start", "gather.attempt.cancelled", "gather.attempt.won"}},
		{"lost", func(k int64, _ int) step {
			if k == 1 {
				return step{delay: 150 * time.Millisecond}
			}
			return step{hang: true}
		}, SourcePrimary, "lost", []string{"gather.hedge.start", "gather.attempt.cancelled", "gather.attempt.won"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startPool(t, 2, tc.plan)
			c, reg := p.client(t, Config{Hedge: hedge.Config{Initial: 20 * time.Millisecond}})
			n, res := query(t, c, Request{})
			if n != 5 || res.Status != StatusOK || res.Source != tc.source || res.Attempts != 2 {
				t.Fatalf("got %d hits, %v (%v) from the %v of %d attempts; want 5, OK from the %v of 2",
					n, res.Status, res.Err, res.Source, res.Attempts, tc.source)
			}
			if got := value(t, reg, "gather_shard_hedges_total", "outcome", tc.outcome); got != 1 {
				t.Errorf("hedges %s: %v, want 1", tc.outcome, got)
			}
			if got := p.events(); !slices.Equal(got, tc.events) {
				t.Errorf("span events %q, want %q", got, tc.events)
			}
			// The loser's stream is released on its replica, and recorded as hedge_lost.
			waitFor(t, "the loser's call cancelled on its replica", func() bool {
				return p.cancelled[0].Load()+p.cancelled[1].Load() == 1 && p.active.Load() == 0
			})
			waitFor(t, "the loser recorded as hedge_lost", func() bool {
				return value(t, reg, "gather_grpc_rpc_ends_total", "side", "client", "reason", lifecycle.HedgeLost) == 1
			})
			for _, reason := range []string{lifecycle.Canceled, lifecycle.Failed, lifecycle.Reset, lifecycle.DeadlineExceeded} {
				if got := value(t, reg, "gather_grpc_rpc_ends_total", "reason", reason); got != 0 {
					t.Errorf("%v calls recorded as %s", got, reason)
				}
			}
		})
	}
}

// TestEmptyStreamAnswers: a stream that ends cleanly without a message answers for its shard (no
// hits) and cancels the attempt racing it, as a first message would.
func TestEmptyStreamAnswers(t *testing.T) {
	t.Parallel()
	// The first request to arrive, the primary's unless a loaded machine delays it past the
	// hedge's, gets the empty stream; the other hangs.
	var empty atomic.Int64 // 1 + the replica that sends the empty stream
	p := startPool(t, 2, func(k int64, r int) step {
		if k == 1 {
			empty.Store(int64(r) + 1)
			return step{delay: 100 * time.Millisecond, empty: true}
		}
		return step{hang: true}
	})
	c, _ := p.client(t, Config{Hedge: hedge.Config{Initial: 10 * time.Millisecond}})
	n, res := query(t, c, Request{})
	if want := int(empty.Load()) - 1; n != 0 || res.Status != StatusOK || res.ReplicaIndex != want || res.Attempts != 2 {
		t.Fatalf("got %d hits, %v (%v) from replica %d (the %v) of %d attempts; want none, OK from replica %d, the empty stream, of 2",
			n, res.Status, res.Err, res.ReplicaIndex, res.Source, res.Attempts, want)
	}
	waitFor(t, "the hedge cancelled", func() bool { return p.active.Load() == 0 })
}

// TestCloseJoinsHedge: Close cancels a primary and its hedge that are both still waiting, and
// returns only once both have ended.
func TestCloseJoinsHedge(t *testing.T) {
	t.Parallel()
	p := startPool(t, 2, func(int64, int) step { return step{hang: true} })
	c, _ := p.client(t, Config{Hedge: hedge.Config{Initial: 10 * time.Millisecond}})
	call := c.Start(t.Context(), Request{Query: "q", TopK: 10})
	waitFor(t, "a hedge started", func() bool { return p.calls.Load() == 2 })
	res := call.Close()[0]
	if res.Status != StatusCanceled || res.Attempts != 2 {
		t.Errorf("got %v after %d attempts, want CANCELED after 2", res.Status, res.Attempts)
	}
	waitFor(t, "both calls ended on the replicas", func() bool { return p.active.Load() == 0 })
}

// TestHedgeBudget: once the bucket is empty, a call that would be hedged waits for its replica
// instead (here until the per-shard deadline).
func TestHedgeBudget(t *testing.T) {
	t.Parallel()
	p := startPool(t, 2, func(k int64, _ int) step { return step{hang: k == 1 || k == 3} })
	c, reg := p.client(t, Config{ShardTimeout: 500 * time.Millisecond,
		Hedge: hedge.Config{Initial: 20 * time.Millisecond, Budget: 0.001, BudgetCap: 1}})
	if n, res := query(t, c, Request{}); n != 5 || res.Source != SourceHedge {
		t.Fatalf("first query: %d hits from the %v, want 5 from the hedge", n, res.Source)
	}
	n, res := query(t, c, Request{})
	if n != 0 || res.Status != StatusDeadlineExceeded || res.Attempts != 1 {
		t.Errorf("second query: %d hits, %v after %d attempts; want none, DEADLINE_EXCEEDED after 1", n, res.Status, res.Attempts)
	}
	if got := value(t, reg, "gather_shard_hedges_denied_total", "reason", "budget"); got != 1 {
		t.Errorf("hedges denied for the budget: %v, want 1", got)
	}
	if got := value(t, reg, "gather_hedge_budget_tokens"); got >= 1 {
		t.Errorf("%v tokens left, want less than one", got)
	}
}

// TestDeniedHedgeAsksAgain: a call whose hedge was denied for the budget asks again as it waits,
// and hedges once a token is back, instead of waiting for its per-shard deadline.
func TestDeniedHedgeAsksAgain(t *testing.T) {
	t.Parallel()
	p := startPool(t, 2, func(k int64, _ int) step { return step{hang: k == 1} })
	c, reg := p.client(t, Config{ShardTimeout: 10 * time.Second,
		Hedge: hedge.Config{Initial: 20 * time.Millisecond, Budget: 0.001, BudgetCap: 1}})
	for c.budget.Spend() {
	}
	done := make(chan answer, 1)
	queryAsync(t, c, done)
	waitFor(t, "the first hedge denied for the budget", func() bool {
		return value(t, reg, "gather_shard_hedges_denied_total", "reason", "budget") == 1
	})
	c.budget.Refund() // the token a later shard call would have deposited
	a := <-done
	if a.n != 5 || a.res.Status != StatusOK || a.res.Source != SourceHedge {
		t.Errorf("got %d hits, %v from the %v; want 5 from a hedge", a.n, a.res.Status, a.res.Source)
	}
	if got := value(t, reg, "gather_shard_hedges_denied_total"); got != 1 {
		t.Errorf("%v denials counted, want 1 (the first of the call)", got)
	}
}

// TestStuckCallHedgedOnSlowShard: when every replica of a shard answers later than the hedge
// delay, hedges are denied as slow_shard, but a call that has waited twice as long as the shard
// usually takes is hedged: it is stuck, not slow like its shard.
func TestStuckCallHedgedOnSlowShard(t *testing.T) {
	t.Parallel()
	const usual, delay = 80 * time.Millisecond, 5 * time.Millisecond
	var hangNext atomic.Bool
	p := startPool(t, 2, func(int64, int) step { return step{delay: usual, hang: hangNext.CompareAndSwap(true, false)} })
	// The per-shard deadline leaves the stuck call time to be hedged (at 160-320ms, twice the
	// usual), not the seconds it takes for the replicas' late answers to be forgotten.
	c, reg := p.client(t, Config{ShardTimeout: 1500 * time.Millisecond,
		Hedge: hedge.Config{Initial: delay, MinSamples: 1 << 20, BudgetCap: 100}})
	// Both replicas have answered six calls, each 16 times later than the hedge delay: the whole
	// shard is slow.
	set := c.Current().shards[0].set
	for r := range 2 {
		for range 6 {
			i, err := set.Pick(replica.Mask(0).With(1-r), replica.Primary)
			if err != nil || i != r {
				t.Fatalf("pick: %d, %v; want %d", i, err, r)
			}
			set.FirstFrame(i, usual, delay)
			set.Done(i, replica.Success, true, usual, delay)
		}
		if _, err := set.PickHedge(replica.Mask(0).With(1-r), 0); !errors.Is(err, replica.ErrSlow) {
			t.Fatalf("replica %d as a hedge: %v, want ErrSlow", r, err)
		}
	}
	hangNext.Store(true) // the next call to reach a replica, the primary of this query, hangs
	n, res := query(t, c, Request{})
	if n != 5 || res.Status != StatusOK || res.Source != SourceHedge {
		t.Errorf("the stuck call: %d hits, %v (%v) from the %v; want 5 hits from a hedge", n, res.Status, res.Err, res.Source)
	}
	if got := value(t, reg, "gather_shard_hedges_denied_total", "reason", "slow_shard"); got != 1 {
		t.Errorf("%v hedges denied as slow_shard, want 1: the stuck call's first", got)
	}
}

// TestNoHedgePastDeadline: no hedge when less time is left to the per-shard deadline than a
// hedge is expected to take to its first frame.
func TestNoHedgePastDeadline(t *testing.T) {
	t.Parallel()
	p := startPool(t, 2, func(k int64, _ int) step { return step{hang: k == 1} })
	// The hedge delay and the expected time to first frame are both Initial: 700ms, of a per-shard
	// deadline of 1s.
	c, reg := p.client(t, Config{Hedge: hedge.Config{Initial: 700 * time.Millisecond}})
	n, res := query(t, c, Request{ShardTimeout: time.Second})
	if n != 0 || res.Status != StatusDeadlineExceeded || res.Attempts != 1 {
		t.Errorf("got %d hits, %v after %d attempts; want none, DEADLINE_EXCEEDED after 1", n, res.Status, res.Attempts)
	}
	if got := value(t, reg, "gather_shard_hedges_denied_total", "reason", "deadline"); got != 1 {
		t.Errorf("hedges denied for the deadline: %v, want 1", got)
	}
}

// TestRetryBeforeFirstFrame: an attempt refused or shed before its first message is retried on
// the other replica, within the budget; other errors, or no budget, are not retried.
func TestRetryBeforeFirstFrame(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code   codes.Code
		budget float64
		want   Status
	}{
		{codes.Unavailable, 0, StatusOK},
		{codes.ResourceExhausted, 0, StatusOK},
		{codes.Internal, 0, StatusFailed},
		{codes.Unavailable, hedge.Off, StatusUnavailable},
	} {
		t.Run(fmt.Sprintf("%v/budget=%v", tc.code, tc.budget), func(t *testing.T) {
			t.Parallel()
			p := startPool(t, 2, func(k int64, _ int) step {
				if k == 1 {
					return step{code: tc.code}
				}
				return step{}
			})
			c, reg := p.client(t, Config{Hedge: hedge.Config{Budget: tc.budget}})
			n, res := query(t, c, Request{})
			if res.Status != tc.want {
				t.Fatalf("got %v (%v), want %v", res.Status, res.Err, tc.want)
			}
			if tc.want != StatusOK {
				if res.Attempts != 1 {
					t.Errorf("%d attempts, want 1: no retry", res.Attempts)
				}
				return
			}
			if n != 5 || res.Source != SourceRetry || res.Attempts != 2 {
				t.Errorf("got %d hits from the %v of %d attempts, want 5 from the retry of 2", n, res.Source, res.Attempts)
			}
			if got := value(t, reg, "gather_shard_retries_total", "outcome", "won"); got != 1 {
				t.Errorf("retries won: %v, want 1", got)
			}
			if got := p.events(); !slices.Contains(got, "gather.retry") {
				t.Errorf("span events %q, want a gather.retry", got)
			}
		})
	}
}

// TestTrailerFailuresEject: a replica whose streams send their hits and then fail fails those
// calls, and five in a row eject it, though it is the faster one; then the other replica takes
// every call.
func TestTrailerFailuresEject(t *testing.T) {
	t.Parallel()
	p := startPool(t, 2, func(_ int64, r int) step {
		if r == 0 {
			return step{trailer: true}
		}
		return step{delay: 5 * time.Millisecond}
	})
	c, reg := p.client(t, Config{})
	bad := p.addrs[0]
	for q := 0; value(t, reg, "gather_replica_ejections_total", "replica", bad) == 0; q++ {
		if q == 40 {
			t.Fatal("40 queries and the failing replica is not ejected")
		}
		if _, res := query(t, c, Request{}); res.Replica == bad && res.Status != StatusUnavailable {
			t.Fatalf("the failing replica's answer: %v, want UNAVAILABLE", res.Status)
		}
	}
	if got := value(t, reg, "gather_replica_ejected", "replica", bad); got != 1 {
		t.Errorf("gather_replica_ejected %v, want 1", got)
	}
	for range 10 {
		if _, res := query(t, c, Request{}); res.Status != StatusOK || res.Replica == bad {
			t.Fatalf("after the ejection: %v from %s", res.Status, res.Replica)
		}
	}
}

// TestWholeShardSlowNoHedge: when every replica is slower than the hedge delay, hedging stops
// after a few calls instead of doubling the shard's load.
func TestWholeShardSlowNoHedge(t *testing.T) {
	t.Parallel()
	p := startPool(t, 2, func(int64, int) step { return step{delay: 80 * time.Millisecond} })
	// The delay stays at 5ms (no window ever has enough samples to move it).
	c, reg := p.client(t, Config{Hedge: hedge.Config{Initial: 5 * time.Millisecond, MinSamples: 1 << 20, BudgetCap: 100}})
	for range 10 {
		if n, res := query(t, c, Request{}); n != 5 || res.Status != StatusOK {
			t.Fatalf("got %d hits, %v", n, res.Status)
		}
	}
	started := value(t, reg, "gather_shard_hedges_total") - value(t, reg, "gather_shard_hedges_total", "outcome", "denied")
	if slow := value(t, reg, "gather_shard_hedges_denied_total", "reason", "slow_shard"); started > 3 || slow < 7 {
		t.Errorf("of 10 calls, %v hedged and %v denied as slow_shard; want at most 3 hedged, the rest denied", started, slow)
	}
}

// TestHungReplicaRoutedAround: a replica that hangs costs a hedge on its first calls, then is
// avoided; every answer stays complete.
func TestHungReplicaRoutedAround(t *testing.T) {
	t.Parallel()
	p := startPool(t, 2, func(_ int64, r int) step { return step{hang: r == 0} })
	c, reg := p.client(t, Config{Hedge: hedge.Config{Initial: 20 * time.Millisecond}})
	for q := range 40 {
		if n, res := query(t, c, Request{}); n != 5 || res.Status != StatusOK {
			t.Fatalf("query %d: %d hits, %v (%v)", q, n, res.Status, res.Err)
		}
	}
	// Each attempt the hung replica wastes doubles the cost it is charged; the healthy one is
	// charged its latency, at once if it is worse (peak-sensitive). On a quiet machine the hung
	// one takes 1-3 first attempts; on a loaded one a stall of the healthy one's answers buys
	// the hung one another attempt, each one only after twice as long a stall. A random choice
	// would give it 20.
	if got := value(t, reg, "gather_replica_selections_total", "replica", p.addrs[0]); got > 8 {
		t.Errorf("the hung replica took %v of 40 first attempts, want at most 8", got)
	}
}

// TestVerdict: which ends of an attempt count against its replica. A failure: the replica's own
// error or its connection's (also as the trailer of a stream that sent hits), a protocol
// violation, a cut by the per-shard deadline or the idle timeout. Neutral: the query's
// cancellation or deadline, a lost race, the query's hit budget. A success: a clean end, or a
// stream stopped early once it had answered.
func TestVerdict(t *testing.T) {
	t.Parallel()
	cancelled := func(cause error) context.Context {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(cause)
		return ctx
	}
	live := context.Background()
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		err    error
		framed bool
		want   replica.Outcome
	}{
		{"clean end", live, nil, true, replica.Success},
		{"clean end without a message", live, nil, true, replica.Success},
		{"stopped early", cancelled(ErrStoppedEarly), status.Error(codes.Canceled, "x"), true, replica.Success},
		{"unavailable", live, status.Error(codes.Unavailable, "x"), false, replica.Failure},
		{"shed", live, status.Error(codes.ResourceExhausted, "x"), false, replica.Failure},
		{"the shard's own error", live, status.Error(codes.Internal, "x"), false, replica.Failure},
		{"trailer after hits", live, status.Error(codes.Unavailable, "x"), true, replica.Failure},
		{"protocol violation", live, fmt.Errorf("%w: x", ErrOrder), true, replica.Failure},
		{"over a limit", live, fmt.Errorf("%w: x", ErrOverLimit), true, replica.Failure},
		{"per-shard deadline", cancelled(ErrShardDeadline), status.Error(codes.DeadlineExceeded, "x"), false, replica.Failure},
		{"idle", cancelled(fmt.Errorf("%w (1s)", ErrIdle)), status.Error(codes.Canceled, "x"), true, replica.Failure},
		{"the shard's deadline answer", live, status.Error(codes.DeadlineExceeded, "x"), false, replica.Failure},
		{"hedge lost before its first frame", cancelled(ErrHedgeLost), status.Error(codes.Canceled, "x"), false, replica.Neutral},
		{"hedge lost after its first frame", cancelled(ErrHedgeLost), ErrHedgeLost, true, replica.Neutral},
		{"query cancelled", cancelled(context.Canceled), status.Error(codes.Canceled, "x"), false, replica.Neutral},
		{"stopped early before its first frame", cancelled(ErrStoppedEarly), status.Error(codes.Canceled, "x"), false, replica.Neutral},
		{"query hit budget", live, fmt.Errorf("%w: x", ErrBudget), true, replica.Neutral},
	} {
		a := &attempt{ctx: tc.ctx, err: tc.err, framed: tc.framed}
		if got := (&shardCall{}).verdict(a); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestStalledReplicaFailover: calls stuck on a replica that has stopped answering, while its
// sibling answers later calls, move to the sibling once the replica is ejected as stalled,
// without a budget token (the bucket is empty), long before their per-shard deadline; the stuck
// attempts are cancelled on the replica and joined.
func TestStalledReplicaFailover(t *testing.T) {
	t.Parallel()
	var answered atomic.Bool // replica 0 answers its first call, then hangs
	p := startPool(t, 2, func(_ int64, r int) step { return step{hang: r == 0 && answered.Swap(true)} })
	c, reg := p.client(t, Config{ShardTimeout: 10 * time.Second,
		Replica: replica.Config{StallAfter: 50 * time.Millisecond, InitialCost: time.Millisecond},
		Hedge:   hedge.Config{Initial: 20 * time.Millisecond, Budget: 0.001, BudgetCap: 1}})
	for c.budget.Spend() {
	}
	// Replica 1 was measured slow a moment ago, so the next four calls go to replica 0, which
	// answers the first and hangs from then on.
	c.topo.Load().shards[0].set.FirstFrame(1, 300*time.Millisecond, 0)
	if n, res := query(t, c, Request{}); n != 5 || res.Replica != p.addrs[0] {
		t.Fatalf("first query: %d hits from %s, want 5 from replica 0", n, res.Replica)
	}
	stuck := make(chan answer, 3)
	for k := range 3 {
		queryAsync(t, c, stuck)
		waitFor(t, "a call waiting on replica 0", func() bool { return p.active.Load() == int64(k+1) })
	}
	// Once they have waited long enough, replica 0's load (their age times 4) passes replica
	// 1's, and the calls go there.
	time.Sleep(150 * time.Millisecond)
	start := time.Now()
	for q := 0; len(stuck) < 3 && time.Since(start) < 5*time.Second; q++ {
		if n, res := query(t, c, Request{}); n != 5 || res.Status != StatusOK {
			t.Fatalf("query %d while three wait: %d hits, %v (%v)", q, n, res.Status, res.Err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for range 3 {
		a := <-stuck
		if a.n != 5 || a.res.Status != StatusOK || a.res.Source != SourceHedge || a.res.Replica != p.addrs[1] {
			t.Fatalf("a stuck call: %d hits, %v from the %v on %s; want 5 from a hedge on %s", a.n, a.res.Status, a.res.Source,
				a.res.Replica, p.addrs[1])
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the stuck calls answered %s after the others began, want long before their 10s deadline", took)
	}
	if got := value(t, reg, "gather_shard_failovers_total"); got != 3 {
		t.Errorf("failovers %v, want 3", got)
	}
	if got := value(t, reg, "gather_replica_ejections_total", "replica", p.addrs[0]); got != 1 {
		t.Errorf("ejections of the hung replica %v, want 1", got)
	}
	if got := value(t, reg, "gather_hedge_budget_tokens"); got >= 1 {
		t.Errorf("%v tokens, want the bucket still empty: a failover spends none", got)
	}
	waitFor(t, "the stuck attempts cancelled on their replica", func() bool { return p.cancelled[0].Load() == 3 && p.active.Load() == 0 })
}
