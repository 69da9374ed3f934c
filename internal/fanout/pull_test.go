package fanout

import (
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/shardtest"
)

// TestPullSendsOnlyWhatTheMergeAsks: over Search a shard whose hits rank below the answer sends
// all of them, though only its first message is read; over Pull it sends its first message
// only, and once the other shard's hits outrank it its stream is half-closed and ends OK. The
// shard whose hits make the answer sends what the merge needs. The answer is the full fetch
// either way.
func TestPullSendsOnlyWhatTheMergeAsks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		pullAt  int   // Config.PullFanOut
		lowSent int64 // messages the low shard sends
	}{{"search", -1, 2}, {"pull", 2, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			high := shardtest.Hits("high", 40, 0) // scores from 100 down
			low := shardtest.Hits("low", 40, 0)
			for i, h := range low {
				low[i] = &shardv1.Hit{DocId: h.GetDocId(), Score: h.GetScore() - 1000}
			}
			a := shardtest.Start(t, shardtest.Behavior{Hits: high, Paced: true, Batch: 64, Pull: true})
			b := shardtest.Start(t, shardtest.Behavior{Hits: low, Paced: true, Batch: 64, Pull: true})
			c := clientOver(t, Config{PullFanOut: tc.pullAt}, a, b)
			const k = 20
			call := c.Start(t.Context(), Request{Query: "q", TopK: k})
			got := mergeAll(call, k)
			res := call.Close()
			if want := referenceMerge(k, [][]*shardv1.Hit{high, low}); !slices.Equal(got, want) {
				t.Fatalf("hits\n got %v\nwant %v", got, want)
			}
			for i, r := range res {
				if r.Status != StatusOK {
					t.Errorf("shard %d: %v (%v)", i, r.Status, r.Err)
				}
			}
			a.WaitIdle(t, 5*time.Second)
			b.WaitIdle(t, 5*time.Second)
			// a: its first 11 hits (FirstBatch(2, 20)), then the other 9 of top_k.
			if got := a.Sent(); got != 2 {
				t.Errorf("the shard in the answer sent %d messages, want 2", got)
			}
			if got := b.Sent(); got != tc.lowSent {
				t.Errorf("the shard below the answer sent %d messages, want %d", got, tc.lowSent)
			}
			wantPulls := int64(0)
			if tc.pullAt > 0 {
				wantPulls = 1
			}
			if a.Pulls() != wantPulls || b.Pulls() != wantPulls {
				t.Errorf("Pull calls: %d and %d, want %d each", a.Pulls(), b.Pulls(), wantPulls)
			}
			// Outranked by the other shard's hits, the low shard's Pull stream is half-closed,
			// and its shard ends it OK: it is not cancelled.
			if got := b.Cancelled(); tc.pullAt > 0 && got != 0 {
				t.Errorf("the shard below the answer had %d calls cancelled, want 0", got)
			}
			if !res[1].StoppedEarly {
				t.Error("the shard below the answer: not stopped early")
			}
		})
	}
}

// TestPullFallsBackToSearch: a shard that answers Pull with UNIMPLEMENTED (one older than Pull)
// or PERMISSION_DENIED (an authorization policy that names Search alone) is called with Search
// in the same shard call, with a full answer, and with Search only from then on.
func TestPullFallsBackToSearch(t *testing.T) {
	t.Parallel()
	t.Run("unimplemented", func(t *testing.T) {
		t.Parallel()
		old := fallsBack(t, shardtest.Behavior{})
		if got := old.Pulls(); got != 1 {
			t.Errorf("the old shard got %d Pull calls, want 1 (the first query's)", got)
		}
	})
	t.Run("denied", func(t *testing.T) {
		t.Parallel()
		var denied atomic.Int64
		old := fallsBack(t, shardtest.Behavior{Pull: true}, grpc.ChainStreamInterceptor(
			func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				if info.FullMethod == shardv1.ShardService_Pull_FullMethodName {
					denied.Add(1)
					return status.Error(codes.PermissionDenied, "the policy allows Search only")
				}
				return h(srv, ss)
			}))
		if got := denied.Load(); got != 1 || old.Pulls() != 0 {
			t.Errorf("%d Pull calls denied (and %d served), want 1 (the first query's)", got, old.Pulls())
		}
	})
}

