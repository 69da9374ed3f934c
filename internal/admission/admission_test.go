package admission

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestShedsPastTheBound(t *testing.T) {
	t.Parallel()
	l := New(Config{MaxInFlight: 2, MaxWait: 20 * time.Millisecond, RetryAfter: 250 * time.Millisecond}, prometheus.NewRegistry())
	r1, err := l.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r2, err := l.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.Acquire(t.Context())
	if !errors.Is(err, ErrShed) {
		t.Fatalf("third query: got %v, want ErrShed", err)
	}
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Errorf("code %v, want ResourceExhausted", st.Code())
	}
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry.GetRetryDelay().AsDuration() != 250*time.Millisecond {
		t.Errorf("retry hint %v, want 250ms", retry)
	}
	if got := testutil.ToFloat64(l.shed); got != 1 {
		t.Errorf("shed counter %v, want 1", got)
	}
	if got := testutil.ToFloat64(l.inFlight); got != 2 {
		t.Errorf("in flight %v, want 2", got)
	}
	r1()
	r3, err := l.Acquire(t.Context())
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	r2()
	r3()
	if got := testutil.ToFloat64(l.inFlight); got != 0 {
		t.Errorf("in flight after releases %v, want 0", got)
	}
}

func TestWaitsForASlot(t *testing.T) {
	t.Parallel()
	l := New(Config{MaxInFlight: 1, MaxWait: 10 * time.Second}, prometheus.NewRegistry())
	r1, err := l.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		r, err := l.Acquire(t.Context())
		if err == nil {
			r()
		}
		got <- err
	}()
	r1()
	if err := <-got; err != nil {
		t.Fatalf("waiting query: %v", err)
	}
}

func TestCallerGivesUpWhileWaiting(t *testing.T) {
	t.Parallel()
	l := New(Config{MaxInFlight: 1, MaxWait: 10 * time.Second}, prometheus.NewRegistry())
	r1, err := l.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer r1()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := l.Acquire(ctx); status.Code(err) != codes.Canceled || errors.Is(err, ErrShed) {
		t.Fatalf("got %v, want Canceled (not a shed)", err)
	}
}

func TestInterceptorGuardsOnlyNamedServices(t *testing.T) {
	t.Parallel()
	l := New(Config{MaxInFlight: 1, MaxWait: time.Millisecond}, prometheus.NewRegistry())
	hold, err := l.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer hold()
	ic := l.UnaryServerInterceptor("gather.query.v1.QueryService")
	handler := func(context.Context, any) (any, error) { return "ok", nil }
	if _, err := ic(t.Context(), nil, &grpc.UnaryServerInfo{FullMethod: "/gather.query.v1.QueryService/Search"}, handler); !errors.Is(err, ErrShed) {
		t.Errorf("guarded service: got %v, want shed", err)
	}
	if _, err := ic(t.Context(), nil, &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"}, handler); err != nil {
		t.Errorf("health check was shed: %v", err)
	}
}
