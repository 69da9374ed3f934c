package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	channelzsvc "google.golang.org/grpc/channelz/service"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/apidesc"
	"github.com/gatherproxy/gather/internal/sockdiag"
	"github.com/gatherproxy/gather/internal/validation"
	"github.com/gatherproxy/gather/internal/wirecodec"
)

// grpcServer is a gRPC server with health and reflection, serving on a listener of its own.
type grpcServer struct {
	srv      *grpc.Server
	health   *health.Server
	lis      net.Listener
	done     chan error
	draining atomic.Bool
}

// newGRPCServer listens on addr and returns a server with the standard health service (all of
// services reported SERVING once started) and reflection registered. register adds the
// application services.
func newGRPCServer(addr string, opts []grpc.ServerOption, register func(*grpc.Server), services ...string) (*grpcServer, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	g, err := serveOn(lis, opts, register, services...)
	if err != nil {
		_ = lis.Close()
	}
	return g, err
}

// serveOn is newGRPCServer on a listener the caller made. Every gather server decodes requests
// with requestCodec and, after the interceptors of opts, validates them against the protos'
// rules (requestValidation).
func serveOn(lis net.Listener, opts []grpc.ServerOption, register func(*grpc.Server), services ...string) (*grpcServer, error) {
	validation, err := requestValidation()
	if err != nil {
		return nil, err
	}
	opts = append(append([]grpc.ServerOption{grpc.ForceServerCodecV2(requestCodec())}, opts...), validation...)
	srv := grpc.NewServer(opts...)
	register(srv)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	apidesc.RegisterReflection(srv)                  // with the proto comments, for grpcurl describe
	channelzsvc.RegisterChannelzServiceToServer(srv) // grpcurl ... grpc.channelz.v1.Channelz/GetTopChannels
	for _, s := range append(services, "") {
		hs.SetServingStatus(s, healthpb.HealthCheckResponse_SERVING)
	}
	return &grpcServer{srv: srv, health: hs, lis: lis, done: make(chan error, 1)}, nil
}

// requestCodec is the codec of every gather gRPC server: grpc-go's, except that a search query
// that is not valid UTF-8 reaches the handler, whose validation answers INVALID_ARGUMENT and says
// where, instead of grpc-go's INTERNAL (see package wirecodec). The proxy (proxy.parse) and the
// shards (shardsvc.Validate) check the UTF-8 of these requests.
func requestCodec() *wirecodec.Codec {
	return wirecodec.New((&queryv1.SearchRequest{}).ProtoReflect().Type(), (&queryv1.SearchStreamRequest{}).ProtoReflect().Type(),
		(&shardv1.SearchRequest{}).ProtoReflect().Type())
}

// requestValidation checks every request against the protovalidate rules of gather's protos
// (package validation) and answers a violation INVALID_ARGUMENT, in the form of the services' own
// validation errors. It comes last in the interceptor chain, just before the handler: the RED and
// lifecycle recorders count invalid calls, and admission sheds them like any other under
// overload.
func requestValidation() ([]grpc.ServerOption, error) {
	v, err := validation.New(&queryv1.SearchRequest{}, &queryv1.SearchStreamRequest{}, &shardv1.SearchRequest{})
	if err != nil {
		return nil, err
	}
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(v.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(v.StreamServerInterceptor())}, nil
}

// Addr is the address the server listens on.
func (g *grpcServer) Addr() string { return g.lis.Addr().String() }

// Start serves in the background until Stop.
func (g *grpcServer) Start() {
	go func() { g.done <- g.srv.Serve(g.lis) }()
}

// Draining reports whether Stop has begun.
func (g *grpcServer) Draining() bool { return g.draining.Load() }

// Stop reports NOT_SERVING (health, and /readyz on the admin port), stops accepting, lets running
// calls finish until ctx ends, then closes everything.
func (g *grpcServer) Stop(ctx context.Context) {
	g.draining.Store(true)
	g.health.Shutdown()
	stopped := make(chan struct{})
	go func() {
		g.srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		g.srv.Stop()
		<-stopped
	}
	if err := <-g.done; err != nil { // nil after Stop or GracefulStop
		slog.Warn("grpc server", "addr", g.Addr(), "err", err)
	}
}

// graceContext is the context of a shutdown: it ignores the cancellation of parent (the signal
// that started the shutdown) and ends after grace.
func graceContext(parent context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(parent), grace)
}

// adminServer is the admin HTTP server: /metrics and /healthz, plus what Handle adds.
type adminServer struct {
	srv  *http.Server
	mux  *http.ServeMux
	lis  net.Listener
	done chan error
}

// newAdminServer serves /metrics (Prometheus text, or OpenMetrics with exemplars when asked),
// /healthz (the process is alive), /readyz (ready answers nil: 200, else 503 with the reason) and
// the pprof handlers under /debug/pprof/.
func newAdminServer(addr string, reg *prometheus.Registry, ready func() error) (*adminServer, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listen %s: %w", addr, err)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		sockdiag.NewCollector(sockdiag.New("")))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 2 * time.Minute} // pprof profiles take 30s
	return &adminServer{srv: srv, mux: mux, lis: lis, done: make(chan error, 1)}, nil
}

// Handle adds a handler for pattern (http.ServeMux syntax, such as "POST /debug/fault"), also
// while the server is serving. Only the demo adds any: its fault control, which must never be
// mounted on `gather proxy`.
func (a *adminServer) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

func (a *adminServer) Addr() string { return a.lis.Addr().String() }

func (a *adminServer) Start() {
	go func() { a.done <- a.srv.Serve(a.lis) }()
}

func (a *adminServer) Stop(ctx context.Context) {
	if err := a.srv.Shutdown(ctx); err != nil {
		_ = a.srv.Close()
	}
	if err := <-a.done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		slog.Warn("admin server", "err", err)
	}
}
