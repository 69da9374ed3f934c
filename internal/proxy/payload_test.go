package proxy

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/fanout"
)

// randomShardHits makes n shard hits of random shapes: empty and long texts, no fields, an empty
// map and maps of up to 32 entries, empty keys and values, text beyond ASCII, scores of either
// sign and zero.
func randomShardHits(r *rand.Rand, n int) []*shardv1.Hit {
	words := []string{"", "a", "union", "\u00e9t\u00e9", "\u65e5\u672c\u8a9e", "\U0001f600", "\u202e", "x\x00y",
		strings.Repeat("long ", 40), strings.Repeat("\u00fc", 200)}
	text := func(most int) string {
		var b strings.Builder
		for range r.IntN(most + 1) {
			b.WriteString(words[r.IntN(len(words))])
		}
		return b.String()
	}
	hits := make([]*shardv1.Hit, n)
	for i := range hits {
		h := &shardv1.Hit{DocId: text(2), Score: []float64{0, math.Copysign(0, -1), 7, -2.5, r.NormFloat64() * 1e6}[r.IntN(5)], Text: text(10)}
		if r.IntN(3) > 0 {
			h.Fields = map[string]string{}
			for range r.IntN([]int{2, 6, 33}[r.IntN(3)]) {
				h.Fields[text(1)] = text(2)
			}
		}
		hits[i] = h
	}
	return hits
}

// TestAnswerHitsAsBefore: an answer whose hits appendHit wrote, from the shards' hits as the
// fan-out receives them, decodes with protobuf to the answer the proxy built before it carried
// payloads encoded (a queryv1.Hit per hit, its text and fields decoded from the shard's message),
// as a SearchResponse and as a SearchStream message; answerHitSize is what each hit adds, as
// hitSize says of the old answer's.
func TestAnswerHitsAsBefore(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(10, 11))
	names := []string{"s0", "", "a-longer-shard-name", "\u00e9"}
	for range 300 {
		src := randomShardHits(r, r.IntN(40))
		// As received: through the wire and the codec (fanout.NewShardHits makes the same).
		received := fanout.NewShardHits(src)
		old := &queryv1.SearchResponse{TotalMatches: 9}
		var raw []byte
		for i := range received {
			h := fanout.Hit{ShardHit: &received[i], Shard: r.IntN(len(names))}
			shard := names[h.Shard]
			s := src[i]
			oldHit := &queryv1.Hit{DocId: s.GetDocId(), Score: s.GetScore(), Shard: shard, Text: s.GetText(), Fields: s.GetFields()}
			old.Hits = append(old.Hits, oldHit)
			size := answerHitSize(h, shard)
			before := len(raw)
			raw = appendHit(raw, h, shard)
			if len(raw)-before != size || size != hitSize(s.GetDocId(), s.GetScore(), shard, s.GetText(), s.GetFields()) {
				t.Fatalf("hit %v: appended %d bytes, answerHitSize %d, hitSize %d", oldHit, len(raw)-before, size,
					hitSize(s.GetDocId(), s.GetScore(), shard, s.GetText(), s.GetFields()))
			}
		}
		resp := answer(raw, &queryv1.SearchSummary{TotalMatches: 9})
		if got, want := proto.Size(resp), proto.Size(old); got != want {
			t.Fatalf("answer of %d bytes, the old one %d", got, want)
		}
		b, err := proto.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		got := &queryv1.SearchResponse{}
		if err := proto.Unmarshal(b, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, old) {
			t.Fatalf("answer decodes to\n%v\nthe old one was\n%v", got, old)
		}
		// The same hits as a SearchStream message, and decoded in place for in-process callers.
		msg := &queryv1.SearchStreamResponse{}
		msg.ProtoReflect().SetUnknown(raw)
		if b, err = proto.Marshal(msg); err != nil {
			t.Fatal(err)
		}
		gotMsg := &queryv1.SearchStreamResponse{}
		if err := proto.Unmarshal(b, gotMsg); err != nil || !proto.Equal(gotMsg, &queryv1.SearchStreamResponse{Hits: old.Hits}) {
			t.Fatalf("stream message: %v (%v), want the old answer's hits", gotMsg, err)
		}
		if err := decodeHits(resp); err != nil || !proto.Equal(resp, old) || len(resp.ProtoReflect().GetUnknown()) != 0 {
			t.Fatalf("decodeHits: %v (%v), want the old answer and no unknown bytes", resp, err)
		}
	}
}

// TestHitFieldNumbers: appendHit's field numbers are gather.query.v1.Hit's and the hits'.
func TestHitFieldNumbers(t *testing.T) {
	t.Parallel()
	hit := (&queryv1.Hit{}).ProtoReflect().Descriptor().Fields()
	for name, num := range map[string]int{"doc_id": int(numHitDocID), "score": int(numHitScore), "shard": int(numHitShard),
		"text": int(numHitText), "fields": int(numHitFields)} {
		if fd := hit.ByName(protoreflect.Name(name)); fd == nil || int(fd.Number()) != num {
			t.Errorf("gather.query.v1.Hit.%s: want field %d, the descriptor says %v", name, num, fd)
		}
	}
	for _, m := range []proto.Message{&queryv1.SearchResponse{}, &queryv1.SearchStreamResponse{}} {
		if fd := m.ProtoReflect().Descriptor().Fields().ByName("hits"); fd == nil || fd.Number() != numHits || !fd.IsList() {
			t.Errorf("%s.hits: want repeated field %d, the descriptor says %v", m.ProtoReflect().Descriptor().FullName(), numHits, fd)
		}
	}
}
