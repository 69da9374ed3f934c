package fault_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/status"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/fault"
)

// batches is how many messages testShard sends when nothing interferes.
const batches = 5

// long bounds every wait in these tests: far longer than anything should take, short enough
// that a bug fails the test instead of hanging it.
const long = 20 * time.Second

// testShard streams batches messages of two hits each, in the contract's order, and counts its
// calls.
type testShard struct {
	shardv1.UnimplementedShardServiceServer
	started   atomic.Int64 // handler calls begun
	ended     atomic.Int64 // handler calls returned
	cancelled atomic.Int64 // handler calls that returned with their context ended
}

func (s *testShard) Search(_ *shardv1.SearchRequest, stream grpc.ServerStreamingServer[shardv1.SearchResponse]) error {
	s.started.Add(1)
	defer func() {
		if stream.Context().Err() != nil {
			s.cancelled.Add(1)
		}
		s.ended.Add(1)
	}()
	score := 100.0
	for i := range batches {
		msg := &shardv1.SearchResponse{}
		if i == 0 {
			msg.TotalMatches, msg.Documents = 2*batches, 1000
		}
		for j := range 2 {
			msg.Hits = append(msg.Hits, &shardv1.Hit{DocId: fmt.Sprintf("doc-%d-%d", i, j), Score: score, Text: "some passage text"})
			score -= 0.5
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
	return nil
}

type fixture struct {
	lis    *fault.Listener
	inj    *fault.Injector
	shard  *testShard
	client shardv1.ShardServiceClient
}

// start serves a testShard behind an Injector with spec on a loopback port, and dials it.
func start(t *testing.T, spec fault.Spec) *fixture {
	t.Helper()
	lis := listen(t)
	return serve(t, lis, fault.NewInjector(spec, lis))
}

func listen(t *testing.T) *fault.Listener {
	t.Helper()
	lis, err := fault.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// serve serves a testShard behind inj on lis until the test ends, and dials it.
func serve(t *testing.T, lis *fault.Listener, inj *fault.Injector) *fixture {
	t.Helper()
	f := &fixture{lis: lis, inj: inj, shard: &testShard{}}
	srv := grpc.NewServer(inj.ServerOption())
	shardv1.RegisterShardServiceServer(srv, f.shard)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		srv.Stop()
		<-served
	})
	f.client = shardv1.NewShardServiceClient(cc)
	return f
}

// search calls Search and reads the stream to its end. It returns the number of messages
// received and the call's status code.
func (f *fixture) search(ctx context.Context) (int, codes.Code, error) {
	st, err := f.client.Search(ctx, &shardv1.SearchRequest{Query: "q", TopK: 100})
	if err != nil {
		return 0, status.Code(err), err
	}
	n := 0
	for {
		_, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return n, codes.OK, nil
		}
		if err != nil {
			return n, status.Code(err), err
		}
		n++
	}
}

// mustSearch is search with a generous deadline, failing the test unless the call gets exactly
// wantN messages and ends with wantCode. It returns the call's status.
func (f *fixture) mustSearch(t *testing.T, wantN int, wantCode codes.Code) *status.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), long)
	defer cancel()
	n, code, err := f.search(ctx)
	if n != wantN || code != wantCode {
		t.Fatalf("Search: got %d messages then %v (%v), want %d messages then %v", n, code, err, wantN, wantCode)
	}
	return status.Convert(err)
}

// eventually polls cond until it holds, failing the test after long.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(long)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after %s", what, long)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNoFault(t *testing.T) {
	t.Parallel()
	f := start(t, fault.Spec{})
	f.mustSearch(t, batches, codes.OK)
	if got := f.inj.Calls(); got != 1 {
		t.Errorf("Calls() = %d, want 1", got)
	}
	if got := f.inj.Faulted(); got != 0 {
		t.Errorf("Faulted() = %d, want 0", got)
	}
}

