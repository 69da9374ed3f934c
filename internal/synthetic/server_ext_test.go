package synthetic_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/shardtest"
	"github.com/gatherproxy/gather/internal/synthetic"
)

// server is a synthetic shard on an in-memory gRPC connection.
type server struct {
	client shardv1.ShardServiceClient
	// ended receives the error of every Search handler as it returns.
	ended chan error
}

// start serves srv until the test ends.
func start(t testing.TB, srv *synthetic.Server) *server {
	t.Helper()
	s := &server{ended: make(chan error, 100)}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(grpc.StreamInterceptor(
		func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			err := handler(srv, ss)
			select {
			case s.ended <- err:
			default:
			}
			return err
		}))
	shardv1.RegisterShardServiceServer(gs, srv)
	var wg sync.WaitGroup
	wg.Go(func() { _ = gs.Serve(lis) })
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		gs.Stop()
		wg.Wait()
	})
	s.client = shardv1.NewShardServiceClient(conn)
	return s
}

func TestSearchKeepsContractAndBatches(t *testing.T) {
	t.Parallel()
	tests := []struct {
		seed  uint64
		query string
		topK  uint32
		per   int // hits per message; 0 for the default
	}{
		{0, "union", 1, 0},
		{1, "union war", 10, 0},
		{2, "x", 64, 0},
		{3, "tariff reform", 100, 0},
		{4, "peace", 1000, 0},
		{5, "peace", 130, 7},
		{6, "a b c", 1000, 500},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("seed=%d/%s/top_k=%d/per=%d", tt.seed, tt.query, tt.topK, tt.per)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := start(t, synthetic.New(tt.seed, synthetic.WithHitsPerMessage(tt.per)))
			msgs, err := shardtest.Collect(t.Context(), s.client, tt.query, tt.topK)
			if err != nil {
				t.Fatal(err)
			}
			hits := shardtest.HitsOf(msgs)
			if v := shardtest.ContractViolation(hits, int(tt.topK)); v != "" {
				t.Fatalf("contract broken: %s", v)
			}
			if got, want := len(hits), int(tt.topK); got != want {
				t.Errorf("got %d hits, want %d", got, want)
			}
			per := tt.per
			if per == 0 {
				per = synthetic.DefaultHitsPerMessage
			}
			if got, want := len(msgs), (int(tt.topK)+per-1)/per; got != want {
				t.Errorf("got %d messages, want %d", got, want)
			}
			for i, m := range msgs {
				if n := len(m.GetHits()); n > per || (i < len(msgs)-1 && n != per) {
					t.Errorf("message %d has %d hits; want %d per message", i, n, per)
				}
				if i > 0 && (m.GetTotalMatches() != 0 || m.GetDocuments() != 0) {
					t.Errorf("message %d carries counts %d/%d; want them on the first only", i, m.GetTotalMatches(), m.GetDocuments())
				}
			}
			if got := msgs[0].GetTotalMatches(); got < uint64(tt.topK) {
				t.Errorf("total_matches %d is below the %d hits sent", got, tt.topK)
			}
			if got, want := msgs[0].GetDocuments(), uint64(synthetic.DefaultDocuments); got != want {
				t.Errorf("documents = %d, want %d", got, want)
			}
			for _, h := range hits {
				if got, want := len(h.GetText()), synthetic.DefaultTextBytes; got != want {
					t.Fatalf("hit %s: text of %d bytes, want %d", h.GetDocId(), got, want)
				}
				if got := len(h.GetFields()); got != 2 {
					t.Fatalf("hit %s: %d fields, want 2", h.GetDocId(), got)
				}
			}
		})
	}
}

func TestSearchHasTies(t *testing.T) {
	t.Parallel()
	hits := synthetic.New(1).Hits("union", 1000)
	ties := 0
	for i := 1; i < len(hits); i++ {
		if hits[i].GetScore() == hits[i-1].GetScore() {
			ties++
		}
	}
	if ties == 0 {
		t.Error("no tied scores in 1000 hits: the doc_id tie-break is never exercised")
	}
}

