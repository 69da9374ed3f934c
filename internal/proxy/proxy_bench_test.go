package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/admission"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/lifecycle"
	"github.com/gatherproxy/gather/internal/liveness"
	"github.com/gatherproxy/gather/internal/metrictest"
	"github.com/gatherproxy/gather/internal/panicguard"
	"github.com/gatherproxy/gather/internal/proxy"
	"github.com/gatherproxy/gather/internal/synthetic"
	"github.com/gatherproxy/gather/internal/telemetry"
	"github.com/gatherproxy/gather/internal/validation"
	"github.com/gatherproxy/gather/internal/wirecodec"
)

// benchQuery is the query of every benchmark; the synthetic shards cache their answer to it, so
// after the first call a shard's cost is grpc-go's and protobuf's, not the generator's.
const benchQuery = "union constitution war"

// wiring instruments a proxy the way cmd/gather does (serve.go, observe.go, proxy.go): gather's
// server codec (wirecodec), tracing off (no OTEL_* environment, so no stats handler is
// installed), go-grpc-middleware's Prometheus RED metrics and the lifecycle recorder on both
// sides, panic recovery, admission control and protovalidate request validation on the
// QueryService, the service's own metrics, and an access-log line per query from an enabled slog
// handler (text, to io.Discard, so the line is formatted but not written anywhere).
type wiring struct {
	reg    *prometheus.Registry
	lc     *lifecycle.Metrics
	srv    *grpcprom.ServerMetrics
	cli    *grpcprom.ClientMetrics
	panics *panicguard.Guard
	tr     *telemetry.Tracing
}

func newWiring() *wiring {
	buckets := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	w := &wiring{
		reg: prometheus.NewRegistry(),
		srv: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(buckets))),
		cli: grpcprom.NewClientMetrics(grpcprom.WithClientHandlingTimeHistogram(grpcprom.WithHistogramBuckets(buckets))),
		tr:  telemetry.Disabled(),
	}
	w.lc = lifecycle.New(w.reg)
	w.panics = panicguard.New(w.reg, slog.New(slog.DiscardHandler))
	w.reg.MustRegister(w.srv, w.cli)
	return w
}

func (w *wiring) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		w.tr.DialOption(),
		grpc.WithChainUnaryInterceptor(w.cli.UnaryClientInterceptor(), w.lc.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(w.cli.StreamClientInterceptor(), w.lc.StreamClientInterceptor()),
	}
}

func (w *wiring) serverOptions(tb testing.TB) []grpc.ServerOption {
	adm := admission.New(admission.Config{}, w.reg)
	svc := queryv1.QueryService_ServiceDesc.ServiceName
	v, err := validation.New(&queryv1.SearchRequest{}, &queryv1.SearchStreamRequest{})
	if err != nil {
		tb.Fatal(err)
	}
	return append(liveness.Server{}.ServerOptions(),
		grpc.ForceServerCodecV2(wirecodec.New((&queryv1.SearchRequest{}).ProtoReflect().Type(), (&queryv1.SearchStreamRequest{}).ProtoReflect().Type())),
		grpc.MaxConcurrentStreams(1000),
		w.tr.ServerOption(),
		grpc.ChainUnaryInterceptor(w.srv.UnaryServerInterceptor(), w.lc.UnaryServerInterceptor(), w.panics.UnaryServerInterceptor(),
			adm.UnaryServerInterceptor(svc), v.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(w.srv.StreamServerInterceptor(), w.lc.StreamServerInterceptor(), w.panics.StreamServerInterceptor(),
			adm.StreamServerInterceptor(svc), v.StreamServerInterceptor()),
	)
}

// serve serves register on a loopback port until the benchmark ends and returns the address.
func serve(tb testing.TB, register func(*grpc.Server), opts ...grpc.ServerOption) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	register(srv)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	tb.Cleanup(func() {
		srv.Stop()
		wg.Wait()
	})
	return lis.Addr().String()
}

