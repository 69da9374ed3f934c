package fanout

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
)

// hitCost is the cost of h by the cost model, as received.
func hitCost(h *shardv1.Hit) int64 { return fromProto([]*shardv1.Hit{h})[0].cost() }

// protoHits decodes received hits.
func protoHits(hits []ShardHit) []*shardv1.Hit {
	out := make([]*shardv1.Hit, len(hits))
	for i := range hits {
		out[i] = hits[i].Proto()
	}
	return out
}

// randomHits makes n hits of random shapes: empty and long texts and ids, no fields and many,
// empty keys and values, text beyond ASCII, scores of either sign, zero among them.
func randomHits(r *rand.Rand, n int) []*shardv1.Hit {
	words := []string{"", "a", "union", "war", "\u00e9t\u00e9", "\u65e5\u672c\u8a9e", "\U0001f600", "\u202e", "x\x00y",
		strings.Repeat("long ", 60), strings.Repeat("\u00fc", 300)}
	text := func(max int) string {
		var b strings.Builder
		for range r.IntN(max + 1) {
			b.WriteString(words[r.IntN(len(words))])
		}
		return b.String()
	}
	hits := make([]*shardv1.Hit, n)
	for i := range hits {
		h := &shardv1.Hit{DocId: text(3), Score: []float64{0, math.Copysign(0, -1), 1, -2.5, r.NormFloat64() * 1e6}[r.IntN(5)], Text: text(8)}
		switch r.IntN(4) {
		case 0: // no fields
		case 1:
			h.Fields = map[string]string{}
		default:
			h.Fields = map[string]string{}
			for range r.IntN([]int{3, 8, 40}[r.IntN(3)]) {
				h.Fields[text(2)] = text(3)
			}
		}
		hits[i] = h
	}
	return hits
}

// TestReadDecodesAsProtobuf: hits read from a message decode to what protobuf-go decodes from
// it, for hits of random shapes, and their payload is canonical: re-encoding the decoded hit
// gives the same size.
func TestReadDecodesAsProtobuf(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		want := &shardv1.SearchResponse{Hits: randomHits(r, r.IntN(20)), TotalMatches: r.Uint64(), Documents: uint64(r.IntN(100))}
		b, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		c := &codec{topK: 1000, maxFields: 1000}
		got := &shardv1.SearchResponse{}
		if !c.read(b, got) {
			t.Fatalf("read refused %v", want)
		}
		got.Hits = protoHits(c.hits)
		if !proto.Equal(got, want) {
			t.Fatalf("read %v, want %v", got, want)
		}
		for i := range c.hits {
			h := &c.hits[i]
			wh := want.GetHits()[i]
			encoded := proto.Size(&shardv1.Hit{Text: wh.GetText(), Fields: wh.GetFields()})
			if len(h.payload) != encoded || int(h.text) != len(wh.GetText()) || int(h.fields) != len(wh.GetFields()) {
				t.Fatalf("hit %d: payload of %d bytes, text %d, %d fields; protobuf encodes %d bytes, text %d, %d fields",
					i, len(h.payload), h.text, h.fields, encoded, len(wh.GetText()), len(wh.GetFields()))
			}
		}
	}
}

// field appends one encoded field.
func field(b []byte, num protowire.Number, typ protowire.Type, v any) []byte {
	b = protowire.AppendTag(b, num, typ)
	switch v := v.(type) {
	case string:
		return protowire.AppendString(b, v)
	case []byte:
		return protowire.AppendBytes(b, v)
	case uint64:
		if typ == protowire.Fixed64Type {
			return protowire.AppendFixed64(b, v)
		}
		return protowire.AppendVarint(b, v)
	case uint32:
		return protowire.AppendFixed32(b, v)
	}
	panic(fmt.Sprintf("field: %T", v))
}

