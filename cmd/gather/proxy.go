package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/admission"
	"github.com/gatherproxy/gather/internal/config"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/proxy"
)

// shardFlags collects repeated --shard NAME=ADDR[,ADDR...] flags.
type shardFlags []config.Shard

func (s *shardFlags) String() string { return fmt.Sprint(*s) }

func (s *shardFlags) Set(v string) error {
	sh, err := config.ParseShardFlag(v)
	if err != nil {
		return err
	}
	*s = append(*s, sh)
	return nil
}

func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("proxy", "[--config FILE] [--listen ADDR] --shard NAME=ADDR[,ADDR...] ...", stderr)
	path := fs.String("config", "", "YAML config `file`; GATHER_<KEY> variables override it, flags override both")
	listen := fs.String("listen", "", "QueryService `address` (default 127.0.0.1:7070)")
	admin := fs.String("admin", "", "admin HTTP `address` for /metrics and /healthz (default 127.0.0.1:9090)")
	var shards shardFlags
	fs.Var(&shards, "shard", "a shard as `NAME=ADDR[,ADDR...]` (replicas in order of preference); repeat for each shard")
	shardTimeout := fs.Duration("shard-timeout", 0, "per-shard timeout (default 2s)")
	idleTimeout := fs.Duration("idle-timeout", 0, "longest silence between two frames of a shard stream (default 1s)")
	maxTopK := fs.Uint("max-top-k", 0, "largest top_k accepted (default 1000)")
	sendTimeout := fs.Duration("send-timeout", 0, "end a SearchStream whose client makes no room for a message within this (default 5s)")
	maxInFlight := fs.Int("max-in-flight", 0, "queries served at once; more wait up to --admission-wait, then get RESOURCE_EXHAUSTED (default 256)")
	admissionWait := fs.Duration("admission-wait", 0, "longest wait for a query slot (default 50ms)")
	lf := addLogFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("proxy: unexpected arguments %q", fs.Args())
	}
	// Defaults, then the file, then GATHER_* variables, then flags.
	cfg := config.Defaults()
	if *path != "" {
		var err error
		if cfg, err = config.Load(*path); err != nil {
			return err
		}
	}
	if err := cfg.ApplyEnv(os.LookupEnv); err != nil {
		return fmt.Errorf("proxy environment:\n%w", err)
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	if *admin != "" {
		cfg.Admin = *admin
	}
	if len(shards) > 0 {
		cfg.Shards = shards
	}
	if *shardTimeout != 0 {
		cfg.ShardTimeout = *shardTimeout
	}
	if *idleTimeout != 0 {
		cfg.IdleTimeout = *idleTimeout
	}
	if *maxTopK != 0 {
		cfg.MaxTopK = uint32(*maxTopK)
	}
	if *sendTimeout != 0 {
		cfg.SendTimeout = *sendTimeout
	}
	if *maxInFlight != 0 {
		cfg.MaxInFlight = *maxInFlight
	}
	if *admissionWait != 0 {
		cfg.AdmissionWait = *admissionWait
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("proxy config:\n%w", err)
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" {
		// The proxy's live heap is small (about 50 KiB per query in flight), so at the default
		// GOGC=100 it collects all the time: 400 trades a few MiB for 12-20% less CPU per query
		// (measured). GOGC in the environment wins.
		debug.SetGCPercent(400)
	}
	tracing, err := setupTracing(ctx, "gather-proxy", true, log)
	if err != nil {
		return err
	}
	defer shutdownTracing(ctx, tracing, log)
	p, err := startProxy(cfg, newObservability(tracing), log, *lf.queryText, callerInterceptors{})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "gather proxy: QueryService on %s, admin on http://%s, %d shards\n", p.grpc.Addr(), p.admin.Addr(), len(cfg.Shards))
	<-ctx.Done()
	log.Info("shutting down")
	stopCtx, cancel := graceContext(ctx, 10*time.Second)
	defer cancel()
	p.Stop(stopCtx)
	return nil
}

// proxyServer is a running QueryService with its admin endpoint.
type proxyServer struct {
	fan   *fanout.Client
	grpc  *grpcServer
	admin *adminServer
}

// callerInterceptors name a call's caller before admission control shares the slots among
// callers (see peerid); only the demo has any.
type callerInterceptors struct {
	unary  []grpc.UnaryServerInterceptor
	stream []grpc.StreamServerInterceptor
}

// startProxy starts the QueryService and the admin endpoint, instrumented by o. log gets the
// process's messages and one access-log line per query.
func startProxy(cfg config.Proxy, o *observability, log *slog.Logger, logQueryText bool, callers callerInterceptors) (*proxyServer, error) {
	fcfg := cfg.Fanout()
	fcfg.Tracer = o.tracing.Tracer()
	fcfg.DialOptions = append(fcfg.DialOptions, o.dialOptions()...)
	fan, err := fanout.New(cfg.Topology(), fcfg)
	if err != nil {
		return nil, err
	}
	scfg := cfg.Service()
	scfg.Metrics, scfg.Logger, scfg.LogQueryText = proxy.NewMetrics(o.reg), log, logQueryText
	svc := proxy.New(fan, scfg)
	adm := admission.New(cfg.Admission(), o.reg)
	queryService := queryv1.QueryService_ServiceDesc.ServiceName
	opts := append(cfg.Keepalive.ServerOptions(), grpc.MaxConcurrentStreams(cfg.MaxStreams()))
	// RED metrics and lifecycle first, so that shed calls are recorded too.
	opts = append(opts, o.serverOptions(o.tracing,
		append(callers.unary, adm.UnaryServerInterceptor(queryService)),
		append(callers.stream, adm.StreamServerInterceptor(queryService)))...)
	g, err := newGRPCServer(cfg.Listen, opts, func(s *grpc.Server) { queryv1.RegisterQueryServiceServer(s, svc) }, queryService)
	if err != nil {
		_ = fan.Close()
		return nil, err
	}
	o.server.InitializeMetrics(g.srv)
	a, err := newAdminServer(cfg.Admin, o.reg, func() error { return proxyReady(g, fan) })
	if err != nil {
		_ = g.lis.Close()
		_ = fan.Close()
		return nil, err
	}
	g.Start()
	a.Start()
	names := make([]string, len(cfg.Shards))
	for i, s := range cfg.Shards {
		names[i] = s.Name + "=" + strings.Join(s.Replicas, ",")
	}
	log.Info("proxy serving", "listen", g.Addr(), "admin", a.Addr(), "shards", strings.Join(names, " "))
	return &proxyServer{fan: fan, grpc: g, admin: a}, nil
}

// proxyReady: not while draining, and not while some shard has no replica that could answer
// (every connection in TRANSIENT_FAILURE or shut down).
func proxyReady(g *grpcServer, fan *fanout.Client) error {
	if g.Draining() {
		return errors.New("draining")
	}
	var down []string
	for shard, replicas := range fan.ReplicaStates() {
		up := false
		for _, st := range replicas {
			up = up || (st != connectivity.TransientFailure && st != connectivity.Shutdown)
		}
		if !up {
			down = append(down, shard)
		}
	}
	if len(down) > 0 {
		slices.Sort(down)
		return fmt.Errorf("no reachable replica for shard(s) %s", strings.Join(down, ", "))
	}
	return nil
}

// Stop drains the QueryService until ctx ends, then closes the shard connections.
func (p *proxyServer) Stop(ctx context.Context) {
	p.grpc.Stop(ctx)
	p.admin.Stop(ctx)
	_ = p.fan.Close() // connections are gone either way; nothing to report to anyone
}
