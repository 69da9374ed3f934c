package admission

import (
	"context"
	"time"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"google.golang.org/grpc"
)

// arrivedKey is the context key of the time a call reached admission control.
type arrivedKey struct{}

// Arrived returns when the call of ctx reached admission control, before it waited for a slot,
// as the interceptors record it; ok is false for a call that did not go through them.
func Arrived(ctx context.Context) (t time.Time, ok bool) {
	t, ok = ctx.Value(arrivedKey{}).(time.Time)
	return t, ok
}

// withArrived records t as the arrival of the call of ctx (see Arrived).
func withArrived(ctx context.Context, t time.Time) context.Context {
	return context.WithValue(ctx, arrivedKey{}, t)
}

// UnaryServerInterceptor admits the unary calls of the given services (full names, such as
// gather.query.v1.QueryService) and frees the slot when the handler returns; other services, like
// health and reflection, are never shed. The handler's context says when the call arrived
// (Arrived), so that the time it waited for its slot can count against its own timeouts.
func (l *Limiter) UnaryServerInterceptor(services ...string) grpc.UnaryServerInterceptor {
	guarded := set(services)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !guarded[service(info.FullMethod)] {
			return handler(ctx, req)
		}
		arrived := time.Now()
		release, err := l.acquire(ctx, l.weigh(req))
		if err != nil {
			return nil, err
		}
		defer release()
		return handler(withArrived(ctx, arrived), req)
	}
}

// StreamServerInterceptor admits the streaming calls of the given services and frees the slot
// when the handler returns. Like UnaryServerInterceptor, it records when the call arrived. A
// call that streams only from the server is admitted as its handler receives its request, so
// that the request can be weighed (Config.Weight); its RecvMsg returns the shed error, which
// the handler returns. Other streaming calls are admitted before their handler runs, weighing 1.
func (l *Limiter) StreamServerInterceptor(services ...string) grpc.StreamServerInterceptor {
	guarded := set(services)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !guarded[service(info.FullMethod)] {
			return handler(srv, ss)
		}
		w := middleware.WrapServerStream(ss)
		w.WrappedContext = withArrived(ss.Context(), time.Now())
		if !info.IsClientStream && l.weighs() {
			ws := &weighedStream{WrappedServerStream: w, l: l}
			defer ws.release()
			return handler(srv, ws)
		}
		release, err := l.Acquire(ss.Context())
		if err != nil {
			return err
		}
		defer release()
		return handler(srv, w)
	}
}

// weighedStream admits its call when the handler receives the call's one request.
type weighedStream struct {
	*middleware.WrappedServerStream
	l        *Limiter
	admitted bool
	free     func()
}

// RecvMsg receives the request and, the first time, waits for a slot of its weight.
func (w *weighedStream) RecvMsg(m any) error {
	if err := w.WrappedServerStream.RecvMsg(m); err != nil || w.admitted {
		return err
	}
	w.admitted = true
	free, err := w.l.acquire(w.Context(), w.l.weigh(m))
	if err != nil {
		return err
	}
	w.free = free
	return nil
}

// release frees the slot, if the call had one.
func (w *weighedStream) release() {
	if w.free != nil {
		w.free()
	}
}

// weighs reports whether queries are weighed: with Config.Weight and SchedTarget, whose bound
// alone counts weights.
func (l *Limiter) weighs() bool { return l.cfg.Weight != nil && l.cfg.SchedTarget > 0 }

// weigh is req's weight: Config.Weight's, at least 1, or 1 when queries are not weighed.
func (l *Limiter) weigh(req any) int {
	if !l.weighs() {
		return 1
	}
	return max(1, l.cfg.Weight(req))
}

// topKPerUnit is how many hits a query asks for per unit of weight beyond its first (ByTopK).
const topKPerUnit = 40

// ByTopK is a Config.Weight for requests that say how many hits they want (a GetTopK method):
// 1 + top_k/40, so 1 up to top_k 39, 6 at 200 and 26 at 1000. A shard's search for the
// top 1000 of a common query costs some 27 times its search for the top 10 (BenchmarkSearch in
// the shard package: 13.1ms against 480us), and the proxy merges and sends the hits it fetched
// in proportion. Other requests weigh 1.
func ByTopK(req any) int {
	if r, ok := req.(interface{ GetTopK() uint32 }); ok {
		return 1 + int(min(r.GetTopK(), 1<<20)/topKPerUnit)
	}
	return 1
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
