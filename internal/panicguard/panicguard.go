// Package panicguard keeps a panicking gRPC handler from taking its process down: the call fails
// with INTERNAL, the panic is counted and logged with its stack, and every other call goes on.
// It configures go-grpc-middleware's recovery interceptor; what it adds is what the caller sees
// (a plain INTERNAL, never the panic value or the stack, which may hold request data and
// internals), the counter and the log line.
//
// Put its interceptors after the ones that record how calls end (RED metrics, lifecycle), so
// that those see the INTERNAL like any other failure, and before everything else, so that a
// panic in a later interceptor is caught too. A panic in a goroutine the handler started is not
// caught: recover works only in the panicking goroutine, so such code must guard itself.
package panicguard

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Message is the status message of a call whose handler panicked.
const Message = "internal error: the server failed while handling this call (the failure is logged on the server)"

// Guard recovers panics in the calls of the gRPC servers whose interceptors it provides. Create
// it with New; it is safe for concurrent use.
type Guard struct {
	panics *prometheus.CounterVec
	log    *slog.Logger
}

// New returns a Guard that counts panics in gather_grpc_panics_total{method} on reg and logs
// each one at level ERROR on log, with the method, the panic value, the stack and the trace id.
func New(reg prometheus.Registerer, log *slog.Logger) *Guard {
	return &Guard{
		panics: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "gather_grpc_panics_total",
			Help: "gRPC calls whose handler (or a server interceptor) panicked; each ended with INTERNAL and its stack is in the log.",
		}, []string{"method"}),
		log: log,
	}
}

// UnaryServerInterceptor recovers panics in unary calls.
func (g *Guard) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return recovery.UnaryServerInterceptor(recovery.WithRecoveryHandlerContext(g.recovered))
}

// StreamServerInterceptor recovers panics in streaming calls. Messages sent before the panic
// have reached the client; the stream then ends with INTERNAL.
func (g *Guard) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return recovery.StreamServerInterceptor(recovery.WithRecoveryHandlerContext(g.recovered))
}

// recovered runs in the deferred call that recovered p, so the stack still holds the frames
// that panicked.
func (g *Guard) recovered(ctx context.Context, p any) error {
	method, _ := grpc.Method(ctx)
	g.panics.WithLabelValues(method).Inc()
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("panic", fmt.Sprint(p)),
		slog.String("stack", string(debug.Stack())),
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()))
	}
	g.log.LogAttrs(ctx, slog.LevelError, "panic in a gRPC handler: the call failed with INTERNAL", attrs...)
	return status.Error(codes.Internal, Message)
}
