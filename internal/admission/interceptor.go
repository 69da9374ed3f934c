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
		release, err := l.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
		return handler(withArrived(ctx, arrived), req)
	}
}

// StreamServerInterceptor admits the streaming calls of the given services and frees the slot
// when the handler returns. Like UnaryServerInterceptor, it records when the call arrived.
func (l *Limiter) StreamServerInterceptor(services ...string) grpc.StreamServerInterceptor {
	guarded := set(services)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !guarded[service(info.FullMethod)] {
			return handler(srv, ss)
		}
		arrived := time.Now()
		release, err := l.Acquire(ss.Context())
		if err != nil {
			return err
		}
		defer release()
		w := middleware.WrapServerStream(ss)
		w.WrappedContext = withArrived(ss.Context(), arrived)
		return handler(srv, w)
	}
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
