package main

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/config"
	"github.com/gatherproxy/gather/internal/shardtest"
	"github.com/gatherproxy/gather/internal/synthetic"
	"github.com/gatherproxy/gather/internal/telemetry"
)

// TestShardServerReceiveLimit: a shard reads no request over shardMaxRequestBytes.
func TestShardServerReceiveLimit(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := serveShard(lis, synthetic.New(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Stop(t.Context()) })
	client := shardv1.NewShardServiceClient(dial(t, g.Addr()))
	if _, err := shardtest.Collect(t.Context(), client, strings.Repeat("q", 100<<10), 5); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a 100 KiB query: got %v, want ResourceExhausted", err)
	}
	if msgs, err := shardtest.Collect(t.Context(), client, "union", 5); err != nil || len(shardtest.HitsOf(msgs)) != 5 {
		t.Errorf("a short query: %d hits, %v; want 5", len(shardtest.HitsOf(msgs)), err)
	}
}

// TestProxyWiresSizeLimits: `gather proxy` serves with the configured size limits: an
// oversized request is refused by the transport, and max_answer_bytes cuts the answer.
func TestProxyWiresSizeLimits(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sh, err := serveShard(lis, synthetic.New(1, synthetic.WithTextBytes(2000)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Stop(t.Context()) })
	cfg := config.Proxy{Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", MaxAnswerBytes: 64 << 10,
		Shards: []config.Shard{{Name: "s0", Replicas: []string{sh.Addr()}}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := startProxy(cfg, newObservability(telemetry.Disabled(), log), log, false, callerInterceptors{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(t.Context()) })
	client := queryv1.NewQueryServiceClient(dial(t, p.grpc.Addr()))
	if _, err := client.Search(t.Context(), &queryv1.SearchRequest{Query: strings.Repeat("q", 3<<20), TopK: 1}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a 3 MiB query: got %v, want ResourceExhausted", err)
	}
	resp, err := client.Search(t.Context(), &queryv1.SearchRequest{Query: "union", TopK: 100})
	if err != nil || !resp.GetTruncated() || len(resp.GetHits()) == 0 || len(resp.GetHits()) >= 100 {
		t.Errorf("top_k 100 of 2 KB hits under 64 KiB: %d hits, truncated %v, %v; want a cut answer", len(resp.GetHits()), resp.GetTruncated(), err)
	}
}
