package lifecycle_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/lifecycle"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const method = "/gather.shard.v1.ShardService/Search"

// service behaves by query: "ok" sends a batch and ends, "hang" waits for the client to go,
// "linger" also keeps running after the client went until release is closed, "stall" sends
// until flow control blocks it, through a lifecycle.Sender.
type service struct {
	shardv1.UnimplementedShardServiceServer
	release chan struct{}
	stalled chan error
}

func (s *service) Search(req *shardv1.SearchRequest, stream shardv1.ShardService_SearchServer) error {
	ctx := stream.Context()
	switch req.GetQuery() {
	case "hang":
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	case "linger":
		<-ctx.Done()
		<-s.release
		return status.FromContextError(ctx.Err()).Err()
	case "stall":
		snd := lifecycle.NewSender(stream, 100*time.Millisecond)
		defer snd.Close()
		big := &shardv1.SearchResponse{Hits: []*shardv1.Hit{{DocId: "x", Text: strings.Repeat("y", 64<<10)}}}
		for {
			if err := snd.Send(ctx, big); err != nil {
				s.stalled <- err
				return err
			}
		}
	}
	return stream.Send(&shardv1.SearchResponse{Hits: []*shardv1.Hit{{DocId: "a", Score: 1}}})
}

type env struct {
	server, client *lifecycle.Metrics
	sreg, creg     *prometheus.Registry
	svc            *service
	shard          shardv1.ShardServiceClient
}

func start(t *testing.T) *env {
	t.Helper()
	e := &env{sreg: prometheus.NewRegistry(), creg: prometheus.NewRegistry(),
		svc: &service{release: make(chan struct{}), stalled: make(chan error, 1)}}
	e.server, e.client = lifecycle.New(e.sreg), lifecycle.New(e.creg)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ChainStreamInterceptor(e.server.StreamServerInterceptor()),
		grpc.ChainUnaryInterceptor(e.server.UnaryServerInterceptor()))
	shardv1.RegisterShardServiceServer(srv, e.svc)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainStreamInterceptor(e.client.StreamClientInterceptor()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
		<-done
	})
	// Connect before any test starts its clock: a call with a short deadline must time out in
	// the handler, not while the connection is still being made (seen on a loaded machine).
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn.Connect()
	for st := conn.GetState(); st != connectivity.Ready; st = conn.GetState() {
		if !conn.WaitForStateChange(ctx, st) {
			t.Fatalf("connection to the test server not ready: %v", st)
		}
	}
	e.shard = shardv1.NewShardServiceClient(conn)
	return e
}

func ends(reg *prometheus.Registry, side, reason string) float64 {
	return counterValue(reg, "gather_grpc_rpc_ends_total", map[string]string{"side": side, "method": method, "reason": reason})
}

