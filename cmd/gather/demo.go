package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/gatherproxy/gather/internal/access"
	"github.com/gatherproxy/gather/internal/chaos"
	"github.com/gatherproxy/gather/internal/config"
	"github.com/gatherproxy/gather/internal/corpus"
	"github.com/gatherproxy/gather/internal/fault"
	"github.com/gatherproxy/gather/internal/shard"
)

// demoSchedTarget is the demo's admission_sched_target. 0 in the proxy's configuration.
const demoSchedTarget = 20 * time.Millisecond

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", "[--listen ADDR] [--admin ADDR] [--shards N] [--replicas R] [--data-dir DIR] [--corpus FILE] [proxy tunables]", stderr)
	listen := fs.String("listen", "127.0.0.1:7070", "QueryService `address`")
	admin := fs.String("admin", "127.0.0.1:9090", "admin HTTP `address` (/metrics, /healthz)")
	n := fs.Int("shards", 4, "number of index shards (partitions of the corpus)")
	replicas := fs.Int("replicas", 1, fmt.Sprintf("replica servers per shard, each serving the shard's one index with a fault injector of its own (1 to %d)", chaos.MaxReplicas))
	dataDir := fs.String("data-dir", "", "`directory` for the built indexes (default: gather/index under the user cache directory)")
	corpusFile := fs.String("corpus", "", "JSON Lines corpus `file` (default: the bundled State of the Union corpus)")
	maxInFlight := fs.Int("max-in-flight", 0, "queries the proxy serves at once; more wait briefly, then get RESOURCE_EXHAUSTED (default 256)")
	// On in the demo, whose one process runs the shards too: see "Fair admission" in the README.
	schedTarget := fs.Duration("admission-sched-target", demoSchedTarget, schedTargetUsage)
	sendTimeout := fs.Duration("send-timeout", 0, "end a SearchStream whose client makes no room for a message within this (default 5s)")
	keepaliveTime := fs.Duration("keepalive-time", 0, "the proxy pings a QS connection silent for this long (default 10s, at least 1s)")
	keepaliveTimeout := fs.Duration("keepalive-timeout", 0, "... and closes it when the ping is not answered within this (default 5s)")
	useTLS := fs.Bool("tls", false, "mutual TLS on every hop and an authorization policy: mints a local CA, certificates and the policy into DATA-DIR/tls/")
	pprofOn := fs.Bool("pprof", false, "serve /debug/pprof/ on the admin port")
	hf := addHedgeFlags(fs)
	cf := addCorpusFlags(fs)
	lf := addLogFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("demo: unexpected arguments %q", fs.Args())
	}
	if *n < 1 || *n > 64 {
		return fmt.Errorf("--shards %d: give 1 to 64", *n)
	}
	if *replicas < 1 || *replicas > chaos.MaxReplicas {
		return fmt.Errorf("--replicas %d: give 1 to %d", *replicas, chaos.MaxReplicas)
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	cfg := config.Defaults()
	cfg.Listen, cfg.Admin, cfg.Pprof = *listen, *admin, *pprofOn
	cfg.MaxInFlight, cfg.SendTimeout, cfg.AdmissionSchedTarget = *maxInFlight, *sendTimeout, *schedTarget
	cfg.Keepalive.Time, cfg.Keepalive.Timeout = *keepaliveTime, *keepaliveTimeout
	hf.apply(fs, &cfg)
	// Check the flags now rather than after building the indexes; the shards' addresses, known
	// only once they listen, are checked with the rest below.
	early := cfg
	early.Shards = []config.Shard{{Name: "shard-0", Replicas: []string{"127.0.0.1:1"}}}
	if err := early.Validate(); err != nil {
		return fmt.Errorf("demo config:\n%w", err)
	}
	src := cf.source(*corpusFile)
	start := time.Now()

	// Open (or build) every partition's index at once.
	indexes := make([]*shard.Index, *n)
	defer func() {
		for _, ix := range indexes {
			if ix != nil {
				_ = ix.Close()
			}
		}
	}()
	g, gctx := errgroup.WithContext(ctx)
	for i := range indexes {
		g.Go(func() error {
			part := corpus.Partition{Index: i, Count: *n}
			dir, err := indexDir(*dataDir, src, part)
			if err != nil {
				return err
			}
			indexes[i], err = openIndex(gctx, dir, src, part, log)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}

	var sec *demoTLS
	if *useTLS {
		dir, err := dataDirOrDefault(*dataDir)
		if err != nil {
			return err
		}
		host, _, _ := net.SplitHostPort(*listen)
		d, err := mintDemoTLS(filepath.Join(dir, "tls"), host)
		if err != nil {
			return err
		}
		sec = &d
	}

	// One trace per query across the proxy and its shards, under two service names; one set of
	// metrics for the whole process.
	proxyTracing, err := setupTracing(ctx, "gather-proxy", false, log)
	if err != nil {
		return err
	}
	defer shutdownTracing(ctx, proxyTracing, log)
	shardTracing, err := setupTracing(ctx, "gather-shard", false, log)
	if err != nil {
		return err
	}
	defer shutdownTracing(ctx, shardTracing, log)
	o := newObservability(proxyTracing, log)
	var (
		shardOpts  []grpc.ServerOption
		shardGuard *access.Guard
	)
	if sec != nil {
		cfg.TLS, cfg.ShardTLS, cfg.Access = sec.proxy, sec.proxyToShards, sec.access
		if shardOpts, err = serverTLS(sec.shard, "tls", log); err != nil {
			return err
		}
		if shardGuard, err = access.New(sec.access, log, access.NewMetrics(o.reg)); err != nil {
			return err
		}
		defer shardGuard.Close() // after the shards stop: deferred calls run in reverse
	}
	var shards []*grpcServer
	defer func() {
		stopCtx, cancel := graceContext(ctx, time.Second)
		defer cancel()
		for _, s := range shards {
			s.Stop(stopCtx)
		}
	}()
	// Every replica of every shard serves the shard's one index on a fault listener with an
	// injector of its own that starts healthy, so that POST /debug/fault on the admin port can
	// slow, hang or break a shard or one of its replicas at run time (gather chaos).
	injectors := make(map[string][]*fault.Injector, len(indexes))
	for i, ix := range indexes {
		name := fmt.Sprintf("shard-%d", i)
		var addrs []string
		for range *replicas {
			lis, err := fault.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			in := fault.NewInjector(fault.Spec{}, lis)
			injectors[name] = append(injectors[name], in)
			// the injector after lifecycle, so that lifecycle records injected faults too
			unary, stream := withAccess(shardGuard, nil, []grpc.StreamServerInterceptor{in.StreamServerInterceptor()})
			s, err := serveShard(lis, shard.NewServer(ix), append(slices.Clone(shardOpts), o.serverOptions(shardTracing, unary, stream)...)...)
			if err != nil {
				return err
			}
			shards = append(shards, s)
			addrs = append(addrs, s.Addr())
		}
		cfg.Shards = append(cfg.Shards, config.Shard{Name: name, Replicas: addrs})
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("demo config:\n%w", err)
	}
	// Demo only, never on `gather proxy`: the caller names gather chaos sends stand in for client
	// certificates, so that admission control sees its workers as one service.
	unary, stream := chaos.CallerFromHeader()
	p, err := startProxy(cfg, o, log, *lf.queryText, callerInterceptors{
		unary: []grpc.UnaryServerInterceptor{unary}, stream: []grpc.StreamServerInterceptor{stream}}, nil)
	if err != nil {
		return err
	}
	// Demo only, never on `gather proxy`: anyone who can reach them can break the shards.
	p.admin.Handle("POST "+chaos.FaultPath, chaos.FaultHandler(injectors))
	p.admin.Handle("POST "+chaos.GCPath, chaos.GCHandler())

	fmt.Fprintf(stdout, "\ngather demo ready in %s: %d shards over %s", time.Since(start).Round(time.Millisecond), *n, src.Name())
	if *replicas > 1 {
		fmt.Fprintf(stdout, ", %d replicas each", *replicas)
	}
	fmt.Fprint(stdout, "\n\n")
	// One line per replica ("shard-0 r1" with several), the labels padded to one width.
	label := func(i, r int) string {
		if *replicas == 1 {
			return fmt.Sprintf("shard-%d", i)
		}
		return fmt.Sprintf("shard-%d r%d", i, r)
	}
	width := max(len("faults"), len(label(*n-1, *replicas-1)))
	line := func(name, format string, args ...any) {
		fmt.Fprintf(stdout, "  %-*s  %s\n", width, name, fmt.Sprintf(format, args...))
	}
	for i, c := range cfg.Shards {
		for r, addr := range c.Replicas {
			line(label(i, r), "gather.shard.v1.ShardService  %s  (%d passages)", addr, indexes[i].Info().Documents)
		}
	}
	line("proxy", "gather.query.v1.QueryService  %s", p.grpc.Addr())
	line("admin", "http://%s/metrics", p.admin.Addr())
	replicaForm := ""
	if *replicas > 1 {
		replicaForm = fmt.Sprintf(" [replica=0..%d, absent: every replica]", *replicas-1)
	}
	line("faults", "POST http://%s%s  shard=NAME|%s%s spec=SPEC (empty heals), with header %s: 1",
		p.admin.Addr(), chaos.FaultPath, chaos.AllShards, replicaForm, chaos.ControlHeader)
	if sec != nil {
		line("tls", "every hop with mutual TLS; CA, certificates and authorization policy in %s", sec.dir)
	}
	fmt.Fprintf(stdout, "\nTry:\n  grpcurl %s -d '{\"query\":\"union constitution war\",\"top_k\":10}' \\\n    %s gather.query.v1.QueryService/Search\n",
		sec.grpcurlFlags(), p.grpc.Addr())
	fmt.Fprintf(stdout, "  go run ./cmd/gather query --addr %s%s union constitution war\n", p.grpc.Addr(), sec.queryFlags())
	fmt.Fprintf(stdout, "  grpcurl -plaintext %s grpc.channelz.v1.Channelz/GetTopChannels\n\nCtrl-C stops.\n", p.admin.Addr())

	<-ctx.Done()
	fmt.Fprintln(stdout, "\nshutting down")
	stopCtx, cancel := graceContext(ctx, 5*time.Second)
	defer cancel()
	p.Stop(stopCtx)
	return nil
}
