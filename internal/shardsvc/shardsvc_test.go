package shardsvc_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/bounds"
	"github.com/gatherproxy/gather/internal/shardsvc"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		req  *shardv1.SearchRequest
		lim  shardsvc.Limits
		want string // "" means valid
	}{
		{"ok", &shardv1.SearchRequest{Query: "union", TopK: 10}, shardsvc.Limits{}, ""},
		{"query at the default maximum", &shardv1.SearchRequest{Query: strings.Repeat("a", bounds.DefaultMaxQueryBytes), TopK: 1}, shardsvc.Limits{}, ""},
		{"query over the default maximum", &shardv1.SearchRequest{Query: strings.Repeat("a", bounds.DefaultMaxQueryBytes+1), TopK: 1}, shardsvc.Limits{},
			"query is 1025 bytes, above this shard's maximum of 1024: send at most 1024 bytes"},
		{"query over a configured maximum", &shardv1.SearchRequest{Query: "abcdef", TopK: 1}, shardsvc.Limits{MaxQueryBytes: 5}, "query is 6 bytes"},
		{"invalid UTF-8", &shardv1.SearchRequest{Query: "union \xff war", TopK: 1}, shardsvc.Limits{},
			"query is not valid UTF-8 (bad byte at offset 6): send the text encoded as UTF-8"},
		{"truncated rune", &shardv1.SearchRequest{Query: "caf\xc3", TopK: 1}, shardsvc.Limits{}, "bad byte at offset 3"},
		{"U+FFFD itself is fine", &shardv1.SearchRequest{Query: "a \uFFFD b", TopK: 1}, shardsvc.Limits{}, ""},
		{"blank", &shardv1.SearchRequest{Query: " \t\u00a0", TopK: 1}, shardsvc.Limits{}, "query is blank"},
		{"top_k 0", &shardv1.SearchRequest{Query: "q"}, shardsvc.Limits{}, "top_k is 0"},
		{"top_k at the default maximum", &shardv1.SearchRequest{Query: "q", TopK: bounds.DefaultMaxTopK}, shardsvc.Limits{}, ""},
		{"top_k over the default maximum", &shardv1.SearchRequest{Query: "q", TopK: 10000}, shardsvc.Limits{},
			"top_k 10000 is above this shard's maximum of 1000: ask for at most 1000 hits"},
		{"top_k under a raised maximum", &shardv1.SearchRequest{Query: "q", TopK: 10000}, shardsvc.Limits{MaxTopK: 10000}, ""},
	} {
		err := shardsvc.Validate(tc.req, tc.lim)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want)):
			t.Errorf("%s: got %v, want INVALID_ARGUMENT containing %q", tc.name, err, tc.want)
		}
	}
}

// hits returns n hits with texts of textBytes bytes.
func hits(n, textBytes int) []*shardv1.Hit {
	out := make([]*shardv1.Hit, n)
	for i := range out {
		out[i] = &shardv1.Hit{DocId: "doc-" + strings.Repeat("0", 4) + string(rune('a'+i%26)), Score: float64(n - i),
			Text: strings.Repeat("x", textBytes), Fields: map[string]string{"year": "1999"}}
	}
	return out
}

// pack splits hs into messages the way the shards do, the first with both counts at their
// largest encoding.
func pack(t *testing.T, hs []*shardv1.Hit, per int) []*shardv1.SearchResponse {
	t.Helper()
	var msgs []*shardv1.SearchResponse
	for len(hs) > 0 || len(msgs) == 0 {
		n, err := shardsvc.NextBatch(hs, per)
		if err != nil {
			t.Fatal(err)
		}
		m := &shardv1.SearchResponse{Hits: hs[:n]}
		if len(msgs) == 0 {
			m.TotalMatches, m.Documents = 1<<64-1, 1<<64-1
		}
		msgs = append(msgs, m)
		hs = hs[n:]
	}
	return msgs
}

func TestNextBatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		n, text, per   int
		wantMsgs       int
		wantMaxPerMsgs int
	}{
		{"none", 0, 100, 64, 1, 0},
		{"count bound", 130, 200, 64, 3, 64},
		{"no count bound", 130, 200, 0, 1, 130},
		{"byte bound: 100 KB texts", 10, 100_000, 64, 5, 2},
		{"byte bound: one 200 KB hit per message", 3, 200_000, 64, 3, 1},
		{"a hit near the limit", 2, shardsvc.MaxHitBytes - 64, 64, 2, 1},
	} {
		hs := hits(tc.n, tc.text)
		msgs := pack(t, hs, tc.per)
		if len(msgs) != tc.wantMsgs {
			t.Errorf("%s: %d messages, want %d", tc.name, len(msgs), tc.wantMsgs)
		}
		var got []*shardv1.Hit
		for i, m := range msgs {
			if size := proto.Size(m); size > shardsvc.MaxMessageBytes {
				t.Errorf("%s: message %d is %d bytes, over %d", tc.name, i, size, shardsvc.MaxMessageBytes)
			}
			if len(m.GetHits()) > tc.wantMaxPerMsgs {
				t.Errorf("%s: message %d has %d hits, want at most %d", tc.name, i, len(m.GetHits()), tc.wantMaxPerMsgs)
			}
			got = append(got, m.GetHits()...)
		}
		if len(got) != tc.n {
			t.Errorf("%s: %d hits packed, want %d", tc.name, len(got), tc.n)
		}
	}

	// A hit no message can carry is an error naming it, not a message the proxy would refuse.
	big := hits(1, shardsvc.MaxMessageBytes)
	if _, err := shardsvc.NextBatch(big, 64); !errors.Is(err, shardsvc.ErrHitTooLarge) || !strings.Contains(err.Error(), big[0].GetDocId()) {
		t.Errorf("a hit over the limit: got %v, want ErrHitTooLarge naming it", err)
	}
	// ... but only when it comes first: otherwise the batch simply ends before it.
	if n, err := shardsvc.NextBatch(append(hits(2, 10), big...), 64); n != 2 || err != nil {
		t.Errorf("hits before an oversized one: got %d, %v; want 2, nil", n, err)
	}
}

// TestPace: a stream honouring first_batch_hits starts with the hint and doubles up to the
// per-message limit; without a hint, or with one at or above the limit, every message may hold
// the limit.
func TestPace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		first uint32
		limit int
		want  []int
	}{
		{0, 64, []int{64, 64, 64}},
		{0, 0, []int{0, 0}},
		{1, 64, []int{1, 2, 4, 8, 16, 32, 64, 64}},
		{3, 64, []int{3, 6, 12, 24, 48, 64, 64}},
		{2, 5, []int{2, 4, 5, 5}},
		{64, 64, []int{64, 64}},
		{100, 64, []int{64, 64}},
		{5, 0, []int{5, 10, 20, 40}},
		{1 << 31, 0, []int{1 << 30, 0, 0}},
	} {
		p := shardsvc.NewPace(&shardv1.SearchRequest{FirstBatchHits: tc.first}, tc.limit)
		var got []int
		for range tc.want {
			got = append(got, p.Next())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("first %d, limit %d: limits %v, want %v", tc.first, tc.limit, got, tc.want)
		}
	}
}
