package admission

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc/peer"
)

// semaphoreLimiter is the admission path this package had before fair sharing, kept as the
// baseline of BenchmarkAcquire: one global weighted semaphore, the in-flight gauge and the wait
// histogram.
type semaphoreLimiter struct {
	sem      *semaphore.Weighted
	inFlight prometheus.Gauge
	wait     prometheus.Histogram
}

func newSemaphoreLimiter(n int) *semaphoreLimiter {
	return &semaphoreLimiter{
		sem:      semaphore.NewWeighted(int64(n)),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "in_flight"}),
		wait:     prometheus.NewHistogram(prometheus.HistogramOpts{Name: "wait"}),
	}
}

func (l *semaphoreLimiter) Acquire(ctx context.Context) (func(), error) {
	start := time.Now()
	if !l.sem.TryAcquire(1) {
		wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := l.sem.Acquire(wctx, 1)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	l.wait.Observe(time.Since(start).Seconds())
	l.inFlight.Inc()
	return func() {
		l.inFlight.Dec()
		l.sem.Release(1)
	}, nil
}

// BenchmarkAcquire measures admitting and releasing a query that finds a free slot, the path of
// every query on a proxy that is not overloaded: the fair Limiter against the global semaphore
// it replaced, from one goroutine and from all of them (GOMAXPROCS), each with a connection of its
// own.
func BenchmarkAcquire(b *testing.B) {
	type acquirer interface {
		Acquire(context.Context) (func(), error)
	}
	for _, impl := range []struct {
		name string
		new  func() acquirer
	}{
		{"semaphore", func() acquirer { return newSemaphoreLimiter(256) }},
		{"fair", func() acquirer { return New(Config{}, prometheus.NewRegistry()) }},
	} {
		b.Run(impl.name+"/serial", func(b *testing.B) {
			l := impl.new()
			ctx := peer.NewContext(b.Context(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}})
			b.ReportAllocs()
			for b.Loop() {
				release, err := l.Acquire(ctx)
				if err != nil {
					b.Fatal(err)
				}
				release()
			}
		})
		b.Run(impl.name+"/parallel", func(b *testing.B) {
			l := impl.new()
			b.ReportAllocs()
			var port atomic.Int32
			port.Store(40000)
			b.RunParallel(func(pb *testing.PB) {
				addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port.Add(1))}
				ctx := peer.NewContext(b.Context(), &peer.Peer{Addr: addr})
				for pb.Next() {
					release, err := l.Acquire(ctx)
					if err != nil {
						b.Error(err)
						return
					}
					release()
				}
			})
		})
	}
}
