package fanout

import (
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
)

// Field numbers of gather.shard.v1.Hit and of the entries of its fields map (key 1, value 2, as
// for every map entry).
const (
	numDocID  protowire.Number = 1
	numScore  protowire.Number = 2
	numText   protowire.Number = 3
	numFields protowire.Number = 4
	numKey    protowire.Number = 1
	numValue  protowire.Number = 2
)

// ShardHit is one hit as a shard sent it: doc_id and score decoded, for the merge and the
// contract, and the rest of the hit (text, fields), which the proxy only passes on, kept encoded.
//
// The encoding is canonical, whatever the shard's was: the text as field 3 if it is not empty,
// then every entry of the fields map as field 4, in the order the shard sent them, each with its
// key (field 1) and value (field 2), both present, nothing else; unknown fields are dropped, as
// the codec used to drop them while decoding. It decodes, with any protobuf decoder, to what the
// shard's hit decodes to: every string in it was checked for valid UTF-8 and each was the last
// of its field, as protobuf keeps the last; an entry whose key the shard repeated is kept twice,
// and decoders keep the later one, as they did from the shard's message.
//
// The strings of a ShardHit share one allocation with the other hits of the message it came in,
// which nobody writes to: copying a ShardHit copies no text.
type ShardHit struct {
	DocID string
	Score float64
	// payload is the text and fields, encoded as above.
	payload string
	// text is the length of the text in bytes, fields the number of field entries, widest the
	// length of the longest entry's key plus value: what the caps of Config apply to.
	text, fields, widest int32
}

// Text returns the hit's text. It decodes it from the payload: a copy of the string is not made,
// but gather does not call it on the request path (AppendPayload copies the bytes instead).
func (h *ShardHit) Text() string {
	if h.text == 0 {
		return ""
	}
	v, _ := consumeLen(h.payload[1:])
	return v
}

// Fields returns the hit's fields as a new map, decoded from the payload (see Text). A key sent
// twice has the later value.
func (h *ShardHit) Fields() map[string]string {
	if h.fields == 0 {
		return nil
	}
	m := make(map[string]string, h.fields)
	for p := h.entries(); len(p) > 0; {
		var k, v string
		k, v, p = nextEntry(p)
		m[k] = v
	}
	return m
}

// widestField returns the key of the first field entry whose key and value are the longest (as
// h.widest counts them), and their length.
func (h *ShardHit) widestField() (string, int) {
	for p := h.entries(); len(p) > 0; {
		var k, v string
		k, v, p = nextEntry(p)
		if len(k)+len(v) == int(h.widest) {
			return k, len(k) + len(v)
		}
	}
	return "", 0
}

// entries is the payload without the text: the field entries.
func (h *ShardHit) entries() string {
	if h.text == 0 {
		return h.payload
	}
	_, n := consumeLen(h.payload[1:])
	return h.payload[1+n:]
}

// nextEntry returns the key and value of the first field entry of p (ShardHit.entries, or what
// is left of it) and what follows that entry.
func nextEntry(p string) (key, value, rest string) {
	e, n := consumeLen(p[1:]) // canonical: one-byte tags
	k, kn := consumeLen(e[1:])
	v, _ := consumeLen(e[1+kn+1:])
	return k, v, p[1+n:]
}

// Proto returns the hit decoded into a new gather.shard.v1.Hit.
func (h *ShardHit) Proto() *shardv1.Hit {
	return &shardv1.Hit{DocId: h.DocID, Score: h.Score, Text: h.Text(), Fields: h.Fields()}
}

// PayloadSize is the size of what AppendPayload appends with these field numbers.
func (h *ShardHit) PayloadSize(text, fields protowire.Number) int {
	n := len(h.payload) + int(h.fields)*(protowire.SizeTag(fields)-1)
	if h.text > 0 {
		n += protowire.SizeTag(text) - 1
	}
	return n
}

