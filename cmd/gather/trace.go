package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"github.com/gatherproxy/gather/internal/traceview"
)

func runTrace(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("trace", "[--jaeger URL] [--width N] TRACE_ID", stderr)
	jaeger := fs.String("jaeger", traceview.DefaultJaeger, "Jaeger query API `URL` (make jaeger serves it)")
	width := fs.Int("width", 100, "columns of the waterfall, notes aside (at least 60)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up on Jaeger after this long")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("trace: give one trace ID (the trace_id of the access log, or what gather query --trace prints)")
	}
	id, err := traceview.ParseTraceID(fs.Arg(0))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	t, err := traceview.Fetch(ctx, &http.Client{}, *jaeger, id)
	if err != nil {
		return err
	}
	return traceview.Draw(stdout, t, traceview.Options{Width: *width})
}

// traceFlags are gather query's --trace flags.
type traceFlags struct {
	on     *bool
	jaeger *string
	wait   *time.Duration
	width  *int
}

func addTraceFlags(fs *flag.FlagSet) traceFlags {
	return traceFlags{
		on:     fs.Bool("trace", false, "start a sampled trace for the query, print its ID, then draw its waterfall from Jaeger (the proxy must export to it: make demo-traced)"),
		jaeger: fs.String("jaeger", traceview.DefaultJaeger, "Jaeger query API `URL`, for --trace"),
		wait:   fs.Duration("trace-wait", 15*time.Second, "how long --trace waits for the trace to reach Jaeger (spans are sent every 5s)"),
		width:  fs.Int("trace-width", 100, "columns of the --trace waterfall"),
	}
}

// start returns ctx carrying a new sampled W3C trace context for the outgoing call, and its trace
// ID: the proxy's span becomes its child, so the query's trace has an ID known before it is made.
func (f traceFlags) start(ctx context.Context) (context.Context, string) {
	var tid trace.TraceID
	var sid trace.SpanID
	_, _ = rand.Read(tid[:]) // never fails (crypto/rand)
	_, _ = rand.Read(sid[:])
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(ctx, sc), carrier)
	return metadata.AppendToOutgoingContext(ctx, "traceparent", carrier.Get("traceparent")), tid.String()
}

// draw waits up to --trace-wait for trace id to reach Jaeger with its shard calls and draws it.
func (f traceFlags) draw(ctx context.Context, w io.Writer, id string, shards int) error {
	fmt.Fprintf(w, "\ntrace %s: waiting up to %s for it in Jaeger at %s\n\n", id, *f.wait, *f.jaeger)
	ctx, cancel := context.WithTimeout(ctx, *f.wait)
	defer cancel()
	t, err := traceview.Wait(ctx, &http.Client{}, *f.jaeger, id, shards, 250*time.Millisecond)
	if err != nil {
		return err
	}
	return traceview.Draw(w, t, traceview.Options{Width: *f.width})
}
