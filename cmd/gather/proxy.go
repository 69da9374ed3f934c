package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/access"
	"github.com/gatherproxy/gather/internal/admission"
	"github.com/gatherproxy/gather/internal/config"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/flowguard"
	"github.com/gatherproxy/gather/internal/proxy"
	"github.com/gatherproxy/gather/internal/tlsconf"
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
	fs := newFlags("proxy", "[--config FILE] [--listen ADDR] (--shard NAME=ADDR[,ADDR...] ... | --discover etcd://HOST:PORT/PREFIX)", stderr)
	path := fs.String("config", "", "YAML config `file`; GATHER_<KEY> variables override it, flags override both")
	listen := fs.String("listen", "", "QueryService `address` (default 127.0.0.1:7070)")
	admin := fs.String("admin", "", "admin HTTP `address` for /metrics and /healthz (default 127.0.0.1:9090)")
	var shards shardFlags
	fs.Var(&shards, "shard", "a shard as `NAME=ADDR[,ADDR...]`; an ADDR may be dns:///HOST:PORT (every address of HOST, resolved again every 10s and when a replica is lost); repeat for each shard")
	discover := fs.String("discover", "", "take the shards from those registered in etcd (gather shard --register), followed live: `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`; instead of --shard")
	dnsRefresh := fs.Duration("dns-refresh", 0, "resolve shard replicas given as dns:///HOST:PORT again this often (default 10s); also when a replica's connection is lost")
	discoverExpect := fs.String("discover-expect", "", "with --discover: comma-separated shard `names` the topology must have (default: shard-0 to shard-(N-1) once registrations say there are N partitions)")
	shardTimeout := fs.Duration("shard-timeout", 0, "per-shard timeout, from when the query arrived (default 2s)")
	idleTimeout := fs.Duration("idle-timeout", 0, "longest silence between two frames of a shard stream (default 1s)")
	pullFanOut := fs.Int("pull-fan-out", 0, "call the shards' Pull, which sends each batch after the first only when asked, in queries of at least this `fan-out` (default 32); above the fan-out: Search only")
	maxTopK := fs.Uint("max-top-k", 0, "largest top_k accepted (default 1000)")
	sendTimeout := fs.Duration("send-timeout", 0, "end a SearchStream whose client makes no room for a message within this (default 5s)")
	maxInFlight := fs.Int("max-in-flight", 0, "queries served at once; more wait up to --admission-wait, then get RESOURCE_EXHAUSTED (default 256)")
	admissionWait := fs.Duration("admission-wait", 0, "longest wait for a query slot (default 50ms)")
	schedTarget := fs.Duration("admission-sched-target", 0, schedTargetUsage+" (default 0)")
	tlsFlags := tlsconf.AddServerFlags(fs, "tls", "the QueryService")
	shardTLSFlags := tlsconf.AddClientFlags(fs, "shard-tls", "shard connections")
	adminTLSFlags := tlsconf.AddServerFlags(fs, "admin-tls", "the admin port")
	accessFlags := addAccessFlags(fs, true)
	pprofOn := fs.Bool("pprof", false, "serve /debug/pprof/ on the admin port")
	maxAnswer := fs.Int("max-answer-bytes", 0, "largest answer sent, in `bytes`: longer answers are cut, and say so (default 4194304, gRPC clients' default receive limit)")
	hf := addHedgeFlags(fs)
	lf := addLogFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("proxy: unexpected arguments %q", fs.Args())
	}
	// Defaults, then the file, then GATHER_* variables, then flags. resolve is also how a
	// reloaded file becomes a configuration.
	resolve := func(cfg config.Proxy) (config.Proxy, error) {
		if err := cfg.ApplyEnv(os.LookupEnv); err != nil {
			return cfg, fmt.Errorf("proxy environment:\n%w", err)
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
		if *discover != "" {
			cfg.Discover = *discover
		}
		if *dnsRefresh != 0 {
			cfg.DNSRefresh = *dnsRefresh
		}
		if *discoverExpect != "" {
			cfg.DiscoverExpect = splitList(*discoverExpect)
		}
		if *shardTimeout != 0 {
			cfg.ShardTimeout = *shardTimeout
		}
		if *idleTimeout != 0 {
			cfg.IdleTimeout = *idleTimeout
		}
		if *pullFanOut != 0 {
			cfg.PullFanOut = *pullFanOut
		}
		if *maxTopK != 0 {
			cfg.MaxTopK = uint32(min(*maxTopK, math.MaxUint32)) // saturated, so Validate rejects it rather than a wrapped value
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
		if *schedTarget != 0 {
			cfg.AdmissionSchedTarget = *schedTarget
		}
		tlsFlags.Apply(&cfg.TLS)
		shardTLSFlags.Apply(&cfg.ShardTLS)
		adminTLSFlags.Apply(&cfg.AdminTLS)
		accessFlags.apply(&cfg.Access)
		cfg.Pprof = cfg.Pprof || *pprofOn
		if *maxAnswer != 0 {
			cfg.MaxAnswerBytes = *maxAnswer
		}
		hf.apply(fs, &cfg)
		if err := cfg.Validate(); err != nil {
			return cfg, fmt.Errorf("proxy config:\n%w", err)
		}
		return cfg, nil
	}
	cfg := config.Defaults()
	if *path != "" {
		var err error
		if cfg, err = config.Load(*path); err != nil {
			return err
		}
	}
	cfg, err := resolve(cfg)
	if err != nil {
		return err
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
	o := newObservability(tracing, log)
	follow, err := newFollower(cfg, *path, resolve, log, o.reg)
	if err != nil {
		return err
	}
	p, err := startProxy(cfg, o, log, *lf.queryText, callerInterceptors{}, follow)
	if err != nil {
		return err
	}
	if err := follow.start(ctx, p.fan); err != nil {
		now, cancel := context.WithCancel(ctx) // no query can have come in yet: stop at once
		cancel()
		p.Stop(now)
		return err
	}
	defer follow.Stop()
	scheme := "http"
	if cfg.AdminTLS.Enabled() {
		scheme = "https"
	}
	shardsFrom := fmt.Sprintf("%d shards", len(cfg.Shards))
	if cfg.Discover != "" {
		shardsFrom = "shards from " + cfg.Discover
	}
	fmt.Fprintf(stdout, "gather proxy: QueryService on %s, admin on %s://%s, %s\n", p.grpc.Addr(), scheme, p.admin.Addr(), shardsFrom)
	<-ctx.Done()
	log.Info("shutting down")
	follow.Stop() // the topology stays as it is while the queries in flight drain
	stopCtx, cancel := graceContext(ctx, 10*time.Second)
	defer cancel()
	p.Stop(stopCtx)
	return nil
}

// hedgeFlags are the flags of hedge_percentile and hedge_budget, on gather proxy and gather demo.
type hedgeFlags struct{ percentile, budget *float64 }

func addHedgeFlags(fs *flag.FlagSet) hedgeFlags {
	return hedgeFlags{
		percentile: fs.Float64("hedge-percentile", 0, "hedge a shard call on another replica when it has no first message after this `percentile` of the shard's recent times to one (default 95)"),
		budget:     fs.Float64("hedge-budget", 0, "most extra shard calls hedges and retries may add, as a `fraction` of the shard calls (default 0.05; 0 turns hedging off)"),
	}
}

// apply sets what was given on the command line; a --hedge-budget of 0 is given, not a default.
func (f hedgeFlags) apply(fs *flag.FlagSet, cfg *config.Proxy) {
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "hedge-percentile":
			cfg.HedgePercentile = *f.percentile
		case "hedge-budget":
			b := *f.budget
			cfg.HedgeBudget = &b
		}
	})
}

