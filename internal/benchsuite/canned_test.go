package benchsuite

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
)

// The canned answer must be what the suite's gather would answer, in content and in size: the
// naive fan-out over real synthetic shards (which answers as gather does) is the reference.
func TestCannedResponseIsGathersAnswer(t *testing.T) {
	t.Parallel()
	shards := serveShards(t, DefaultCannedShards)
	n, err := NewNaive(shards)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = n.Close() }()
	for _, k := range []int{1, 10, 100, 1000} {
		want, err := n.Search(t.Context(), &queryv1.SearchRequest{Query: cannedQuery, TopK: uint32(k)})
		if err != nil {
			t.Fatal(err)
		}
		got := CannedResponse(k, DefaultCannedShards, 200)
		if gk, wk := hitKeys(got), hitKeys(want); len(gk) != k || !equalStrings(gk, wk) {
			t.Errorf("top_k %d: canned hits differ from the fan-out's", k)
		}
		if c := got.GetCoverage(); c.GetShardsTotal() != DefaultCannedShards || c.GetShardsSucceeded() != DefaultCannedShards || c.GetDegraded() {
			t.Errorf("top_k %d: coverage %v", k, c)
		}
		if len(got.GetShards()) != DefaultCannedShards {
			t.Errorf("top_k %d: %d shard results", k, len(got.GetShards()))
		}
		// Sizes differ only by the varints of latencies and took, and the replica ports.
		gs, ws := proto.Size(got), proto.Size(want)
		if d := gs - ws; d < -40 || d > 40 {
			t.Errorf("top_k %d: canned answer is %d bytes, the fan-out's %d", k, gs, ws)
		}
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCannedSearch(t *testing.T) {
	t.Parallel()
	c := NewCanned(3, 50)
	a, err := c.Search(t.Context(), &queryv1.SearchRequest{Query: "anything", TopK: 7})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Search(t.Context(), &queryv1.SearchRequest{Query: "else", TopK: 7})
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("the second call at the same top_k built a new answer")
	}
	if len(a.GetHits()) != 7 || len(a.GetShards()) != 3 || len(a.GetHits()[0].GetText()) != 50 {
		t.Errorf("answer has %d hits, %d shard results, %d bytes of text; want 7, 3, 50",
			len(a.GetHits()), len(a.GetShards()), len(a.GetHits()[0].GetText()))
	}
	for _, k := range []uint32{0, MaxCannedTopK + 1} {
		if _, err := c.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: k}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("top_k %d: %v, want InvalidArgument", k, err)
		}
	}
}
