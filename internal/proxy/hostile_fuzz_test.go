package proxy

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/shardtest"
)

// script decodes fuzz input into what a few shards send. Every byte steers one choice; the input
// running out reads as zeros.
type script struct {
	data []byte
}

func (s *script) next() int {
	if len(s.data) == 0 {
		return 0
	}
	b := s.data[0]
	s.data = s.data[1:]
	return int(b)
}

// behavior is one shard's part: up to 5 messages a few ms apart, each of up to 7 hits whose
// scores mostly fall (with NaN, ±Inf and rises mixed in), whose doc_ids repeat, whose texts and
// field maps are sometimes over the caps, a message sometimes over the size limit, counts of any
// size, and sometimes an error with a long, dirty text.
func (s *script) behavior(shard int) shardtest.Behavior {
	var b shardtest.Behavior
	score := 100.0
	for m := range s.next() % 6 {
		msg := &shardv1.SearchResponse{}
		if m == 0 {
			msg.TotalMatches = uint64(s.next()) << (s.next() % 64)
			msg.Documents = math.MaxUint64 - uint64(s.next())
		}
		for range s.next() % 8 {
			h := &shardv1.Hit{DocId: fmt.Sprintf("d%02d", s.next()%20)}
			switch k := s.next(); k % 16 {
			case 0:
				h.Score = math.NaN()
			case 1:
				h.Score = math.Inf(1)
			case 2:
				h.Score = math.Inf(-1)
			case 3:
				h.Score = score + 1
			default:
				score -= float64(k%4) / 2
				h.Score = score
			}
			switch s.next() % 8 {
			case 0:
				h.DocId = strings.Repeat("long", 10) // over the doc_id cap
			case 1:
				h.Text = strings.Repeat("x", 3000) // over the text cap
			case 2:
				h.Text = strings.Repeat("y", 20_000) // the message goes over the size limit
			default:
				h.Text = strings.Repeat("t", s.next()*4)
			}
			if n := s.next() % 7; n > 0 { // more than 4 entries is over the cap
				h.Fields = map[string]string{}
				for j := range n {
					h.Fields[fmt.Sprint("k", j)] = strings.Repeat("v", s.next()/3) // over 64 bytes is over the cap
				}
			}
			msg.Hits = append(msg.Hits, h)
		}
		b.Script = append(b.Script, shardtest.Step{Pause: time.Duration(s.next()%4) * time.Millisecond, Msg: msg})
	}
	if s.next()%4 == 0 {
		b.Err = status.Error(codes.Internal, fmt.Sprintf("shard %d: \x00\xff\u202e %s", shard, strings.Repeat("é\n", s.next()*8)))
	}
	return b
}

