package proxy

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/fanout"
)

// TestHitSizeMatchesProto: hitSize is exactly what a hit adds to an encoded answer.
func TestHitSizeMatchesProto(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	str := func(max int) string { return strings.Repeat("x", rng.IntN(max+1)) }
	scores := []float64{0, math.Copysign(0, -1), 1.5, -3, math.MaxFloat64}
	for i := range 2000 {
		h := &queryv1.Hit{DocId: str(3), Score: scores[i%len(scores)], Shard: str(3), Text: str(300)}
		if n := rng.IntN(4); n > 0 {
			h.Fields = map[string]string{}
			for range n {
				h.Fields[str(2)] = str(200)
			}
		}
		want := proto.Size(&queryv1.SearchResponse{Hits: []*queryv1.Hit{h}})
		if got := hitSize(h.GetDocId(), h.GetScore(), h.GetShard(), h.GetText(), h.GetFields()); got != want {
			t.Fatalf("hitSize(%v) = %d, proto says %d", h, got, want)
		}
	}
}

// TestMaxRequestBytes: the largest valid request fits, exactly or nearly, and a longer query
// does not.
func TestMaxRequestBytes(t *testing.T) {
	t.Parallel()
	for _, maxQuery := range []int{1, 100, 1024, 1 << 20} {
		cfg := Config{MaxQueryBytes: maxQuery}.withDefaults()
		largest := &queryv1.SearchStreamRequest{
			Query: strings.Repeat("q", maxQuery), TopK: math.MaxUint32,
			PartialPolicy: queryv1.PartialPolicy(math.MinInt32),
			ShardTimeout:  &durationpb.Duration{Seconds: math.MinInt64, Nanos: math.MinInt32},
		}
		got, want := cfg.MaxRequestBytes(), proto.Size(largest)
		if got != want {
			t.Errorf("max_query_bytes %d: MaxRequestBytes %d, the largest request encodes to %d", maxQuery, got, want)
		}
		largest.Query += "q"
		if proto.Size(largest) <= got {
			t.Errorf("max_query_bytes %d: a longer query still fits in %d bytes", maxQuery, got)
		}
	}
}

// TestSummaryBound: the worst summary (every number at its longest, every shard failed with the
// longest error, names and replicas at their longest, cut) fits in summaryBound, as a
// SearchResponse and as a SearchStream's last message.
func TestSummaryBound(t *testing.T) {
	t.Parallel()
	names := []string{"s0", "a-much-longer-shard-name", strings.Repeat("n", 200)}
	const replicaLen = 300
	worstDur := &durationpb.Duration{Seconds: math.MinInt64, Nanos: math.MinInt32}
	sum := &queryv1.SearchSummary{
		Coverage: &queryv1.Coverage{ShardsTotal: math.MaxUint32, ShardsSucceeded: math.MaxUint32,
			Degraded: true, DocumentsSearched: math.MaxUint64},
		TotalMatches: math.MaxUint64, Took: worstDur, Truncated: true,
		TruncationReason: truncationReason(math.MaxUint32, math.MaxInt),
	}
	if n := len(sum.GetTruncationReason()); n > maxReasonBytes {
		t.Errorf("a truncation reason of %d bytes, over maxReasonBytes (%d)", n, maxReasonBytes)
	}
	for _, name := range names {
		sum.Shards = append(sum.Shards, &queryv1.ShardResult{
			Shard: name, Status: queryv1.ShardStatus_SHARD_STATUS_RESOURCE_EXHAUSTED, Replica: strings.Repeat("r", replicaLen),
			Hits: math.MaxUint32, Latency: worstDur, Error: strings.Repeat("e", fanout.MaxErrorTextBytes),
			StoppedEarly: true, TotalMatches: math.MaxUint64,
			Source: queryv1.AttemptSource_ATTEMPT_SOURCE_RETRY, Attempts: math.MaxUint32,
		})
	}
	bound := summaryBound(names, replicaLen)
	if n := proto.Size(&queryv1.SearchStreamResponse{Summary: sum}); n > bound {
		t.Errorf("summary message of %d bytes, bound %d", n, bound)
	}
	if n := proto.Size(answer(nil, sum)); n > bound {
		t.Errorf("answer without hits of %d bytes, bound %d", n, bound)
	}
}

