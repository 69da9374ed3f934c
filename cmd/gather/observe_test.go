package main

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/metrictest"
	"github.com/gatherproxy/gather/internal/panicguard"
	"github.com/gatherproxy/gather/internal/telemetry"
)

// panicky is a shard whose Search panics on the query "panic", as one over a corrupt index did.
type panicky struct {
	shardv1.UnimplementedShardServiceServer
}

func (panicky) Search(req *shardv1.SearchRequest, stream grpc.ServerStreamingServer[shardv1.SearchResponse]) error {
	if req.GetQuery() == "panic" {
		var hits []*shardv1.Hit
		_ = hits[len(req.GetQuery())] // index out of range
	}
	return stream.Send(&shardv1.SearchResponse{Hits: []*shardv1.Hit{{DocId: "a", Score: 1}}})
}

// TestServerOptionsRecoverPanics checks the wiring every gather server gets (serverOptions, as
// gather shard, proxy and demo use it): a panicking handler answers INTERNAL, the RED and
// lifecycle metrics record the call as failed, the panic is counted and logged, and the server
// goes on serving.
func TestServerOptionsRecoverPanics(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(syncWriter{&mu, &logs}, nil))
	o := newObservability(telemetry.Disabled(), log)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := serveShard(lis, panicky{}, o.serverOptions(o.tracing, nil, nil)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Stop(t.Context()) })
	c := shardv1.NewShardServiceClient(dial(t, g.Addr()))

	call := func(q string) error {
		st, err := c.Search(t.Context(), &shardv1.SearchRequest{Query: q, TopK: 1})
		if err != nil {
			return err
		}
		for {
			if _, err := st.Recv(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
	err = call("panic")
	if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != panicguard.Message {
		t.Fatalf("got %v, want INTERNAL %q", err, panicguard.Message)
	}
	if err := call("union"); err != nil {
		t.Fatalf("the next call: %v", err)
	}

	for _, tc := range []struct {
		family string
		labels map[string]string
	}{
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Search", "grpc_code": "Internal"}},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Search", "grpc_code": "OK"}},
		{"gather_grpc_rpc_ends_total", map[string]string{"side": "server", "reason": "failed"}},
		{"gather_grpc_rpc_ends_total", map[string]string{"side": "server", "reason": "completed"}},
		{"gather_grpc_panics_total", map[string]string{"method": "/gather.shard.v1.ShardService/Search"}},
	} {
		if got := metrictest.Sum(t, o.reg, tc.family, tc.labels); got != 1 {
			t.Errorf("%s%v = %v, want 1", tc.family, tc.labels, got)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "index out of range") || !strings.Contains(logs.String(), "panicky.Search") {
		t.Errorf("the log lacks the panic and its stack:\n%s", logs.String())
	}
}
