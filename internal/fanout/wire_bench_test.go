package fanout

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
)

// BenchmarkCodec measures reading one shard message of 64 hits, in two shapes: the synthetic
// shard's (200-byte texts, 2 fields) and the bundled corpus's (about 1 KiB of text, 5 fields).
// decode=protobuf is what the codec did before it kept payloads encoded (scan, then protobuf-go
// decodes every hit, texts and fields maps included); decode=payload is what it does now.
func BenchmarkCodec(b *testing.B) {
	for _, shape := range []struct {
		name         string
		text, fields int
	}{{"synthetic", 200, 2}, {"corpus", 1000, 5}} {
		hits := make([]*shardv1.Hit, 64)
		for i := range hits {
			h := &shardv1.Hit{DocId: fmt.Sprintf("doc-%06d", i), Score: 100 - float64(i)/8, Text: strings.Repeat("w", shape.text),
				Fields: map[string]string{}}
			for j := range shape.fields {
				h.Fields[fmt.Sprint("field", j)] = strconv.Itoa(1790 + i*j)
			}
			hits[i] = h
		}
		msg, err := proto.Marshal(&shardv1.SearchResponse{Hits: hits, TotalMatches: 1000})
		if err != nil {
			b.Fatal(err)
		}
		data := mem.BufferSlice{mem.SliceBuffer(msg)}
		b.Run(shape.name+"/decode=protobuf", func(b *testing.B) {
			c := &codec{base: encoding.GetCodecV2(grpcproto.Name), topK: 1000, maxFields: 32}
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if err := c.scan(msg); err != nil {
					b.Fatal(err)
				}
				var resp shardv1.SearchResponse
				if err := discardUnknown.Unmarshal(msg, &resp); err != nil || len(resp.GetHits()) != 64 {
					b.Fatal(err)
				}
			}
		})
		b.Run(shape.name+"/decode=payload", func(b *testing.B) {
			c := &codec{base: encoding.GetCodecV2(grpcproto.Name), topK: 1000, maxFields: 32}
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				var resp shardv1.SearchResponse
				if err := c.Unmarshal(data, &resp); err != nil || len(c.hits) != 64 {
					b.Fatal(err)
				}
			}
		})
	}
}
