package proxy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/shardtest"
)

// TestAnswersFollowTopology: after the fan-out's topology changes, answers name the new shards
// (hits and coverage), and a shard known without a replica is reported UNAVAILABLE in coverage.
func TestAnswersFollowTopology(t *testing.T) {
	t.Parallel()
	c := newCluster(t, fanout.Config{}, shardtest.Behavior{Hits: shardtest.Hits("a", 3, 1)}, shardtest.Behavior{Hits: shardtest.Hits("b", 3, 2)})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := c.client.Search(ctx, &queryv1.SearchRequest{Query: "q", TopK: 10})
	if err != nil || resp.GetCoverage().GetShardsTotal() != 2 {
		t.Fatalf("before: %v, coverage %v", err, resp.GetCoverage())
	}
	added := shardtest.Start(t, shardtest.Behavior{Hits: shardtest.Hits("z", 3, 3)})
	if _, err := c.fan.Update([]fanout.ShardSpec{
		{Name: "s0", Replicas: []string{c.shards[0].Addr()}},
		{Name: "s2", Replicas: []string{added.Addr()}},
		{Name: "s3"},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err = c.client.Search(ctx, &queryv1.SearchRequest{Query: "q", TopK: 10})
	if err != nil {
		t.Fatal(err)
	}
	if cov := resp.GetCoverage(); cov.GetShardsTotal() != 3 || cov.GetShardsSucceeded() != 2 {
		t.Errorf("coverage %v, want 2 of 3 shards", cov)
	}
	var names []string
	for _, sr := range resp.GetShards() {
		names = append(names, sr.GetShard())
		if sr.GetShard() == "s3" && (sr.GetStatus() != queryv1.ShardStatus_SHARD_STATUS_UNAVAILABLE || !strings.Contains(sr.GetError(), "no replica")) {
			t.Errorf("s3 without replicas: %v %q, want UNAVAILABLE saying no replica", sr.GetStatus(), sr.GetError())
		}
	}
	if strings.Join(names, ",") != "s0,s2,s3" {
		t.Errorf("shard results %v, want s0,s2,s3", names)
	}
	for _, h := range resp.GetHits() {
		if want := map[byte]string{'a': "s0", 'z': "s2"}[h.GetDocId()[0]]; h.GetShard() != want {
			t.Errorf("hit %s named shard %q, want %q", h.GetDocId(), h.GetShard(), want)
		}
	}
	if len(resp.GetHits()) != 6 {
		t.Errorf("%d hits, want the 6 of s0 and s2", len(resp.GetHits()))
	}
}
