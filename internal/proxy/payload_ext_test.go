package proxy_test

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/apidesc"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/metrictest"
	"github.com/gatherproxy/gather/internal/proxy"
	"github.com/gatherproxy/gather/internal/shardtest"
)

// sortedRandomHits makes n hits of random shapes within the default caps (unicode, empty texts,
// no fields, an empty map, up to 32 entries), each doc_id once, in the shard's order.
func sortedRandomHits(r *rand.Rand, prefix string, n int) []*shardv1.Hit {
	words := []string{"", "a", "war", "\u00e9t\u00e9", "\u65e5\u672c", "\U0001f600", "\u202e", "x\x00y", strings.Repeat("\u00fc", 100)}
	str := func(most int) string {
		var b strings.Builder
		for range r.IntN(most + 1) {
			b.WriteString(words[r.IntN(len(words))])
		}
		return b.String()
	}
	hits := make([]*shardv1.Hit, n)
	for i := range hits {
		h := &shardv1.Hit{DocId: fmt.Sprintf("%s%s-%d", str(1), prefix, i), Score: float64(r.IntN(20)) - 5, Text: str(30)}
		if r.IntN(3) > 0 {
			h.Fields = map[string]string{}
			for range r.IntN([]int{3, 33}[r.IntN(2)]) {
				h.Fields[str(1)] = str(2)
			}
		}
		hits[i] = h
	}
	slices.SortFunc(hits, func(a, b *shardv1.Hit) int {
		if c := cmp.Compare(b.GetScore(), a.GetScore()); c != 0 {
			return c
		}
		return strings.Compare(a.GetDocId(), b.GetDocId())
	})
	return hits
}

// oldAnswerHits is what the proxy answered before it carried payloads encoded: the merged top_k,
// each hit a queryv1.Hit with the shard's text and fields as decoded.
func oldAnswerHits(topK int, perShard ...[]*shardv1.Hit) []*queryv1.Hit {
	type hit struct {
		*shardv1.Hit
		shard int
	}
	var all []hit
	for i, hits := range perShard {
		for _, h := range hits[:min(topK, len(hits))] {
			all = append(all, hit{h, i})
		}
	}
	slices.SortFunc(all, func(a, b hit) int {
		if c := cmp.Compare(b.GetScore(), a.GetScore()); c != 0 {
			return c
		}
		if c := strings.Compare(a.GetDocId(), b.GetDocId()); c != 0 {
			return c
		}
		return cmp.Compare(a.shard, b.shard)
	})
	var out []*queryv1.Hit
	for _, h := range all[:min(topK, len(all))] {
		out = append(out, &queryv1.Hit{DocId: h.GetDocId(), Score: h.GetScore(), Shard: fmt.Sprint("s", h.shard),
			Text: h.GetText(), Fields: h.GetFields()})
	}
	return out
}

