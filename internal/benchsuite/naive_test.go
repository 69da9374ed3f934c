package benchsuite

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/synthetic"
)

// randomReplies returns n shard replies of up to k hits each, each sorted by the shard contract,
// with coarse scores and doc ids shared between shards so that ties on both are common.
func randomReplies(r *rand.Rand, n, k int) []ShardReply {
	replies := make([]ShardReply, n)
	for s := range replies {
		hits := make([]*shardv1.Hit, r.IntN(k+1))
		seen := map[string]bool{}
		for i := range hits {
			id := fmt.Sprintf("doc-%03d", r.IntN(200))
			for seen[id] {
				id = fmt.Sprintf("doc-%03d", r.IntN(200))
			}
			seen[id] = true
			hits[i] = &shardv1.Hit{DocId: id, Score: float64(r.IntN(8)), Text: "t" + id}
		}
		slices.SortFunc(hits, func(a, b *shardv1.Hit) int {
			if a.Score != b.Score {
				if a.Score > b.Score {
					return -1
				}
				return 1
			}
			return strings.Compare(a.DocId, b.DocId)
		})
		replies[s] = ShardReply{Shard: ShardName(s), Replica: "r", Hits: hits, TotalMatches: uint64(len(hits)), Documents: 10}
	}
	return replies
}

// selectTop is the reference: take the best head of the shards' lists, k times (a selection, not
// a sort), by score descending, doc_id ascending, shard name ascending.
func selectTop(replies []ShardReply, k int) []string {
	pos := make([]int, len(replies))
	var out []string
	for len(out) < k {
		best := -1
		for s, r := range replies {
			if pos[s] == len(r.Hits) {
				continue
			}
			if best < 0 {
				best = s
				continue
			}
			h, b := r.Hits[pos[s]], replies[best].Hits[pos[best]]
			if h.Score > b.Score || (h.Score == b.Score && (h.DocId < b.DocId ||
				(h.DocId == b.DocId && r.Shard < replies[best].Shard))) {
				best = s
			}
		}
		if best < 0 {
			break
		}
		out = append(out, replies[best].Shard+"/"+replies[best].Hits[pos[best]].DocId)
		pos[best]++
	}
	return out
}

func hitKeys(resp *queryv1.SearchResponse) []string {
	var out []string
	for _, h := range resp.GetHits() {
		out = append(out, h.GetShard()+"/"+h.GetDocId())
	}
	return out
}

func TestNaiveAnswerMatchesReference(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		n, k := 1+r.IntN(12), 1+r.IntN(40)
		replies := randomReplies(r, n, k)
		resp := NaiveAnswer(replies, uint32(k))
		if got, want := hitKeys(resp), selectTop(replies, k); !slices.Equal(got, want) {
			t.Fatalf("case %d (%d shards, top_k %d):\n got %v\nwant %v", i, n, k, got, want)
		}
		if c := resp.GetCoverage(); c.GetShardsTotal() != uint32(n) || c.GetShardsSucceeded() != uint32(n) || c.GetDegraded() {
			t.Fatalf("case %d: coverage %v, want %d of %d", i, c, n, n)
		}
	}
}

