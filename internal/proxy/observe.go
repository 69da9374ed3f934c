package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/status"

	"github.com/gatherproxy/gather/internal/fanout"
)

// Metrics are the QueryService's own metrics. Create them with NewMetrics and pass them in
// Config.Metrics.
type Metrics struct {
	shardLatency *prometheus.HistogramVec
	queries      *prometheus.CounterVec
	coverage     prometheus.Histogram
	earlyStops   prometheus.Counter
}

// NewMetrics registers the QueryService metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		shardLatency: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gather_shard_request_duration_seconds",
			Help:    "Shard calls by shard and how they ended (status), from request to the end of the shard's stream.",
			Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5},
		}, []string{"shard", "status"}),
		queries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "gather_queries_total",
			Help: "Queries by method and outcome: complete (every shard answered), degraded (answered without some shards), or the gRPC code of the error.",
		}, []string{"method", "outcome"}),
		coverage: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "gather_query_coverage_ratio",
			Help:    "Fraction of the shards that answered, per answered query.",
			Buckets: []float64{0, .25, .5, .75, .9, .99, 1},
		}),
		earlyStops: f.NewCounter(prometheus.CounterOpts{
			Name: "gather_merge_early_stops_total",
			Help: "Queries whose merge had the global top_k before every shard stream ended, and cancelled the rest.",
		}),
	}
}

// outcome is what one query did, for its metrics, span and access-log line.
type outcome struct {
	method  string
	text    string
	topK    uint32
	start   time.Time
	hits    uint32
	results []fanout.Result
}

// observe records a finished query: metrics, attributes and events on the server span, and one
// access-log line.
func (s *Server) observe(ctx context.Context, oc *outcome, err error) {
	took := time.Since(oc.start)
	var ok int
	var early bool
	for _, r := range oc.results {
		if r.Status == fanout.StatusOK {
			ok++
		}
		early = early || r.StoppedEarly
	}
	outcomeLabel := "complete"
	switch {
	case err != nil:
		outcomeLabel = status.Code(err).String()
	case ok < len(oc.results):
		outcomeLabel = "degraded"
	}
	if m := s.cfg.Metrics; m != nil {
		m.queries.WithLabelValues(oc.method, outcomeLabel).Inc()
		for _, r := range oc.results {
			m.shardLatency.WithLabelValues(r.Shard, r.Status.String()).Observe(r.Latency.Seconds())
		}
		if err == nil && len(oc.results) > 0 {
			m.coverage.Observe(float64(ok) / float64(len(oc.results)))
		}
		if early {
			m.earlyStops.Inc()
		}
	}
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() {
		span.SetAttributes(
			attribute.Int("gather.top_k", int(oc.topK)),
			attribute.Int("gather.hits", int(oc.hits)),
			attribute.Int("gather.coverage.shards_total", len(oc.results)),
			attribute.Int("gather.coverage.shards_succeeded", ok),
			attribute.Bool("gather.coverage.degraded", ok < len(oc.results)),
		)
		if early {
			span.AddEvent("gather.merge_stopped_early", trace.WithAttributes(attribute.Int("gather.top_k", int(oc.topK))))
		}
	}
	// Enabled first: a logger whose level drops the line should not cost the hash and attributes.
	if log := s.cfg.Logger; log != nil && log.Enabled(ctx, slog.LevelInfo) {
		sum := sha256.Sum256([]byte(oc.text))
		attrs := []slog.Attr{
			slog.String("method", oc.method),
			slog.String("trace_id", traceID(span)),
			slog.String("query_sha256", hex.EncodeToString(sum[:8])),
			slog.Int("top_k", int(oc.topK)),
			slog.Int("hits", int(oc.hits)),
			slog.Int("shards_ok", ok),
			slog.Int("shards", len(oc.results)),
			slog.String("outcome", outcomeLabel),
			slog.Float64("latency_ms", float64(took.Microseconds())/1000),
		}
		if ok < len(oc.results) {
			attrs = append(attrs, slog.String("missing", missing(oc.results)))
		}
		if s.cfg.LogQueryText {
			attrs = append(attrs, slog.String("query", oc.text))
		}
		if err != nil {
			attrs = append(attrs, slog.String("error", status.Convert(err).Message()))
		}
		log.LogAttrs(ctx, slog.LevelInfo, "query", attrs...)
	}
}

func traceID(span trace.Span) string {
	if sc := span.SpanContext(); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	return ""
}

// missing names the shards that did not answer in full, for the access log: for each, the status,
// the replica (by its index in the shard's list) of the attempt that ended last, and how many
// attempts the call made ("shard-0:DEADLINE_EXCEEDED:r1:1", space separated): enough to tell a
// replica that hung with no hedge from a shard that failed on every replica.
func missing(results []fanout.Result) string {
	var b strings.Builder
	for _, r := range results {
		if r.Status == fanout.StatusOK {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%s:r%d:%d", r.Shard, r.Status, r.ReplicaIndex, r.Attempts)
	}
	return b.String()
}
