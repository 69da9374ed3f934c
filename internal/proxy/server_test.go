package proxy_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/proxy"
	"github.com/gatherproxy/gather/internal/shardtest"
	"github.com/gatherproxy/gather/internal/wirecodec"
	"github.com/gatherproxy/gather/internal/wirecodec/wiretest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cluster is a proxy on loopback in front of fake shards named s0, s1, ...
type cluster struct {
	fan    *fanout.Client
	shards []*shardtest.Shard
	conn   *grpc.ClientConn
	client queryv1.QueryServiceClient
}

func newCluster(t *testing.T, cfg fanout.Config, behaviors ...shardtest.Behavior) *cluster {
	t.Helper()
	return newClusterWith(t, cfg, proxy.Config{MaxTopK: 500}, behaviors...)
}

// newClusterWith is newCluster with the service's configuration, served with its ServerOptions.
func newClusterWith(t *testing.T, cfg fanout.Config, pcfg proxy.Config, behaviors ...shardtest.Behavior) *cluster {
	t.Helper()
	return newClusterOpts(t, cfg, pcfg, nil, behaviors...)
}

// newClusterOpts is newClusterWith with more server options (interceptors).
func newClusterOpts(t *testing.T, cfg fanout.Config, pcfg proxy.Config, opts []grpc.ServerOption, behaviors ...shardtest.Behavior) *cluster {
	t.Helper()
	c := &cluster{}
	var topo []fanout.ShardSpec
	for i, b := range behaviors {
		s := shardtest.Start(t, b)
		c.shards = append(c.shards, s)
		topo = append(topo, fanout.ShardSpec{Name: fmt.Sprintf("s%d", i), Replicas: []string{s.Addr()}})
	}
	fan, err := fanout.New(topo, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// With gather's server codec, as cmd/gather serves it, so that invalid UTF-8 reaches parse.
	opts = append(append(opts, pcfg.ServerOptions()...), grpc.ForceServerCodecV2(wirecodec.New((&queryv1.SearchRequest{}).ProtoReflect().Type(),
		(&queryv1.SearchStreamRequest{}).ProtoReflect().Type())))
	srv := grpc.NewServer(opts...)
	proxy.New(fan, pcfg).Register(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
		<-done
		_ = fan.Close()
	})
	c.fan, c.conn, c.client = fan, conn, queryv1.NewQueryServiceClient(conn)
	return c
}

// reference merges by sorting everything the shards would send (cut at topK each) and taking
// the first topK.
func reference(topK int, perShard ...[]*shardv1.Hit) []string {
	type hit struct {
		*shardv1.Hit
		shard int
	}
	var all []hit
	for i, hits := range perShard {
		for j, h := range hits {
			if j == topK {
				break
			}
			all = append(all, hit{h, i})
		}
	}
	// gather's order: score descending, then doc_id, then shard ascending.
	slices.SortFunc(all, func(a, b hit) int {
		if c := cmp.Compare(b.Score, a.Score); c != 0 {
			return c
		}
		if c := strings.Compare(a.DocId, b.DocId); c != 0 {
			return c
		}
		return cmp.Compare(a.shard, b.shard)
	})
	var out []string
	for i, h := range all {
		if i == topK {
			break
		}
		out = append(out, fmt.Sprintf("s%d/%s", h.shard, h.DocId))
	}
	return out
}

func ids(hits []*queryv1.Hit) []string {
	out := make([]string, len(hits))
	for i, h := range hits {
		out[i] = h.Shard + "/" + h.DocId
	}
	return out
}

func statuses(rs []*queryv1.ShardResult) []queryv1.ShardStatus {
	out := make([]queryv1.ShardStatus, len(rs))
	for i, r := range rs {
		out[i] = r.GetStatus()
	}
	return out
}

const (
	ok       = queryv1.ShardStatus_SHARD_STATUS_OK
	deadline = queryv1.ShardStatus_SHARD_STATUS_DEADLINE_EXCEEDED
	unavail  = queryv1.ShardStatus_SHARD_STATUS_UNAVAILABLE
	violated = queryv1.ShardStatus_SHARD_STATUS_PROTOCOL_VIOLATION
)

func hitsFor(n int) [][]*shardv1.Hit {
	out := make([][]*shardv1.Hit, n)
	for i := range out {
		out[i] = shardtest.Hits(fmt.Sprintf("d%d", i), 40, uint64(i))
	}
	return out
}