// proxyServer is a running QueryService with its admin endpoint.
type proxyServer struct {
	fan   *fanout.Client
	flow  *flowguard.Guard
	grpc  *grpcServer
	admin *adminServer
	guard *access.Guard
	adm   *admission.Limiter
}

// schedTargetUsage is the help of --admission-sched-target, for the proxy and the demo.
const schedTargetUsage = "bound the queries admitted per 250ms, weighed 1 + top_k/40 each, by the CPU: the bound starts at --max-in-flight/16, grows while queries are held back and the process's runnable goroutines wait under half of this for a CPU (99th percentile), and drops while they wait longer; 0: --max-in-flight is the only bound"

// callerInterceptors name a call's caller before admission control shares the slots among
// callers (see peerid); only the demo has any.
type callerInterceptors struct {
	unary  []grpc.UnaryServerInterceptor
	stream []grpc.StreamServerInterceptor
}

// startProxy starts the QueryService and the admin endpoint, instrumented by o. log gets the
// process's messages and one access-log line per query.
//
// follow, if not nil, gives the topology to start with and learns of replicas that went down;
// without it, the topology is cfg's shards, fixed.
func startProxy(cfg config.Proxy, o *observability, log *slog.Logger, logQueryText bool, callers callerInterceptors,
	follow *follower) (_ *proxyServer, err error) {
	fcfg := cfg.Fanout()
	topo := cfg.Topology()
	if follow != nil {
		topo, fcfg.OnReplicaDown = follow.Initial(), follow.replicaDown
	}
	fcfg.Tracer, fcfg.Registerer = o.tracing.Tracer(), o.reg
	fcfg.DialOptions = append(fcfg.DialOptions, o.dialOptions()...)
	if cfg.ShardTLS.Enabled() {
		creds, err := cfg.ShardTLS.Credentials("shard_tls", log)
		if err != nil {
			return nil, err
		}
		fcfg.DialOptions = append(fcfg.DialOptions, grpc.WithTransportCredentials(creds))
	}
	creds, err := serverCreds(cfg.TLS, "tls", log)
	if err != nil {
		return nil, err
	}
	if cfg.Access.TokensFile != "" && !cfg.TLS.Enabled() {
		log.Warn("bearer tokens over plaintext: anyone on the path between QS and the proxy can read them; configure tls")
	}
	guard, err := access.New(cfg.Access, log, access.NewMetrics(o.reg))
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			guard.Close()
		}
	}()
	fan, err := fanout.New(topo, fcfg)
	if err != nil {
		return nil, err
	}
	scfg := cfg.Service()
	// Every QS connection goes through the flow guard: answers are held until written, and a
	// client that makes no room for one within send_timeout loses its connection.
	flow := flowguard.New(flowguard.Config{SendTimeout: scfg.SendTimeout,
		UserTimeout: cfg.Keepalive.Params().Timeout, Logger: log}, o.reg)
	scfg.Flow = flow
	scfg.Metrics, scfg.Logger, scfg.LogQueryText = proxy.NewMetrics(o.reg), log, logQueryText
	svc := proxy.New(fan, scfg)
	adm := admission.New(cfg.Admission(), o.reg)
	queryService := queryv1.QueryService_ServiceDesc.ServiceName
	opts := append(cfg.Keepalive.ServerOptions(), grpc.MaxConcurrentStreams(cfg.MaxStreams()),
		grpc.Creds(flow.Credentials(creds)))
	opts = append(opts, scfg.ServerOptions()...) // receive, header and send limits
	// RED metrics and lifecycle first, so that refused and shed calls are recorded too; then
	// authentication and authorization, so that a refused caller takes no query slot; then the
	// demo's caller names, and admission, which shares the slots among callers.
	unary, stream := withAccess(guard,
		append(callers.unary, adm.UnaryServerInterceptor(queryService)),
		append(callers.stream, adm.StreamServerInterceptor(queryService)))
	opts = append(opts, o.serverOptions(o.tracing, unary, stream)...)
	g, err := newGRPCServer(cfg.Listen, opts, func(s *grpc.Server) { svc.Register(s) }, queryService)
	if err != nil {
		flow.Close()
		adm.Close()
		_ = fan.Close()
		return nil, err
	}
	o.server.InitializeMetrics(g.srv)
	a, err := newAdminServer(cfg.Admin, o.reg, func() error { return proxyReady(g, fan) },
		adminOptions{pprof: cfg.Pprof, tls: cfg.AdminTLS, section: "admin_tls", log: log})
	if err != nil {
		_ = g.lis.Close()
		flow.Close()
		adm.Close()
		_ = fan.Close()
		return nil, err
	}
	g.Start()
	a.Start()
	names := make([]string, len(cfg.Shards))
	for i, s := range cfg.Shards {
		names[i] = s.Name + "=" + strings.Join(s.Replicas, ",")
	}
	if cfg.Discover != "" {
		names = []string{cfg.Discover}
	}
	log.Info("proxy serving", "listen", g.Addr(), "admin", a.Addr(), "shards", strings.Join(names, " "),
		"tls", cfg.TLS.Enabled(), "client_auth", string(cfg.TLS.Mode()), "shard_tls", cfg.ShardTLS.Enabled(),
		"authz_policy", cfg.Access.PolicyFile != "", "bearer_tokens", cfg.Access.TokensFile != "")
	return &proxyServer{fan: fan, flow: flow, grpc: g, admin: a, guard: guard, adm: adm}, nil
}

// proxyReady: not while draining, and not while some shard has no replica that could answer
// (every connection in TRANSIENT_FAILURE or shut down); partly (partialReadiness: /readyz?partial=1
// passes) while other shards still can.
func proxyReady(g *grpcServer, fan *fanout.Client) error {
	if g.Draining() {
		return errors.New("draining")
	}
	states := fan.ReplicaStates()
	if len(states) == 0 {
		return errors.New("no shard known yet (discovery has published no topology)")
	}
	var down []string
	for shard, replicas := range states {
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
		err := fmt.Errorf("no reachable replica for shard(s) %s", strings.Join(down, ", "))
		if len(down) < len(states) {
			return partialReadiness{err} // the others answer: coverage says what is missing
		}
		return err
	}
	return nil
}

// Stop drains the QueryService until ctx ends, then closes the shard connections.
func (p *proxyServer) Stop(ctx context.Context) {
	p.grpc.Stop(ctx)
	p.flow.Close()
	p.admin.Stop(ctx)
	p.guard.Close()
	p.adm.Close()
	_ = p.fan.Close() // connections are gone either way; nothing to report to anyone
}
