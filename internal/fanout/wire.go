package fanout

import (
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
)

// MaxHeaderBytes bounds the header list (headers or trailers, with the status message) a shard
// may send on one call: grpc-go would accept 16 MiB. gRPC servers honour the limit the proxy
// advertises by resetting the stream instead (the call fails as INTERNAL); a peer that ignores it
// is refused as a protocol violation.
const MaxHeaderBytes = 16 << 10

// codec is the codec of one shard call: protobuf, as grpc-go's default codec, except that each
// SearchResponse is looked over before it is decoded (see scan), and its hits are not decoded
// into the message: read keeps their doc_id and score and their payload, still encoded (ShardHit),
// in hits, which the stream takes after each message; the message gets the counts. Unknown
// fields are dropped, not kept uncounted with the hits. It is used by the call's receiving
// goroutine only.
type codec struct {
	base      encoding.CodecV2 // grpc-go's proto codec, for the request
	topK      int
	maxFields int
	// decoded counts the hits decoded into Go values (gather_shard_hits_decoded_total): only
	// those of a message read could not take, which protobuf-go then decoded (see Unmarshal).
	decoded prometheus.Counter
	// refused is why the last response was not decoded; the stream reports it instead of grpc-go's
	// INTERNAL "failed to unmarshal".
	refused error
	// hits are the hits of the last response decoded.
	hits []ShardHit
	// spans is read's scratch space, kept from one message to the next.
	spans []hitSpan
}

var discardUnknown = proto.UnmarshalOptions{DiscardUnknown: true}

// Name is the content-subtype of the call ("application/grpc+proto"), which every gRPC server
// accepts for protobuf.
func (c *codec) Name() string { return c.base.Name() }

