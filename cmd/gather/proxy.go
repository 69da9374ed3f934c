package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
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
	path := fs.String("config", "", "YAML config `file` (flags override it)")
	listen := fs.String("listen", "", "QueryService `address` (default 127.0.0.1:7070)")
	admin := fs.String("admin", "", "admin HTTP `address` for /metrics and /healthz (default 127.0.0.1:9090)")
	var shards shardFlags
	fs.Var(&shards, "shard", "a shard as `NAME=ADDR[,ADDR...]` (replicas in order of preference); repeat for each shard")
	shardTimeout := fs.Duration("shard-timeout", 0, "per-shard timeout (default 2s)")
	idleTimeout := fs.Duration("idle-timeout", 0, "longest silence between two frames of a shard stream (default 1s)")
	maxTopK := fs.Uint("max-top-k", 0, "largest top_k accepted (default 1000)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("proxy: unexpected arguments %q", fs.Args())
	}
	cfg := config.Defaults()
	if *path != "" {
		var err error
		if cfg, err = config.Load(*path); err != nil {
			return err
		}
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
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("proxy config:\n%w", err)
	}
	log := newLogger(stderr)
	p, err := startProxy(cfg, log)
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

func startProxy(cfg config.Proxy, log *slog.Logger) (*proxyServer, error) {
	fan, err := fanout.New(cfg.Topology(), cfg.Fanout())
	if err != nil {
		return nil, err
	}
	svc := proxy.New(fan, cfg.Limits())
	g, err := newGRPCServer(cfg.Listen, func(s *grpc.Server) { queryv1.RegisterQueryServiceServer(s, svc) },
		queryv1.QueryService_ServiceDesc.ServiceName)
	if err != nil {
		_ = fan.Close()
		return nil, err
	}
	reg := prometheus.NewRegistry()
	a, err := newAdminServer(cfg.Admin, reg)
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

// Stop drains the QueryService until ctx ends, then closes the shard connections.
func (p *proxyServer) Stop(ctx context.Context) {
	p.grpc.Stop(ctx)
	p.admin.Stop(ctx)
	_ = p.fan.Close() // connections are gone either way; nothing to report to anyone
}
