package proxy_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/proxy"
	"github.com/gatherproxy/gather/internal/shardtest"
)

// bulky returns n correctly ordered hits with texts of textBytes bytes.
func bulky(prefix string, n int, seed uint64, textBytes int) []*shardv1.Hit {
	hits := shardtest.Hits(prefix, n, seed)
	for _, h := range hits {
		h.Text = strings.Repeat("t", textBytes)
	}
	return hits
}

// TestSearchAnswerCut: when the next hit would take the answer over max_answer_bytes, the merge
// stops there: the answer keeps the best hits, in order, stays under the limit and says why.
func TestSearchAnswerCut(t *testing.T) {
	t.Parallel()
	h := [][]*shardv1.Hit{bulky("a", 40, 1, 2000), bulky("b", 40, 2, 2000), bulky("c", 40, 3, 2000)}
	const limit = 30 << 10
	c := newClusterWith(t, fanout.Config{}, proxy.Config{MaxAnswerBytes: limit},
		shardtest.Behavior{Hits: h[0], Batch: 8}, shardtest.Behavior{Hits: h[1]}, shardtest.Behavior{Hits: h[2], Batch: 3})
	resp, err := c.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 100})
	if err != nil {
		t.Fatal(err)
	}
	got := ids(resp.GetHits())
	if size := proto.Size(resp); size > limit || len(got) < 10 {
		t.Fatalf("answer of %d bytes with %d hits, want at most %d bytes and some hits", size, len(got), limit)
	}
	if want := reference(100, h...)[:len(got)]; !slices.Equal(got, want) {
		t.Errorf("hits\n got %v\nwant the first %d of the reference %v", got, len(got), want)
	}
	if !resp.GetTruncated() || !strings.Contains(resp.GetTruncationReason(), fmt.Sprintf("max_answer_bytes (%d)", limit)) ||
		!strings.Contains(resp.GetTruncationReason(), "cut") {
		t.Errorf("truncated %v, reason %q; want true, saying the answer was cut at max_answer_bytes", resp.GetTruncated(), resp.GetTruncationReason())
	}
	if resp.GetCoverage().GetDegraded() {
		t.Errorf("coverage %v: a cut answer is not degraded, every shard answered", resp.GetCoverage())
	}
	// A top_k that fits is not cut.
	resp, err = c.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 5})
	if err != nil || resp.GetTruncated() || len(resp.GetHits()) != 5 {
		t.Fatalf("top_k 5: %d hits, truncated %v, %v; want 5, not truncated", len(resp.GetHits()), resp.GetTruncated(), err)
	}
}

// TestSearchStreamCutAndSplit: a SearchStream's messages carry at most 64 KiB of hits each, and
// all its hits stay under max_answer_bytes; the summary says the stream was cut.
func TestSearchStreamCutAndSplit(t *testing.T) {
	t.Parallel()
	h := [][]*shardv1.Hit{bulky("a", 60, 1, 10_000), bulky("b", 60, 2, 10_000), bulky("c", 60, 3, 10_000)}
	const limit = 500 << 10
	c := newClusterWith(t, fanout.Config{}, proxy.Config{MaxAnswerBytes: limit},
		shardtest.Behavior{Hits: h[0]}, shardtest.Behavior{Hits: h[1]}, shardtest.Behavior{Hits: h[2]})
	stream, err := c.client.SearchStream(t.Context(), &queryv1.SearchStreamRequest{Query: "q", TopK: 150})
	if err != nil {
		t.Fatal(err)
	}
	var (
		got     []*queryv1.Hit
		summary *queryv1.SearchSummary
		total   int
	)
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		size := proto.Size(msg)
		total += size
		if len(msg.GetHits()) > 1 && size > 64<<10 {
			t.Errorf("a message of %d hits and %d bytes, over 64 KiB", len(msg.GetHits()), size)
		}
		got = append(got, msg.GetHits()...)
		summary = msg.GetSummary()
	}
	if total > limit || len(got) < 20 {
		t.Errorf("stream of %d bytes with %d hits, want at most %d bytes and some hits", total, len(got), limit)
	}
	if want := reference(150, h...)[:len(got)]; !slices.Equal(ids(got), want) {
		t.Errorf("streamed hits are not the best ones in order:\n got %v\nwant %v", ids(got), want)
	}
	if !summary.GetTruncated() || !strings.Contains(summary.GetTruncationReason(), "max_answer_bytes") {
		t.Errorf("summary truncated %v, reason %q; want true naming max_answer_bytes", summary.GetTruncated(), summary.GetTruncationReason())
	}
}

