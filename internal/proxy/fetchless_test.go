package proxy_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/loadgen"
	"github.com/gatherproxy/gather/internal/metrictest"
	"github.com/gatherproxy/gather/internal/synthetic"
)

// TestFanOut64HitsReceived: at fan-out 64 and top_k 100, against synthetic shards (seeds 1 to
// 64, as `gather shard --synthetic --partition I/64` serves them), every answer equals the
// reference merge of everything the shards would send, and the proxy parses at most 3 × top_k
// hits per query on average (gather_shard_hits_received_total), not the 64 × top_k a full fetch
// decodes.
func TestFanOut64HitsReceived(t *testing.T) {
	if testing.Short() {
		t.Skip("64 shard servers")
	}
	const n, k = 64, 100
	addrs := startSynthetic(t, n)
	reg := prometheus.NewRegistry()
	// A long shard timeout: 64 shard servers under the race detector on a busy machine are slow.
	p := newBenchProxy(t, addrs, fanout.Config{Registerer: reg, ShardTimeout: time.Minute})
	oracle := make([][]*shardv1.Hit, n)
	queries := loadgen.DefaultQueries
	for _, q := range queries {
		for i := range oracle {
			oracle[i] = synthetic.New(uint64(i+1)).Hits(q, k)
		}
		resp, err := p.client.Search(t.Context(), &queryv1.SearchRequest{Query: q, TopK: k})
		if err != nil {
			t.Fatalf("%q: %v", q, err)
		}
		for _, r := range resp.GetShards() {
			if r.GetStatus() != queryv1.ShardStatus_SHARD_STATUS_OK {
				t.Fatalf("%q: shard %s ended %v: %s", q, r.GetShard(), r.GetStatus(), r.GetError())
			}
		}
		if got, want := benchIDs(t, resp.GetHits()), reference(k, oracle...); !slices.Equal(got, want) {
			t.Fatalf("%q: hits\n got %v\nwant %v", q, got, want)
		}
	}
	perQuery := metrictest.Sum(t, reg, "gather_shard_hits_received_total", nil) / float64(len(queries))
	t.Logf("fan-out %d, top_k %d: %.1f hits parsed per query (%.2f × top_k; a full fetch is %d)", n, k, perQuery, perQuery/k, n*k)
	if perQuery > 3*k {
		t.Errorf("%.1f hits parsed per query, want at most 3 × top_k = %d", perQuery, 3*k)
	}
}

// benchIDs is ids for an answer of newBenchProxy, whose shards are named shard-00, shard-01, ...:
// each hit as reference names it, s<index>/<doc_id>.
func benchIDs(t *testing.T, hits []*queryv1.Hit) []string {
	out := make([]string, len(hits))
	for i, h := range hits {
		n, err := strconv.Atoi(strings.TrimPrefix(h.GetShard(), "shard-"))
		if err != nil {
			t.Fatalf("shard name %q: %v", h.GetShard(), err)
		}
		out[i] = fmt.Sprintf("s%d/%s", n, h.GetDocId())
	}
	return out
}
