package chaos

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/gatherproxy/gather/internal/peerid"
)

// whoService answers every call with the caller peerid finds, in the response's username.
type whoService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (whoService) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Username: peerid.FromContext(ctx).String()}, nil
}

func (whoService) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, ss testgrpc.TestService_StreamingOutputCallServer) error {
	return ss.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: []byte(peerid.FromContext(ss.Context()).String())}})
}

// TestCallerFromHeader: over a real loopback server, a call with CallerHeader is that caller, one
// without is its connection, unary and streaming alike.
func TestCallerFromHeader(t *testing.T) {
	t.Parallel()
	unary, stream := CallerFromHeader()
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
	testgrpc.RegisterTestServiceServer(srv, whoService{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	defer func() {
		srv.Stop()
		<-served
	}()
	conn, err := dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	client := testgrpc.NewTestServiceClient(conn)

	for _, tc := range []struct {
		name, header, want string
	}{
		{"named", "qs-fleet", "auth:qs-fleet"},
		{"not named", "", "conn:127.0.0.1:"},
	} {
		ctx := t.Context()
		if tc.header != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, CallerHeader, tc.header)
		}
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetUsername(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s, unary: caller %q, want %q", tc.name, got, tc.want)
		}
		st, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
		if err != nil {
			t.Fatal(err)
		}
		msg, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := string(msg.GetPayload().GetBody()); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s, stream: caller %q, want %q", tc.name, got, tc.want)
		}
		for err == nil {
			_, err = st.Recv()
		}
	}
}
