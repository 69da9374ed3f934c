// Package admission bounds the queries a proxy works on at once. A query that finds every slot
// taken waits a short, bounded time for one; past that it is shed at once with
// RESOURCE_EXHAUSTED and a retry hint, so overload shows up as fast, explicit refusals instead of
// a growing queue of callers that have long given up (the listen-queue overflows of the old
// system).
package admission

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/semaphore"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Config sets the bound. The zero value of a field means its default.
type Config struct {
	// MaxInFlight is how many queries may run at once. Default 256.
	MaxInFlight int
	// MaxWait is how long a query may wait for a slot before it is shed. Default 50ms.
	MaxWait time.Duration
	// RetryAfter is the delay suggested to shed callers (google.rpc.RetryInfo). Default 100ms.
	RetryAfter time.Duration
}

func (c Config) withDefaults() Config {
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 256
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 50 * time.Millisecond
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = 100 * time.Millisecond
	}
	return c
}

// ErrShed is wrapped by the error of a query refused for lack of a slot.
var ErrShed = errors.New("proxy at capacity")

// Limiter admits queries. Create it with New; it is safe for concurrent use.
type Limiter struct {
	cfg      Config
	sem      *semaphore.Weighted
	inFlight prometheus.Gauge
	shed     prometheus.Counter
	wait     prometheus.Histogram
	limit    prometheus.Gauge
}

// New returns a Limiter whose metrics are registered with reg.
func New(cfg Config, reg prometheus.Registerer) *Limiter {
	cfg = cfg.withDefaults()
	f := promauto.With(reg)
	l := &Limiter{
		cfg: cfg,
		sem: semaphore.NewWeighted(int64(cfg.MaxInFlight)),
		inFlight: f.NewGauge(prometheus.GaugeOpts{
			Name: "gather_admission_in_flight_queries", Help: "Queries admitted and running now.",
		}),
		limit: f.NewGauge(prometheus.GaugeOpts{
			Name: "gather_admission_max_in_flight_queries", Help: "The configured bound on queries running at once.",
		}),
		shed: f.NewCounter(prometheus.CounterOpts{
			Name: "gather_admission_shed_total", Help: "Queries refused with RESOURCE_EXHAUSTED because every slot stayed taken.",
		}),
		wait: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "gather_admission_wait_seconds",
			Help:    "How long admitted or shed queries waited for a slot.",
			Buckets: []float64{.00001, .0001, .001, .005, .01, .025, .05, .1, .25},
		}),
	}
	l.limit.Set(float64(cfg.MaxInFlight))
	return l
}

// Acquire waits for a slot, at most MaxWait, and returns the function that frees it. It fails
// with a RESOURCE_EXHAUSTED status (wrapping ErrShed, with RetryInfo) when no slot frees in time,
// or with the caller's context error.
func (l *Limiter) Acquire(ctx context.Context) (release func(), err error) {
	start := time.Now()
	if !l.sem.TryAcquire(1) {
		wctx, cancel := context.WithTimeout(ctx, l.cfg.MaxWait)
		err := l.sem.Acquire(wctx, 1)
		cancel()
		if err != nil {
			l.wait.Observe(time.Since(start).Seconds())
			if ctx.Err() != nil {
				return nil, status.FromContextError(ctx.Err()).Err()
			}
			l.shed.Inc()
			return nil, l.shedError()
		}
	}
	l.wait.Observe(time.Since(start).Seconds())
	l.inFlight.Inc()
	return func() {
		l.inFlight.Dec()
		l.sem.Release(1)
	}, nil
}

// shedError is a RESOURCE_EXHAUSTED status that also wraps ErrShed.
func (l *Limiter) shedError() error {
	st := status.New(codes.ResourceExhausted, fmt.Sprintf("%v: %d queries in flight, none finished within %s; retry after %s",
		ErrShed, l.cfg.MaxInFlight, l.cfg.MaxWait, l.cfg.RetryAfter))
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(l.cfg.RetryAfter)}); err == nil {
		st = d
	}
	return &shedError{st: st}
}

type shedError struct{ st *status.Status }

func (e *shedError) Error() string              { return e.st.Message() }
func (e *shedError) Unwrap() error              { return ErrShed }
func (e *shedError) GRPCStatus() *status.Status { return e.st }

// UnaryServerInterceptor admits the unary calls of the given services (full names, such as
// gather.query.v1.QueryService); other services, like health and reflection, are never shed.
func (l *Limiter) UnaryServerInterceptor(services ...string) grpc.UnaryServerInterceptor {
	guarded := set(services)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !guarded[service(info.FullMethod)] {
			return handler(ctx, req)
		}
		release, err := l.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
		return handler(ctx, req)
	}
}

// StreamServerInterceptor admits the streaming calls of the given services.
func (l *Limiter) StreamServerInterceptor(services ...string) grpc.StreamServerInterceptor {
	guarded := set(services)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !guarded[service(info.FullMethod)] {
			return handler(srv, ss)
		}
		release, err := l.Acquire(ss.Context())
		if err != nil {
			return err
		}
		defer release()
		return handler(srv, ss)
	}
}

func set(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// service returns the service part of "/pkg.Service/Method".
func service(fullMethod string) string {
	for i := len(fullMethod) - 1; i > 0; i-- {
		if fullMethod[i] == '/' {
			return fullMethod[1:i]
		}
	}
	return fullMethod
}
