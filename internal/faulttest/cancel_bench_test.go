package faulttest

import (
	"context"
	"slices"
	"testing"
	"time"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/shardtest"
)

// BenchmarkCancelPropagation measures how long it takes from QS cancelling a query to the last of
// its shard calls ending on the shards, over loopback gRPC with 4 hanging shards. It reports the
// median, p99 and max of that delay (target: p99 under 10ms).
func BenchmarkCancelPropagation(b *testing.B) {
	hang := shardtest.Behavior{Hang: true}
	e := newBenchEnv(b, hang, hang, hang, hang)
	delays := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = e.client.Search(ctx, &queryv1.SearchRequest{Query: "q", TopK: 10})
		}()
		for _, s := range e.shards {
			for s.Active() == 0 {
				time.Sleep(20 * time.Microsecond)
			}
		}
		start := time.Now()
		cancel()
		<-done
		var last time.Time
		for _, s := range e.shards {
			for s.Active() != 0 {
				time.Sleep(20 * time.Microsecond)
			}
			if end := s.LastEnd(); end.After(last) {
				last = end
			}
		}
		delays = append(delays, last.Sub(start))
	}
	b.StopTimer()
	slices.Sort(delays)
	q := func(p float64) float64 { return float64(delays[int(p*float64(len(delays)-1))].Microseconds()) }
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(float64(delays[len(delays)-1].Microseconds()), "max-µs")
}

// newBenchEnv is newEnv for a benchmark: the same wiring, long shard timeouts.
func newBenchEnv(b *testing.B, behaviors ...shardtest.Behavior) *env {
	b.Helper()
	return newEnvTB(b, options{fan: fanout.Config{ShardTimeout: time.Minute, IdleTimeout: time.Minute}}, behaviors...)
}