// counterValue reads one sample from a registry; 0 if absent.
func counterValue(reg *prometheus.Registry, name string, labels map[string]string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func recvAll(st grpc.ServerStreamingClient[shardv1.SearchResponse]) error {
	for {
		if _, err := st.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func TestCompleted(t *testing.T) {
	t.Parallel()
	e := start(t)
	st, err := e.shard.Search(t.Context(), &shardv1.SearchRequest{Query: "ok", TopK: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := recvAll(st); err != nil {
		t.Fatal(err)
	}
	eventually(t, "server end recorded", func() bool { return ends(e.sreg, "server", lifecycle.Completed) == 1 })
	if got := ends(e.creg, "client", lifecycle.Completed); got != 1 {
		t.Errorf("client completed = %v, want 1", got)
	}
	if got := counterValue(e.sreg, "gather_grpc_half_closed_stream_duration_seconds", map[string]string{"method": method}); got != 1 {
		t.Errorf("half-closed durations observed = %v, want 1", got)
	}
	if got := counterValue(e.sreg, "gather_grpc_half_closed_streams", map[string]string{"method": method}); got != 0 {
		t.Errorf("half-closed streams after the end = %v, want 0", got)
	}
}

// TestAbandoned: the client half-closed (sent its request) and then cancelled; the server side
// records it as abandoned, the client side as canceled, and nothing stays half-closed.
func TestAbandoned(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx, cancel := context.WithCancel(t.Context())
	st, err := e.shard.Search(ctx, &shardv1.SearchRequest{Query: "hang", TopK: 1})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "stream half-closed on the server", func() bool {
		return counterValue(e.sreg, "gather_grpc_half_closed_streams", map[string]string{"method": method}) == 1
	})
	cancel()
	if err := recvAll(st); status.Code(err) != codes.Canceled {
		t.Fatalf("client got %v, want Canceled", err)
	}
	eventually(t, "server abandoned recorded", func() bool { return ends(e.sreg, "server", lifecycle.Abandoned) == 1 })
	if got := ends(e.creg, "client", lifecycle.Canceled); got != 1 {
		t.Errorf("client canceled = %v, want 1", got)
	}
	if got := counterValue(e.sreg, "gather_grpc_half_closed_streams", map[string]string{"method": method}); got != 0 {
		t.Errorf("half-closed streams = %v, want 0", got)
	}
}

// TestPeerGoneGauge: a handler that keeps running after its client went away is visible as
// gRPC's CLOSE_WAIT until it returns.
func TestPeerGoneGauge(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx, cancel := context.WithCancel(t.Context())
	st, err := e.shard.Search(ctx, &shardv1.SearchRequest{Query: "linger", TopK: 1})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "call running", func() bool {
		return counterValue(e.sreg, "gather_grpc_half_closed_streams", map[string]string{"method": method}) == 1
	})
	cancel()
	_ = recvAll(st)
	peerGone := func() float64 {
		return counterValue(e.sreg, "gather_grpc_peer_gone_calls", map[string]string{"method": method})
	}
	eventually(t, "peer-gone gauge up", func() bool { return peerGone() == 1 })
	close(e.svc.release)
	eventually(t, "peer-gone gauge back to 0", func() bool { return peerGone() == 0 })
	if got := counterValue(e.sreg, "gather_grpc_peer_gone_linger_seconds", map[string]string{"method": method}); got != 1 {
		t.Errorf("linger observations = %v, want 1", got)
	}
}

func TestDeadlineExceeded(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	st, err := e.shard.Search(ctx, &shardv1.SearchRequest{Query: "hang", TopK: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := recvAll(st); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	// The client resets the stream when its deadline passes; that reset can reach the server a
	// moment before the server's own copy of the deadline fires, and then it is an abandon.
	eventually(t, "server end recorded", func() bool {
		return ends(e.sreg, "server", lifecycle.DeadlineExceeded)+ends(e.sreg, "server", lifecycle.Abandoned) == 1
	})
	if got := ends(e.creg, "client", lifecycle.DeadlineExceeded); got != 1 {
		t.Errorf("client deadline_exceeded = %v, want 1", got)
	}
}

// TestClientCancelsWithoutReading: a caller that cancels a stream it never read to the end is
// still recorded, through its context.
func TestClientCancelsWithoutReading(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx, cancel := context.WithCancel(t.Context())
	if _, err := e.shard.Search(ctx, &shardv1.SearchRequest{Query: "hang", TopK: 1}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "call running on the server", func() bool {
		return counterValue(e.sreg, "gather_grpc_half_closed_streams", map[string]string{"method": method}) == 1
	})
	cancel()
	eventually(t, "client canceled recorded", func() bool { return ends(e.creg, "client", lifecycle.Canceled) == 1 })
	eventually(t, "server abandoned recorded", func() bool { return ends(e.sreg, "server", lifecycle.Abandoned) == 1 })
}

// TestSendStalled: a client that opens a stream and never reads it. Without the Sender the
// handler would block in SendMsg until the connection died; with it, the call ends with
// RESOURCE_EXHAUSTED and is recorded as send_stalled.
func TestSendStalled(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if _, err := e.shard.Search(ctx, &shardv1.SearchRequest{Query: "stall", TopK: 1}); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-e.svc.stalled:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never gave up on the stalled client")
	}
	if !errors.Is(err, lifecycle.ErrSendStalled) || status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("handler error %v, want ErrSendStalled as ResourceExhausted", err)
	}
	eventually(t, "server send_stalled recorded", func() bool { return ends(e.sreg, "server", lifecycle.SendStalled) == 1 })
}

// TestContextAlreadyDone: a call that reaches the interceptors with its context already done
// (a deadline spent in a queue) is recorded like any other, on both sides, without racing.
func TestContextAlreadyDone(t *testing.T) {
	t.Parallel()
	for range 50 {
		reg := prometheus.NewRegistry()
		m := lifecycle.New(reg)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := m.UnaryServerInterceptor()(ctx, nil, &grpc.UnaryServerInfo{FullMethod: method},
			func(ctx context.Context, _ any) (any, error) { return nil, status.FromContextError(ctx.Err()).Err() })
		if status.Code(err) != codes.Canceled {
			t.Fatalf("server: %v", err)
		}
		err = m.UnaryClientInterceptor()(ctx, method, nil, nil, nil,
			func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
				return status.FromContextError(ctx.Err()).Err()
			})
		if status.Code(err) != codes.Canceled {
			t.Fatalf("client: %v", err)
		}
		if got := ends(reg, "server", lifecycle.Abandoned) + ends(reg, "client", lifecycle.Canceled); got != 2 {
			t.Fatalf("recorded %v ends, want 2", got)
		}
	}
}

type stopped struct{}

func (stopped) Error() string     { return "stopped early" }
func (stopped) EndReason() string { return lifecycle.StoppedEarly }

// TestEndReasonFromCause: a caller that cancels with a cause that names the end reason (the
// fan-out stopping a shard call it no longer needs) is recorded with that reason.
func TestEndReasonFromCause(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := lifecycle.New(reg)
	ctx, cancel := context.WithCancelCause(t.Context())
	cancel(stopped{})
	_ = m.UnaryClientInterceptor()(ctx, method, nil, nil, nil,
		func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
			return status.FromContextError(ctx.Err()).Err()
		})
	if got := ends(reg, "client", lifecycle.StoppedEarly); got != 1 {
		t.Errorf("stopped_early = %v, want 1", got)
	}
}