// AppendPayload appends the hit's text and field entries to b, encoded as fields numbered text
// and fields (a string and a map<string, string>) of another message, such as gather.query.v1.Hit:
// the bytes as the shard's hit carried them, under these numbers. Nothing is decoded.
func (h *ShardHit) AppendPayload(b []byte, text, fields protowire.Number) []byte {
	for p := h.payload; len(p) > 0; {
		num := text
		if protowire.Number(p[0]>>3) == numFields {
			num = fields
		}
		_, n := consumeLen(p[1:])
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = append(b, p[1:1+n]...)
		p = p[1+n:]
	}
	return b
}

// consumeLen reads a length-prefixed value of a canonical payload: the value and the bytes it
// took, prefix included. The payload is gather's own (ShardHit), so it is not checked.
func consumeLen(s string) (string, int) {
	var l, shift, i int
	for ; ; i++ {
		c := s[i]
		l |= int(c&0x7f) << shift
		if c < 0x80 {
			break
		}
		shift += 7
	}
	i++
	return s[i : i+l], i + l
}

// The heap cost model of a received hit (ShardHit.cost). It over-estimates what a hit holds on
// the heap (TestHitCostBoundsHeap checks it), so that a budget counted with it bounds memory.
const (
	// hitOverhead: the ShardHit (56 bytes) in its message's slice, with the slice's size class
	// (up to 1/8 more), its place in a cursor's Hit (16) and its doc_id in the stream's duplicate
	// set (up to 64).
	hitOverhead = 160
	// bytesOverhead: the hits of a message share one allocation for their strings, rounded up
	// to a size class (at most 1/8 over up to 32 KiB, one 8 KiB page beyond): n/4 + bytesOverhead
	// per hit covers it.
	bytesOverhead = 32
)

// stringCost is what n bytes of a hit's strings cost by the model.
func stringCost(n int) int64 { return int64(n + n/4 + bytesOverhead) }

// cost is the heap h holds by the cost model above.
func (h *ShardHit) cost() int64 { return hitOverhead + stringCost(len(h.DocID)+len(h.payload)) }

// entrySize is the canonical encoding of a field entry with a key and a value of these lengths,
// tag included.
func entrySize(key, value int) int {
	return 1 + protowire.SizeBytes(1+protowire.SizeBytes(key)+1+protowire.SizeBytes(value))
}

// textSize is the canonical encoding of a text of n bytes, tag included.
func textSize(n int) int {
	if n == 0 {
		return 0
	}
	return 1 + protowire.SizeBytes(n)
}

// appendEntry appends the canonical encoding of a field entry.
func appendEntry(b []byte, key, value []byte) []byte {
	b = protowire.AppendTag(b, numFields, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(1+protowire.SizeBytes(len(key))+1+protowire.SizeBytes(len(value))))
	b = protowire.AppendTag(b, numKey, protowire.BytesType)
	b = protowire.AppendBytes(b, key)
	b = protowire.AppendTag(b, numValue, protowire.BytesType)
	return protowire.AppendBytes(b, value)
}

// appendText appends the canonical encoding of a text.
func appendText(b []byte, text []byte) []byte {
	if len(text) == 0 {
		return b
	}
	b = protowire.AppendTag(b, numText, protowire.BytesType)
	return protowire.AppendBytes(b, text)
}

// compact returns a copy of hits whose strings share an allocation of their own, exactly their
// size: the hits of a message a shard sent more of than were accepted.
func compact(hits []ShardHit) []ShardHit {
	out := make([]ShardHit, len(hits))
	if len(hits) == 0 {
		return out
	}
	size := 0
	for i := range hits {
		size += len(hits[i].DocID) + len(hits[i].payload)
	}
	b := make([]byte, 0, size)
	for i := range hits {
		b = append(append(b, hits[i].DocID...), hits[i].payload...)
	}
	s := unsafe.String(unsafe.SliceData(b), len(b)) // b is never written again
	for i := range hits {
		h := hits[i]
		h.DocID, s = s[:len(h.DocID)], s[len(h.DocID):]
		h.payload, s = s[:len(h.payload)], s[len(h.payload):]
		out[i] = h
	}
	return out
}

// CountDecoded adds n to gather_shard_hits_decoded_total: the caller decoded the payloads of n
// hits into Go values (ShardHit.Text, Fields, Proto).
func (c *Client) CountDecoded(n int) { c.metrics.decoded.Add(float64(n)) }