func TestSearchAllShardsAnswer(t *testing.T) {
	t.Parallel()
	h := hitsFor(4)
	c := newCluster(t, fanout.Config{},
		shardtest.Behavior{Hits: h[0], Batch: 3}, shardtest.Behavior{Hits: h[1], Batch: 1},
		shardtest.Behavior{Hits: h[2]}, shardtest.Behavior{Hits: h[3], Batch: 7})
	for _, k := range []int{1, 10, 40, 100} {
		resp, err := c.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: uint32(k)})
		if err != nil {
			t.Fatalf("top_k %d: %v", k, err)
		}
		if got, want := ids(resp.GetHits()), reference(k, h...); !slices.Equal(got, want) {
			t.Errorf("top_k %d: hits\n got %v\nwant %v", k, got, want)
		}
		cov := resp.GetCoverage()
		if cov.GetShardsTotal() != 4 || cov.GetShardsSucceeded() != 4 || cov.GetDegraded() {
			t.Errorf("top_k %d: coverage %v, want 4 of 4", k, cov)
		}
		if got, want := statuses(resp.GetShards()), []queryv1.ShardStatus{ok, ok, ok, ok}; !slices.Equal(got, want) {
			t.Errorf("top_k %d: statuses %v, want %v", k, got, want)
		}
		if got := resp.GetTotalMatches(); got != 160 {
			t.Errorf("top_k %d: total_matches %d, want 160", k, got)
		}
	}
}

// TestSearchLargeTopK merges more hits than fit the answer's first slab of hits (server.go), with
// and without enough hits to fill top_k, answered whole and streamed.
func TestSearchLargeTopK(t *testing.T) {
	t.Parallel()
	h := make([][]*shardv1.Hit, 3)
	for i := range h {
		h[i] = shardtest.Hits(fmt.Sprintf("d%d", i), 150, uint64(i))
	}
	c := newCluster(t, fanout.Config{},
		shardtest.Behavior{Hits: h[0], Batch: 64}, shardtest.Behavior{Hits: h[1], Batch: 7},
		shardtest.Behavior{Hits: h[2], Batch: 150})
	for _, k := range []int{128, 129, 300, 450, 500} {
		want := reference(k, h...)
		resp, err := c.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: uint32(k)})
		if err != nil {
			t.Fatalf("top_k %d: %v", k, err)
		}
		if got := ids(resp.GetHits()); !slices.Equal(got, want) {
			t.Errorf("top_k %d: %d hits\n got %v\nwant %v", k, len(got), got, want)
		}
		stream, err := c.client.SearchStream(t.Context(), &queryv1.SearchStreamRequest{Query: "q", TopK: uint32(k)})
		if err != nil {
			t.Fatalf("top_k %d: %v", k, err)
		}
		var streamed []*queryv1.Hit
		for {
			msg, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("top_k %d: stream: %v", k, err)
			}
			streamed = append(streamed, msg.GetHits()...)
		}
		if got := ids(streamed); !slices.Equal(got, want) {
			t.Errorf("top_k %d: streamed %d hits\n got %v\nwant %v", k, len(got), got, want)
		}
	}
}

func TestSearchStreamMatchesSearch(t *testing.T) {
	t.Parallel()
	h := hitsFor(3)
	c := newCluster(t, fanout.Config{},
		shardtest.Behavior{Hits: h[0], Batch: 2, BatchDelay: time.Millisecond},
		shardtest.Behavior{Hits: h[1], Batch: 5}, shardtest.Behavior{Hits: h[2], Batch: 1})
	const k = 25
	stream, err := c.client.SearchStream(t.Context(), &queryv1.SearchStreamRequest{Query: "q", TopK: k})
	if err != nil {
		t.Fatal(err)
	}
	var got []*queryv1.Hit
	var summary *queryv1.SearchSummary
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if summary != nil {
			t.Fatal("message after the summary")
		}
		got = append(got, msg.GetHits()...)
		summary = msg.GetSummary()
	}
	if want := reference(k, h...); !slices.Equal(ids(got), want) {
		t.Errorf("streamed hits\n got %v\nwant %v", ids(got), want)
	}
	if summary.GetCoverage().GetShardsSucceeded() != 3 {
		t.Errorf("summary coverage %v, want 3 of 3", summary.GetCoverage())
	}
}