func TestSmallerTopKIsPrefix(t *testing.T) {
	t.Parallel()
	s := start(t, synthetic.New(9))
	full, err := shardtest.Collect(t.Context(), s.client, "constitution", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []uint32{1, 2, 3, 10, 63, 64, 65, 100, 999} {
		msgs, err := shardtest.Collect(t.Context(), s.client, "constitution", k)
		if err != nil {
			t.Fatal(err)
		}
		assertSameHits(t, fmt.Sprintf("top_k %d", k), shardtest.HitsOf(msgs), shardtest.HitsOf(full)[:k])
	}
}

func assertSameHits(t *testing.T, what string, got, want []*shardv1.Hit) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d hits, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("%s: hit %d = %v, want %v", what, i, got[i], want[i])
		}
	}
}

func TestDeterministicAcrossCallsAndInstances(t *testing.T) {
	t.Parallel()
	a := start(t, synthetic.New(7))
	b := start(t, synthetic.New(7, synthetic.WithCacheHits(0)))
	for _, q := range []string{"war", "peace and war", "tariff"} {
		var answers [][]*shardv1.Hit
		for _, s := range []*server{a, a, b, b} {
			msgs, err := shardtest.Collect(t.Context(), s.client, q, 100)
			if err != nil {
				t.Fatal(err)
			}
			answers = append(answers, shardtest.HitsOf(msgs))
		}
		for i := 1; i < len(answers); i++ {
			assertSameHits(t, fmt.Sprintf("%q answer %d", q, i), answers[i], answers[0])
		}
	}
}

func docIDs(hits []*shardv1.Hit) string {
	ids := make([]string, len(hits))
	for i, h := range hits {
		ids[i] = h.GetDocId()
	}
	return strings.Join(ids, " ")
}

func TestSeedsAndQueriesDiffer(t *testing.T) {
	t.Parallel()
	s1, s2 := synthetic.New(1), synthetic.New(2)
	if a, b := docIDs(s1.Hits("union", 20)), docIDs(s2.Hits("union", 20)); a == b {
		t.Errorf("seeds 1 and 2 gave the same hits: %s", a)
	}
	if a, b := s1.Hits("union", 1)[0].GetScore(), s2.Hits("union", 1)[0].GetScore(); a == b {
		t.Errorf("seeds 1 and 2 gave the same top score %v", a)
	}
	seen := map[string]string{}
	for _, q := range []string{"union", "unions", "war", "peace", "union war", "Union"} {
		ids := docIDs(s1.Hits(q, 20))
		if other, ok := seen[ids]; ok {
			t.Errorf("queries %q and %q gave the same hits", other, q)
		}
		seen[ids] = q
	}
}

func TestTextBytes(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 37, 200, 1000} {
		hits := synthetic.New(3, synthetic.WithTextBytes(n)).Hits("q", 50)
		for _, h := range hits {
			if len(h.GetText()) != n {
				t.Fatalf("WithTextBytes(%d): hit %s has %d bytes of text", n, h.GetDocId(), len(h.GetText()))
			}
		}
	}
}

func TestSearchRejectsBadRequests(t *testing.T) {
	t.Parallel()
	s := start(t, synthetic.New(0, synthetic.WithMaxTopK(50)))
	tests := []struct {
		query string
		topK  uint32
		want  string
	}{
		{"", 10, "query is blank"},
		{"  \t", 10, "query is blank"},
		{"union", 0, "top_k is 0"},
		{"union", 51, "above this shard's maximum of 50"},
	}
	for _, tt := range tests {
		_, err := shardtest.Collect(t.Context(), s.client, tt.query, tt.topK)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Search(%q, %d) error = %v, want InvalidArgument with %q", tt.query, tt.topK, err, tt.want)
		}
	}
	if _, err := shardtest.Collect(t.Context(), s.client, "union", 50); err != nil {
		t.Errorf("Search at the maximum top_k: %v", err)
	}
}

