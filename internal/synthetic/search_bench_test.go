package synthetic_test

import (
	"fmt"
	"testing"

	"github.com/gatherproxy/gather/internal/shardtest"
	"github.com/gatherproxy/gather/internal/synthetic"
)

// BenchmarkSearch measures one warm Search call over an in-memory gRPC connection: the synthetic
// shard's own cost plus grpc-go's, the floor under any proxy measurement that uses it.
func BenchmarkSearch(b *testing.B) {
	for _, topK := range []uint32{10, 100} {
		b.Run(fmt.Sprintf("top_k=%d", topK), func(b *testing.B) {
			s := start(b, synthetic.New(1))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := shardtest.Collect(b.Context(), s.client, "union", topK); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