func TestSearchOneShardErrors(t *testing.T) {
	t.Parallel()
	h := hitsFor(4)
	c := newCluster(t, fanout.Config{},
		shardtest.Behavior{Hits: h[0]}, shardtest.Behavior{Err: shardtest.Unavailable},
		shardtest.Behavior{Hits: h[2]}, shardtest.Behavior{Hits: h[3]})
	resp, err := c.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 10})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(resp.GetHits()), reference(10, h[0], nil, h[2], h[3]); !slices.Equal(got, want) {
		t.Errorf("hits\n got %v\nwant %v", got, want)
	}
	cov := resp.GetCoverage()
	if cov.GetShardsSucceeded() != 3 || !cov.GetDegraded() {
		t.Errorf("coverage %v, want 3 of 4, degraded", cov)
	}
	if got, want := statuses(resp.GetShards()), []queryv1.ShardStatus{ok, unavail, ok, ok}; !slices.Equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	if resp.GetShards()[1].GetError() == "" {
		t.Error("the failed shard's result has no error text")
	}
}

// TestSearchHangingShardCutBeforeCallerDeadline: one shard never answers and the proxy's own
// shard timeout is far away; the caller's deadline decides, and the answer (3 of 4) must come
// back before it rather than as DEADLINE_EXCEEDED.
func TestSearchHangingShardCutBeforeCallerDeadline(t *testing.T) {
	t.Parallel()
	h := hitsFor(4)
	c := newCluster(t, fanout.Config{ShardTimeout: time.Minute, IdleTimeout: time.Minute, MergeReserve: 500 * time.Millisecond},
		shardtest.Behavior{Hits: h[0]}, shardtest.Behavior{Hits: h[1]},
		shardtest.Behavior{Hits: h[2], Hang: true, HangAfter: 0}, shardtest.Behavior{Hits: h[3]})
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	resp, err := c.client.Search(ctx, &queryv1.SearchRequest{Query: "q", TopK: 10})
	if err != nil {
		t.Fatalf("want a degraded answer before the caller's deadline, got %v", err)
	}
	if got, want := ids(resp.GetHits()), reference(10, h[0], h[1], nil, h[3]); !slices.Equal(got, want) {
		t.Errorf("hits\n got %v\nwant %v", got, want)
	}
	if got, want := statuses(resp.GetShards()), []queryv1.ShardStatus{ok, ok, deadline, ok}; !slices.Equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	if cov := resp.GetCoverage(); cov.GetShardsSucceeded() != 3 || !cov.GetDegraded() {
		t.Errorf("coverage %v, want 3 of 4", cov)
	}
	c.shards[2].WaitIdle(t, 5*time.Second)
	if got := c.shards[2].Cancelled(); got != 1 {
		t.Errorf("hanging shard saw %d cancelled calls, want 1", got)
	}
}

func TestSearchShardTimeoutAndIdleTimeout(t *testing.T) {
	t.Parallel()
	h := hitsFor(3)
	// The idle clock of a shard runs only while the proxy reads it: from the moment the merge
	// asks the silent shard for its third hit, within milliseconds (its two hits rank among the
	// first), or at the latest a quarter of the way to the deadline, when every stream is read.
	c := newCluster(t, fanout.Config{ShardTimeout: 600 * time.Millisecond, IdleTimeout: 150 * time.Millisecond},
		shardtest.Behavior{Hits: h[0]},
		// sends one batch of 2, then goes silent: cut by the idle timeout, its 2 hits kept
		shardtest.Behavior{Hits: h[1], Batch: 2, Hang: true, HangAfter: 1},
		// keeps talking, slowly: cut by the shard timeout
		shardtest.Behavior{Hits: h[2], Batch: 1, BatchDelay: 100 * time.Millisecond})
	resp, err := c.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 30})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := statuses(resp.GetShards()), []queryv1.ShardStatus{ok, deadline, deadline}; !slices.Equal(got, want) {
		t.Fatalf("statuses %v, want %v (%v)", got, want, resp.GetShards())
	}
	if got := resp.GetShards()[1].GetHits(); got != 2 {
		t.Errorf("idle shard delivered %d hits, want 2", got)
	}
	if e := resp.GetShards()[1].GetError(); !contains(e, "idle") {
		t.Errorf("idle shard error %q does not say idle", e)
	}
	// Every received hit is merged, in order.
	var n uint32
	for _, r := range resp.GetShards() {
		n += r.GetHits()
	}
	if got := uint32(len(resp.GetHits())); got != min(n, 30) {
		t.Errorf("%d hits merged, want %d", got, min(n, 30))
	}
	assertSorted(t, resp.GetHits())
}