func TestSatAdd(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ a, b, want uint64 }{
		{1, 2, 3},
		{math.MaxUint64, 0, math.MaxUint64},
		{math.MaxUint64, 1, math.MaxUint64},
		{math.MaxUint64 - 1, math.MaxUint64 - 1, math.MaxUint64},
		{1 << 63, 1 << 63, math.MaxUint64},
		{1<<63 - 1, 1 << 63, math.MaxUint64},
	} {
		if got := satAdd(tc.a, tc.b); got != tc.want {
			t.Errorf("satAdd(%d, %d) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestSummarizeTotals: the totals are those of the shards that answered, saturated.
func TestSummarizeTotals(t *testing.T) {
	t.Parallel()
	results := []fanout.Result{
		{Shard: "a", Status: fanout.StatusOK, TotalMatches: math.MaxUint64 - 5, Documents: math.MaxUint64},
		{Shard: "b", Status: fanout.StatusOK, TotalMatches: 10, Documents: 10},
		{Shard: "c", Status: fanout.StatusFailed, Err: errors.New("x"), TotalMatches: 1, Documents: 1},
	}
	sum := summarize(results, nil)
	if sum.GetTotalMatches() != math.MaxUint64 || sum.GetCoverage().GetDocumentsSearched() != math.MaxUint64 {
		t.Errorf("totals %d, %d; want both saturated", sum.GetTotalMatches(), sum.GetCoverage().GetDocumentsSearched())
	}
	sum = summarize([]fanout.Result{results[1], results[2]}, nil)
	if sum.GetTotalMatches() != 10 || sum.GetCoverage().GetDocumentsSearched() != 10 {
		t.Errorf("totals %d, %d; want 10 and 10, without the failed shard's", sum.GetTotalMatches(), sum.GetCoverage().GetDocumentsSearched())
	}
	if got := sum.GetShards()[1].GetTotalMatches(); got != 1 {
		t.Errorf("the failed shard's own total_matches is %d, want what it said (1)", got)
	}
}

// TestSummarizeSources: each shard result says which attempt answered and how many were made.
func TestSummarizeSources(t *testing.T) {
	t.Parallel()
	results := []fanout.Result{
		{Shard: "a", Status: fanout.StatusOK, Source: fanout.SourcePrimary, Attempts: 1},
		{Shard: "b", Status: fanout.StatusOK, Source: fanout.SourceHedge, Attempts: 2},
		{Shard: "c", Status: fanout.StatusOK, Source: fanout.SourceRetry, Attempts: 3},
	}
	want := []queryv1.AttemptSource{queryv1.AttemptSource_ATTEMPT_SOURCE_PRIMARY,
		queryv1.AttemptSource_ATTEMPT_SOURCE_HEDGE, queryv1.AttemptSource_ATTEMPT_SOURCE_RETRY}
	for i, r := range summarize(results, nil).GetShards() {
		if r.GetSource() != want[i] || r.GetAttempts() != uint32(i+1) {
			t.Errorf("shard %s: source %v, %d attempts; want %v, %d", r.GetShard(), r.GetSource(), r.GetAttempts(), want[i], i+1)
		}
	}
}

// TestMasksHideReplicas: with hidden replicas, a result names the replica's ordinal and its error
// carries no address, whatever the transport put in it.
func TestMasksHideReplicas(t *testing.T) {
	t.Parallel()
	m := newMasks([][]string{{"127.0.0.1:7071"}, {"shard-b.internal:7072", "[::1]:7082"}})
	results := []fanout.Result{
		{Shard: "a", Replica: "127.0.0.1:7071", Status: fanout.StatusUnavailable,
			Err: errors.New(`shard answered Unavailable: connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:7071: connect: connection refused"`)},
		{Shard: "b", Replica: "[::1]:7082", ReplicaIndex: 1, Status: fanout.StatusUnavailable,
			Err: errors.New(`dial tcp 10.1.2.3:7072 (shard-b.internal:7072) and [::1]:7082 then [fe80::1%eth0]:9`)},
		{Shard: "c", Replica: "shard-b.internal:7072", Status: fanout.StatusOK},
	}
	m.shards = append(m.shards, m.shards[1])
	sum := summarize(results, m)
	for i, want := range []string{"replica 1", "replica 2", "replica 1"} {
		r := sum.GetShards()[i]
		if r.GetReplica() != want {
			t.Errorf("shard %s: replica %q, want %q", r.GetShard(), r.GetReplica(), want)
		}
		for _, leak := range []string{"127.0.0.1", "7071", "10.1.2.3", "shard-b.internal", "::1", "fe80"} {
			if strings.Contains(r.GetError(), leak) {
				t.Errorf("shard %s: error %q shows %q", r.GetShard(), r.GetError(), leak)
			}
		}
	}
	if got := sum.GetShards()[0].GetError(); !strings.Contains(got, "dial tcp replica 1: connect: connection refused") {
		t.Errorf("error %q lost its sense", got)
	}
	if sum := summarize(results, nil); sum.GetShards()[0].GetReplica() != "127.0.0.1:7071" {
		t.Errorf("replica %q without masks, want the address", sum.GetShards()[0].GetReplica())
	}
}

func BenchmarkHitSize(b *testing.B) {
	fields := map[string]string{"source_id": "1861_abraham_lincoln_r", "year": "1861", "president": "Abraham Lincoln",
		"party": "Republican", "passage": "7"}
	text := strings.Repeat("w", 700)
	for b.Loop() {
		_ = hitSize("1861_abraham_lincoln_r#007", 3.25, "shard-00", text, fields)
	}
}
