package proxy

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/fanout"
)

// BenchmarkAnswer measures building and encoding an answer of K merged hits of the synthetic
// shard's shape (200-byte texts, 2 fields) from 4 shards. encode=decoded is what the proxy did
// before it kept payloads encoded: a queryv1.Hit per hit, sharing the decoded text and fields
// map, marshalled by protobuf-go (the decoding itself is in fanout's BenchmarkCodec);
// encode=payload copies the hits' encoded payloads (appendHit).
func BenchmarkAnswer(b *testing.B) {
	for _, k := range []int{10, 100} {
		src := make([]*shardv1.Hit, k)
		for i := range src {
			src[i] = &shardv1.Hit{DocId: fmt.Sprintf("doc-%06d", i), Score: 100 - float64(i)/8, Text: strings.Repeat("w", 200),
				Fields: map[string]string{"source_id": "sotu-" + strconv.Itoa(1790+i), "passage": strconv.Itoa(i)}}
		}
		received := fanout.NewShardHits(src)
		names := []string{"shard-00", "shard-01", "shard-02", "shard-03"}
		sum := &queryv1.SearchSummary{Coverage: &queryv1.Coverage{ShardsTotal: 4, ShardsSucceeded: 4}, TotalMatches: 1000}
		b.Run(fmt.Sprintf("K=%d/encode=decoded", k), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				slab := make([]queryv1.Hit, k)
				resp := &queryv1.SearchResponse{Coverage: sum.Coverage, TotalMatches: sum.TotalMatches, Hits: make([]*queryv1.Hit, k)}
				for i, h := range src {
					hit := &slab[i]
					hit.DocId, hit.Score, hit.Shard, hit.Text, hit.Fields = h.GetDocId(), h.GetScore(), names[i%4], h.GetText(), h.GetFields()
					resp.Hits[i] = hit
				}
				if _, err := proto.Marshal(resp); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("K=%d/encode=payload", k), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				out := &collect{topK: uint32(k)}
				for i := range received {
					h := fanout.Hit{ShardHit: &received[i], Shard: i % 4}
					_ = out.add(h, names[h.Shard], answerHitSize(h, names[h.Shard]))
				}
				if _, err := proto.Marshal(answer(out.hits, sum)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
