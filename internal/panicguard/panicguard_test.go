package panicguard_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/panicguard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// secret is in every panic value: it must reach the log and never the caller.
const secret = "s3cret-index-path"

// shard panics on the query "panic" after sending one message, waits on the query "wait" until
// released, and answers anything else.
type shard struct {
	shardv1.UnimplementedShardServiceServer
	release chan struct{}
	waiting chan struct{}
}

func (s *shard) Search(req *shardv1.SearchRequest, stream grpc.ServerStreamingServer[shardv1.SearchResponse]) error {
	switch req.GetQuery() {
	case "panic":
		if err := stream.Send(&shardv1.SearchResponse{Hits: []*shardv1.Hit{{DocId: "a", Score: 1}}}); err != nil {
			return err
		}
		m := map[string][]int{secret: nil}
		m[secret][len(req.GetQuery())]++ // index out of range: a runtime error, as a corrupt index would cause
	case "wait":
		close(s.waiting)
		<-s.release
	}
	return stream.Send(&shardv1.SearchResponse{Hits: []*shardv1.Hit{{DocId: "b", Score: 1}}})
}

// health panics with a plain value on every Check.
type health struct {
	healthpb.UnimplementedHealthServer
}

func (health) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	panic(errors.New("checking " + secret))
}

func serve(t *testing.T, opts ...grpc.ServerOption) (*grpc.ClientConn, *shard) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	s := &shard{release: make(chan struct{}), waiting: make(chan struct{})}
	shardv1.RegisterShardServiceServer(srv, s)
	healthpb.RegisterHealthServer(srv, health{})
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
	return conn, s
}

// search runs one Search to its end and returns the hits and the final error.
func search(ctx context.Context, c shardv1.ShardServiceClient, q string) (int, error) {
	st, err := c.Search(ctx, &shardv1.SearchRequest{Query: q, TopK: 1})
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n += len(m.GetHits())
	}
}

func TestPanicIsInternalAndTheServerKeepsServing(t *testing.T) {
	reg := prometheus.NewRegistry()
	var logs syncBuffer
	g := panicguard.New(reg, slog.New(slog.NewTextHandler(&logs, nil)))
	conn, s := serve(t, grpc.ChainUnaryInterceptor(g.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(g.StreamServerInterceptor()))
	c := shardv1.NewShardServiceClient(conn)

	// A call in flight on the same connection while another panics.
	waited := make(chan error, 1)
	go func() {
		_, err := search(t.Context(), c, "wait")
		waited <- err
	}()
	<-s.waiting

	n, streamErr := search(t.Context(), c, "panic")
	if n != 1 {
		t.Errorf("%d hits before the panic, want the 1 sent", n)
	}
	_, unaryErr := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	for what, err := range map[string]error{"stream": streamErr, "unary call": unaryErr} {
		// Exactly the fixed message: neither the panic value nor the stack reaches the caller.
		if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != panicguard.Message || len(st.Details()) != 0 {
			t.Errorf("the panicking %s ended with %v, want INTERNAL %q", what, err, panicguard.Message)
		}
	}

	close(s.release)
	if err := <-waited; err != nil {
		t.Errorf("the call in flight during the panic: %v", err)
	}
	if n, err := search(t.Context(), c, "again"); err != nil || n != 1 {
		t.Errorf("a call after the panics: %d hits, %v", n, err)
	}

	for _, method := range []string{"/gather.shard.v1.ShardService/Search", "/grpc.health.v1.Health/Check"} {
		if got := panics(t, reg, method); got != 1 {
			t.Errorf("gather_grpc_panics_total{method=%q} = %v, want 1", method, got)
		}
	}
	log := logs.String()
	for _, want := range []string{"level=ERROR", "method=/gather.shard.v1.ShardService/Search", "index out of range",
		"panicguard_test.(*shard).Search", "checking " + secret} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q:\n%s", want, log)
		}
	}
}

// panics returns gather_grpc_panics_total{method} from reg.
func panics(t *testing.T, reg *prometheus.Registry, method string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if mf.GetName() == "gather_grpc_panics_total" && l.GetName() == "method" && l.GetValue() == method {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
