package faulttest

import (
	"fmt"
	"testing"
	"time"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/fault"
	"github.com/gatherproxy/gather/internal/shardtest"
)

func hits(prefix string, n int, seed uint64) []*shardv1.Hit { return shardtest.Hits(prefix, n, seed) }

func healthy(i int) shardtest.Behavior {
	return shardtest.Behavior{Hits: hits(fmt.Sprint("d", i), 50, uint64(i)), Batch: 8}
}

// statusOf returns each shard's status.
func statusOf(resp *queryv1.SearchResponse) []queryv1.ShardStatus {
	var out []queryv1.ShardStatus
	for _, s := range resp.GetShards() {
		out = append(out, s.GetStatus())
	}
	return out
}

func assertSorted(t *testing.T, hs []*queryv1.Hit) {
	t.Helper()
	for i := 1; i < len(hs); i++ {
		a, b := hs[i-1], hs[i]
		if a.GetScore() < b.GetScore() || (a.GetScore() == b.GetScore() && a.GetDocId() > b.GetDocId()) {
			t.Fatalf("hits %d and %d out of order", i-1, i)
		}
	}
}

// TestShardHangs: one shard never answers. Every query comes back degraded (3 of 4) when the
// shard timeout cuts it, and each hung call is cancelled on the shard.
func TestShardHangs(t *testing.T) {
	e := newEnv(t, options{fan: fanout.Config{ShardTimeout: 200 * time.Millisecond, IdleTimeout: time.Minute}},
		healthy(0), healthy(1), shardtest.Behavior{Hang: true}, healthy(3))
	b := e.takeBaseline(t)
	const queries = 10
	for range queries {
		resp, err := e.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 10})
		if err != nil {
			t.Fatal(err)
		}
		cov := resp.GetCoverage()
		if cov.GetShardsSucceeded() != 3 || !cov.GetDegraded() || len(resp.GetHits()) != 10 ||
			statusOf(resp)[2] != queryv1.ShardStatus_SHARD_STATUS_DEADLINE_EXCEEDED {
			t.Fatalf("coverage %v, %d hits, statuses %v; want 3 of 4, 10 hits, s2 DEADLINE_EXCEEDED", cov, len(resp.GetHits()), statusOf(resp))
		}
	}
	e.nothingLeft(t, b)
	if got := e.shards[2].Cancelled(); got != queries+1 { // +1: the warm-up query
		t.Errorf("hung shard saw %d cancelled calls, want %d", got, queries+1)
	}
}

// TestShardStreamsSlowly: one shard dribbles hits slower than the shard timeout allows. Its hits
// up to the cut are merged, in order; the rest of the answer is unaffected.
func TestShardStreamsSlowly(t *testing.T) {
	slow := shardtest.Behavior{Hits: hits("slow", 40, 9), Batch: 1, BatchDelay: 40 * time.Millisecond}
	e := newEnv(t, options{fan: fanout.Config{ShardTimeout: 300 * time.Millisecond, IdleTimeout: time.Minute}},
		healthy(0), slow, healthy(2))
	b := e.takeBaseline(t)
	resp, err := e.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 40})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.GetShards()[1]
	if r.GetStatus() != queryv1.ShardStatus_SHARD_STATUS_DEADLINE_EXCEEDED || r.GetHits() == 0 || r.GetHits() >= 40 {
		t.Fatalf("slow shard: %v with %d hits; want DEADLINE_EXCEEDED with some but not all 40", r.GetStatus(), r.GetHits())
	}
	if len(resp.GetHits()) != 40 {
		t.Errorf("%d hits, want 40", len(resp.GetHits()))
	}
	assertSorted(t, resp.GetHits())
	e.nothingLeft(t, b)
}

// TestShardDiesMidStream: a shard's connection is cut after its first message, with a FIN (the
// process closed it) or an RST (reset). Its first batch is kept, the shard is reported
// UNAVAILABLE, and the next query reconnects to it.
func TestShardDiesMidStream(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec fault.Spec
	}{
		{"close", fault.Spec{Close: true, CloseAfter: 1}},
		{"reset", fault.Spec{Reset: true, ResetAfter: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, options{fan: fanout.Config{ShardTimeout: 5 * time.Second}}, healthy(0), healthy(1), healthy(2))
			b := e.takeBaseline(t)
			e.shards[1].Fault(tc.spec)
			resp, err := e.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 30})
			if err != nil {
				t.Fatal(err)
			}
			r := resp.GetShards()[1]
			if r.GetStatus() != queryv1.ShardStatus_SHARD_STATUS_UNAVAILABLE || r.GetHits() != 8 {
				t.Fatalf("dying shard: %v with %d hits (%s); want UNAVAILABLE with its first batch of 8", r.GetStatus(), r.GetHits(), r.GetError())
			}
			if cov := resp.GetCoverage(); cov.GetShardsSucceeded() != 2 || len(resp.GetHits()) != 30 {
				t.Errorf("coverage %v with %d hits; want 2 of 3 and 30 hits", cov, len(resp.GetHits()))
			}
			assertSorted(t, resp.GetHits())
			e.shards[1].Fault(fault.Spec{})
			eventually(t, 10*time.Second, func() string {
				resp, err := e.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 30})
				if err != nil || resp.GetCoverage().GetShardsSucceeded() != 3 {
					return fmt.Sprintf("not recovered: %v %v", err, resp.GetCoverage())
				}
				return ""
			})
			e.nothingLeft(t, b)
		})
	}
}