// Marshal encodes the request as grpc-go does.
func (c *codec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

// Unmarshal decodes one response message: the counts into v, the hits into c.hits. A message
// that read does not take (malformed, or invalid UTF-8 in a string) is decoded by protobuf-go,
// which reports what is wrong with it as the codec always did; should protobuf-go accept it
// after all, its hits are taken from the decoded message, and counted as decoded.
func (c *codec) Unmarshal(data mem.BufferSlice, v any) error {
	resp, ok := v.(*shardv1.SearchResponse)
	if !ok {
		return c.base.Unmarshal(data, v)
	}
	c.hits = nil
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	b := buf.ReadOnlyData()
	if err := c.scan(b); err != nil {
		c.refused = err
		return err
	}
	if c.read(b, resp) {
		return nil
	}
	if err := discardUnknown.Unmarshal(b, resp); err != nil {
		return err
	}
	c.hits = fromProto(resp.GetHits())
	if c.decoded != nil {
		c.decoded.Add(float64(len(c.hits)))
	}
	resp.Hits = nil
	return nil
}

// hitSpan is what read learns of one hit in its first pass: the hit's bytes, its doc_id, score
// and text as the last of each, and the size of its canonical payload.
type hitSpan struct {
	hit, docID, text []byte
	score            float64
	fields, widest   int32
	entryBytes       int
	doc, payload     int // where the hit's doc_id and payload start in the arena
}

// read decodes b, an encoded SearchResponse, as protobuf-go would with unknown fields dropped,
// except that it keeps each hit's text and fields encoded (ShardHit), with every string checked
// for valid UTF-8 as protobuf-go checks it. The counts go into resp, the hits into c.hits. It
// reports false, having changed nothing, if b is not one protobuf-go would decode; it never
// accepts one protobuf-go would refuse (FuzzRead checks both).
//
// The hits' strings share one allocation of exactly their canonical size: no byte of b outside
// the hits' doc_ids, texts and fields is kept.
func (c *codec) read(b []byte, resp *shardv1.SearchResponse) bool {
	defer func() { clear(c.spans); c.spans = c.spans[:0] }() // no hold on b once it is freed
	var total, docs uint64
	size := 0
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, vn := protowire.ConsumeBytes(b)
			if vn < 0 {
				return false
			}
			c.spans = append(c.spans, hitSpan{hit: v})
			sp := &c.spans[len(c.spans)-1]
			if !measure(sp) {
				return false
			}
			size += len(sp.docID) + textSize(len(sp.text)) + sp.entryBytes
			n = vn
		case num == 2 && typ == protowire.VarintType:
			total, n = protowire.ConsumeVarint(b)
		case num == 3 && typ == protowire.VarintType:
			docs, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	resp.TotalMatches, resp.Documents = total, docs
	if len(c.spans) == 0 {
		return true
	}
	hits := make([]ShardHit, len(c.spans))
	arena := make([]byte, 0, size)
	for i := range c.spans {
		sp := &c.spans[i]
		sp.doc = len(arena)
		arena = append(arena, sp.docID...)
		sp.payload = len(arena)
		arena = appendText(arena, sp.text)
		arena = appendEntries(arena, sp.hit)
		hits[i] = ShardHit{Score: sp.score, text: int32(len(sp.text)), fields: sp.fields, widest: sp.widest}
	}
	s := unsafe.String(unsafe.SliceData(arena), len(arena)) // arena is never written again
	for i := range c.spans {
		end := len(s)
		if i+1 < len(c.spans) {
			end = c.spans[i+1].doc
		}
		hits[i].DocID, hits[i].payload = s[c.spans[i].doc:c.spans[i].payload], s[c.spans[i].payload:end]
	}
	c.hits = hits
	return true
}

// measure reads the hit of sp as protobuf-go would (see read) and fills in the rest of sp. It
// reports whether the hit is one protobuf-go would decode.
func measure(sp *hitSpan) bool {
	for b := sp.hit; len(b) > 0; {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == numDocID && typ == protowire.BytesType:
			sp.docID, n = protowire.ConsumeBytes(b)
			if n >= 0 && !utf8.Valid(sp.docID) {
				return false
			}
		case num == numScore && typ == protowire.Fixed64Type:
			var bits uint64
			bits, n = protowire.ConsumeFixed64(b)
			sp.score = math.Float64frombits(bits)
		case num == numText && typ == protowire.BytesType:
			sp.text, n = protowire.ConsumeBytes(b)
			if n >= 0 && !utf8.Valid(sp.text) {
				return false
			}
		case num == numFields && typ == protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n < 0 {
				return false
			}
			key, value, ok := entry(v)
			if !ok {
				return false
			}
			sp.fields++
			sp.widest = max(sp.widest, int32(len(key)+len(value)))
			sp.entryBytes += entrySize(len(key), len(value))
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// entry reads an encoded map entry as protobuf-go would: the last key and the last value, both
// valid UTF-8, other fields skipped. It reports whether protobuf-go would decode it.
func entry(b []byte) (key, value []byte, ok bool) {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, nil, false
		}
		b = b[n:]
		switch {
		case num == numKey && typ == protowire.BytesType:
			key, n = protowire.ConsumeBytes(b)
			if n >= 0 && !utf8.Valid(key) {
				return nil, nil, false
			}
		case num == numValue && typ == protowire.BytesType:
			value, n = protowire.ConsumeBytes(b)
			if n >= 0 && !utf8.Valid(value) {
				return nil, nil, false
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return nil, nil, false
		}
		b = b[n:]
	}
	return key, value, true
}

// appendEntries appends the canonical encoding of the field entries of hit, a hit that measure
// took, in their order.
func appendEntries(arena, hit []byte) []byte {
	for len(hit) > 0 {
		num, typ, n := protowire.ConsumeTag(hit)
		hit = hit[n:]
		if num == numFields && typ == protowire.BytesType {
			v, vn := protowire.ConsumeBytes(hit)
			key, value, _ := entry(v)
			arena = appendEntry(arena, key, value)
			n = vn
		} else {
			n = protowire.ConsumeFieldValue(num, typ, hit)
		}
		hit = hit[n:]
	}
	return arena
}

// consumeTag is protowire.ConsumeTag with the bound protobuf-go's decoder puts on field numbers.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, -1
	}
	return num, typ, n
}