// TestSearchRefusesTopKThatCannotFit: a top_k whose hits could never fit in the answer, even at
// their smallest, is refused up front with INVALID_ARGUMENT saying what to ask instead; a
// smaller one is served.
func TestSearchRefusesTopKThatCannotFit(t *testing.T) {
	t.Parallel()
	// About 1500 bytes of summary for two shards: room for a few dozen of the smallest hits.
	c := newClusterWith(t, fanout.Config{}, proxy.Config{MaxAnswerBytes: 2000, MaxTopK: 1000},
		shardtest.Behavior{Hits: shardtest.Hits("a", 10, 1)}, shardtest.Behavior{Hits: shardtest.Hits("b", 10, 2)})
	_, err := c.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 1000})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "cannot fit") ||
		!strings.Contains(st.Message(), "refused") || !strings.Contains(st.Message(), "ask for at most") {
		t.Fatalf("top_k 1000: got %v, want InvalidArgument saying it cannot fit and what to ask", err)
	}
	stream, err := c.client.SearchStream(t.Context(), &queryv1.SearchStreamRequest{Query: "q", TopK: 1000})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("SearchStream top_k 1000: got %v, want InvalidArgument", err)
	}
	for _, s := range c.shards {
		if s.Started() != 0 {
			t.Errorf("a refused query reached shard %s", s.Addr())
		}
	}
	resp, err := c.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 2})
	if err != nil || len(resp.GetHits()) == 0 {
		t.Fatalf("top_k 2: %v, %d hits; want an answer", err, len(resp.GetHits()))
	}
}

// TestSearchHidesReplicas: with replicas hidden, results and error details name a replica by
// its ordinal and carry no address.
func TestSearchHidesReplicas(t *testing.T) {
	t.Parallel()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	_ = dead.Close()
	live := shardtest.Start(t, shardtest.Behavior{Hits: shardtest.Hits("a", 5, 1)})
	fan, err := fanout.New([]fanout.ShardSpec{{Name: "s0", Replicas: []string{live.Addr()}}, {Name: "s1", Replicas: []string{deadAddr}}}, fanout.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fan.Close() })
	svc := proxy.New(fan, proxy.Config{HideReplicas: true})
	resp, err := svc.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 3})
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 3, PartialPolicy: queryv1.PartialPolicy_PARTIAL_POLICY_REQUIRE_FULL})
	st := status.Convert(err)
	results := resp.GetShards()
	for _, d := range st.Details() {
		if r, ok := d.(*queryv1.ShardResult); ok {
			results = append(results, r)
		}
	}
	if len(results) != 4 || results[1].GetStatus() != unavail || results[1].GetError() == "" {
		t.Fatalf("results %v, want 2 in the answer and 2 in the error details, s1 UNAVAILABLE with an error", results)
	}
	for _, r := range results {
		if r.GetReplica() != "replica 1" || strings.Contains(r.GetError(), "127.0.0.1") {
			t.Errorf("shard %s: replica %q, error %q; want \"replica 1\" and no address", r.GetShard(), r.GetReplica(), r.GetError())
		}
	}
	if strings.Contains(st.Message(), "127.0.0.1") {
		t.Errorf("error message %q shows an address", st.Message())
	}
}

// TestSearchBudgetDegrades: when the query's hit budget runs out, the shard that crossed it ends
// as RESOURCE_EXHAUSTED, saying so; the hits received are merged and the answer is degraded.
func TestSearchBudgetDegrades(t *testing.T) {
	t.Parallel()
	h := [][]*shardv1.Hit{bulky("a", 40, 1, 1000), bulky("b", 40, 2, 1000)}
	c := newCluster(t, fanout.Config{MaxQueryHitBytes: 60 << 10},
		shardtest.Behavior{Hits: h[0], Batch: 4}, shardtest.Behavior{Hits: h[1], Batch: 4})
	resp, err := c.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 80})
	if err != nil {
		t.Fatal(err)
	}
	var exhausted []*queryv1.ShardResult
	for _, r := range resp.GetShards() {
		if r.GetStatus() == queryv1.ShardStatus_SHARD_STATUS_RESOURCE_EXHAUSTED {
			exhausted = append(exhausted, r)
		}
	}
	if len(exhausted) == 0 || !resp.GetCoverage().GetDegraded() || len(resp.GetHits()) == 0 {
		t.Fatalf("statuses %v, coverage %v, %d hits; want a RESOURCE_EXHAUSTED shard, degraded, with hits",
			statuses(resp.GetShards()), resp.GetCoverage(), len(resp.GetHits()))
	}
	for _, r := range exhausted {
		if !strings.Contains(r.GetError(), "max_query_hit_bytes (61440)") {
			t.Errorf("shard %s: error %q does not name the budget", r.GetShard(), r.GetError())
		}
	}
	var n uint32
	for _, r := range resp.GetShards() {
		n += r.GetHits()
	}
	if got := uint32(len(resp.GetHits())); got != n {
		t.Errorf("%d hits merged, the shards delivered %d", got, n)
	}
	assertSorted(t, resp.GetHits())
}

// TestSearchRefusesOversizedRequest: a request larger than the largest valid one is refused by
// the transport with RESOURCE_EXHAUSTED, before it is read or reaches a shard.
func TestSearchRefusesOversizedRequest(t *testing.T) {
	t.Parallel()
	c := newClusterWith(t, fanout.Config{}, proxy.Config{}, shardtest.Behavior{})
	_, err := c.client.Search(t.Context(), &queryv1.SearchRequest{Query: strings.Repeat("q", 3<<20), TopK: 1})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a 3 MiB query: got %v, want ResourceExhausted", err)
	}
	if c.shards[0].Started() != 0 {
		t.Error("the oversized request reached the shard")
	}
}