func TestSearchShardBreaksOrdering(t *testing.T) {
	t.Parallel()
	h := hitsFor(2)
	bad := slices.Clone(shardtest.Hits("bad", 20, 5))
	bad[5], bad[12] = bad[12], bad[5] // a low score early, then a higher one
	tooMany := shardtest.Hits("many", 20, 3)
	for i, h := range tooMany { // above every other hit: see below
		tooMany[i] = &shardv1.Hit{DocId: h.GetDocId(), Score: h.GetScore() + 100}
	}
	nan := shardtest.Hits("nan", 5, 4)
	nan[2] = &shardv1.Hit{DocId: "nan-x", Score: math.NaN()}
	// The honest shards answer late: the merge cannot complete top_k, and so stop the other
	// calls early, before the breaking shards have sent everything (the too-many shard's excess
	// comes in its fourth message, which a stopped call would never read). Late means after the
	// drain point, a quarter of the way to the deadline: until then the fan-out decodes a
	// shard's later messages only when the merge needs them, and a violation in hits the answer
	// never needs goes unseen, as it does in a stopped call. So it does in a stream cut once the
	// hits given to the merge outrank its last (fanout's shardCall.drained): the too-many shard's
	// hits rank above the others', so that no other hit outranks them, and the other two
	// breaking shards break in their first message, before any could be cut.
	const timeout = 2 * time.Second
	late := timeout/2 + 300*time.Millisecond
	c := newCluster(t, fanout.Config{ShardTimeout: timeout},
		shardtest.Behavior{Hits: h[0], Delay: late}, shardtest.Behavior{Hits: bad},
		// in batches: a single message of more than top_k hits is refused whole, before decoding
		shardtest.Behavior{Hits: tooMany, IgnoreTopK: true, Batch: 5}, shardtest.Behavior{Hits: nan},
		shardtest.Behavior{Hits: h[1], Delay: late})
	resp, err := c.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 15})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := statuses(resp.GetShards()), []queryv1.ShardStatus{ok, violated, violated, violated, ok}; !slices.Equal(got, want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
	if got := resp.GetShards()[1].GetHits(); got != 6 {
		t.Errorf("out-of-order shard: %d hits kept, want the 6 before the violation", got)
	}
	if got := resp.GetShards()[2].GetHits(); got != 15 {
		t.Errorf("too-many shard: %d hits kept, want 15", got)
	}
	assertSorted(t, resp.GetHits())
	for _, hit := range resp.GetHits() {
		if hit.GetDocId() == "nan-x" || hit.GetDocId() == bad[6].GetDocId() {
			t.Errorf("hit %s after a violation was merged", hit.GetDocId())
		}
	}
}

// TestSearchCallerCancels: the caller gives up while every shard is still working; every shard
// call must end as cancelled.
func TestSearchCallerCancels(t *testing.T) {
	t.Parallel()
	hang := shardtest.Behavior{Hang: true}
	c := newCluster(t, fanout.Config{ShardTimeout: time.Minute, IdleTimeout: time.Minute}, hang, hang, hang, hang)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := c.client.Search(ctx, &queryv1.SearchRequest{Query: "q", TopK: 10})
		errc <- err
	}()
	for _, s := range c.shards {
		waitFor(t, func() bool { return s.Started() == 1 })
	}
	cancel()
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Fatalf("got %v, want Canceled", err)
	}
	for i, s := range c.shards {
		s.WaitIdle(t, 5*time.Second)
		if s.Cancelled() != 1 {
			t.Errorf("shard %d: %d calls cancelled, want 1", i, s.Cancelled())
		}
	}
}

// TestSearchStopsEarly: once top_k is final the remaining shard streams are cancelled, not read
// to the end.
func TestSearchStopsEarly(t *testing.T) {
	t.Parallel()
	high := shardtest.Hits("high", 10, 1)
	low := shardtest.Hits("low", 10, 2)
	for _, h := range low {
		h.Score -= 1000 // never in the top 10
	}
	c := newCluster(t, fanout.Config{ShardTimeout: time.Minute, IdleTimeout: time.Minute},
		// all its hits are sent, then it keeps the stream open
		shardtest.Behavior{Hits: high, Batch: 2, Hang: true, HangAfter: 5},
		// still dribbling when the top 10 is complete
		shardtest.Behavior{Hits: low, Batch: 1, BatchDelay: 50 * time.Millisecond})
	resp, err := c.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 10})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(resp.GetHits()), reference(10, high, low); !slices.Equal(got, want) {
		t.Fatalf("hits\n got %v\nwant %v", got, want)
	}
	if resp.GetCoverage().GetDegraded() {
		t.Errorf("coverage %v, want not degraded", resp.GetCoverage())
	}
	for i, r := range resp.GetShards() {
		if r.GetStatus() != ok || !r.GetStoppedEarly() {
			t.Errorf("shard %d: %v stopped_early=%v, want OK and stopped early", i, r.GetStatus(), r.GetStoppedEarly())
		}
	}
	for _, s := range c.shards {
		s.WaitIdle(t, 5*time.Second)
		if s.Cancelled() != 1 {
			t.Errorf("shard %s was not cancelled once the top 10 was final", s.Addr())
		}
	}
}

