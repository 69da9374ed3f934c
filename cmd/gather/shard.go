package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/access"
	"github.com/gatherproxy/gather/internal/bounds"
	"github.com/gatherproxy/gather/internal/corpus"
	"github.com/gatherproxy/gather/internal/fault"
	"github.com/gatherproxy/gather/internal/liveness"
	"github.com/gatherproxy/gather/internal/shard"
	"github.com/gatherproxy/gather/internal/synthetic"
	"github.com/gatherproxy/gather/internal/tlsconf"
)

func runShard(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("shard", "--listen ADDR --partition I/N [--corpus FILE] [--data-dir DIR] | --synthetic [--partitions P]", stderr)
	listen := fs.String("listen", "127.0.0.1:7071", "ShardService `address`")
	partition := fs.String("partition", "0/1", "the partition to serve, `I/N` (0-based I of N partitions)")
	corpusFile := fs.String("corpus", "", "JSON Lines `file` (gzip or plain) with id, text and other fields (default: the bundled State of the Union corpus)")
	dataDir := fs.String("data-dir", "", "`directory` for the built indexes (default: gather/index under the user cache directory)")
	faultSpec := fs.String("fault", "", "misbehave on purpose, for fault tests: a `spec` such as 'delay=200ms,every=3', 'hang', 'close-after=1', 'reset-after=2', 'code=unavailable' (see internal/fault)")
	adminAddr := fs.String("admin", "", "admin HTTP `address` for /metrics, /healthz, /readyz, channelz and (with --pprof) pprof (default: none)")
	synth := fs.Bool("synthetic", false, "serve deterministic synthetic hits with no index (for measuring the proxy), instead of the corpus")
	latency := fs.String("latency", "", "with --synthetic: delay before answering, `spec` "+synthetic.LatencySyntax)
	seed := fs.Uint64("seed", 0, "with --synthetic: seed of the hits and of the latency (default: the partition index + 1)")
	partitions := fs.Int("partitions", 1, "with --synthetic: serve this many consecutive partitions I, I+1, ... of N in one process, "+
		"each on a listener of its own (--listen port 0: each on a free port; else on consecutive ports) with its own seed (the next one)")
	var textBytes, maxQueryBytes, maxTopK int
	bounds.Range{Max: synthetic.MaxTextBytes, Unit: bounds.Bytes, Why: "a hit must fit in one shard message"}.
		IntVar(fs, &textBytes, "text-bytes", synthetic.DefaultTextBytes, "with --synthetic: `bytes` of text per hit")
	queryLimitFlags(fs, &maxQueryBytes, &maxTopK)
	cf := addCorpusFlags(fs)
	tlsFlags := tlsconf.AddServerFlags(fs, "tls", "the ShardService")
	adminTLSFlags := tlsconf.AddServerFlags(fs, "admin-tls", "the admin port")
	accessFlags := addAccessFlags(fs, false)
	pprofOn := fs.Bool("pprof", false, "serve /debug/pprof/ on the admin port")
	lf := addLogFlags(fs)
	rf := addRegisterFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := rf.check(*listen); err != nil {
		return err
	}
	spec, err := fault.ParseSpec(*faultSpec)
	if err != nil {
		return fmt.Errorf("--fault: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("shard: unexpected arguments %q", fs.Args())
	}
	part, err := corpus.ParsePartition(*partition)
	if err != nil {
		return fmt.Errorf("--partition: %w", err)
	}
	listens, err := partitionListens(*listen, part, *partitions, *synth)
	if err != nil {
		return err
	}
	if len(listens) > 1 && rf.url != "" {
		return errors.New("--register serves one partition per process: drop --partitions, or --register (--partitions is for benchmarks)")
	}
	tlsCfg, err := tlsFlags.Server()
	if err != nil {
		return err
	}
	adminTLS, err := adminTLSFlags.Server()
	if err != nil {
		return err
	}
	var accessCfg access.Config
	accessFlags.apply(&accessCfg)
	if err := accessCfg.Validate("authz"); err != nil {
		return fmt.Errorf("--authz-policy: %w", err)
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	var (
		svcs         []shardv1.ShardServiceServer
		descriptions []string
	)
	if *synth {
		if *seed == 0 {
			*seed = uint64(part.Index) + 1
		}
		for i := range listens {
			s := *seed + uint64(i)
			lat, err := synthetic.ParseLatency(*latency, s)
			if err != nil {
				return fmt.Errorf("--latency: %w", err)
			}
			svcs = append(svcs, synthetic.New(s, synthetic.WithLatency(lat), synthetic.WithTextBytes(textBytes),
				synthetic.WithMaxQueryBytes(maxQueryBytes), synthetic.WithMaxTopK(maxTopK)))
			descriptions = append(descriptions, fmt.Sprintf("synthetic seed %d, latency %v", s, lat))
		}
	} else {
		if *latency != "" {
			return errors.New("--latency needs --synthetic: the index shard answers as fast as it searches")
		}
		src := cf.source(*corpusFile)
		dir, err := indexDir(*dataDir, src, part)
		if err != nil {
			return err
		}
		ix, err := openIndex(ctx, dir, src, part, log)
		if err != nil {
			return err
		}
		defer func() { _ = ix.Close() }() // read-only by now: nothing is lost if closing fails
		svcs = append(svcs, shard.NewServer(ix, shard.WithMaxQueryBytes(maxQueryBytes), shard.WithMaxTopK(maxTopK)))
		descriptions = append(descriptions, fmt.Sprintf("partition %s (%d passages)", part, ix.Info().Documents))
	}
	tracing, err := setupTracing(ctx, "gather-shard", true, log)
	if err != nil {
		return err
	}
	defer shutdownTracing(ctx, tracing, log)
	o := newObservability(tracing, log)
	opts, err := serverTLS(tlsCfg, "tls", log)
	if err != nil {
		return err
	}
	guard, err := access.New(accessCfg, log, access.NewMetrics(o.reg))
	if err != nil {
		return err
	}
	defer guard.Close()
	if !spec.IsZero() {
		log.Warn("injecting faults", "spec", spec.String())
	}
	stopCtx, cancel := graceContext(ctx, 5*time.Second)
	defer cancel()
	servers := make([]*grpcServer, 0, len(listens))
	defer func() {
		for _, g := range servers {
			g.Stop(stopCtx)
		}
	}()
	for i, addr := range listens {
		var (
			lis    net.Listener
			faults []grpc.StreamServerInterceptor
		)
		if spec.IsZero() {
			if lis, err = net.Listen("tcp", addr); err != nil {
				return fmt.Errorf("listen %s: %w", addr, err)
			}
		} else { // the fault listener tracks connections (and their bytes) so a fault can cut them
			flis, err := fault.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen %s: %w", addr, err)
			}
			lis, faults = flis, []grpc.StreamServerInterceptor{fault.NewInjector(spec, flis).StreamServerInterceptor()}
		}
		unary, stream := withAccess(guard, nil, faults)
		g, err := serveShard(lis, svcs[i], slices.Concat(opts, o.serverOptions(tracing, unary, stream))...)
		if err != nil {
			return err
		}
		servers = append(servers, g)
	}
	if *adminAddr != "" {
		a, err := newAdminServer(*adminAddr, o.reg, func() error {
			if servers[0].Draining() {
				return errors.New("draining")
			}
			return nil
		}, adminOptions{pprof: *pprofOn, tls: adminTLS, section: "admin_tls", log: log})
		if err != nil {
			return err
		}
		a.Start()
		defer a.Stop(stopCtx)
		log.Info("admin serving", "admin", a.Addr())
	}
	// Registered once serving, deregistered (deferred, so before the servers stop) on the way
	// out: a proxy never dials a shard that is not serving yet, and drops it before it drains.
	for i, g := range servers {
		deregister, err := rf.registerShard(ctx, corpus.Partition{Index: part.Index + i, Count: part.Count}, g.Addr(), o.reg, log)
		if err != nil {
			return err
		}
		defer func() { // its own grace: stopCtx's began when the shard started
			dctx, cancel := graceContext(ctx, 3*time.Second)
			defer cancel()
			deregister(dctx)
		}()
		log.Info("shard serving", "listen", g.Addr(), "tls", tlsCfg.Enabled(), "client_auth", string(tlsCfg.Mode()),
			"authz_policy", accessCfg.PolicyFile != "")
		fmt.Fprintf(stdout, "gather shard: %s serving gather.shard.v1.ShardService on %s\n", descriptions[i], g.Addr())
	}
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

// partitionListens returns the listen address of each of the n partitions from part on: listen
// itself for one; for more (synthetic shards only), listen's host with port 0 for each if its
// port is 0, else consecutive ports from listen's.
func partitionListens(listen string, part corpus.Partition, n int, synth bool) ([]string, error) {
	switch {
	case n == 1:
		return []string{listen}, nil
	case n < 1:
		return nil, fmt.Errorf("--partitions %d: give 1 or more", n)
	case !synth:
		return nil, fmt.Errorf("--partitions %d needs --synthetic: an index shard serves one partition", n)
	case part.Index+n > part.Count:
		return nil, fmt.Errorf("--partitions %d: partitions %d to %d do not exist in --partition %s (%d partitions)",
			n, part.Index, part.Index+n-1, part, part.Count)
	}
	host, portText, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 0 || port+n-1 > 65535 {
		return nil, fmt.Errorf("--listen %s: with --partitions %d, give port 0 (free ports) or a port from 1 to %d", listen, n, 65536-n)
	}
	out := make([]string, n)
	for i := range out {
		p := 0
		if port > 0 {
			p = port + i
		}
		out[i] = net.JoinHostPort(host, strconv.Itoa(p))
	}
	return out, nil
}

// queryLimitFlags defines --max-query-bytes and --max-top-k: a shard's limits, with the proxy's
// defaults and ceilings.
func queryLimitFlags(fs *flag.FlagSet, maxQueryBytes, maxTopK *int) {
	bounds.Range{Min: 1, Max: bounds.QueryBytesCeiling, Unit: bounds.Bytes, Why: "every query is analysed in full; a search query is words, not documents"}.
		IntVar(fs, maxQueryBytes, "max-query-bytes", bounds.DefaultMaxQueryBytes, "longest query accepted, in `bytes` (the proxy's max_query_bytes should not be larger)")
	bounds.Range{Min: 1, Max: bounds.TopKCeiling, Why: "the shard ranks and sends that many hits per query"}.
		IntVar(fs, maxTopK, "max-top-k", bounds.DefaultMaxTopK, "largest `top_k` accepted (the proxy's max_top_k should not be larger)")
}

// corpusFlags are the reading limits of a --corpus.
type corpusFlags struct{ maxLineBytes, maxBytes int }

func addCorpusFlags(fs *flag.FlagSet) *corpusFlags {
	cf := &corpusFlags{}
	bounds.Range{Min: 1 << 10, Max: 256 << 20, Unit: bounds.Bytes, Why: "a line is held in memory whole, and parsing takes several times its size"}.
		IntVar(fs, &cf.maxLineBytes, "corpus-max-line-bytes", corpus.DefaultMaxLineBytes, "longest corpus line (one document) accepted, in `bytes`")
	bounds.Range{Min: 1 << 20, Max: 64 << 30, Unit: bounds.Bytes, Why: "beyond that an index takes hours to build; split the corpus over more shards"}.
		IntVar(fs, &cf.maxBytes, "corpus-max-bytes", corpus.DefaultMaxBytes, "most corpus `bytes` read, after decompression")
	return cf
}

// source is the corpus in file (the bundled one when file is empty), read within the limits.
func (cf *corpusFlags) source(file string) corpus.Source {
	src := corpus.Default()
	if file != "" {
		src = corpus.File(file)
	}
	return src.WithLimits(corpus.Limits{MaxLineBytes: cf.maxLineBytes, MaxBytes: int64(cf.maxBytes)})
}

// indexDir is where a partition's index lives: DATA/<corpus digest>/<I>-of-<N>, so indexes of
// different corpora or partitionings never collide.
func indexDir(dataDir string, src corpus.Source, part corpus.Partition) (string, error) {
	dataDir, err := dataDirOrDefault(dataDir)
	if err != nil {
		return "", err
	}
	digest, err := src.Digest()
	if err != nil {
		return "", fmt.Errorf("corpus %s: %w", src.Name(), err)
	}
	return filepath.Join(dataDir, digest[:16], fmt.Sprintf("%d-of-%d", part.Index, part.Count)), nil
}

// openIndex opens or builds one partition's index; the shard package logs the build's progress.
// dataDirOrDefault is --data-dir, or by default gather/index under the user cache directory.
func dataDirOrDefault(dataDir string) (string, error) {
	if dataDir != "" {
		return dataDir, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no --data-dir given and no user cache directory: %w", err)
	}
	return filepath.Join(cache, "gather", "index"), nil
}

func openIndex(ctx context.Context, dir string, src corpus.Source, part corpus.Partition, log *slog.Logger) (*shard.Index, error) {
	return shard.Open(ctx, dir, src, part, shard.WithLogger(log))
}

// shardMaxRequestBytes bounds what a shard reads of one request: a SearchRequest is a query and
// a number, and no shard accepts a query longer than bounds.QueryBytesCeiling. grpc-go would
// read 4 MiB.
const shardMaxRequestBytes = bounds.QueryBytesCeiling + 1<<10

// serveShard serves svc as a ShardService on lis, with gather's default server keepalive, a small
// receive limit (shardMaxRequestBytes) and the given extra options (interceptors). On error it
// closes lis.
func serveShard(lis net.Listener, svc shardv1.ShardServiceServer, opts ...grpc.ServerOption) (*grpcServer, error) {
	opts = append(append(liveness.Server{}.ServerOptions(), grpc.MaxRecvMsgSize(shardMaxRequestBytes)), opts...)
	g, err := serveOn(lis, opts, func(s *grpc.Server) { shardv1.RegisterShardServiceServer(s, svc) },
		shardv1.ShardService_ServiceDesc.ServiceName)
	if err != nil {
		_ = lis.Close()
		return nil, err
	}
	g.Start()
	return g, nil
}
