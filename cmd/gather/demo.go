package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/gatherproxy/gather/internal/chaos"
	"github.com/gatherproxy/gather/internal/config"
	"github.com/gatherproxy/gather/internal/corpus"
	"github.com/gatherproxy/gather/internal/fault"
	"github.com/gatherproxy/gather/internal/shard"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", "[--listen ADDR] [--admin ADDR] [--shards N] [--data-dir DIR] [--corpus FILE] [proxy tunables]", stderr)
	listen := fs.String("listen", "127.0.0.1:7070", "QueryService `address`")
	admin := fs.String("admin", "127.0.0.1:9090", "admin HTTP `address` (/metrics, /healthz)")
	n := fs.Int("shards", 4, "number of index shards (partitions of the corpus)")
	dataDir := fs.String("data-dir", "", "`directory` for the built indexes (default: gather/index under the user cache directory)")
	corpusFile := fs.String("corpus", "", "JSON Lines corpus `file` (default: the bundled State of the Union corpus)")
	maxInFlight := fs.Int("max-in-flight", 0, "queries the proxy serves at once; more wait briefly, then get RESOURCE_EXHAUSTED (default 256)")
	sendTimeout := fs.Duration("send-timeout", 0, "end a SearchStream whose client makes no room for a message within this (default 5s)")
	keepaliveTime := fs.Duration("keepalive-time", 0, "the proxy pings a QS connection silent for this long (default 10s, at least 1s)")
	keepaliveTimeout := fs.Duration("keepalive-timeout", 0, "... and closes it when the ping is not answered within this (default 5s)")
	lf := addLogFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("demo: unexpected arguments %q", fs.Args())
	}
	if *n < 1 || *n > 64 {
		return fmt.Errorf("--shards %d: give 1 to 64", *n)
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	src := corpusSource(*corpusFile)
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

	cfg := config.Defaults()
	cfg.Listen, cfg.Admin = *listen, *admin
	cfg.MaxInFlight, cfg.SendTimeout = *maxInFlight, *sendTimeout
	cfg.Keepalive.Time, cfg.Keepalive.Timeout = *keepaliveTime, *keepaliveTimeout
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
	o := newObservability(proxyTracing)
	var shards []*grpcServer
	defer func() {
		stopCtx, cancel := graceContext(ctx, time.Second)
		defer cancel()
		for _, s := range shards {
			s.Stop(stopCtx)
		}
	}()
	// Every shard serves on a fault listener with an injector that starts healthy, so that
	// POST /debug/fault on the admin port can slow, hang or break it at run time (gather chaos).
	injectors := make(map[string]*fault.Injector, len(indexes))
	for i, ix := range indexes {
		lis, err := fault.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		name := fmt.Sprintf("shard-%d", i)
		injectors[name] = fault.NewInjector(fault.Spec{}, lis)
		// the injector after lifecycle, so that lifecycle records injected faults too
		s := serveShard(lis, shard.NewServer(ix), o.serverOptions(shardTracing, nil,
			[]grpc.StreamServerInterceptor{injectors[name].StreamServerInterceptor()})...)
		shards = append(shards, s)
		cfg.Shards = append(cfg.Shards, config.Shard{Name: name, Replicas: []string{s.Addr()}})
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("demo config:\n%w", err)
	}
	// Demo only, never on `gather proxy`: the caller names gather chaos sends stand in for client
	// certificates, so that admission control sees its workers as one service.
	unary, stream := chaos.CallerFromHeader()
	p, err := startProxy(cfg, o, log, *lf.queryText, callerInterceptors{
		unary: []grpc.UnaryServerInterceptor{unary}, stream: []grpc.StreamServerInterceptor{stream}})
	if err != nil {
		return err
	}
	// Demo only, never on `gather proxy`: anyone who can reach them can break the shards.
	p.admin.Handle("POST "+chaos.FaultPath, chaos.FaultHandler(injectors))
	p.admin.Handle("POST "+chaos.GCPath, chaos.GCHandler())

	fmt.Fprintf(stdout, "\ngather demo ready in %s: %d shards over %s\n\n", time.Since(start).Round(time.Millisecond), *n, src.Name())
	for i, s := range shards {
		fmt.Fprintf(stdout, "  shard-%d  gather.shard.v1.ShardService  %s  (%d passages)\n", i, s.Addr(), indexes[i].Info().Documents)
	}
	fmt.Fprintf(stdout, "  proxy    gather.query.v1.QueryService  %s\n", p.grpc.Addr())
	fmt.Fprintf(stdout, "  admin    http://%s/metrics\n", p.admin.Addr())
	fmt.Fprintf(stdout, "  faults   POST http://%s%s  shard=NAME|%s spec=SPEC (empty heals)\n\n", p.admin.Addr(), chaos.FaultPath, chaos.AllShards)
	fmt.Fprintf(stdout, "Try:\n  grpcurl -plaintext -d '{\"query\":\"union constitution war\",\"top_k\":10}' \\\n    %s gather.query.v1.QueryService/Search\n", p.grpc.Addr())
	fmt.Fprintf(stdout, "  go run ./cmd/gather query --addr %s union constitution war\n\nCtrl-C stops.\n", p.grpc.Addr())

	<-ctx.Done()
	fmt.Fprintln(stdout, "\nshutting down")
	stopCtx, cancel := graceContext(ctx, 5*time.Second)
	defer cancel()
	p.Stop(stopCtx)
	return nil
}
