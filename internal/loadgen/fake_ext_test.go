package loadgen_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
)

// fake is a QueryService that answers by query text after a fixed delay:
//
//	"degraded"     an answer with coverage.degraded
//	"shed"         RESOURCE_EXHAUSTED
//	"unavailable"  UNAVAILABLE
//	"invalid"      INVALID_ARGUMENT
//	"hang"         nothing until the call's context ends
//	anything else  an answer with full coverage
type fake struct {
	queryv1.UnimplementedQueryServiceServer
	delay time.Duration

	calls, active, maxActive atomic.Int64
	last                     atomic.Pointer[queryv1.SearchRequest]
}

func (f *fake) Search(ctx context.Context, req *queryv1.SearchRequest) (*queryv1.SearchResponse, error) {
	f.calls.Add(1)
	f.last.Store(req)
	n := f.active.Add(1)
	defer f.active.Add(-1)
	for m := f.maxActive.Load(); n > m && !f.maxActive.CompareAndSwap(m, n); m = f.maxActive.Load() {
	}
	if f.delay > 0 {
		t := time.NewTimer(f.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	// Both shards report the whole delay as their latency, one of them a little less.
	shards := []*queryv1.ShardResult{
		{Shard: "s0", Status: queryv1.ShardStatus_SHARD_STATUS_OK, Latency: durationpb.New(f.delay)},
		{Shard: "s1", Status: queryv1.ShardStatus_SHARD_STATUS_OK, Latency: durationpb.New(f.delay / 2)},
	}
	switch req.GetQuery() {
	case "degraded":
		return &queryv1.SearchResponse{
			Coverage: &queryv1.Coverage{ShardsTotal: 2, ShardsSucceeded: 1, Degraded: true},
			Shards:   shards,
		}, nil
	case "shed":
		return nil, status.Error(codes.ResourceExhausted, "proxy at capacity")
	case "unavailable":
		return nil, status.Error(codes.Unavailable, "no shard answered")
	case "invalid":
		return nil, status.Error(codes.InvalidArgument, "bad query")
	case "hang":
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &queryv1.SearchResponse{
		Hits:     []*queryv1.Hit{{DocId: "d1", Score: 1, Shard: "s0"}},
		Coverage: &queryv1.Coverage{ShardsTotal: 2, ShardsSucceeded: 2},
		Shards:   shards,
	}, nil
}

// serve runs f on a loopback port until the test ends and returns its address and a client.
func serve(t *testing.T, f *fake) (string, queryv1.QueryServiceClient) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	queryv1.RegisterQueryServiceServer(srv, f)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
		wg.Wait()
	})
	return lis.Addr().String(), queryv1.NewQueryServiceClient(conn)
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
