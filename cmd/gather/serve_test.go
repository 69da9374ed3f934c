package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gatherproxy/gather/internal/config"
	"github.com/gatherproxy/gather/internal/synthetic"
	"github.com/gatherproxy/gather/internal/telemetry"
	"github.com/gatherproxy/gather/internal/wirecodec/wiretest"
)

// TestInvalidUTF8 runs the proxy and a shard as gather serves them and sends each a query that
// is not UTF-8: both answer INVALID_ARGUMENT (grpc-go's own codec would answer INTERNAL).
func TestInvalidUTF8(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	o := newObservability(telemetry.Disabled(), log)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sh, err := serveShard(lis, synthetic.New(1), o.serverOptions(o.tracing, nil, nil)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Stop(t.Context()) })
	cfg := config.Defaults()
	cfg.Listen, cfg.Admin = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Shards = []config.Shard{{Name: "s0", Replicas: []string{sh.Addr()}}}
	p, err := startProxy(cfg, o, log, false, callerInterceptors{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(t.Context()) })

	req := wiretest.SearchRequest("caf\xe9 au lait", 3) // Latin-1, not UTF-8
	_, searchErr := wiretest.Unary(t.Context(), dial(t, p.grpc.Addr()), "/gather.query.v1.QueryService/Search", req)
	_, streamErr := wiretest.ServerStream(t.Context(), dial(t, p.grpc.Addr()), "/gather.query.v1.QueryService/SearchStream", req)
	_, shardErr := wiretest.ServerStream(t.Context(), dial(t, sh.Addr()), "/gather.shard.v1.ShardService/Search", req)
	for what, err := range map[string]error{"proxy Search": searchErr, "proxy SearchStream": streamErr, "shard Search": shardErr} {
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "query is not valid UTF-8 (bad byte at offset 3)") {
			t.Errorf("%s: got %v, want INVALID_ARGUMENT saying where the query is not UTF-8", what, err)
		}
	}
}

// TestGraceBeginsAtShutdown: a grace context made at start-up (a deferred stop) gives the whole
// grace to the drain when the shutdown comes, however long the process ran before it; with a
// timer from its creation, a shard that served longer than its grace stopped without draining.
func TestGraceBeginsAtShutdown(t *testing.T) {
	parent, shutdown := context.WithCancel(t.Context())
	defer shutdown()
	const grace = 100 * time.Millisecond
	ctx, cancel := graceContext(parent, grace)
	defer cancel()
	time.Sleep(3 * grace) // serving, longer than the grace
	if err := ctx.Err(); err != nil {
		t.Fatalf("before the shutdown: %v, want the grace not started", err)
	}
	shutdown()
	start := time.Now()
	<-ctx.Done()
	if waited := time.Since(start); waited < grace {
		t.Errorf("the grace ended %v after the shutdown, want at least %v", waited, grace)
	}

	ctx2, cancel2 := graceContext(t.Context(), time.Hour)
	cancel2()
	if ctx2.Err() == nil {
		t.Error("cancel did not end the grace context")
	}
}
