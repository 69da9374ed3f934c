package telemetry_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/proxy"
	"github.com/gatherproxy/gather/internal/shardtest"
	"github.com/gatherproxy/gather/internal/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDisabledWithoutEnvironment(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"} {
		t.Setenv(k, "")
	}
	tr, err := telemetry.Setup(t.Context(), "gather-test", true)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() || telemetry.Configured() {
		t.Error("tracing enabled with no exporter configured")
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
	if !telemetry.Configured() {
		t.Error("OTEL_EXPORTER_OTLP_ENDPOINT set but tracing not configured")
	}
	t.Setenv("OTEL_SDK_DISABLED", "true")
	if telemetry.Configured() {
		t.Error("OTEL_SDK_DISABLED=true but tracing configured")
	}
}

// TestOneQueryIsOneTrace: QS -> proxy -> shards, each hop with the stats handlers: every span of
// a query shares one trace; the proxy's server span has one child per shard, each with the shard's
// attributes, and beneath each the gRPC client span and the shard's own server span.
func TestOneQueryIsOneTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tr := telemetry.WithProvider(tp)

	var topo []fanout.ShardSpec
	behaviors := []shardtest.Behavior{
		{Hits: shardtest.Hits("a", 20, 1)}, {Hits: shardtest.Hits("b", 20, 2)}, {Hang: true},
	}
	for i, b := range behaviors {
		s := shardtest.Start(t, b, tr.ServerOption())
		topo = append(topo, fanout.ShardSpec{Name: fmt.Sprintf("s%d", i), Replicas: []string{s.Addr()}})
	}
	fan, err := fanout.New(topo, fanout.Config{ShardTimeout: 200 * time.Millisecond, Tracer: tr.Tracer(),
		DialOptions: []grpc.DialOption{tr.DialOption()}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fan.Close() }()
	srv := grpc.NewServer(tr.ServerOption())
	proxy.New(fan, proxy.Config{}).Register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), tr.DialOption())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()

	if _, err := queryv1.NewQueryServiceClient(conn).Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 5}); err != nil {
		t.Fatal(err)
	}
	if err := tp.ForceFlush(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The shard servers end their spans a moment after the client has its answer.
	var spans []sdktrace.ReadOnlySpan
	deadline := time.Now().Add(5 * time.Second)
	for {
		spans = rec.Ended()
		if len(spans) >= 1+1+3*3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}

	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	traceID := spans[0].SpanContext().TraceID()
	for _, s := range spans {
		byID[s.SpanContext().SpanID()] = s
		children[s.Parent().SpanID()] = append(children[s.Parent().SpanID()], s)
		if s.SpanContext().TraceID() != traceID {
			t.Errorf("span %q is in another trace", s.Name())
		}
	}
	var server sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == "gather.query.v1.QueryService/Search" && s.SpanKind() == trace.SpanKindServer {
			server = s
		}
	}
	if server == nil {
		t.Fatalf("no proxy server span among %d spans", len(spans))
	}
	if _, ok := byID[server.Parent().SpanID()]; !ok {
		t.Error("the proxy's server span is not a child of the QS client span")
	}
	shardSpans := children[server.SpanContext().SpanID()]
	if len(shardSpans) != 3 {
		t.Fatalf("proxy server span has %d children, want one per shard (3)", len(shardSpans))
	}
	for _, s := range shardSpans {
		attrs := attrMap(s.Attributes())
		shard := attrs["gather.shard"].AsString()
		if s.Name() != "shard "+shard || attrs["gather.replica"].AsString() == "" {
			t.Errorf("shard span %q attributes %v", s.Name(), attrs)
		}
		wantCut := shard == "s2"
		if attrs["gather.shard.cut_by_deadline"].AsBool() != wantCut {
			t.Errorf("%s: cut_by_deadline=%v, want %v", shard, attrs["gather.shard.cut_by_deadline"].AsBool(), wantCut)
		}
		if !wantCut && attrs["gather.shard.hits"].AsInt64() == 0 {
			t.Errorf("%s: no hits recorded", shard)
		}
		client := children[s.SpanContext().SpanID()]
		if len(client) != 1 || client[0].SpanKind() != trace.SpanKindClient || client[0].Name() != "gather.shard.v1.ShardService/Search" {
			t.Fatalf("%s: children %v, want the gRPC client span", shard, names(client))
		}
		shardServer := children[client[0].SpanContext().SpanID()]
		if len(shardServer) != 1 || shardServer[0].SpanKind() != trace.SpanKindServer {
			t.Errorf("%s: no shard server span under the client span (got %v)", shard, names(shardServer))
		}
	}
	if attrMap(server.Attributes())["gather.coverage.shards_succeeded"].AsInt64() != 2 {
		t.Errorf("server span coverage attributes: %v", server.Attributes())
	}
}

func attrMap(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}