func TestDelay(t *testing.T) {
	t.Parallel()
	f := start(t, fault.Spec{Delay: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if n, code, err := f.search(ctx); n != 0 || code != codes.DeadlineExceeded {
		t.Fatalf("Search with a deadline before the delay ends: got %d messages then %v, want none then DeadlineExceeded", n, err)
	}
	f.inj.Set(fault.Spec{})
	f.mustSearch(t, batches, codes.OK)
	if got := f.shard.started.Load(); got != 1 {
		t.Errorf("handler called %d times, want once: not for the delayed call whose deadline passed", got)
	}
}

func TestBatchDelay(t *testing.T) {
	t.Parallel()
	f := start(t, fault.Spec{BatchDelay: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if n, code, err := f.search(ctx); n != 0 || code != codes.DeadlineExceeded {
		t.Fatalf("Search with a deadline before the first batch delay ends: got %d messages then %v, want none then DeadlineExceeded", n, err)
	}
	// The handler was blocked in its first Send; the call's end must release it.
	eventually(t, "handler returned", func() bool { return f.shard.ended.Load() == 1 })
	if got := f.shard.cancelled.Load(); got != 1 {
		t.Errorf("handler returned %d times with its context ended, want 1", got)
	}
}

func TestHang(t *testing.T) {
	t.Parallel()
	for _, after := range []int{0, 2} {
		t.Run(fmt.Sprint("after=", after), func(t *testing.T) {
			t.Parallel()
			f := start(t, fault.Spec{Hang: true, HangAfter: after})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			st, err := f.client.Search(ctx, &shardv1.SearchRequest{Query: "q", TopK: 100})
			if err != nil {
				t.Fatal(err)
			}
			for i := range after {
				if _, err := st.Recv(); err != nil {
					t.Fatalf("Recv %d: %v", i, err)
				}
			}
			// The shard has sent all it will: its handler is (or soon will be) blocked in a send.
			eventually(t, "handler started", func() bool { return f.shard.started.Load() == 1 })
			if got := f.shard.ended.Load(); got != 0 {
				t.Fatalf("handler of a hung call returned before the call was cancelled")
			}
			cancel()
			if _, err := st.Recv(); status.Code(err) != codes.Canceled {
				t.Fatalf("Recv after cancel: %v, want Canceled", err)
			}
			eventually(t, "hung handler returned", func() bool { return f.shard.ended.Load() == 1 })
			if got := f.shard.cancelled.Load(); got != 1 {
				t.Errorf("handler returned %d times with its context ended, want 1", got)
			}
		})
	}
}

// TestHangDeadline: a call hung after its first message ends at its deadline. The deadline is
// long enough for the first message to arrive on a loaded machine (100ms was not, in CI).
func TestHangDeadline(t *testing.T) {
	t.Parallel()
	f := start(t, fault.Spec{Hang: true, HangAfter: 1})
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if n, code, err := f.search(ctx); n != 1 || code != codes.DeadlineExceeded {
		t.Fatalf("Search: got %d messages then %v, want 1 then DeadlineExceeded", n, err)
	}
	eventually(t, "hung handler returned", func() bool { return f.shard.ended.Load() == 1 })
}

func TestCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		spec    string
		wantN   int
		want    codes.Code
		wantMsg string
	}{
		{"code=unavailable", 0, codes.Unavailable, "fault: injected unavailable"},
		{"code=resource_exhausted,code-after=2,message=shedding load", 2, codes.ResourceExhausted, "shedding load"},
		{"code=internal,code-after=5", batches, codes.Internal, "fault: injected internal"},
		// A stream shorter than the count still ends with the code.
		{"code=data_loss,code-after=99", batches, codes.DataLoss, "fault: injected data_loss"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			t.Parallel()
			spec, err := fault.ParseSpec(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			f := start(t, spec)
			st := f.mustSearch(t, tt.wantN, tt.want)
			if got := st.Message(); got != tt.wantMsg {
				t.Errorf("status message = %q, want %q", got, tt.wantMsg)
			}
			eventually(t, "handler returned", func() bool { return f.shard.ended.Load() == 1 })
			// The connection survives a status error.
			if got := f.lis.Conns(); got != 1 {
				t.Errorf("Conns() = %d after a status error, want 1", got)
			}
		})
	}
}

func TestCut(t *testing.T) {
	t.Parallel()
	tests := []struct {
		spec  fault.Spec
		wantN int
	}{
		{fault.Spec{Close: true}, 0},
		{fault.Spec{Close: true, CloseAfter: 1}, 1},
		{fault.Spec{Close: true, CloseAfter: 3}, 3},
		{fault.Spec{Close: true, CloseAfter: batches}, batches}, // after the last message, before the status
		{fault.Spec{Reset: true}, 0},
		{fault.Spec{Reset: true, ResetAfter: 1}, 1},
		{fault.Spec{Reset: true, ResetAfter: 4}, 4},
		{fault.Spec{Reset: true, ResetAfter: 99}, batches},
		{fault.Spec{Close: true, CloseAfter: 3, Reset: true, ResetAfter: 2}, 2}, // the first due wins
	}
	for _, tt := range tests {
		t.Run(tt.spec.String(), func(t *testing.T) {
			t.Parallel()
			f := start(t, tt.spec)
			f.mustSearch(t, tt.wantN, codes.Unavailable)
			// The fault forgets the connection as it cuts it; the client does not reconnect
			// until it is asked for another call.
			if got := f.lis.Conns(); got != 0 {
				t.Errorf("Conns() = %d after the cut, want 0", got)
			}
			eventually(t, "handler returned", func() bool { return f.shard.ended.Load() == 1 })

			// Healthy again: the client reconnects and the call succeeds.
			f.inj.Set(fault.Spec{})
			f.mustSearch(t, batches, codes.OK)
			if got := f.lis.Conns(); got != 1 {
				t.Errorf("Conns() = %d after reconnecting, want 1", got)
			}
		})
	}
}

// TestCutRepeated makes the same cut many times over, on one client that reconnects each time,
// to catch a cut that races the messages before it.
func TestCutRepeated(t *testing.T) {
	t.Parallel()
	for _, spec := range []fault.Spec{{Close: true, CloseAfter: 2}, {Reset: true, ResetAfter: 2}} {
		t.Run(spec.String(), func(t *testing.T) {
			t.Parallel()
			f := start(t, spec)
			for range 25 {
				f.mustSearch(t, 2, codes.Unavailable)
			}
		})
	}
}

func TestEvery(t *testing.T) {
	t.Parallel()
	f := start(t, fault.Spec{Code: codes.Unavailable, Every: 3})
	var got []codes.Code
	for range 6 {
		ctx, cancel := context.WithTimeout(t.Context(), long)
		_, code, _ := f.search(ctx)
		cancel()
		got = append(got, code)
	}
	want := []codes.Code{codes.OK, codes.OK, codes.Unavailable, codes.OK, codes.OK, codes.Unavailable}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("codes of 6 calls with every=3: got %v, want %v", got, want)
	}
	if c, fl := f.inj.Calls(), f.inj.Faulted(); c != 6 || fl != 2 {
		t.Errorf("Calls(), Faulted() = %d, %d; want 6, 2", c, fl)
	}

	// Set restarts the count.
	f.inj.Set(fault.Spec{Code: codes.Aborted, Every: 2})
	f.mustSearch(t, batches, codes.OK)
	f.mustSearch(t, 0, codes.Aborted)
}

func TestSetWhileHung(t *testing.T) {
	t.Parallel()
	// A running call keeps the spec it started with; later calls get the new one.
	f := start(t, fault.Spec{Hang: true, HangAfter: 1})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	st, err := f.client.Search(ctx, &shardv1.SearchRequest{Query: "q", TopK: 100})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	f.inj.Set(fault.Spec{})
	f.mustSearch(t, batches, codes.OK)
	if got := f.shard.ended.Load(); got != 1 {
		t.Fatalf("%d handlers returned, want 1: the healthy call's, not the hung one's", got)
	}
	cancel()
	eventually(t, "hung handler returned", func() bool { return f.shard.ended.Load() == 2 })
}

func TestResetAll(t *testing.T) {
	t.Parallel()
	// Two calls hang on two connections; cutting everything ends both, on the client with
	// UNAVAILABLE and on the server by ending the handlers' contexts.
	f := start(t, fault.Spec{Hang: true, HangAfter: 1})
	g := start(t, fault.Spec{Hang: true, HangAfter: 1})
	ctx, cancel := context.WithTimeout(t.Context(), long)
	defer cancel()
	var streams []grpc.ServerStreamingClient[shardv1.SearchResponse]
	for _, fx := range []*fixture{f, g} {
		st, err := fx.client.Search(ctx, &shardv1.SearchRequest{Query: "q", TopK: 100})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	if got := f.lis.ResetAll(); got != 1 {
		t.Errorf("ResetAll() = %d, want 1", got)
	}
	if got := g.lis.CloseAll(); got != 1 {
		t.Errorf("CloseAll() = %d, want 1", got)
	}
	for i, st := range streams {
		if _, err := st.Recv(); status.Code(err) != codes.Unavailable {
			t.Errorf("stream %d: Recv after the cut: %v, want Unavailable", i, err)
		}
	}
	for _, fx := range []*fixture{f, g} {
		eventually(t, "hung handler returned", func() bool { return fx.shard.ended.Load() == 1 })
		if got := fx.lis.Conns(); got != 0 {
			t.Errorf("Conns() = %d after the cut, want 0", got)
		}
	}
}

func TestCutWithoutListener(t *testing.T) {
	t.Parallel()
	// An injector without the server's Listener cannot cut its connections: the call fails with
	// Internal instead of silently succeeding.
	f := serve(t, listen(t), fault.NewInjector(fault.Spec{Close: true, CloseAfter: 1}, nil))
	f.mustSearch(t, 1, codes.Internal)
}

func TestCutCompressed(t *testing.T) {
	t.Parallel()
	// Under compression the bytes on the wire cannot be predicted, so the cut does not wait for
	// the messages before it: the client gets at most CloseAfter of them, then UNAVAILABLE.
	f := start(t, fault.Spec{Close: true, CloseAfter: 2})
	ctx, cancel := context.WithTimeout(t.Context(), long)
	defer cancel()
	st, err := f.client.Search(ctx, &shardv1.SearchRequest{Query: "q", TopK: 100}, grpc.UseCompressor(gzip.Name))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ; ; n++ {
		if _, err = st.Recv(); err != nil {
			break
		}
	}
	if n > 2 || status.Code(err) != codes.Unavailable {
		t.Fatalf("Search: got %d messages then %v, want at most 2 then Unavailable", n, err)
	}
	eventually(t, "handler returned", func() bool { return f.shard.ended.Load() == 1 })
}
