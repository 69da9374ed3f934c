package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/access"
	"github.com/gatherproxy/gather/internal/corpus"
	"github.com/gatherproxy/gather/internal/fault"
	"github.com/gatherproxy/gather/internal/liveness"
	"github.com/gatherproxy/gather/internal/shard"
	"github.com/gatherproxy/gather/internal/synthetic"
	"github.com/gatherproxy/gather/internal/tlsconf"
)

func runShard(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("shard", "--listen ADDR --partition I/N [--corpus FILE] [--data-dir DIR]", stderr)
	listen := fs.String("listen", "127.0.0.1:7071", "ShardService `address`")
	partition := fs.String("partition", "0/1", "the partition to serve, `I/N` (0-based I of N partitions)")
	corpusFile := fs.String("corpus", "", "JSON Lines `file` (gzip or plain) with id, text and other fields (default: the bundled State of the Union corpus)")
	dataDir := fs.String("data-dir", "", "`directory` for the built indexes (default: gather/index under the user cache directory)")
	faultSpec := fs.String("fault", "", "misbehave on purpose, for fault tests: a `spec` such as 'delay=200ms,every=3', 'hang', 'close-after=1', 'reset-after=2', 'code=unavailable' (see internal/fault)")
	adminAddr := fs.String("admin", "", "admin HTTP `address` for /metrics, /healthz, /readyz, channelz and (with --pprof) pprof (default: none)")
	synth := fs.Bool("synthetic", false, "serve deterministic synthetic hits with no index (for measuring the proxy), instead of the corpus")
	latency := fs.String("latency", "", "with --synthetic: delay before answering, `spec` "+synthetic.LatencySyntax)
	seed := fs.Uint64("seed", 0, "with --synthetic: seed of the hits and of the latency (default: the partition index + 1)")
	textBytes := fs.Int("text-bytes", synthetic.DefaultTextBytes, "with --synthetic: bytes of text per hit")
	tlsFlags := tlsconf.AddServerFlags(fs, "tls", "the ShardService")
	adminTLSFlags := tlsconf.AddServerFlags(fs, "admin-tls", "the admin port")
	accessFlags := addAccessFlags(fs, false)
	pprofOn := fs.Bool("pprof", false, "serve /debug/pprof/ on the admin port")
	lf := addLogFlags(fs)
	if err := fs.Parse(args); err != nil {
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
		svc         shardv1.ShardServiceServer
		description string
	)
	if *synth {
		if *seed == 0 {
			*seed = uint64(part.Index) + 1
		}
		lat, err := synthetic.ParseLatency(*latency, *seed)
		if err != nil {
			return fmt.Errorf("--latency: %w", err)
		}
		svc = synthetic.New(*seed, synthetic.WithLatency(lat), synthetic.WithTextBytes(*textBytes))
		description = fmt.Sprintf("synthetic seed %d, latency %v", *seed, lat)
	} else {
		if *latency != "" {
			return errors.New("--latency needs --synthetic: the index shard answers as fast as it searches")
		}
		src := corpusSource(*corpusFile)
		dir, err := indexDir(*dataDir, src, part)
		if err != nil {
			return err
		}
		ix, err := openIndex(ctx, dir, src, part, log)
		if err != nil {
			return err
		}
		defer func() { _ = ix.Close() }() // read-only by now: nothing is lost if closing fails
		svc = shard.NewServer(ix)
		description = fmt.Sprintf("partition %s (%d passages)", part, ix.Info().Documents)
	}
	tracing, err := setupTracing(ctx, "gather-shard", true, log)
	if err != nil {
		return err
	}
	defer shutdownTracing(ctx, tracing, log)
	o := newObservability(tracing)
	opts, err := serverTLS(tlsCfg, "tls", log)
	if err != nil {
		return err
	}
	guard, err := access.New(accessCfg, log, access.NewMetrics(o.reg))
	if err != nil {
		return err
	}
	defer guard.Close()
	var (
		lis    net.Listener
		faults []grpc.StreamServerInterceptor
	)
	if spec.IsZero() {
		if lis, err = net.Listen("tcp", *listen); err != nil {
			return fmt.Errorf("listen %s: %w", *listen, err)
		}
	} else { // the fault listener tracks connections (and their bytes) so a fault can cut them
		flis, err := fault.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("listen %s: %w", *listen, err)
		}
		lis, faults = flis, []grpc.StreamServerInterceptor{fault.NewInjector(spec, flis).StreamServerInterceptor()}
		log.Warn("injecting faults", "spec", spec.String())
	}
	unary, stream := withAccess(guard, nil, faults)
	g := serveShard(lis, svc, append(opts, o.serverOptions(tracing, unary, stream)...)...)
	stopCtx, cancel := graceContext(ctx, 5*time.Second)
	defer cancel()
	defer g.Stop(stopCtx)
	if *adminAddr != "" {
		a, err := newAdminServer(*adminAddr, o.reg, func() error {
			if g.Draining() {
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
	log.Info("shard serving", "listen", g.Addr(), "tls", tlsCfg.Enabled(), "client_auth", string(tlsCfg.Mode()),
		"authz_policy", accessCfg.PolicyFile != "")
	fmt.Fprintf(stdout, "gather shard: %s serving gather.shard.v1.ShardService on %s\n", description, g.Addr())
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

func corpusSource(file string) corpus.Source {
	if file == "" {
		return corpus.Default()
	}
	return corpus.File(file)
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
// a number, and the proxy sends no query longer than its max_query_bytes (1 KiB by default).
// grpc-go would read 4 MiB.
const shardMaxRequestBytes = 64 << 10

// serveShard serves svc as a ShardService on lis, with gather's default server keepalive, a small
// receive limit (shardMaxRequestBytes) and the given extra options (interceptors).
func serveShard(lis net.Listener, svc shardv1.ShardServiceServer, opts ...grpc.ServerOption) *grpcServer {
	opts = append(append(liveness.Server{}.ServerOptions(), grpc.MaxRecvMsgSize(shardMaxRequestBytes)), opts...)
	g := serveOn(lis, opts, func(s *grpc.Server) { shardv1.RegisterShardServiceServer(s, svc) },
		shardv1.ShardService_ServiceDesc.ServiceName)
	g.Start()
	return g
}