func TestNaiveAnswerReportsFailedShards(t *testing.T) {
	t.Parallel()
	replies := []ShardReply{
		{Shard: "a", Hits: []*shardv1.Hit{{DocId: "1", Score: 3}}, TotalMatches: 7, Documents: 100, Latency: time.Millisecond},
		{Shard: "b", Hits: []*shardv1.Hit{{DocId: "2", Score: 5}}, TotalMatches: 4, Documents: 50,
			Err: status.Error(codes.DeadlineExceeded, "slow")},
		{Shard: "c", Err: status.Error(codes.Unavailable, "gone")},
		{Shard: "d", Err: errors.New("broken")},
	}
	resp := NaiveAnswer(replies, 10)
	if got, want := hitKeys(resp), []string{"b/2", "a/1"}; !slices.Equal(got, want) {
		t.Errorf("hits %v, want %v: a failed shard's hits received before the failure are merged", got, want)
	}
	c := resp.GetCoverage()
	if c.GetShardsTotal() != 4 || c.GetShardsSucceeded() != 1 || !c.GetDegraded() || c.GetDocumentsSearched() != 100 {
		t.Errorf("coverage %v, want 1 of 4 shards, degraded, 100 documents", c)
	}
	if resp.GetTotalMatches() != 11 {
		t.Errorf("total matches %d, want 11", resp.GetTotalMatches())
	}
	want := []queryv1.ShardStatus{
		queryv1.ShardStatus_SHARD_STATUS_OK, queryv1.ShardStatus_SHARD_STATUS_DEADLINE_EXCEEDED,
		queryv1.ShardStatus_SHARD_STATUS_UNAVAILABLE, queryv1.ShardStatus_SHARD_STATUS_FAILED,
	}
	for i, sr := range resp.GetShards() {
		if sr.GetShard() != replies[i].Shard || sr.GetStatus() != want[i] || (sr.GetError() == "") != (replies[i].Err == nil) {
			t.Errorf("shard result %d = %v, want shard %s status %v", i, sr, replies[i].Shard, want[i])
		}
	}
	if got := resp.GetShards()[0].GetLatency().AsDuration(); got != time.Millisecond {
		t.Errorf("shard a latency %v, want 1ms", got)
	}
}

// serveShards serves n synthetic shards (seeds 1 to n, as the suite's) on loopback TCP until
// the test ends, and returns them as Naive's shards.
func serveShards(t *testing.T, n int) []Shard {
	t.Helper()
	var shards []Shard
	for i := range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		shardv1.RegisterShardServiceServer(srv, synthetic.New(uint64(i)+1))
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.Serve(lis)
		}()
		t.Cleanup(func() {
			srv.Stop()
			<-done
		})
		shards = append(shards, Shard{Name: ShardName(i), Addr: lis.Addr().String()})
	}
	return shards
}

func TestNaiveSearch(t *testing.T) {
	t.Parallel()
	shards := serveShards(t, 3)
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := down.Addr().String()
	_ = down.Close() // nothing listens there any more

	n, err := NewNaive(append(shards, Shard{Name: "shard-9", Addr: downAddr}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = n.Close() }()
	resp, err := n.Search(t.Context(), &queryv1.SearchRequest{Query: "union", TopK: 25})
	if err != nil {
		t.Fatal(err)
	}
	var replies []ShardReply
	for i := range shards {
		replies = append(replies, ShardReply{Shard: ShardName(i), Hits: synthetic.New(uint64(i)+1).Hits("union", 25)})
	}
	if got, want := hitKeys(resp), selectTop(replies, 25); !slices.Equal(got, want) {
		t.Errorf("hits\n got %v\nwant %v", got, want)
	}
	if c := resp.GetCoverage(); c.GetShardsSucceeded() != 3 || c.GetShardsTotal() != 4 || !c.GetDegraded() {
		t.Errorf("coverage %v, want 3 of 4, degraded", c)
	}
	if s := resp.GetShards()[3]; s.GetStatus() != queryv1.ShardStatus_SHARD_STATUS_UNAVAILABLE {
		t.Errorf("the shard nobody serves: %v, want UNAVAILABLE", s)
	}
	for _, s := range resp.GetShards()[:3] {
		if s.GetLatency().AsDuration() <= 0 || s.GetHits() != 25 {
			t.Errorf("shard result %v: want 25 hits and a latency", s)
		}
	}
	if resp.GetTook().AsDuration() <= 0 {
		t.Errorf("took %v", resp.GetTook())
	}

	for _, req := range []*queryv1.SearchRequest{{Query: " ", TopK: 3}, {Query: "union"}} {
		if _, err := n.Search(t.Context(), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("Search(%v): %v, want InvalidArgument", req, err)
		}
	}
}

func TestNaiveSearchWithoutShards(t *testing.T) {
	t.Parallel()
	if _, err := NewNaive(nil); err == nil {
		t.Error("NewNaive(nil) succeeded")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	n, err := NewNaive([]Shard{{Name: "a", Addr: addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = n.Close() }()
	if _, err := n.Search(t.Context(), &queryv1.SearchRequest{Query: "union", TopK: 3}); status.Code(err) != codes.Unavailable {
		t.Errorf("with its only shard down: %v, want Unavailable", err)
	}
}