// TestAnswersAsBeforeThroughGRPC: through a real gRPC server and client, Search and SearchStream
// answer the hits the proxy answered when it decoded them, text and fields alike, and a client
// that decodes by reflection, as grpcurl does, reads them as hits too. None of them was decoded
// on the way (gather_shard_hits_decoded_total stays 0); the in-process Search, which hands over
// decoded hits, counts what it decodes.
func TestAnswersAsBeforeThroughGRPC(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(20, 21))
	shards := [][]*shardv1.Hit{sortedRandomHits(r, "a", 60), sortedRandomHits(r, "b", 60), sortedRandomHits(r, "c", 60)}
	behaviors := []shardtest.Behavior{{Hits: shards[0], Batch: 7}, {Hits: shards[1]}, {Hits: shards[2], Batch: 1}}
	reg := prometheus.NewRegistry()
	c := newClusterWith(t, fanout.Config{Registerer: reg}, proxy.Config{MaxTopK: 500}, behaviors...)
	decoded := func() float64 {
		t.Helper()
		n, err := testutil.GatherAndCount(reg, "gather_shard_hits_decoded_total")
		if err != nil || n != 1 {
			t.Fatalf("gather_shard_hits_decoded_total: %d series, %v; want one", n, err)
		}
		return metrictest.Sum(t, reg, "gather_shard_hits_decoded_total", nil)
	}
	files, err := apidesc.Files()
	if err != nil {
		t.Fatal(err)
	}
	desc, err := files.FindDescriptorByName("gather.query.v1.SearchResponse")
	if err != nil {
		t.Fatal(err)
	}
	for _, topK := range []uint32{1, 10, 100, 180} {
		want := oldAnswerHits(int(topK), shards...)
		req := &queryv1.SearchRequest{Query: "q", TopK: topK}
		resp, err := c.client.Search(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(resp.GetHits(), want, func(a, b *queryv1.Hit) bool { return proto.Equal(a, b) }) {
			t.Fatalf("top_k %d: Search answered %d hits\n%v\nwant %d\n%v", topK, len(resp.GetHits()), resp.GetHits(), len(want), want)
		}

		stream, err := c.client.SearchStream(t.Context(), &queryv1.SearchStreamRequest{Query: "q", TopK: topK})
		if err != nil {
			t.Fatal(err)
		}
		var streamed []*queryv1.Hit
		for {
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			streamed = append(streamed, m.GetHits()...)
		}
		if !slices.EqualFunc(streamed, want, func(a, b *queryv1.Hit) bool { return proto.Equal(a, b) }) {
			t.Fatalf("top_k %d: SearchStream sent %d hits, want %d as Search", topK, len(streamed), len(want))
		}

		// As grpcurl: a dynamic message of the reflected descriptor, printed as JSON.
		dyn := dynamicpb.NewMessage(desc.(protoreflect.MessageDescriptor))
		if err := c.conn.Invoke(t.Context(), "/gather.query.v1.QueryService/Search", req, dyn); err != nil {
			t.Fatal(err)
		}
		js, err := protojson.Marshal(dyn)
		if err != nil {
			t.Fatal(err)
		}
		fromJSON := &queryv1.SearchResponse{}
		if err := protojson.Unmarshal(js, fromJSON); err != nil {
			t.Fatal(err)
		}
		if len(dyn.ProtoReflect().GetUnknown()) != 0 ||
			!slices.EqualFunc(fromJSON.GetHits(), want, func(a, b *queryv1.Hit) bool { return proto.Equal(a, b) }) {
			t.Fatalf("top_k %d: a reflection client reads %d hits (and %d unknown bytes), want %d", topK,
				len(fromJSON.GetHits()), len(dyn.ProtoReflect().GetUnknown()), len(want))
		}
	}
	if n := decoded(); n != 0 {
		t.Errorf("gather_shard_hits_decoded_total = %v after answers over gRPC, want 0", n)
	}
}

// TestInProcessSearchCountsDecoded: Search called in process hands over decoded hits, the same
// as over gRPC, and counts them in gather_shard_hits_decoded_total.
func TestInProcessSearchCountsDecoded(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(22, 23))
	shards := [][]*shardv1.Hit{sortedRandomHits(r, "a", 30), sortedRandomHits(r, "b", 30)}
	var topo []fanout.ShardSpec
	for i, h := range shards {
		s := shardtest.Start(t, shardtest.Behavior{Hits: h, Batch: 4})
		topo = append(topo, fanout.ShardSpec{Name: fmt.Sprint("s", i), Replicas: []string{s.Addr()}})
	}
	reg := prometheus.NewRegistry()
	fan, err := fanout.New(topo, fanout.Config{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fan.Close() })
	svc := proxy.New(fan, proxy.Config{})
	resp, err := svc.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 25})
	if err != nil {
		t.Fatal(err)
	}
	want := oldAnswerHits(25, shards...)
	if !slices.EqualFunc(resp.GetHits(), want, func(a, b *queryv1.Hit) bool { return proto.Equal(a, b) }) ||
		len(resp.ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("Search answered %v (and %d unknown bytes), want %v", resp.GetHits(), len(resp.ProtoReflect().GetUnknown()), want)
	}
	if n := metrictest.Sum(t, reg, "gather_shard_hits_decoded_total", nil); n != 25 {
		t.Errorf("gather_shard_hits_decoded_total = %v, want the 25 hits decoded", n)
	}
}
