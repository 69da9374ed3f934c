package wirecodec_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/wirecodec"
	"github.com/gatherproxy/gather/internal/wirecodec/wiretest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func codec() *wirecodec.Codec {
	return wirecodec.New((&queryv1.SearchRequest{}).ProtoReflect().Type())
}

func decode(t *testing.T, b []byte, m proto.Message) error {
	t.Helper()
	return codec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, m)
}

func TestUnmarshal(t *testing.T) {
	t.Parallel()
	full := &queryv1.SearchRequest{Query: "union war", TopK: 7, PartialPolicy: queryv1.PartialPolicy_PARTIAL_POLICY_REQUIRE_FULL,
		ShardTimeout: durationpb.New(1500000000)}
	good, err := proto.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	var got queryv1.SearchRequest
	if err := decode(t, good, &got); err != nil || !proto.Equal(&got, full) {
		t.Errorf("a valid request: got %v, %v", &got, err)
	}

	// The same request with bytes that are not UTF-8 in the query, appended last (the last
	// occurrence of a field wins).
	bad := protowire.AppendTag(append([]byte(nil), good...), 1, protowire.BytesType)
	bad = protowire.AppendString(bad, "union \xff war")
	if err := proto.Unmarshal(bad, &queryv1.SearchRequest{}); err == nil {
		t.Fatal("protobuf-go accepted invalid UTF-8; this package is not needed any more")
	}
	got = queryv1.SearchRequest{}
	if err := decode(t, bad, &got); err != nil {
		t.Fatalf("invalid UTF-8 in the query: %v", err)
	}
	if got.GetQuery() != "union \xff war" || got.GetTopK() != 7 || got.GetPartialPolicy() != full.GetPartialPolicy() ||
		got.GetShardTimeout().AsDuration() != full.GetShardTimeout().AsDuration() {
		t.Errorf("invalid UTF-8 in the query: decoded %v", &got)
	}
	if at := wirecodec.InvalidUTF8At(got.GetQuery()); at != 6 {
		t.Errorf("InvalidUTF8At = %d, want 6", at)
	}

	// Other faults stay errors.
	for name, b := range map[string][]byte{
		"invalid UTF-8 and a truncated field": append(append([]byte(nil), bad...), 0x10),
		"a truncated field only":              append(append([]byte(nil), good...), 0x10),
	} {
		if err := decode(t, b, &queryv1.SearchRequest{}); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	// ... and so does invalid UTF-8 in a type the codec was not told about, or below the top level.
	hit := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "a\xffb")
	if err := decode(t, hit, &queryv1.Hit{}); err == nil {
		t.Error("invalid UTF-8 in a type not given to New: decoded")
	}
	resp := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), hit)
	if err := wirecodec.New((&queryv1.SearchResponse{}).ProtoReflect().Type()).Unmarshal(mem.BufferSlice{mem.SliceBuffer(resp)}, &queryv1.SearchResponse{}); err == nil {
		t.Error("invalid UTF-8 in a nested message: decoded")
	}
	if at := wirecodec.InvalidUTF8At("union"); at != -1 {
		t.Errorf("InvalidUTF8At of valid text = %d, want -1", at)
	}
}

// echo answers Search with the query it received, as the error message, so a test can see what
// the handler got.
type echo struct {
	queryv1.UnimplementedQueryServiceServer
}

func (echo) Search(_ context.Context, req *queryv1.SearchRequest) (*queryv1.SearchResponse, error) {
	return nil, status.Errorf(codes.InvalidArgument, "handler got %q", req.GetQuery())
}

// TestOverGRPC: without the codec, grpc-go answers INTERNAL before the handler runs; with it,
// the handler sees the bytes and answers for itself.
func TestOverGRPC(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts []grpc.ServerOption
		code codes.Code
		msg  string
	}{
		{"grpc-go's codec", nil, codes.Internal, "failed to unmarshal the received message: string field contains invalid UTF-8"},
		{"wirecodec", []grpc.ServerOption{grpc.ForceServerCodecV2(codec())}, codes.InvalidArgument, `handler got "union \xff war"`},
	} {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(tc.opts...)
		queryv1.RegisterQueryServiceServer(srv, echo{})
		var wg sync.WaitGroup
		wg.Go(func() { _ = srv.Serve(lis) })
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		_, err = wiretest.Unary(t.Context(), conn, "/gather.query.v1.QueryService/Search", wiretest.SearchRequest("union \xff war", 3))
		if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("%s: got %v, want %v containing %q", tc.name, err, tc.code, tc.msg)
		}
		_ = conn.Close()
		srv.Stop()
		wg.Wait()
	}
}