// gate is a Latency that reports each call to Next and returns a delay that never ends in a test.
type gate chan struct{}

func (g gate) Next() time.Duration {
	g <- struct{}{}
	return synthetic.MaxLatency
}

func TestCancelDuringDelayEndsCall(t *testing.T) {
	t.Parallel()
	g := make(gate, 1)
	s := start(t, synthetic.New(0, synthetic.WithLatency(g)))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := shardtest.Collect(ctx, s.client, "union", 10)
		done <- err
	}()
	<-g // the server is in its delay
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Errorf("client got %v, want Canceled", err)
	}
	assertHandlerEnded(t, s, codes.Canceled)
}

func TestDeadlineDuringDelayEndsCall(t *testing.T) {
	t.Parallel()
	g := make(gate, 1)
	s := start(t, synthetic.New(0, synthetic.WithLatency(g)))
	// Long enough for the call to reach the server even on a loaded machine; the test waits it out.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := shardtest.Collect(ctx, s.client, "union", 10)
		done <- err
	}()
	select {
	case <-g:
	case err := <-done:
		t.Fatalf("call ended with %v before the server started its delay", err)
	}
	if err := <-done; status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("client got %v, want DeadlineExceeded", err)
	}
	// The server's deadline comes from the client's, but the client's RST_STREAM, sent when its own
	// timer fires, may reach the server first.
	assertHandlerEnded(t, s, codes.DeadlineExceeded, codes.Canceled)
}

