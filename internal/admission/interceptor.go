package admission

import (
	"context"

	"google.golang.org/grpc"
)

// UnaryServerInterceptor admits the unary calls of the given services (full names, such as
// gather.query.v1.QueryService) and frees the slot when the handler returns; other services, like
// health and reflection, are never shed.
func (l *Limiter) UnaryServerInterceptor(services ...string) grpc.UnaryServerInterceptor {
	guarded := set(services)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !guarded[service(info.FullMethod)] {
			return handler(ctx, req)
		}
		release, err := l.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
		return handler(ctx, req)
	}
}

// StreamServerInterceptor admits the streaming calls of the given services and frees the slot
// when the handler returns.
func (l *Limiter) StreamServerInterceptor(services ...string) grpc.StreamServerInterceptor {
	guarded := set(services)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !guarded[service(info.FullMethod)] {
			return handler(srv, ss)
		}
		release, err := l.Acquire(ss.Context())
		if err != nil {
			return err
		}
		defer release()
		return handler(srv, ss)
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