// fallsBack runs two queries over a shard with behavior b (its hits set here) and one that
// serves Pull, with Pull at every fan-out, checks their answers and that the first shard served
// both with Search, and returns it.
func fallsBack(t *testing.T, b shardtest.Behavior, opts ...grpc.ServerOption) *shardtest.Shard {
	t.Helper()
	hits := shardtest.Hits("old", 30, 0)
	b.Hits, b.Paced, b.Batch = hits, true, 64
	old := shardtest.Start(t, b, opts...)
	other := shardtest.Hits("new", 30, 1)
	cur := shardtest.Start(t, shardtest.Behavior{Hits: other, Paced: true, Batch: 64, Pull: true})
	c := clientOver(t, Config{PullFanOut: 1}, old, cur)
	const k = 25
	for q := range 2 {
		call := c.Start(t.Context(), Request{Query: "q", TopK: k})
		got := mergeAll(call, k)
		res := call.Close()
		if want := referenceMerge(k, [][]*shardv1.Hit{hits, other}); !slices.Equal(got, want) {
			t.Fatalf("query %d: hits\n got %v\nwant %v", q, got, want)
		}
		for i, r := range res {
			if r.Status != StatusOK {
				t.Errorf("query %d, shard %d: %v (%v)", q, i, r.Status, r.Err)
			}
		}
	}
	if got := old.Started(); got != 2 {
		t.Errorf("the old shard served %d Search calls, want 2", got)
	}
	if got := cur.Pulls(); got != 2 {
		t.Errorf("the new shard got %d Pull calls, want 2", got)
	}
	return old
}

// TestPullShardSilentWhenAskedIsIdle: a Pull shard that sends its first batch and then answers
// no ask (a peer that is gone, or stuck) is cut by the idle timeout, as a Search stream that
// stops is, and the query is answered with what came; the shard's handler ends with the call.
func TestPullShardSilentWhenAskedIsIdle(t *testing.T) {
	t.Parallel()
	const idle = 100 * time.Millisecond
	stuck := shardtest.Hits("stuck", 20, 0) // its hits are the answer: the merge asks for more
	low := shardtest.Hits("low", 20, 0)
	for i, h := range low {
		low[i] = &shardv1.Hit{DocId: h.GetDocId(), Score: h.GetScore() - 1000}
	}
	a := shardtest.Start(t, shardtest.Behavior{Hits: stuck, Paced: true, Batch: 64, Pull: true, Hang: true, HangAfter: 1})
	b := shardtest.Start(t, shardtest.Behavior{Hits: low, Paced: true, Batch: 64, Pull: true})
	c := clientOver(t, Config{PullFanOut: 2, IdleTimeout: idle, ShardTimeout: time.Minute}, a, b)
	const k = 10
	call := c.Start(t.Context(), Request{Query: "q", TopK: k})
	got := mergeAll(call, k)
	res := call.Close()
	first := int(FirstBatch(2, k)) // 6
	if len(got) != k {             // the stuck shard's first 6, then the low shard's best
		t.Fatalf("%d hits, want %d", len(got), k)
	}
	if r := res[0]; r.Status != StatusDeadlineExceeded || !errors.Is(r.Err, ErrIdle) || r.Hits != first {
		t.Errorf("stuck shard: %v (%v), %d hits; want DEADLINE_EXCEEDED by the idle timeout after %d hits", r.Status, r.Err, r.Hits, first)
	}
	a.WaitIdle(t, 5*time.Second)
	b.WaitIdle(t, 5*time.Second)
}
