package shard_test

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/shard"
	"github.com/gatherproxy/gather/internal/shardtest"
)

// startServer serves ix on an in-memory gRPC connection until the test ends.
func startServer(t *testing.T, ix *shard.Index, opts ...shard.Option) shardv1.ShardServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	shardv1.RegisterShardServiceServer(srv, shard.NewServer(ix, opts...))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.Serve(lis) // returns when srv stops
	}()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
		wg.Wait()
	})
	return shardv1.NewShardServiceClient(conn)
}

func TestSearchContractAndBatches(t *testing.T) {
	t.Parallel()
	ix := openIndex(t)
	docs := testDocs()
	const query = "apple river"
	wantTotal := len(matching(docs, "apple", "river"))

	// The full ranking, which every smaller top_k must be a prefix of.
	full := startServer(t, ix)
	msgs, err := shardtest.Collect(t.Context(), full, query, shard.DefaultMaxTopK)
	if err != nil {
		t.Fatal(err)
	}
	ranking := ids(checkContract(t, msgs, shard.DefaultMaxTopK))
	if len(ranking) != wantTotal {
		t.Fatalf("full ranking has %d hits, want %d", len(ranking), wantTotal)
	}

	for _, perMsg := range []int{1, 4, 7, 64} {
		c := startServer(t, ix, shard.WithHitsPerMessage(perMsg))
		for _, topK := range []int{1, 3, 4, 8, 13, wantTotal, wantTotal + 1, shard.DefaultMaxTopK} {
			msgs, err := shardtest.Collect(t.Context(), c, query, uint32(topK))
			if err != nil {
				t.Fatalf("per message %d, top_k %d: %v", perMsg, topK, err)
			}
			hits := checkContract(t, msgs, topK)
			wantHits := min(topK, wantTotal)
			if got := ids(hits); !slices.Equal(got, ranking[:wantHits]) {
				t.Errorf("per message %d, top_k %d: hits %v, want the first %d of %v", perMsg, topK, got, wantHits, ranking)
			}
			var sizes []int
			for _, m := range msgs {
				sizes = append(sizes, len(m.GetHits()))
			}
			var wantSizes []int
			for left := wantHits; left > 0; left -= perMsg {
				wantSizes = append(wantSizes, min(left, perMsg))
			}
			if !slices.Equal(sizes, wantSizes) {
				t.Errorf("per message %d, top_k %d: batch sizes %v, want %v", perMsg, topK, sizes, wantSizes)
			}
			if got := msgs[0].GetTotalMatches(); got != uint64(wantTotal) {
				t.Errorf("total_matches = %d, want %d", got, wantTotal)
			}
			if got := msgs[0].GetDocuments(); got != uint64(len(docs)) {
				t.Errorf("documents = %d, want %d", got, len(docs))
			}
		}
	}
}

// TestSearchHonoursFirstBatch: with first_batch_hits set, the first message holds that many
// hits and each later one twice as many, up to the per-message limit, and the hits are the
// unpaced ranking.
func TestSearchHonoursFirstBatch(t *testing.T) {
	t.Parallel()
	ix := openIndex(t)
	const query = "apple river"
	want, err := shardtest.Collect(t.Context(), startServer(t, ix), query, shard.DefaultMaxTopK)
	if err != nil {
		t.Fatal(err)
	}
	ranking := ids(shardtest.HitsOf(want))
	c := startServer(t, ix, shard.WithHitsPerMessage(4))
	st, err := c.Search(t.Context(), &shardv1.SearchRequest{Query: query, TopK: shard.DefaultMaxTopK, FirstBatchHits: 1})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*shardv1.SearchResponse
	for {
		m, err := st.Recv()
		if err != nil {
			break
		}
		msgs = append(msgs, m)
	}
	hits := checkContract(t, msgs, shard.DefaultMaxTopK)
	if got := ids(hits); !slices.Equal(got, ranking) {
		t.Errorf("hits %v, want %v", got, ranking)
	}
	var sizes, wantSizes []int
	for _, m := range msgs {
		sizes = append(sizes, len(m.GetHits()))
	}
	for left, next := len(ranking), 1; left > 0; left, next = left-next, min(2*next, 4) {
		wantSizes = append(wantSizes, min(left, next))
	}
	if !slices.Equal(sizes, wantSizes) {
		t.Errorf("batch sizes %v, want %v", sizes, wantSizes)
	}
	if msgs[0].GetTotalMatches() != want[0].GetTotalMatches() {
		t.Errorf("total_matches %d, want %d", msgs[0].GetTotalMatches(), want[0].GetTotalMatches())
	}
}

// TestSearchTies checks that equal scores are ordered by doc_id byte-wise.
func TestSearchTies(t *testing.T) {
	t.Parallel()
	c := startServer(t, openIndex(t), shard.WithHitsPerMessage(5))
	// Only the tie documents contain all three words; shorter documents with
	// one of them might still outscore them, so look at the run of equal
	// scores that the tie documents form.
	msgs, err := shardtest.Collect(t.Context(), c, "apple banana river", shard.DefaultMaxTopK)
	if err != nil {
		t.Fatal(err)
	}
	hits := checkContract(t, msgs, shard.DefaultMaxTopK)
	var tied []string
	var tieScore float64
	for _, h := range hits {
		if h.GetDocId() == "tie0#001" {
			tieScore = h.GetScore()
		}
	}
	for _, h := range hits {
		if h.GetScore() == tieScore {
			tied = append(tied, h.GetDocId())
		}
	}
	want := []string{"Tie#001", "tie-a#001", "tie0#001", "tie1#001", "tie10#001", "tie100#001", "tie11#001", "tie2#001", "tie3#001", "tie9#001", "tie99#001", "tie_b#001"}
	if !slices.Equal(tied, want) {
		t.Errorf("tied hits %v, want %v", tied, want)
	}
}

