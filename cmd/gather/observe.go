package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/gatherproxy/gather/internal/lifecycle"
	"github.com/gatherproxy/gather/internal/panicguard"
	"github.com/gatherproxy/gather/internal/telemetry"
)

// logFlags are the logging flags of the serving commands.
type logFlags struct {
	format    *string
	queryText *bool
}

func addLogFlags(fs *flag.FlagSet) logFlags {
	return logFlags{
		format:    fs.String("log-format", "text", "log `format`: text or json"),
		queryText: fs.Bool("log-query-text", false, "put the query text in the access log (by default only a hash of it)"),
	}
}

// logger returns the process logger in the chosen format.
func (f logFlags) logger(w io.Writer) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	switch *f.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", *f.format)
}

// observability is what every gRPC server and client of a process reports to: one Prometheus
// registry, the lifecycle metrics, go-grpc-middleware's RED metrics (with trace-id exemplars),
// the panic guard and the process's tracing.
type observability struct {
	reg     *prometheus.Registry
	lc      *lifecycle.Metrics
	server  *grpcprom.ServerMetrics
	client  *grpcprom.ClientMetrics
	panics  *panicguard.Guard
	tracing *telemetry.Tracing
}

var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// newObservability makes the process's observability; log gets the stack of every panic that a
// gRPC server of the process recovers.
func newObservability(tracing *telemetry.Tracing, log *slog.Logger) *observability {
	o := &observability{
		reg: prometheus.NewRegistry(),
		server: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets(latencyBuckets))),
		client: grpcprom.NewClientMetrics(grpcprom.WithClientHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets(latencyBuckets))),
		tracing: tracing,
	}
	o.lc = lifecycle.New(o.reg)
	o.panics = panicguard.New(o.reg, log)
	o.reg.MustRegister(o.server, o.client)
	return o
}

// exemplar labels a latency observation with the trace it belongs to, when that trace is sampled.
func exemplar(ctx context.Context) prometheus.Labels {
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		return prometheus.Labels{"trace_id": sc.TraceID().String()}
	}
	return nil
}

// serverOptions instruments a gRPC server: the tracing stats handler, then RED metrics and the
// lifecycle recorder as the outermost interceptors, then panic recovery, then the given ones
// (admission, faults).
func (o *observability) serverOptions(tracing *telemetry.Tracing, unary []grpc.UnaryServerInterceptor, stream []grpc.StreamServerInterceptor) []grpc.ServerOption {
	ex := grpcprom.WithExemplarFromContext(exemplar)
	recoverUnary, recoverStream := o.panicRecovery()
	return []grpc.ServerOption{
		tracing.ServerOption(),
		grpc.ChainUnaryInterceptor(append([]grpc.UnaryServerInterceptor{
			o.server.UnaryServerInterceptor(ex), o.lc.UnaryServerInterceptor(), recoverUnary}, unary...)...),
		grpc.ChainStreamInterceptor(append([]grpc.StreamServerInterceptor{
			o.server.StreamServerInterceptor(ex), o.lc.StreamServerInterceptor(), recoverStream}, stream...)...),
	}
}

// panicRecovery returns the interceptors that turn a panic in a handler (or in a later
// interceptor) into INTERNAL for the caller, gather_grpc_panics_total{method} and an ERROR log
// line with the stack, so that one bad call never takes the process down (in gather demo, a
// shard's panic would take the proxy with it). They go right after the RED and lifecycle
// recorders, which then record the call as failed like any other.
func (o *observability) panicRecovery() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	return o.panics.UnaryServerInterceptor(), o.panics.StreamServerInterceptor()
}

// dialOptions instruments the proxy's shard connections the same way.
func (o *observability) dialOptions() []grpc.DialOption {
	ex := grpcprom.WithExemplarFromContext(exemplar)
	return []grpc.DialOption{
		o.tracing.DialOption(),
		grpc.WithChainUnaryInterceptor(o.client.UnaryClientInterceptor(ex), o.lc.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(o.client.StreamClientInterceptor(ex), o.lc.StreamClientInterceptor()),
	}
}

// setupTracing returns the tracing of one service of the process, from the OTEL_* environment.
func setupTracing(ctx context.Context, service string, useEnvName bool, log *slog.Logger) (*telemetry.Tracing, error) {
	tr, err := telemetry.Setup(ctx, service, useEnvName)
	if err != nil {
		return nil, err
	}
	if tr.Enabled() {
		log.Info("tracing on: exporting spans over OTLP", "service", service)
	}
	return tr, nil
}

// shutdownTracing flushes the spans still buffered, for at most 5s.
func shutdownTracing(ctx context.Context, tr *telemetry.Tracing, log *slog.Logger) {
	sctx, cancel := graceContext(ctx, 5*time.Second)
	defer cancel()
	if err := tr.Shutdown(sctx); err != nil {
		log.Warn("flushing spans", "err", err)
	}
}
