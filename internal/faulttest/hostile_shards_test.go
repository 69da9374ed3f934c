package faulttest

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/shardtest"
)

// hostileCase is one shard that breaks the contract or the size limits in one way, and what the
// proxy must report for it.
type hostileCase struct {
	name    string
	fan     fanout.Config
	shard   shardtest.Behavior
	status  queryv1.ShardStatus
	hits    uint32 // hits kept from the hostile shard
	errHas  string // in its error text
	errNot  string // never in its error text
	queries int    // how many times to ask (default 3)
}

// msg is a message of hits.
func msg(hits ...*shardv1.Hit) *shardv1.SearchResponse { return &shardv1.SearchResponse{Hits: hits} }

// runHostile puts the hostile shard between two healthy ones, asks the proxy, and checks: the
// hostile shard has the right status and a short, clean error; the healthy shards' hits are
// merged; the answer is ordered; and nothing is left behind (goroutines, sockets, heap).
func runHostile(t *testing.T, tc hostileCase) {
	t.Helper()
	e := newEnv(t, options{fan: tc.fan}, healthy(0), tc.shard, healthy(2))
	b := e.takeBaseline(t)
	queries := tc.queries
	if queries == 0 {
		queries = 3
	}
	for range queries {
		resp, err := e.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 30})
		if err != nil {
			t.Fatal(err)
		}
		r := resp.GetShards()[1]
		if r.GetStatus() != tc.status || r.GetHits() != tc.hits {
			t.Fatalf("hostile shard: %v with %d hits (%q); want %v with %d", r.GetStatus(), r.GetHits(), r.GetError(), tc.status, tc.hits)
		}
		errText := r.GetError()
		if len(errText) > fanout.MaxErrorTextBytes || !utf8.ValidString(errText) || strings.ContainsAny(errText, "\x00\n\u202e") ||
			!strings.Contains(errText, tc.errHas) || (tc.errNot != "" && strings.Contains(errText, tc.errNot)) {
			t.Fatalf("hostile shard's error (%d bytes) %q: want at most %d clean bytes with %q", len(errText), errText, fanout.MaxErrorTextBytes, tc.errHas)
		}
		from := map[string]int{}
		for _, h := range resp.GetHits() {
			from[h.GetShard()]++
		}
		if len(resp.GetHits()) != 30 || from["s0"] == 0 || from["s2"] == 0 || uint32(from["s1"]) > tc.hits {
			t.Fatalf("%d hits, by shard %v; want 30 with the healthy shards' merged", len(resp.GetHits()), from)
		}
		assertSorted(t, resp.GetHits())
	}
	e.nothingLeft(t, b)
}

// TestHostileShardGiantMessages: a shard sends a 3 MiB message. It is refused unread, as a
// protocol violation naming the limit, after the shard's good first message.
func TestHostileShardGiantMessages(t *testing.T) {
	// 3 MiB: over the proxy's limit, under grpc-go's default one (4 MiB).
	giant := msg(&shardv1.Hit{DocId: "giant", Score: 1, Text: strings.Repeat("g", 3<<20)})
	runHostile(t, hostileCase{
		shard:  shardtest.Behavior{Script: []shardtest.Step{{Msg: msg(hits("h", 8, 1)...)}, {Msg: giant}}},
		status: queryv1.ShardStatus_SHARD_STATUS_PROTOCOL_VIOLATION, hits: 8,
		errHas: "max_shard_message_bytes (1048576)",
	})
}