func TestSearchHitContent(t *testing.T) {
	t.Parallel()
	c := startServer(t, openIndex(t))
	msgs, err := shardtest.Collect(t.Context(), c, "banana", 1)
	if err != nil {
		t.Fatal(err)
	}
	hits := checkContract(t, msgs, 1)
	if len(hits) != 1 {
		t.Fatalf("got %d hits, want 1", len(hits))
	}
	h := hits[0]
	if !strings.Contains(h.GetText(), "banana") {
		t.Errorf("hit text %q does not contain the query word", h.GetText())
	}
	id, _, _ := strings.Cut(h.GetDocId(), "#")
	f := h.GetFields()
	if f["source_id"] != id || f["passage"] != "1" || f["year"] == "" {
		t.Errorf("hit %s fields = %v, want source_id %q, passage 1 and a year", h.GetDocId(), f, id)
	}
	if h.GetScore() <= 0 {
		t.Errorf("hit score %v, want > 0", h.GetScore())
	}
}

func TestSearchNoHits(t *testing.T) {
	t.Parallel()
	c := startServer(t, openIndex(t))
	for _, query := range []string{"zebra", "the and of", "!!! ???"} {
		msgs, err := shardtest.Collect(t.Context(), c, query, 10)
		if err != nil {
			t.Fatalf("query %q: %v", query, err)
		}
		if len(msgs) != 1 || len(msgs[0].GetHits()) != 0 {
			t.Fatalf("query %q: %d messages (%v), want one without hits", query, len(msgs), msgs)
		}
		if msgs[0].GetTotalMatches() != 0 || msgs[0].GetDocuments() != uint64(len(testDocs())) {
			t.Errorf("query %q: counts (%d, %d), want (0, %d)", query, msgs[0].GetTotalMatches(), msgs[0].GetDocuments(), len(testDocs()))
		}
	}
}

func TestSearchValidation(t *testing.T) {
	t.Parallel()
	c := startServer(t, openIndex(t), shard.WithMaxTopK(5))
	tests := []struct {
		name    string
		query   string
		topK    uint32
		wantMsg string // substring of the status message; "" for success
	}{
		{name: "empty query", query: "", topK: 3, wantMsg: "query is blank: send at least one word"},
		{name: "blank query", query: " \t\n", topK: 3, wantMsg: "query is blank"},
		{name: "top_k 0", query: "apple", topK: 0, wantMsg: "top_k is 0: ask for at least 1 hit"},
		{name: "top_k above max", query: "apple", topK: 6, wantMsg: "top_k 6 is above this shard's maximum of 5: ask for at most 5 hits"},
		{name: "top_k huge", query: "apple", topK: 1<<32 - 1, wantMsg: "maximum of 5"},
		{name: "top_k at max", query: "apple", topK: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msgs, err := shardtest.Collect(t.Context(), c, tt.query, tt.topK)
			if tt.wantMsg == "" {
				if err != nil {
					t.Fatal(err)
				}
				checkContract(t, msgs, int(tt.topK))
				return
			}
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.wantMsg) {
				t.Errorf("error = %v, want InvalidArgument containing %q", err, tt.wantMsg)
			}
			if len(msgs) != 0 {
				t.Errorf("got %d messages before the error, want none", len(msgs))
			}
		})
	}
}

func TestSearchEndedContext(t *testing.T) {
	t.Parallel()
	c := startServer(t, openIndex(t))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := shardtest.Collect(ctx, c, "apple", 3); status.Code(err) != codes.Canceled {
		t.Errorf("canceled call: error = %v, want Canceled", err)
	}
	ctx, cancel = context.WithTimeout(t.Context(), 0)
	defer cancel()
	if _, err := shardtest.Collect(ctx, c, "apple", 3); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("expired call: error = %v, want DeadlineExceeded", err)
	}
}

// TestPullServesSearchOnDemand: the reference shard serves Pull: asked batch by batch, it sends
// Search's batches and hits, and a stream half-closed after its first batch ends OK with no
// other.
func TestPullServesSearchOnDemand(t *testing.T) {
	t.Parallel()
	ix := openIndex(t)
	const query = "apple river"
	c := startServer(t, ix, shard.WithHitsPerMessage(4))
	req := &shardv1.SearchRequest{Query: query, TopK: shard.DefaultMaxTopK, FirstBatchHits: 1}
	st, err := c.Search(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	var want []*shardv1.SearchResponse
	for {
		m, err := st.Recv()
		if err != nil {
			break
		}
		want = append(want, m)
	}

	pull := func(asks int) ([]*shardv1.SearchResponse, error) {
		ps, err := c.Pull(t.Context())
		if err != nil {
			return nil, err
		}
		if err := ps.Send(&shardv1.PullRequest{Search: req}); err != nil {
			return nil, err
		}
		var got []*shardv1.SearchResponse
		for {
			m, err := ps.Recv()
			if errors.Is(err, io.EOF) {
				return got, nil
			}
			if err != nil {
				return got, err
			}
			got = append(got, m)
			if len(got) > asks {
				if err := ps.CloseSend(); err != nil {
					return got, err
				}
			} else if err := ps.Send(&shardv1.PullRequest{}); err != nil && !errors.Is(err, io.EOF) {
				return got, err // io.EOF: the stream is over, which Recv says
			}
		}
	}
	got, err := pull(len(want))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d messages pulled, want Search's %d", len(got), len(want))
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("message %d: %v, want %v", i, got[i], want[i])
		}
	}
	if got, err := pull(0); err != nil || len(got) != 1 {
		t.Errorf("half-closed after the first batch: %d messages, %v; want 1 and a clean end", len(got), err)
	}
}
