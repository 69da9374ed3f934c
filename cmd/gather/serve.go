package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
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
	"github.com/gatherproxy/gather/internal/tlsconf"
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
	apidesc.RegisterReflection(srv) // with the proto comments, for grpcurl describe
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
// that started the shutdown) and ends grace after it, so that it may be made before the shutdown
// starts (a deferred stop) and still gives the whole grace to the drain.
func graceContext(parent context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	var (
		mu    sync.Mutex
		timer *time.Timer
	)
	stop := context.AfterFunc(parent, func() {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() == nil {
			timer = time.AfterFunc(grace, cancel)
		}
	})
	return ctx, func() {
		stop()
		cancel()
		mu.Lock()
		defer mu.Unlock()
		if timer != nil {
			timer.Stop()
		}
	}
}

// partialReadiness is a readiness failure that /readyz?partial=1 accepts: the server answers,
// but not in full (a proxy with some shards unreachable answers with partial coverage). A
// load balancer that should keep such a proxy in rotation probes with ?partial=1; plain /readyz
// fails, so that the shards missing are seen.
type partialReadiness struct{ error }

func (p partialReadiness) Unwrap() error { return p.error }

// adminServer is the admin HTTP server: /metrics and /healthz, plus what Handle adds, and
// channelz over gRPC on the same port.
type adminServer struct {
	srv  *http.Server
	mux  *http.ServeMux
	grpc *grpc.Server // channelz and reflection, served through srv
	lis  net.Listener
	tls  bool
	done chan error
}

// adminOptions are the admin port's settings beyond its address.
type adminOptions struct {
	// pprof serves the profiling handlers under /debug/pprof/ (off: 404).
	pprof bool
	// tls serves HTTPS (and gRPC over TLS) instead of plaintext; section names its config keys.
	tls     tlsconf.Server
	section string
	// log gets the warning about a port reachable beyond loopback, and certificate reloads.
	log *slog.Logger
}

// newAdminServer serves /metrics (Prometheus text, or OpenMetrics with exemplars when asked),
// /healthz (the process is alive), /readyz (ready answers nil: 200, else 503 with the reason;
// with ?partial=1, 200 also for a partialReadiness),
// gRPC channelz and reflection (grpcurl ADDR grpc.channelz.v1.Channelz/GetTopChannels: the
// process's connections, which the query port does not show), and with opts.pprof the pprof
// handlers under /debug/pprof/. Plaintext, it speaks HTTP/1.1 and HTTP/2 with prior knowledge
// (h2c, what grpcurl -plaintext does); with opts.tls, HTTPS with both. Bound beyond loopback, it
// logs a warning: whoever reaches it reads the process's metrics and connections.
func newAdminServer(addr string, reg *prometheus.Registry, ready func() error, opts adminOptions) (*adminServer, error) {
	if opts.log == nil {
		opts.log = slog.Default()
	}
	var tlsConfig *tls.Config
	if opts.tls.Enabled() {
		var err error
		if tlsConfig, err = opts.tls.ServerConfig(opts.section, opts.log, "h2", "http/1.1"); err != nil {
			return nil, err
		}
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listen %s: %w", addr, err)
	}
	warnBeyondLoopback(opts.log, lis.Addr(), opts)
	// The scheduler's metrics too: go_sched_latencies_seconds, how long goroutines waited to run,
	// says whether a slow answer was the process starved of CPU.
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsScheduler)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		sockdiag.NewCollector(sockdiag.New("")))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		err := ready()
		var partial partialReadiness
		switch {
		case err == nil:
			fmt.Fprintln(w, "ready")
		case errors.As(err, &partial) && r.URL.Query().Has("partial"):
			fmt.Fprintln(w, "ready, partial: "+err.Error())
		default:
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		}
	})
	if opts.pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	gs := grpc.NewServer()
	channelzsvc.RegisterChannelzServiceToServer(gs)
	apidesc.RegisterReflection(gs)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			gs.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	if tlsConfig != nil {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	srv := &http.Server{Handler: handler, Protocols: &protocols, TLSConfig: tlsConfig,
		ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 2 * time.Minute} // pprof profiles take 30s
	return &adminServer{srv: srv, mux: mux, grpc: gs, lis: lis, tls: tlsConfig != nil, done: make(chan error, 1)}, nil
}

// warnBeyondLoopback logs a warning when the admin port listens on more than loopback (a
// wildcard address, or another interface): whoever reaches it reads the process's metrics and
// connections, and pprof if it is on.
func warnBeyondLoopback(log *slog.Logger, addr net.Addr, opts adminOptions) {
	if tcp, ok := addr.(*net.TCPAddr); ok && tcp.IP.IsLoopback() {
		return
	}
	log.Warn("admin port reachable beyond loopback: anyone who reaches it reads metrics and channelz (and pprof, if on); "+
		"bind it to 127.0.0.1, or give it TLS with client_auth require", "admin", addr.String(), "tls", opts.tls.Enabled(),
		"client_auth", string(opts.tls.Mode()), "pprof", opts.pprof)
}

// Handle adds a handler for pattern (http.ServeMux syntax, such as "POST /debug/fault"), also
// while the server is serving. Only the demo adds any: its fault control, which must never be
// mounted on `gather proxy`.
func (a *adminServer) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

func (a *adminServer) Addr() string { return a.lis.Addr().String() }

func (a *adminServer) Start() {
	go func() {
		if a.tls {
			a.done <- a.srv.ServeTLS(a.lis, "", "") // the certificate comes from TLSConfig
			return
		}
		a.done <- a.srv.Serve(a.lis)
	}()
}

func (a *adminServer) Stop(ctx context.Context) {
	if err := a.srv.Shutdown(ctx); err != nil {
		_ = a.srv.Close()
	}
	a.grpc.Stop() // its calls ran on srv's connections, which are closed by now
	if err := <-a.done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		slog.Warn("admin server", "err", err)
	}
}