// TestHostileShardGiantFieldMaps: a hit with 50,000 field entries (under the message limit,
// ~5 MiB once decoded) is refused before decoding; a hit with a few huge fields is refused by
// the contract check.
func TestHostileShardGiantFieldMaps(t *testing.T) {
	many := make(map[string]string, 50_000)
	for i := range 50_000 {
		many[strconv.Itoa(i)] = ""
	}
	// Encoding the map takes the shard a while under the race detector: not idle.
	slow := fanout.Config{ShardTimeout: 30 * time.Second, IdleTimeout: 20 * time.Second}
	huge := map[string]string{"a": strings.Repeat("v", 100_000), "b": "x"}
	for _, tc := range []hostileCase{
		{name: "many entries", errHas: "max_hit_fields", hits: 8, fan: slow, shard: shardtest.Behavior{Script: []shardtest.Step{
			{Msg: msg(hits("h", 8, 1)...)}, {Msg: msg(&shardv1.Hit{DocId: "map", Score: 1, Fields: many})}}}},
		{name: "huge entries", errHas: "max_hit_field_bytes (1024)", hits: 8, shard: shardtest.Behavior{Script: []shardtest.Step{
			{Msg: msg(hits("h", 8, 1)...)}, {Msg: msg(&shardv1.Hit{DocId: "map", Score: 1, Fields: huge})}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.status = queryv1.ShardStatus_SHARD_STATUS_PROTOCOL_VIOLATION
			runHostile(t, tc)
		})
	}
}

// TestHostileShardDripFeedsEmptyMessages: a shard sends its first hits, then a message without
// hits every 2ms. It never goes silent, but makes no progress: the idle timeout cuts it.
func TestHostileShardDripFeedsEmptyMessages(t *testing.T) {
	runHostile(t, hostileCase{
		fan:    fanout.Config{ShardTimeout: 20 * time.Second, IdleTimeout: 400 * time.Millisecond},
		shard:  shardtest.Behavior{Script: shardtest.Drip(msg(hits("h", 8, 1)...), 5000, 2*time.Millisecond)},
		status: queryv1.ShardStatus_SHARD_STATUS_DEADLINE_EXCEEDED, hits: 8,
		errHas:  "idle",
		queries: 1,
	})
}

// TestHostileShardInfiniteScores: +Inf first, or -Inf after good hits, is a violation.
func TestHostileShardInfiniteScores(t *testing.T) {
	good := hits("h", 8, 1)
	for _, tc := range []hostileCase{
		{name: "+Inf first", hits: 0, errHas: "+Inf", shard: shardtest.Behavior{Script: []shardtest.Step{
			{Msg: msg(append([]*shardv1.Hit{{DocId: "inf", Score: math.Inf(1)}}, good...)...)}}}},
		{name: "-Inf last", hits: 8, errHas: "-Inf", shard: shardtest.Behavior{Script: []shardtest.Step{
			{Msg: msg(good...)}, {Msg: msg(&shardv1.Hit{DocId: "zz", Score: math.Inf(-1)})}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.status = queryv1.ShardStatus_SHARD_STATUS_PROTOCOL_VIOLATION
			runHostile(t, tc)
		})
	}
}

// TestHostileShardDuplicateIDs: the same doc_id again at a lower score, in a later message.
func TestHostileShardDuplicateIDs(t *testing.T) {
	good := hits("h", 8, 1)
	again := &shardv1.Hit{DocId: good[2].GetDocId(), Score: good[7].GetScore() - 1}
	runHostile(t, hostileCase{
		shard:  shardtest.Behavior{Script: []shardtest.Step{{Msg: msg(good...)}, {Msg: msg(again)}}},
		status: queryv1.ShardStatus_SHARD_STATUS_PROTOCOL_VIOLATION, hits: 8,
		errHas: "repeated",
	})
}

// TestHostileShardOverflowingTotals: shards that claim nearly 2^64 matches and documents make
// the totals saturate, not wrap around; a failed shard's claims are not counted at all.
func TestHostileShardOverflowingTotals(t *testing.T) {
	braggart := healthy(1)
	braggart.TotalMatches, braggart.Documents = math.MaxUint64-10, math.MaxUint64-10
	liar := shardtest.Behavior{Hits: hits("l", 3, 4), TotalMatches: math.MaxUint64, Documents: math.MaxUint64,
		Err: status.Error(codes.Internal, "failed after all")}
	e := newEnv(t, options{}, healthy(0), braggart, healthy(2), liar)
	b := e.takeBaseline(t)
	resp, err := e.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 200})
	if err != nil {
		t.Fatal(err)
	}
	if got := statusOf(resp); got[1] != queryv1.ShardStatus_SHARD_STATUS_OK || got[3] != queryv1.ShardStatus_SHARD_STATUS_FAILED {
		t.Fatalf("statuses %v, want the braggart OK and the liar FAILED", got)
	}
	if resp.GetTotalMatches() != math.MaxUint64 || resp.GetCoverage().GetDocumentsSearched() != math.MaxUint64 {
		t.Errorf("total_matches %d, documents_searched %d; want both saturated at 2^64-1",
			resp.GetTotalMatches(), resp.GetCoverage().GetDocumentsSearched())
	}
	e.shards[1].SetBehavior(healthy(1))
	resp, err = e.client.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 200})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetTotalMatches() != 150 || resp.GetCoverage().GetDocumentsSearched() != 3000 {
		t.Errorf("total_matches %d, documents_searched %d; want 150 and 3000, without the failed shard's",
			resp.GetTotalMatches(), resp.GetCoverage().GetDocumentsSearched())
	}
	e.nothingLeft(t, b)
}

// TestHostileShardErrorText: a shard's error text reaches QS short and clean. A megabyte of it
// is refused by the header limit before the proxy reads it (the shard's gRPC server resets the
// stream instead); 3 KiB of it (9 KiB once percent-encoded, under the limit), with control
// characters and invalid UTF-8, is cut and cleaned.
func TestHostileShardErrorText(t *testing.T) {
	dirty := "boom\x00\x1b[2J\xff\u202e" + strings.Repeat("ü\n", 1000)
	for _, tc := range []hostileCase{
		{name: "1 MiB", errHas: "shard answered", errNot: "xxxx", shard: shardtest.Behavior{
			Hits: hits("h", 8, 1), Batch: 8, Err: status.Error(codes.Internal, strings.Repeat("x", 1<<20))}},
		{name: "3 KiB dirty", errHas: "boom", shard: shardtest.Behavior{Hits: hits("h", 8, 1), Batch: 8,
			Err: status.Error(codes.Internal, dirty)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.status, tc.hits = queryv1.ShardStatus_SHARD_STATUS_FAILED, 8
			runHostile(t, tc)
		})
	}
}
