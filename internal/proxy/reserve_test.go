package proxy_test

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/admission"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/metrictest"
	"github.com/gatherproxy/gather/internal/proxy"
	"github.com/gatherproxy/gather/internal/shardtest"
)

// slowEnd is a tracer whose spans take d to end: every shard call then takes d after its
// deadline to be joined, as on a proxy whose CPU is contended once its shards are cut.
type slowEnd struct {
	noop.Tracer
	d time.Duration
}

func (t slowEnd) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	ctx, s := t.Tracer.Start(ctx, name, opts...)
	return ctx, slowSpan{Span: s, d: t.d}
}

type slowSpan struct {
	trace.Span
	d time.Duration
}

func (s slowSpan) End(...trace.SpanEndOption) { time.Sleep(s.d) }

// TestReserveCoversAnswerLag: a hanging shard is cut before the caller's deadline, but the proxy
// takes 500ms after the cut to answer, more than the 5% of a 2s caller it keeps back at first.
// The first query may be lost to the caller's deadline; the proxy learns from it (once its merge
// is done), and cuts the next queries' shards early enough to answer them in time. A proxy whose reserve ignores how
// late its answers are loses every query (the chaos incident's "qs timeout", under a load where
// answers came 250-500ms after their shard deadline).
func TestReserveCoversAnswerLag(t *testing.T) {
	t.Parallel()
	h := hitsFor(2)
	reg := prometheus.NewRegistry()
	c := newCluster(t, fanout.Config{ShardTimeout: time.Minute, IdleTimeout: time.Minute, Tracer: slowEnd{d: 500 * time.Millisecond}, Registerer: reg},
		shardtest.Behavior{Hits: h[0]}, shardtest.Behavior{Hits: h[1], Hang: true, HangAfter: 0})
	search := func() (*queryv1.SearchResponse, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		return c.client.Search(ctx, &queryv1.SearchRequest{Query: "q", TopK: 10})
	}
	if _, err := search(); err != nil && status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("first query: %v", err)
	}
	// The caller has gone at its deadline; the proxy learns when its merge is done, 500ms after
	// the cut.
	for end := time.Now().Add(5 * time.Second); metrictest.Sum(t, reg, "gather_merge_reserve_lag_seconds", nil) < 0.5; {
		if time.Now().After(end) {
			t.Fatal("the proxy did not learn how late its answer was")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range 2 {
		resp, err := search()
		if err != nil {
			t.Fatalf("query %d after the proxy saw its answers lag: %v, want a degraded answer in time", i+2, err)
		}
		if got, want := statuses(resp.GetShards()), []queryv1.ShardStatus{ok, deadline}; !slices.Equal(got, want) {
			t.Errorf("query %d: statuses %v, want %v", i+2, got, want)
		}
	}
}

// TestShardTimeoutCountsAdmissionWait: a query that waited for an admission slot has its shards
// cut shard_timeout after it arrived, not after it was admitted, so that the wait does not push
// its answer towards its caller's deadline (in the chaos incident, a query that waited most of a
// second for its slot was answered after its caller had given up).
func TestShardTimeoutCountsAdmissionWait(t *testing.T) {
	t.Parallel()
	const timeout, wait = time.Second, 400 * time.Millisecond
	adm := admission.New(admission.Config{MaxInFlight: 4, MaxWait: 100 * time.Millisecond}, prometheus.NewRegistry())
	h := hitsFor(2)
	c := newClusterOpts(t, fanout.Config{ShardTimeout: timeout, IdleTimeout: time.Minute}, proxy.Config{MaxTopK: 500},
		[]grpc.ServerOption{grpc.ChainStreamInterceptor(adm.StreamServerInterceptor(queryv1.QueryService_ServiceDesc.ServiceName))},
		shardtest.Behavior{Hits: h[0]}, shardtest.Behavior{Hits: h[1], Hang: true, HangAfter: 0})
	// Another caller holds every slot; one is freed after wait.
	holder := peer.NewContext(t.Context(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 9}})
	var releases []func()
	for range 4 {
		release, err := adm.Acquire(holder)
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, release)
	}
	defer func() {
		for _, r := range releases {
			r()
		}
	}()
	time.AfterFunc(wait, releases[0])
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := c.client.Search(ctx, &queryv1.SearchRequest{Query: "q", TopK: 10})
	if err != nil {
		t.Fatal(err)
	}
	hung := resp.GetShards()[1]
	if hung.GetStatus() != deadline {
		t.Fatalf("the hanging shard: %v, want cut by its deadline", hung.GetStatus())
	}
	// Cut 600ms after its call began (1s after the query arrived); 1s without the wait counted.
	if got := hung.GetLatency().AsDuration(); got > timeout-wait/2 {
		t.Errorf("the hanging shard was cut %s after its call began, want about %s (the timeout less the %s wait)", got, timeout-wait, wait)
	}
}