// NewShardHits makes ShardHits of decoded hits, as the shard call's codec makes them of their
// encoding (the fields in the map's iteration order). The proxy never needs it; tests and
// in-process shards do.
func NewShardHits(hits []*shardv1.Hit) []ShardHit { return fromProto(hits) }

// fromProto makes ShardHits of decoded hits (NewShardHits).
func fromProto(hits []*shardv1.Hit) []ShardHit {
	if len(hits) == 0 {
		return nil
	}
	size := 0
	for _, h := range hits {
		size += len(h.GetDocId()) + textSize(len(h.GetText()))
		for k, v := range h.GetFields() {
			size += entrySize(len(k), len(v))
		}
	}
	out := make([]ShardHit, len(hits))
	arena := make([]byte, 0, size)
	bounds := make([][2]int, len(hits))
	for i, h := range hits {
		bounds[i][0] = len(arena)
		arena = append(arena, h.GetDocId()...)
		bounds[i][1] = len(arena)
		arena = appendText(arena, []byte(h.GetText()))
		var widest int
		for k, v := range h.GetFields() {
			arena = appendEntry(arena, []byte(k), []byte(v))
			widest = max(widest, len(k)+len(v))
		}
		out[i] = ShardHit{Score: h.GetScore(), text: int32(len(h.GetText())), fields: int32(len(h.GetFields())), widest: int32(widest)}
	}
	s := string(arena)
	for i := range out {
		end := len(s)
		if i+1 < len(out) {
			end = bounds[i+1][0]
		}
		out[i].DocID, out[i].payload = s[bounds[i][0]:bounds[i][1]], s[bounds[i][1]:end]
	}
	return out
}

// scan refuses an encoded SearchResponse whose decoding could allocate more than the call's
// limits allow, before anything is allocated: one of more than top_k hits, or with a hit of more
// than MaxFields field entries. A hit costs about 110 bytes of heap however short its encoding
// (2 bytes), a field entry about 80 (from 4), so these two counts, not the message's size, bound
// what decoding a message can take besides the bytes of its strings. Malformed input is left to
// the decoder to report.
func (c *codec) scan(b []byte) error {
	hits := 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType { // not a hit
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil
			}
			b = b[n:]
			continue
		}
		hit, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if hits++; hits > c.topK {
			return fmt.Errorf("%w (%d): a single message carries more", ErrTooMany, c.topK)
		}
		entries := 0
		for len(hit) > 0 {
			num, typ, n := protowire.ConsumeTag(hit)
			if n < 0 {
				return nil
			}
			hit = hit[n:]
			if num == 4 && typ == protowire.BytesType {
				if entries++; entries > c.maxFields {
					return fmt.Errorf("%w: a hit with more than %d field entries, over max_hit_fields",
						ErrOverLimit, c.maxFields)
				}
			}
			if n = protowire.ConsumeFieldValue(num, typ, hit); n < 0 {
				return nil
			}
			hit = hit[n:]
		}
	}
	return nil
}

// overLimit translates the errors with which grpc-go refuses what a shard sends into ErrOverLimit
// violations naming the limit; other errors are returned as they are.
func overLimit(err error, maxMessage int) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch {
	case st.Code() == codes.ResourceExhausted && strings.HasPrefix(st.Message(), "grpc: received message"):
		return fmt.Errorf("%w: a message over max_shard_message_bytes (%d) (%s)", ErrOverLimit, maxMessage, st.Message())
	case st.Code() == codes.Internal && st.Message() == "peer header list size exceeded limit":
		return fmt.Errorf("%w: headers or trailers over %d bytes", ErrOverLimit, MaxHeaderBytes)
	}
	return err
}
