package proxy

import (
	"fmt"
	"math"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/gatherproxy/gather/internal/fanout"
)

// MaxHeaderBytes bounds the header list (metadata) of a request to the QueryService: what QS
// sends is a few short headers and a trace context, and grpc-go would otherwise read 16 MiB.
const MaxHeaderBytes = 16 << 10

// maxStreamMessageBytes bounds the hits of one SearchStream message, so that HTTP/2 flow control
// and the send watchdog act per small message; a single larger hit is sent alone.
const maxStreamMessageBytes = 64 << 10

// maxReasonBytes bounds a truncation reason (truncationReason).
const maxReasonBytes = 160

// ServerOptions returns the options the QueryService's gRPC server needs to keep this
// configuration's promises: it reads no request larger than the largest valid one
// (MaxRequestBytes) and no header list over MaxHeaderBytes, both refused before they are held,
// and sends no message over MaxAnswerBytes (a safety net: the service cuts its answers below it).
// They apply to every service of the server; health, reflection and channelz fit in them.
func (c Config) ServerOptions() []grpc.ServerOption {
	c = c.withDefaults()
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(c.MaxRequestBytes()),
		grpc.MaxHeaderListSize(MaxHeaderBytes),
		grpc.MaxSendMsgSize(c.MaxAnswerBytes),
	}
}

// MaxRequestBytes is the encoded size of the largest valid SearchRequest or SearchStreamRequest
// (they have the same fields): a query of MaxQueryBytes and every other field at its longest
// encoding. A request over it cannot be valid, so the server refuses it (RESOURCE_EXHAUSTED)
// without reading it.
func (c Config) MaxRequestBytes() int {
	c = c.withDefaults()
	const longest = math.MaxUint64 // a negative int32 or enum takes 10 bytes, like the largest uint64
	timeout := protowire.SizeTag(1) + protowire.SizeVarint(longest) + protowire.SizeTag(2) + protowire.SizeVarint(longest)
	return protowire.SizeTag(1) + protowire.SizeBytes(c.MaxQueryBytes) +
		protowire.SizeTag(2) + protowire.SizeVarint(math.MaxUint32) +
		protowire.SizeTag(3) + protowire.SizeVarint(longest) +
		protowire.SizeTag(4) + protowire.SizeBytes(timeout)
}

// hitSize is the encoded size of a queryv1.Hit with these fields as an element of the hits of a
// SearchResponse or SearchStreamResponse (field 1), tag and length included: what it adds to
// the answer.
func hitSize(docID string, score float64, shard, text string, fields map[string]string) int {
	n := 0
	if docID != "" {
		n += 1 + protowire.SizeBytes(len(docID))
	}
	if math.Float64bits(score) != 0 { // -0 is sent, +0 is not
		n += 1 + 8
	}
	if shard != "" {
		n += 1 + protowire.SizeBytes(len(shard))
	}
	if text != "" {
		n += 1 + protowire.SizeBytes(len(text))
	}
	for k, v := range fields {
		entry := 1 + protowire.SizeBytes(len(k)) + 1 + protowire.SizeBytes(len(v))
		n += 1 + protowire.SizeBytes(entry)
	}
	return 1 + protowire.SizeBytes(n)
}

// Field numbers of gather.query.v1.Hit (TestHitFieldNumbers checks them against the descriptor).
const (
	numHitDocID  protowire.Number = 1
	numHitScore  protowire.Number = 2
	numHitShard  protowire.Number = 3
	numHitText   protowire.Number = 4
	numHitFields protowire.Number = 5
	// numHits is the hits field of SearchResponse and of SearchStreamResponse.
	numHits protowire.Number = 1
)

// answerHitSize is hitSize for the hit h of the named shard, computed from what h carries
// without decoding it: what appendHit appends.
func answerHitSize(h fanout.Hit, shard string) int {
	return 1 + protowire.SizeBytes(hitBodySize(h, shard))
}

// hitBodySize is the size of the encoded gather.query.v1.Hit of h, without tag and length.
func hitBodySize(h fanout.Hit, shard string) int {
	n := h.PayloadSize(numHitText, numHitFields)
	if h.DocID != "" {
		n += 1 + protowire.SizeBytes(len(h.DocID))
	}
	if math.Float64bits(h.Score) != 0 {
		n += 1 + 8
	}
	if shard != "" {
		n += 1 + protowire.SizeBytes(len(shard))
	}
	return n
}

