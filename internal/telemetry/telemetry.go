// Package telemetry sets up OpenTelemetry tracing for a gather process from the standard
// environment variables, and the gRPC stats handlers that carry W3C trace context across both
// hops (QS -> proxy -> shards), so one query is one trace.
//
// With no exporter configured, tracing is off: no stats handler is installed, no span is recorded
// or exported, and no trace context is propagated.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// Tracing is a process's tracer provider and propagator. The zero value is not usable; get one
// from Setup or Disabled.
type Tracing struct {
	Provider   trace.TracerProvider
	Propagator propagation.TextMapPropagator
	shutdown   func(context.Context) error
	enabled    bool
}

// Disabled returns tracing that records nothing.
func Disabled() *Tracing {
	return &Tracing{
		Provider:   noop.NewTracerProvider(),
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		shutdown:   func(context.Context) error { return nil },
	}
}

// WithProvider returns enabled tracing that records into tp (an SDK provider with an in-memory
// recorder in tests). Shutdown is the caller's business.
func WithProvider(tp trace.TracerProvider) *Tracing {
	t := Disabled()
	t.Provider, t.enabled = tp, true
	return t
}

// Configured reports whether the environment asks for trace export: an OTLP endpoint is set
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or OTEL_TRACES_EXPORTER is
// "otlp"; and neither OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none says otherwise.
func Configured() bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER"))) {
	case "none":
		return false
	case "otlp":
		return true
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup returns tracing configured from the environment, or Disabled when Configured is false.
// The exporter is OTLP over gRPC and reads the standard OTEL_EXPORTER_OTLP_* variables; the
// sampler reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (default: parent-based, always
// on); the resource takes service (as service.name) overridden by OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES when useEnvName is true. Shutdown flushes what is buffered.
func Setup(ctx context.Context, service string, useEnvName bool) (*Tracing, error) {
	if !Configured() {
		return Disabled(), nil
	}
	exp, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("otlp trace exporter: %w", err)
	}
	opts := []resource.Option{resource.WithTelemetrySDK()}
	if useEnvName {
		opts = append(opts, resource.WithAttributes(semconv.ServiceName(service)), resource.WithFromEnv())
	} else {
		opts = append(opts, resource.WithFromEnv(), resource.WithAttributes(semconv.ServiceName(service)))
	}
	res, err := resource.New(ctx, opts...)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	t := Disabled()
	t.Provider, t.shutdown, t.enabled = tp, tp.Shutdown, true
	return t, nil
}

// Enabled reports whether spans are recorded and exported.
func (t *Tracing) Enabled() bool { return t.enabled }

// Shutdown flushes and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error { return t.shutdown(ctx) }

// Tracer returns the tracer gather's own spans come from.
func (t *Tracing) Tracer() trace.Tracer {
	return t.Provider.Tracer("github.com/gatherproxy/gather")
}

// ServerHandler is the otelgrpc stats handler for a gRPC server.
func (t *Tracing) ServerHandler() stats.Handler {
	return otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(t.Provider), otelgrpc.WithPropagators(t.Propagator))
}

// ClientHandler is the otelgrpc stats handler for a client connection.
func (t *Tracing) ClientHandler() stats.Handler {
	return otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(t.Provider), otelgrpc.WithPropagators(t.Propagator))
}

// ServerOption installs ServerHandler when tracing is enabled, and nothing otherwise: the
// handler costs about 7% of the proxy's CPU even with the no-op provider (measured by make
// bench), and with tracing off it has nothing to record.
func (t *Tracing) ServerOption() grpc.ServerOption {
	if !t.enabled {
		return grpc.EmptyServerOption{}
	}
	return grpc.StatsHandler(t.ServerHandler())
}

// DialOption installs ClientHandler when tracing is enabled, and nothing otherwise.
func (t *Tracing) DialOption() grpc.DialOption {
	if !t.enabled {
		return grpc.EmptyDialOption{}
	}
	return grpc.WithStatsHandler(t.ClientHandler())
}
