package merge_test

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/gatherproxy/gather/internal/merge"
)

// hit is shaped like a search hit as the proxy merges them.
type hit struct {
	Score float64
	ID    string
	Shard int
}

// compareHits orders hits by score descending, then ID, then shard.
func compareHits(a, b hit) int {
	if c := cmp.Compare(b.Score, a.Score); c != 0 {
		return c
	}
	if c := strings.Compare(a.ID, b.ID); c != 0 {
		return c
	}
	return cmp.Compare(a.Shard, b.Shard)
}

func lessHit(a, b hit) bool { return compareHits(a, b) < 0 }

// shardHits returns n sorted shards of k hits each, the same on every call.
// Scores are coarse so that ties on score, decided by ID, are common.
func shardHits(n, k int) [][]hit {
	r := rand.New(rand.NewPCG(uint64(n), uint64(k)))
	shards := make([][]hit, n)
	for s := range shards {
		shards[s] = make([]hit, k)
		for i := range shards[s] {
			shards[s][i] = hit{
				Score: float64(r.IntN(1000)) / 100,
				ID:    fmt.Sprintf("doc-%08d", r.IntN(1_000_000)),
				Shard: s,
			}
		}
		slices.SortFunc(shards[s], compareHits)
	}
	return shards
}

// BenchmarkMerge takes the top K hits from N shards that each returned
// their own top K, with the loser tree and with the alternative of sorting
// everything that arrived.
func BenchmarkMerge(b *testing.B) {
	for _, n := range []int{4, 16, 64} {
		for _, k := range []int{10, 100, 1000} {
			shards := shardHits(n, k)
			b.Run(fmt.Sprintf("N=%d/K=%d/impl=losertree", n, k), func(b *testing.B) {
				sl := make([]*merge.SliceSequence[hit], n)
				seqs := make([]merge.Sequence[hit], n)
				for i := range sl {
					sl[i] = merge.FromSlice(shards[i])
					seqs[i] = sl[i]
				}
				var last hit
				b.ReportAllocs()
				for b.Loop() {
					for i, s := range sl {
						s.Reset(shards[i])
					}
					tree := merge.New(lessHit, seqs...)
					for range k {
						if !tree.Next() {
							b.Fatal("merge ran dry")
						}
						last = tree.At()
					}
				}
				_ = last
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*k), "ns/hit")
			})
			b.Run(fmt.Sprintf("N=%d/K=%d/impl=sort", n, k), func(b *testing.B) {
				all := make([]hit, 0, n*k)
				var last hit
				b.ReportAllocs()
				for b.Loop() {
					all = all[:0]
					for _, s := range shards {
						all = append(all, s[:k]...)
					}
					slices.SortFunc(all, compareHits)
					for _, h := range all[:k] {
						last = h
					}
				}
				_ = last
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*k), "ns/hit")
			})
		}
	}
}