// oddMessages are encodings protobuf-go decodes although no protobuf encoder writes them, and
// some it refuses.
func oddMessages() map[string][]byte {
	entry := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	key := func(k string) []byte { return field(nil, 1, protowire.BytesType, k) }
	val := func(v string) []byte { return field(nil, 2, protowire.BytesType, v) }
	hit := func(fields ...[]byte) []byte { return field(nil, 1, protowire.BytesType, entry(fields...)) }
	id := func(s string) []byte { return field(nil, 1, protowire.BytesType, s) }
	score := func(f float64) []byte { return field(nil, 2, protowire.Fixed64Type, math.Float64bits(f)) }
	text := func(s string) []byte { return field(nil, 3, protowire.BytesType, s) }
	fld := func(e []byte) []byte { return field(nil, 4, protowire.BytesType, e) }
	return map[string][]byte{
		"fields first":             hit(fld(entry(key("k"), val("v"))), text("t"), score(2), id("a")),
		"repeated doc_id and text": hit(id("a"), text("one"), id("b"), score(1), text("two"), score(3)),
		"empty text sent":          hit(id("a"), text(""), score(1)),
		"entry value first":        hit(id("a"), fld(entry(val("v"), key("k")))),
		"entry without key":        hit(id("a"), fld(entry(val("v")))),
		"entry without value":      hit(id("a"), fld(entry(key("k")))),
		"empty entry":              hit(id("a"), fld(nil)),
		"entry keys repeated":      hit(id("a"), fld(entry(key("k"), key("j"), val("v"), val("w")))),
		"key repeated":             hit(id("a"), fld(entry(key("k"), val("1"))), fld(entry(key("k"), val("2")))),
		"unknown in entry":         hit(id("a"), fld(entry(key("k"), field(nil, 9, protowire.VarintType, uint64(5)), val("v")))),
		"unknown in hit":           hit(id("a"), field(nil, 77, protowire.BytesType, "junk"), score(1)),
		"wrong type score":         hit(id("a"), field(nil, 2, protowire.VarintType, uint64(7))),
		"wrong type text":          hit(id("a"), field(nil, 3, protowire.Fixed32Type, uint32(7))),
		"wrong type fields":        hit(id("a"), field(nil, 4, protowire.VarintType, uint64(7))),
		"wrong type key":           hit(id("a"), fld(entry(field(nil, 1, protowire.VarintType, uint64(1)), val("v")))),
		"wrong type hit":           field(nil, 1, protowire.VarintType, uint64(3)),
		"wrong type total":         field(nil, 2, protowire.BytesType, "x"),
		"group in hit":             hit(id("a"), field(nil, 8, protowire.StartGroupType, []byte{}), protowire.AppendTag(nil, 8, protowire.EndGroupType)),
		"invalid UTF-8 doc_id":     hit(id("a\xff")),
		"invalid UTF-8 text":       hit(id("a"), text("\xc3")),
		"invalid UTF-8 key":        hit(id("a"), fld(entry(key("\xff"), val("v")))),
		"invalid UTF-8 value":      hit(id("a"), fld(entry(key("k"), val("\xed\xa0\x80")))),
		"invalid UTF-8 overridden": hit(id("\xff"), id("a")),
		"invalid UTF-8 unknown":    hit(id("a"), field(nil, 9, protowire.BytesType, "\xff")),
		"stray end group":          hit(id("a"), protowire.AppendTag(nil, 5, protowire.EndGroupType)),
		"field number 0":           hit(id("a"), []byte{0x02, 0x00}),
		"field number too large":   hit(id("a"), protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3|2), []byte{0}),
		"truncated score":          hit(id("a"), []byte{0x11, 1, 2, 3}),
		"truncated entry":          hit(id("a"), fld([]byte{0x0a, 5, 'k'})),
		"length past the end":      {0x0a, 0x05, 0x0a},
	}
}

// TestReadOddEncodings: read takes what protobuf-go takes and nothing else, and reads it to the
// same hits.
func TestReadOddEncodings(t *testing.T) {
	t.Parallel()
	for name, b := range oddMessages() {
		checkRead(t, name, b)
	}
}

// checkRead checks read against protobuf-go on b.
func checkRead(t *testing.T, name string, b []byte) {
	t.Helper()
	want := &shardv1.SearchResponse{}
	werr := discardUnknown.Unmarshal(b, want)
	c := &codec{topK: math.MaxInt, maxFields: math.MaxInt}
	got := &shardv1.SearchResponse{}
	ok := c.read(b, got)
	if ok != (werr == nil) {
		t.Fatalf("%s: read took it: %v; protobuf-go: %v", name, ok, werr)
	}
	if !ok {
		if c.hits != nil || got.GetTotalMatches() != 0 {
			t.Fatalf("%s: read refused it but kept %d hits", name, len(c.hits))
		}
		return
	}
	got.Hits = protoHits(c.hits)
	if !proto.Equal(got, want) {
		t.Fatalf("%s: read %v, protobuf-go %v", name, got, want)
	}
	// The payload is canonical: the hits' own encodings hold nothing more.
	for i := range c.hits {
		h := &c.hits[i]
		if n := proto.Size(&shardv1.Hit{Text: h.Text(), Fields: h.Fields()}); len(h.payload) < n {
			t.Fatalf("%s: hit %d: payload of %d bytes, its decoding takes %d", name, i, len(h.payload), n)
		}
	}
}

// FuzzRead: on any input, read agrees with protobuf-go on whether it is a SearchResponse and on
// what it holds.
func FuzzRead(f *testing.F) {
	for _, b := range oddMessages() {
		f.Add(b)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 5 {
		b, err := proto.Marshal(&shardv1.SearchResponse{Hits: randomHits(r, 3), TotalMatches: 4})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkRead(t, "fuzz input", b) })
}