func dial(tb testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// benchProxy is a production-wired proxy on loopback in front of the shards at addrs.
type benchProxy struct {
	w      *wiring
	svc    *proxy.Server
	client queryv1.QueryServiceClient
	addr   string
}

func newBenchProxy(tb testing.TB, addrs []string, fcfg fanout.Config) *benchProxy {
	tb.Helper()
	topo := make([]fanout.ShardSpec, len(addrs))
	for i, a := range addrs {
		topo[i] = fanout.ShardSpec{Name: fmt.Sprintf("shard-%02d", i), Replicas: []string{a}}
	}
	return newBenchProxyTopo(tb, topo, fcfg)
}

// newBenchProxyTopo is newBenchProxy in front of any topology.
func newBenchProxyTopo(tb testing.TB, topo []fanout.ShardSpec, fcfg fanout.Config) *benchProxy {
	tb.Helper()
	w := newWiring()
	fcfg.Tracer = w.tr.Tracer()
	if fcfg.Registerer == nil {
		fcfg.Registerer = w.reg
	}
	fcfg.DialOptions = append(fcfg.DialOptions, w.dialOptions()...)
	fan, err := fanout.New(topo, fcfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = fan.Close() }) // runs after the server has stopped (cleanups are LIFO)
	svc := proxy.New(fan, proxy.Config{
		Metrics: proxy.NewMetrics(w.reg),
		Logger:  slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	addr := serve(tb, func(s *grpc.Server) { svc.Register(s) }, w.serverOptions(tb)...)
	return &benchProxy{w: w, svc: svc, addr: addr, client: queryv1.NewQueryServiceClient(dial(tb, addr))}
}

// startSynthetic serves n synthetic shards (seeds 1..n, no latency) in this process and returns
// their addresses.
func startSynthetic(tb testing.TB, n int, opts ...synthetic.Option) []string {
	tb.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		s := synthetic.New(uint64(i+1), opts...)
		addrs[i] = serve(tb, func(g *grpc.Server) { shardv1.RegisterShardServiceServer(g, s) }, liveness.Server{}.ServerOptions()...)
	}
	return addrs
}

// BenchmarkSearch measures one Search query at fan-out N and top_k K against in-process
// synthetic shards (no delay, 200-byte texts, 64 hits per message) on loopback TCP. The proxy is
// wired like cmd/gather's (see wiring). One op is one query; what each variant includes:
//
//   - via=grpc: a real gRPC client calls the proxy, one query at a time. ns/op is the query's
//     latency; B/op and allocs/op are the whole process: the QS client, the proxy (server
//     transport, interceptors, handler, fan-out, shard client calls) and the N shard servers.
//   - via=grpc-par: the same from 8 concurrent clients (b.RunParallel); ns/op is wall time per
//     query at saturation, the inverse of throughput on this machine, shared by client, proxy and
//     shards.
//
// Both also report cpu-ns/op: the process's CPU time (client, proxy and shards) per query, which
// on a machine shared with other work is steadier than ns/op.
//   - via=handler: (*proxy.Server).Search called directly, without the QS hop: the handler, the
//     fan-out and merge, the observe/access log, the N shard client calls with their
//     interceptors, plus the N shard servers.
//   - via=shards: the floor under via=handler: the same N shard calls over plain connections, in
//     N goroutines, read to the end. allocs(handler) - allocs(shards) is the proxy's own share
//     per query (its fan-out, merge, answer, observability and shard-call interceptors).
func BenchmarkSearch(b *testing.B) {
	for _, n := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			addrs := startSynthetic(b, n)
			p := newBenchProxy(b, addrs, fanout.Config{})
			direct := make([]shardv1.ShardServiceClient, n)
			for i, a := range addrs {
				direct[i] = shardv1.NewShardServiceClient(dial(b, a))
			}
			for _, k := range []uint32{10, 100} {
				req := &queryv1.SearchRequest{Query: benchQuery, TopK: k}
				check := func(b *testing.B, resp *queryv1.SearchResponse, err error) {
					if err != nil {
						b.Fatal(err)
					}
					if len(resp.GetHits()) != int(k) || resp.GetCoverage().GetDegraded() {
						b.Fatalf("got %d hits (degraded %v), want %d", len(resp.GetHits()), resp.GetCoverage().GetDegraded(), k)
					}
				}
				b.Run(fmt.Sprintf("K=%d/via=grpc", k), func(b *testing.B) {
					ctx := b.Context()
					b.ReportAllocs()
					defer reportCPU(b)()
					for b.Loop() {
						resp, err := p.client.Search(ctx, req)
						check(b, resp, err)
					}
				})
				b.Run(fmt.Sprintf("K=%d/via=grpc-par", k), func(b *testing.B) {
					ctx := b.Context()
					b.ReportAllocs()
					b.SetParallelism(4) // 8 clients on 2 cores
					defer reportCPU(b)()
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							resp, err := p.client.Search(ctx, req)
							if err != nil || len(resp.GetHits()) != int(k) {
								b.Errorf("got %d hits, %v", len(resp.GetHits()), err)
								return
							}
						}
					})
				})
				b.Run(fmt.Sprintf("K=%d/via=handler", k), func(b *testing.B) {
					ctx := b.Context()
					b.ReportAllocs()
					for b.Loop() {
						resp, err := p.svc.Search(ctx, req)
						check(b, resp, err)
					}
				})
				b.Run(fmt.Sprintf("K=%d/via=shards", k), func(b *testing.B) {
					ctx := b.Context()
					sreq := &shardv1.SearchRequest{Query: benchQuery, TopK: k}
					errs := make([]error, n)
					b.ReportAllocs()
					for b.Loop() {
						var wg sync.WaitGroup
						for i, c := range direct {
							wg.Go(func() { errs[i] = drain(ctx, c, sreq) })
						}
						wg.Wait()
						if err := errors.Join(errs...); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

// BenchmarkSearchFanOut64 is BenchmarkSearch's via=handler at fan-out 64 and top_k 100, where
// most shards' hits never reach the answer; it also reports the hits the fan-out parsed per
// query (gather_shard_hits_received_total), which a full fetch makes 64 × 100.
func BenchmarkSearchFanOut64(b *testing.B) {
	addrs := startSynthetic(b, 64)
	p := newBenchProxy(b, addrs, fanout.Config{})
	req := &queryv1.SearchRequest{Query: benchQuery, TopK: 100}
	ctx := b.Context()
	if _, err := p.svc.Search(ctx, req); err != nil { // warm: connections, the shards' cache
		b.Fatal(err)
	}
	before := metrictest.Sum(b, p.w.reg, "gather_shard_hits_received_total", nil)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := p.svc.Search(ctx, req)
		if err != nil || len(resp.GetHits()) != 100 || resp.GetCoverage().GetDegraded() {
			b.Fatalf("got %d hits, %v", len(resp.GetHits()), err)
		}
	}
	b.ReportMetric((metrictest.Sum(b, p.w.reg, "gather_shard_hits_received_total", nil)-before)/float64(b.N), "hits-parsed/op")
}

// BenchmarkSearchReplicas is BenchmarkSearch's via=handler at fan-out 4 and top_k 10 with every
// shard served by R replicas (in-process synthetic shards; the replicas of a shard serve the same
// hits): what choosing a replica for every shard call costs (the replica set's score and
// in-flight count, the hedge delay's histogram, the budget), next to R=1, which has none of it.
// No shard is slow, so no call is hedged.
func BenchmarkSearchReplicas(b *testing.B) {
	for _, r := range []int{1, 2} {
		b.Run(fmt.Sprintf("R=%d", r), func(b *testing.B) {
			topo := make([]fanout.ShardSpec, 4)
			for i := range topo {
				topo[i].Name = fmt.Sprintf("shard-%02d", i)
				for range r {
					s := synthetic.New(uint64(i + 1))
					topo[i].Replicas = append(topo[i].Replicas,
						serve(b, func(g *grpc.Server) { shardv1.RegisterShardServiceServer(g, s) }, liveness.Server{}.ServerOptions()...))
				}
			}
			p := newBenchProxyTopo(b, topo, fanout.Config{})
			req := &queryv1.SearchRequest{Query: benchQuery, TopK: 10}
			ctx := b.Context()
			b.ReportAllocs()
			for b.Loop() {
				resp, err := p.svc.Search(ctx, req)
				if err != nil || len(resp.GetHits()) != 10 || resp.GetCoverage().GetDegraded() {
					b.Fatalf("got %d hits, %v", len(resp.GetHits()), err)
				}
			}
		})
	}
}

// drain runs one shard call to the end of its stream.
func drain(ctx context.Context, c shardv1.ShardServiceClient, req *shardv1.SearchRequest) error {
	st, err := c.Search(ctx, req)
	if err != nil {
		return err
	}
	for {
		if _, err := st.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}