func TestSearchPartialPolicy(t *testing.T) {
	t.Parallel()
	h := hitsFor(3)
	c := newCluster(t, fanout.Config{},
		shardtest.Behavior{Hits: h[0]}, shardtest.Behavior{Err: shardtest.Unavailable}, shardtest.Behavior{Hits: h[2]})
	_, err := c.client.Search(t.Context(), &queryv1.SearchRequest{
		Query: "q", TopK: 10, PartialPolicy: queryv1.PartialPolicy_PARTIAL_POLICY_REQUIRE_FULL,
	})
	st := status.Convert(err)
	if st.Code() != codes.Unavailable {
		t.Fatalf("REQUIRE_FULL with a missing shard: got %v, want Unavailable", err)
	}
	var details []queryv1.ShardStatus
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *queryv1.ShardResult:
			details = append(details, d.GetStatus())
		case *errdetails.ErrorInfo:
			info = d
		}
	}
	// Once s1 has failed the answer is lost, and the proxy cancels the shard calls still running:
	// a healthy shard is OK or, if it had not finished by then, CANCELED (and missing too).
	missing := strings.Split(info.GetMetadata()["missing_shards"], ",")
	if info.GetReason() != "SHARDS_UNAVAILABLE" || !slices.Contains(missing, "s1") {
		t.Errorf("ErrorInfo %v, want SHARDS_UNAVAILABLE naming s1", info)
	}
	healthy := func(s queryv1.ShardStatus) bool { return s == ok || s == queryv1.ShardStatus_SHARD_STATUS_CANCELED }
	if len(details) != 3 || !healthy(details[0]) || details[1] != unavail || !healthy(details[2]) {
		t.Errorf("error details %v, want [OK|CANCELED UNAVAILABLE OK|CANCELED]", details)
	}
	if !contains(st.Message(), "s1") {
		t.Errorf("message %q does not name the missing shard", st.Message())
	}
	stream, err := c.client.SearchStream(t.Context(), &queryv1.SearchStreamRequest{
		Query: "q", TopK: 10, PartialPolicy: queryv1.PartialPolicy_PARTIAL_POLICY_REQUIRE_FULL,
	})
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("SearchStream REQUIRE_FULL: got %v, want Unavailable", err)
	}
}

func TestSearchNoShardAnswers(t *testing.T) {
	t.Parallel()
	fail := shardtest.Behavior{Err: status.Error(codes.Internal, "disk on fire")}
	c := newCluster(t, fanout.Config{}, fail, fail)
	_, err := c.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 10})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want Unavailable", err)
	}
	if msg := status.Convert(err).Message(); !contains(msg, "2 of 2") || !contains(msg, "disk on fire") {
		t.Errorf("message %q should count the shards and carry their errors", msg)
	}
}

func TestSearchInvalidArgument(t *testing.T) {
	t.Parallel()
	c := newCluster(t, fanout.Config{}, shardtest.Behavior{})
	// Over max_query_bytes (1024) but not over the largest valid request: refused by validation,
	// not by the transport (TestSearchRefusesOversizedRequest).
	long := make([]byte, 1030)
	for i := range long {
		long[i] = 'a'
	}
	for _, tc := range []struct {
		name string
		req  *queryv1.SearchRequest
		want string
	}{
		{"empty query", &queryv1.SearchRequest{TopK: 10}, "query is empty"},
		{"blank query", &queryv1.SearchRequest{Query: " \t", TopK: 10}, "query is empty"},
		{"top_k 0", &queryv1.SearchRequest{Query: "q"}, "top_k is 0"},
		{"top_k too big", &queryv1.SearchRequest{Query: "q", TopK: 501}, "over the limit of 500"},
		{"query too long", &queryv1.SearchRequest{Query: string(long), TopK: 1}, "1030 bytes"},
		{"negative timeout", &queryv1.SearchRequest{Query: "q", TopK: 1, ShardTimeout: durationpb.New(-time.Second)}, "negative"},
		{"bad policy", &queryv1.SearchRequest{Query: "q", TopK: 1, PartialPolicy: 9}, "partial_policy"},
	} {
		_, err := c.client.Search(t.Context(), tc.req)
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !contains(st.Message(), tc.want) {
			t.Errorf("%s: got %v, want InvalidArgument mentioning %q", tc.name, err, tc.want)
		}
		var field string
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) == 1 {
				field = br.GetFieldViolations()[0].GetField()
			}
		}
		wantField := map[string]string{"empty query": "query", "blank query": "query", "top_k 0": "top_k",
			"top_k too big": "top_k", "query too long": "query", "negative timeout": "shard_timeout", "bad policy": "partial_policy"}[tc.name]
		if field != wantField {
			t.Errorf("%s: BadRequest field %q, want %q", tc.name, field, wantField)
		}
	}
	if got := c.shards[0].Started(); got != 0 {
		t.Errorf("invalid requests reached the shard %d times", got)
	}
}

