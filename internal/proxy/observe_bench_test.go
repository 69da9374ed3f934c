package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatherproxy/gather/internal/fanout"
)

// BenchmarkObserve measures what recording one finished query costs at fan-out 4 (metrics,
// span attributes with the no-op tracer, access-log line), by logger: none, one whose level
// drops the line, and enabled text and JSON handlers writing to io.Discard (the formatting cost,
// without the write).
func BenchmarkObserve(b *testing.B) {
	fan, err := fanout.New([]fanout.ShardSpec{
		{Name: "s0", Replicas: []string{"127.0.0.1:1"}}, {Name: "s1", Replicas: []string{"127.0.0.1:2"}},
		{Name: "s2", Replicas: []string{"127.0.0.1:3"}}, {Name: "s3", Replicas: []string{"127.0.0.1:4"}},
	}, fanout.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = fan.Close() }()
	results := make([]fanout.Result, 4)
	for i := range results {
		results[i] = fanout.Result{Shard: fmt.Sprintf("s%d", i), Status: fanout.StatusOK, Hits: 10, Latency: time.Millisecond}
	}
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	for _, tc := range []struct {
		name string
		log  *slog.Logger
	}{
		{"log=none", nil},
		{"log=disabled", slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))},
		{"log=text", slog.New(slog.NewTextHandler(io.Discard, opts))},
		{"log=json", slog.New(slog.NewJSONHandler(io.Discard, opts))},
	} {
		for _, failed := range []bool{false, true} {
			name := tc.name + "/outcome=complete"
			var qerr error
			if failed {
				name, qerr = tc.name+"/outcome=error", errors.New("shards unavailable")
			}
			b.Run(name, func(b *testing.B) {
				s := New(fan, Config{Metrics: NewMetrics(prometheus.NewRegistry()), Logger: tc.log})
				ctx := context.Background()
				oc := outcome{method: "Search", text: "union constitution war", topK: 10, hits: 10, results: results, start: time.Now()}
				b.ReportAllocs()
				for b.Loop() {
					s.observe(ctx, &oc, qerr)
				}
			})
		}
	}
}
