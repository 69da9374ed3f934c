package chaos

import (
	"context"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/gatherproxy/gather/internal/peerid"
)

// CallerHeader is the request metadata key whose value the demo takes for the caller's name.
// chaos sends it with every worker query, so that the 320 worker connections are one caller to
// the proxy's admission control, as the connections of a QS fleet that shares one client
// certificate would be; the probe, the hog, the stallers and the vanishers send none and are a
// caller per connection.
const CallerHeader = "x-gather-demo-caller"

// CallerFromHeader returns interceptors that name the caller of a call after its CallerHeader
// (peerid.NewContext), for the demo only: it stands in for client certificates, which the demo
// does not use, and anyone who can reach a server with it can claim any name. Calls without
// the header keep the identity peerid finds on their own. They must come before admission
// control in the chain.
func CallerFromHeader() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	name := func(ctx context.Context) context.Context {
		if v := metadata.ValueFromIncomingContext(ctx, CallerHeader); len(v) > 0 && v[0] != "" {
			return peerid.NewContext(ctx, v[0])
		}
		return ctx
	}
	unary := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return handler(name(ctx), req)
	}
	stream := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		if named := name(ctx); named != ctx {
			w := middleware.WrapServerStream(ss)
			w.WrappedContext = named
			ss = w
		}
		return handler(srv, ss)
	}
	return unary, stream
}
