package admission_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/peer"

	"github.com/gatherproxy/gather/internal/admission"
)

// blockingService answers UnaryCall only when told to, and reports each call it starts with the
// caller's address.
type blockingService struct {
	testgrpc.UnimplementedTestServiceServer
	started chan string
	finish  chan struct{}
}

func (s *blockingService) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	p, _ := peer.FromContext(ctx)
	s.started <- p.Addr.String()
	select {
	case <-s.finish:
		return &testgrpc.SimpleResponse{}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TestConnectionsShareFairly runs the interceptor in a real gRPC server on loopback: one
// connection fills every slot and queues more calls; a second connection's call gets the first
// slot that frees, because each connection is a caller of its own.
func TestConnectionsShareFairly(t *testing.T) {
	t.Parallel()
	const slots = 3
	reg := prometheus.NewRegistry()
	lim := admission.New(admission.Config{MaxInFlight: slots, MaxWait: time.Minute}, reg)
	svc := &blockingService{started: make(chan string, 2*slots+1), finish: make(chan struct{})}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(lim.UnaryServerInterceptor("grpc.testing.TestService")))
	testgrpc.RegisterTestServiceServer(srv, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	defer func() {
		srv.Stop()
		<-served
	}()
	dial := func() *grpc.ClientConn {
		c, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	heavy, light := testgrpc.NewTestServiceClient(dial()), testgrpc.NewTestServiceClient(dial())
	waiting := func(n float64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for gaugeValue(t, reg, "gather_admission_waiting_queries") != n {
			if time.Now().After(deadline) {
				t.Fatalf("never %v queries waiting", n)
			}
			time.Sleep(time.Millisecond)
		}
	}

	errs := make(chan error, 2*slots+1)
	call := func(c testgrpc.TestServiceClient) {
		go func() {
			_, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{})
			errs <- err
		}()
	}
	var heavyAddr string
	for range slots {
		call(heavy)
		heavyAddr = <-svc.started
	}
	for i := range slots {
		call(heavy)
		waiting(float64(i + 1))
	}
	call(light)
	waiting(slots + 1)

	svc.finish <- struct{}{} // one of the heavy connection's calls ends
	if next := <-svc.started; next == heavyAddr {
		t.Fatalf("the freed slot went to the heavy connection (%s), which held every other slot", next)
	}
	close(svc.finish)
	for range slots {
		<-svc.started
	}
	for range 2*slots + 1 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// gaugeValue reads the value of the gauge family name from reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