// appendHit appends h, of the named shard, to b as an element of the hits (field 1) of a
// SearchResponse or SearchStreamResponse: a gather.query.v1.Hit encoded as protobuf-go encodes
// one, its text and fields copied as the shard sent them, not decoded (fanout.ShardHit). It
// appends answerHitSize(h, shard) bytes.
func appendHit(b []byte, h fanout.Hit, shard string) []byte {
	b = protowire.AppendTag(b, numHits, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(hitBodySize(h, shard)))
	if h.DocID != "" {
		b = protowire.AppendTag(b, numHitDocID, protowire.BytesType)
		b = protowire.AppendString(b, h.DocID)
	}
	if bits := math.Float64bits(h.Score); bits != 0 {
		b = protowire.AppendTag(b, numHitScore, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, bits)
	}
	if shard != "" {
		b = protowire.AppendTag(b, numHitShard, protowire.BytesType)
		b = protowire.AppendString(b, shard)
	}
	return h.AppendPayload(b, numHitText, numHitFields)
}

// summaryBound is an upper bound on the encoded size of all of an answer but its hits, for
// shards with these names whose replicas are named (address or ordinal) in at most replicaLen
// bytes: the coverage, counts, durations, truncation fields and one ShardResult per shard with an
// error of at most fanout.MaxErrorTextBytes, as a SearchResponse or as the summary message of a
// SearchStream.
func summaryBound(names []string, replicaLen int) int {
	const (
		u64 = 1 + 10 // a varint field at its longest
		u32 = 1 + 5
		dur = 1 + 1 + 2*u64 // a Duration, seconds and nanos at their longest
	)
	coverage := 1 + protowire.SizeBytes(u32+u32+2+u64)
	n := coverage + u64 + dur + 2 + 1 + protowire.SizeBytes(maxReasonBytes)
	for _, name := range names {
		result := 1 + protowire.SizeBytes(len(name)) + 2 + 1 + protowire.SizeBytes(replicaLen) + u32 + dur +
			1 + protowire.SizeBytes(fanout.MaxErrorTextBytes) + 2 + u64 + 2 + u32 // ... source, attempts
		n += 1 + protowire.SizeBytes(result)
	}
	return 1 + protowire.SizeBytes(n) // as SearchStreamResponse.summary; a SearchResponse is smaller
}

// Room is what MaxAnswerBytes leaves for the hits of an answer from these shards, next to the
// rest of the answer (at its largest: every shard failed with the longest error). Configuration
// checks that the largest hit the shards may send fits in it.
func (c Config) Room(shards []fanout.ShardSpec) int {
	c = c.withDefaults()
	names := make([]string, len(shards))
	replicaLen := 0
	for i, s := range shards {
		names[i] = s.Name
		for j, addr := range s.Replicas {
			replicaLen = max(replicaLen, len(addr), len(ordinal(j)))
		}
	}
	return c.MaxAnswerBytes - summaryBound(names, replicaLen)
}

// ordinal names the replica of index i (from 0) when replica addresses are hidden.
func ordinal(i int) string { return "replica " + strconv.Itoa(i+1) }

// fits refuses a top_k whose hits could never fit in the answer: even hits of the smallest
// encoding would take it over MaxAnswerBytes. Any other top_k is served, and cut if need be.
func (s *Server) fits(topK uint32) error {
	v := s.viewOf(s.fan.Current())
	if int64(topK)*int64(v.minHit) <= int64(v.room) {
		return nil
	}
	return invalid("top_k", "top_k %d cannot fit: %d hits of the smallest size (%d bytes) would take the answer over "+
		"max_answer_bytes (%d) with room for %d; ask for at most %d hits (refused, not cut)",
		topK, topK, v.minHit, s.cfg.MaxAnswerBytes, max(v.room, 0), max(v.room, 0)/v.minHit)
}

// truncationReason says why an answer stopped after n hits.
func truncationReason(n uint32, maxAnswer int) string {
	return fmt.Sprintf("answer cut after %d hits: the next hit would take it over max_answer_bytes (%d)", n, maxAnswer)
}