// TestUnmarshalFallsBackToProtobuf: a message read does not take is decoded by protobuf-go,
// whose error the codec returns; none of its hits are kept, and none are counted as decoded.
func TestUnmarshalFallsBackToProtobuf(t *testing.T) {
	t.Parallel()
	for name, b := range oddMessages() {
		decoded := prometheus.NewCounter(prometheus.CounterOpts{Name: "d"})
		c := &codec{base: encoding.GetCodecV2(grpcproto.Name), topK: 100, maxFields: 100, decoded: decoded}
		got := &shardv1.SearchResponse{}
		err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got)
		werr := discardUnknown.Unmarshal(b, &shardv1.SearchResponse{})
		if (err == nil) != (werr == nil) || err != nil && err.Error() != werr.Error() {
			t.Errorf("%s: Unmarshal: %v, want protobuf-go's %v", name, err, werr)
		}
		if n := testutil.ToFloat64(decoded); n != 0 || len(got.GetHits()) != 0 {
			t.Errorf("%s: %v hits counted as decoded, %d left in the message; want none", name, n, len(got.GetHits()))
		}
	}
}

// TestFromProto: hits decoded by protobuf-go (the fallback) become the ShardHits read makes of
// their encoding.
func TestFromProto(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(5, 6))
	hits := randomHits(r, 50)
	for i, h := range fromProto(hits) {
		if got := h.Proto(); !proto.Equal(got, hits[i]) {
			t.Fatalf("hit %d: %v, want %v", i, got, hits[i])
		}
		if n := proto.Size(&shardv1.Hit{Text: hits[i].GetText(), Fields: hits[i].GetFields()}); len(h.payload) != n {
			t.Fatalf("hit %d: payload of %d bytes, want %d", i, len(h.payload), n)
		}
	}
	if fromProto(nil) != nil {
		t.Error("fromProto(nil) is not nil")
	}
}

// TestWidestField: an entry over max_hit_field_bytes is named, also when a later entry repeats
// its key with a short value.
func TestWidestField(t *testing.T) {
	t.Parallel()
	b := field(nil, 1, protowire.BytesType, string(append(field(field(nil, 1, protowire.BytesType, "a"), 4, protowire.BytesType,
		string(append(field(nil, 1, protowire.BytesType, "big"), field(nil, 2, protowire.BytesType, strings.Repeat("v", 50))...))),
		field(nil, 4, protowire.BytesType, string(append(field(nil, 1, protowire.BytesType, "big"), field(nil, 2, protowire.BytesType, "v")...)))...)))
	c := &codec{topK: 10, maxFields: 10}
	if !c.read(b, &shardv1.SearchResponse{}) || len(c.hits) != 1 {
		t.Fatal("read refused the message")
	}
	l := &limits{docID: 10, text: 10, fields: 10, fieldBytes: 20}
	_, err := l.hit(&c.hits[0])
	if !errors.Is(err, ErrOverLimit) || !strings.Contains(err.Error(), `field "big" of 53 bytes`) {
		t.Errorf("got %v, want the field \"big\" of 53 bytes named", err)
	}
}

// TestCompact: compacted hits keep their values, in strings of their own, one allocation exactly
// their size, outside the original's.
func TestCompact(t *testing.T) {
	t.Parallel()
	hits := randomHits(rand.New(rand.NewPCG(7, 8)), 30)
	for i, h := range hits { // no empty string, whose address would not say where it is
		h.DocId, h.Text = fmt.Sprint("d", i), "t"+h.GetText()
	}
	in := fromProto(hits)
	out := compact(in[:10])
	origStart := uintptr(unsafe.Pointer(unsafe.StringData(in[0].payload))) - uintptr(len(in[0].DocID))
	origEnd := uintptr(unsafe.Pointer(unsafe.StringData(in[29].payload))) + uintptr(len(in[29].payload))
	start := uintptr(unsafe.Pointer(unsafe.StringData(out[0].payload))) - uintptr(len(out[0].DocID))
	size := 0
	for i := range out {
		if !proto.Equal(out[i].Proto(), in[i].Proto()) || out[i].text != in[i].text || out[i].fields != in[i].fields ||
			out[i].widest != in[i].widest {
			t.Fatalf("hit %d: %v, want %v", i, out[i].Proto(), in[i].Proto())
		}
		size += len(out[i].DocID) + len(out[i].payload)
	}
	end := uintptr(unsafe.Pointer(unsafe.StringData(out[9].payload))) + uintptr(len(out[9].payload))
	if end-start != uintptr(size) || start < origEnd && end > origStart {
		t.Errorf("compacted strings span [%#x, %#x) for %d bytes; the original's [%#x, %#x)", start, end, size, origStart, origEnd)
	}
}