// FuzzHostileShards serves what the fuzz input scripts (see script.behavior) from three real
// shards on loopback and drives it through the fan-out and the merge: whatever the shards send,
// nothing panics, the answer is ordered, no hit breaks the contract, every shard's accepted
// hits and all of them stay within the query's hit budget, the answer within max_answer_bytes,
// and shard errors come out short and clean.
func FuzzHostileShards(f *testing.F) {
	shards := make([]*shardtest.Shard, 3)
	topo := make([]fanout.ShardSpec, len(shards))
	for i := range shards {
		shards[i] = shardtest.Start(f, shardtest.Behavior{})
		topo[i] = fanout.ShardSpec{Name: fmt.Sprint("s", i), Replicas: []string{shards[i].Addr()}}
	}
	fcfg := fanout.Config{ShardTimeout: time.Second, IdleTimeout: 200 * time.Millisecond,
		MaxMessageBytes: 16 << 10, MaxDocIDBytes: 16, MaxTextBytes: 2000, MaxFields: 4, MaxFieldBytes: 64,
		MaxQueryHitBytes: 40 << 10}
	fan, err := fanout.New(topo, fcfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = fan.Close() })
	srv := New(fan, Config{MaxAnswerBytes: 6 << 10})

	f.Add([]byte{}, uint8(10))
	f.Add([]byte{3, 1, 2, 9, 5, 4, 0, 40, 0, 5, 1, 30, 2, 10, 1, 7, 4, 0, 9, 2, 3, 50, 5, 6, 7, 8, 9, 10, 11, 12, 13}, uint8(20))
	f.Add([]byte(strings.Repeat("\x05\x01\x07\x11\x04\x09\x03\x80\x02\x00", 30)), uint8(50))
	f.Add([]byte(strings.Repeat("\x02\x00\x00\x07\x00\x10\x01\x03\x00\x00\x05\x02\x00", 40)), uint8(7))
	f.Add([]byte(strings.Repeat("\x01\xff\x07\x03\x00\x01\x02\x06\x03\xc8", 40)), uint8(255))
	f.Fuzz(func(t *testing.T, data []byte, topK uint8) {
		sc := &script{data: data}
		for i, s := range shards {
			s.SetBehavior(sc.behavior(i))
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		q := query{text: "q", topK: uint32(topK%60) + 1}
		out := &collect{}
		var oc outcome
		sum, err := srv.run(ctx, q, out, &oc)
		var budget, answerBytes int64
		for _, r := range oc.results {
			if r.Bytes < 0 || r.Bytes > fcfg.MaxQueryHitBytes {
				t.Fatalf("shard %s: accepted %d bytes, budget %d", r.Shard, r.Bytes, fcfg.MaxQueryHitBytes)
			}
			budget += r.Bytes
			if r.Err != nil {
				if msg := r.Err.Error(); len(msg) > fanout.MaxErrorTextBytes || !utf8.ValidString(msg) || strings.ContainsAny(msg, "\x00\n\u202e") {
					t.Fatalf("shard %s: error text of %d bytes %q is not short and clean", r.Shard, len(msg), msg)
				}
			}
		}
		if budget > fcfg.MaxQueryHitBytes {
			t.Fatalf("the shards' accepted hits cost %d bytes, budget %d", budget, fcfg.MaxQueryHitBytes)
		}
		if err != nil {
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("run: %v, want an answer or UNAVAILABLE", err)
			}
			return
		}
		resp := answer(out.hits, sum)
		if n := proto.Size(resp); n > srv.cfg.MaxAnswerBytes {
			t.Fatalf("answer of %d bytes, max_answer_bytes %d", n, srv.cfg.MaxAnswerBytes)
		}
		if len(out.hits) > srv.viewOf(srv.fan.Current()).room {
			t.Fatalf("hits of %d bytes, room %d", len(out.hits), srv.viewOf(srv.fan.Current()).room)
		}
		if err := decodeHits(resp); err != nil {
			t.Fatalf("the answer's hits do not decode: %v", err)
		}
		hits := resp.GetHits()
		if len(hits) > int(q.topK) {
			t.Fatalf("%d hits for top_k %d", len(hits), q.topK)
		}
		seen := map[string]bool{}
		for i, h := range hits {
			answerBytes += int64(hitSize(h.GetDocId(), h.GetScore(), h.GetShard(), h.GetText(), h.GetFields()))
			if s := h.GetScore(); math.IsNaN(s) || math.IsInf(s, 0) || seen[h.GetShard()+"/"+h.GetDocId()] ||
				len(h.GetDocId()) > fcfg.MaxDocIDBytes || len(h.GetText()) > fcfg.MaxTextBytes || len(h.GetFields()) > fcfg.MaxFields {
				t.Fatalf("hit %d breaks the contract: %v", i, h)
			}
			seen[h.GetShard()+"/"+h.GetDocId()] = true
			if i > 0 {
				p := hits[i-1]
				if p.GetScore() < h.GetScore() || p.GetScore() == h.GetScore() &&
					(p.GetDocId() > h.GetDocId() || p.GetDocId() == h.GetDocId() && p.GetShard() > h.GetShard()) {
					t.Fatalf("hits %d and %d out of order: %v then %v", i-1, i, p, h)
				}
			}
		}
		if answerBytes > int64(srv.viewOf(srv.fan.Current()).room) {
			t.Fatalf("hits of %d bytes, room %d", answerBytes, srv.viewOf(srv.fan.Current()).room)
		}
		if sum.GetTruncated() != strings.Contains(sum.GetTruncationReason(), "max_answer_bytes") {
			t.Fatalf("truncated %v with reason %q", sum.GetTruncated(), sum.GetTruncationReason())
		}
	})
}