// TestInvalidUTF8 sends a query that is not UTF-8, which no protobuf library encodes but any
// client can send: both methods answer INVALID_ARGUMENT naming the query field, not INTERNAL.
func TestInvalidUTF8(t *testing.T) {
	t.Parallel()
	c := newCluster(t, fanout.Config{}, shardtest.Behavior{Hits: hitsFor(1)[0]})
	req := wiretest.SearchRequest("union \xc3\x28 war", 5)
	_, unaryErr := wiretest.Unary(t.Context(), c.conn, "/gather.query.v1.QueryService/Search", req)
	msgs, streamErr := wiretest.ServerStream(t.Context(), c.conn, "/gather.query.v1.QueryService/SearchStream", req)
	for method, err := range map[string]error{"Search": unaryErr, "SearchStream": streamErr} {
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "query is not valid UTF-8 (bad byte at offset 6): send the text encoded as UTF-8") {
			t.Errorf("%s: got %v, want INVALID_ARGUMENT saying where the query is not UTF-8", method, err)
		}
		var field string
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) == 1 {
				field = br.GetFieldViolations()[0].GetField()
			}
		}
		if field != "query" {
			t.Errorf("%s: BadRequest names %q, want query", method, field)
		}
	}
	if len(msgs) != 0 {
		t.Errorf("SearchStream sent %d messages", len(msgs))
	}
	if got := c.shards[0].Started(); got != 0 {
		t.Errorf("the invalid query reached the shard %d times", got)
	}
	// The same connection still serves.
	if resp, err := c.client.Search(t.Context(), &queryv1.SearchRequest{Query: "union war", TopK: 1}); err != nil || len(resp.GetHits()) != 1 {
		t.Errorf("a valid query after: %v, %v", resp, err)
	}
}

func TestSearchRequestShardTimeoutCaps(t *testing.T) {
	t.Parallel()
	h := hitsFor(2)
	c := newCluster(t, fanout.Config{ShardTimeout: time.Minute, IdleTimeout: time.Minute},
		shardtest.Behavior{Hits: h[0]}, shardtest.Behavior{Hang: true})
	resp, err := c.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 5, ShardTimeout: durationpb.New(100 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := statuses(resp.GetShards()), []queryv1.ShardStatus{ok, deadline}; !slices.Equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
}

func assertSorted(t *testing.T, hits []*queryv1.Hit) {
	t.Helper()
	for i := 1; i < len(hits); i++ {
		a, b := hits[i-1], hits[i]
		if a.GetScore() < b.GetScore() || (a.GetScore() == b.GetScore() && a.GetDocId() > b.GetDocId()) {
			t.Fatalf("hits %d and %d out of order: %v then %v", i-1, i, a, b)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestSearchSlowFirstFrameIsNotIdle: a shard that searches longer than the idle timeout before
// its first frame is within its rights; only the shard timeout bounds the search.
func TestSearchSlowFirstFrameIsNotIdle(t *testing.T) {
	t.Parallel()
	h := hitsFor(2)
	c := newCluster(t, fanout.Config{ShardTimeout: 10 * time.Second, IdleTimeout: 50 * time.Millisecond},
		shardtest.Behavior{Hits: h[0]}, shardtest.Behavior{Hits: h[1], Delay: 300 * time.Millisecond})
	resp, err := c.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 5})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := statuses(resp.GetShards()), []queryv1.ShardStatus{ok, ok}; !slices.Equal(got, want) {
		t.Errorf("statuses %v, want %v (%v)", got, want, resp.GetShards())
	}
}
