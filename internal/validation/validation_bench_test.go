package validation_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/validation"
)

// BenchmarkUnaryInterceptor measures what validating one valid SearchRequest adds to a call:
// the interceptor around a handler that does nothing.
func BenchmarkUnaryInterceptor(b *testing.B) {
	v, err := validation.New(&queryv1.SearchRequest{})
	if err != nil {
		b.Fatal(err)
	}
	icpt := v.UnaryServerInterceptor()
	req := &queryv1.SearchRequest{Query: "union constitution war", TopK: 10}
	info := &grpc.UnaryServerInfo{FullMethod: "/gather.query.v1.QueryService/Search"}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := icpt(ctx, req, info, handler); err != nil {
			b.Fatal(err)
		}
	}
}