// assertHandlerEnded waits for the server's Search handler to return, and checks its code is one
// of want. The bound is far above any scheduling delay: reaching it means the handler is stuck in
// its delay.
func assertHandlerEnded(t *testing.T, s *server, want ...codes.Code) {
	t.Helper()
	select {
	case err := <-s.ended:
		if !slices.Contains(want, status.Code(err)) {
			t.Errorf("handler returned %v, want one of %v", err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler still waiting 10s after the call ended")
	}
}

func TestConcurrentCallsShareAnswers(t *testing.T) {
	t.Parallel()
	srv := synthetic.New(11)
	s := start(t, srv)
	queries := []string{"union", "war"}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := range 10 {
				q := queries[(w+i)%len(queries)]
				msgs, err := shardtest.Collect(t.Context(), s.client, q, 200)
				if err != nil {
					errs <- err
					return
				}
				if docIDs(shardtest.HitsOf(msgs)) != docIDs(srv.Hits(q, 200)) {
					errs <- fmt.Errorf("worker %d call %d: answer for %q differs", w, i, q)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestSmallCacheStillAnswersRight(t *testing.T) {
	t.Parallel()
	cached := start(t, synthetic.New(5, synthetic.WithCacheHits(50)))
	uncached := synthetic.New(5, synthetic.WithCacheHits(0))
	for range 2 {
		for _, q := range []string{"a", "b", "c", "d"} {
			for _, k := range []uint32{30, 60} { // 60 never fits the cache
				msgs, err := shardtest.Collect(t.Context(), cached.client, q, k)
				if err != nil {
					t.Fatal(err)
				}
				assertSameHits(t, fmt.Sprintf("%q top_k %d", q, k), shardtest.HitsOf(msgs), uncached.Hits(q, int(k)))
			}
		}
	}
}

// TestSearchHonoursFirstBatch: with first_batch_hits set, the first message holds that many hits
// and each later one twice as many, up to the per-message limit; the hits are those of the
// unpaced answer.
func TestSearchHonoursFirstBatch(t *testing.T) {
	t.Parallel()
	s := start(t, synthetic.New(9))
	plain, err := shardtest.Collect(t.Context(), s.client, "union", 100)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.client.Search(t.Context(), &shardv1.SearchRequest{Query: "union", TopK: 100, FirstBatchHits: 3})
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
	var sizes []int
	for _, m := range msgs {
		sizes = append(sizes, len(m.GetHits()))
	}
	if want := []int{3, 6, 12, 24, 48, 7}; !slices.Equal(sizes, want) {
		t.Errorf("batch sizes %v, want %v", sizes, want)
	}
	if !slices.EqualFunc(shardtest.HitsOf(msgs), shardtest.HitsOf(plain), func(a, b *shardv1.Hit) bool { return proto.Equal(a, b) }) {
		t.Error("paced hits differ from the unpaced answer's")
	}
	if msgs[0].GetTotalMatches() != plain[0].GetTotalMatches() || msgs[0].GetDocuments() != plain[0].GetDocuments() {
		t.Error("the paced first message lacks the counts")
	}
}

// TestPullSendsEachBatchWhenAsked: over Pull the shard sends its first batch at once and each
// later one only when asked: a caller that asks once and then half-closes gets two messages
// and a clean end, where Search would have sent all six. Asked to the end, the batches and
// hits are Search's, and the stream ends after the last without another ask.
func TestPullSendsEachBatchWhenAsked(t *testing.T) {
	t.Parallel()
	s := start(t, synthetic.New(9))
	req := &shardv1.SearchRequest{Query: "union", TopK: 100, FirstBatchHits: 3}
	plain, err := shardtest.Collect(t.Context(), s.client, "union", 100)
	if err != nil {
		t.Fatal(err)
	}

	st, err := s.client.Pull(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&shardv1.PullRequest{Search: req}); err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for range 2 {
		m, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(m.GetHits()))
		if len(sizes) == 1 {
			if err := st.Send(&shardv1.PullRequest{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if m, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after one ask and a half-close: message %v, %v; want the end (EOF)", m, err)
	}
	if want := []int{3, 6}; !slices.Equal(sizes, want) {
		t.Errorf("batches %v, want %v", sizes, want)
	}
	if err := <-s.ended; err != nil {
		t.Errorf("the handler of the half-closed stream returned %v, want nil", err)
	}

	st, err = s.client.Pull(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&shardv1.PullRequest{Search: req}); err != nil {
		t.Fatal(err)
	}
	var msgs []*shardv1.SearchResponse
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
		if len(msgs) < 6 {
			if err := st.Send(&shardv1.PullRequest{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	sizes = sizes[:0]
	for _, m := range msgs {
		sizes = append(sizes, len(m.GetHits()))
	}
	if want := []int{3, 6, 12, 24, 48, 7}; !slices.Equal(sizes, want) {
		t.Errorf("batches asked to the end %v, want %v", sizes, want)
	}
	if !slices.EqualFunc(shardtest.HitsOf(msgs), shardtest.HitsOf(plain), func(a, b *shardv1.Hit) bool { return proto.Equal(a, b) }) {
		t.Error("pulled hits differ from Search's")
	}
}

// TestPullRefusesMalformedStreams: a Pull stream whose first message carries no query, or a
// later one a query, ends INVALID_ARGUMENT; one that ends before its first message too.
func TestPullRefusesMalformedStreams(t *testing.T) {
	t.Parallel()
	s := start(t, synthetic.New(9))
	req := &shardv1.SearchRequest{Query: "union", TopK: 10, FirstBatchHits: 3}
	for _, tc := range []struct {
		name string
		msgs []*shardv1.PullRequest
	}{
		{"no first message", nil},
		{"first without query", []*shardv1.PullRequest{{}}},
		{"second with query", []*shardv1.PullRequest{{Search: req}, {Search: req}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := s.client.Pull(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tc.msgs {
				if err := st.Send(m); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.CloseSend(); err != nil {
				t.Fatal(err)
			}
			var err2 error
			for err2 == nil {
				_, err2 = st.Recv()
			}
			if status.Code(err2) != codes.InvalidArgument {
				t.Errorf("stream ended with %v, want InvalidArgument", err2)
			}
		})
	}
}
