package flowguard

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"

	"golang.org/x/net/http2"
)

// frames writes a connection's worth of frames with x/net's framer, the reference encoder, and
// returns the bytes and what the scanner should report for each frame.
func frames(t testing.TB, r *rand.Rand, n int) ([]byte, []frame) {
	t.Helper()
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	var want []frame
	for range n {
		stream := uint32(r.IntN(50))*2 + 1
		switch r.IntN(5) {
		case 0:
			data := make([]byte, r.IntN(3000))
			end := r.IntN(4) == 0
			_ = fr.WriteData(stream, end, data)
			flags := uint8(0)
			if end {
				flags = flagEndStream
			}
			want = append(want, frame{length: uint32(len(data)), typ: frameData, flags: flags, stream: stream})
		case 1:
			block := make([]byte, r.IntN(200))
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: block, EndHeaders: true})
			want = append(want, frame{length: uint32(len(block)), typ: frameHeaders, flags: 0x4, stream: stream})
		case 2:
			inc := uint32(r.IntN(1<<20) + 1)
			_ = fr.WriteWindowUpdate(stream%3, inc) // some on stream 0
			want = append(want, frame{length: 4, typ: frameWindowUpdate, stream: stream % 3,
				payload: []byte{byte(inc >> 24), byte(inc >> 16), byte(inc >> 8), byte(inc)}})
		case 3:
			v := uint32(r.IntN(1 << 20))
			_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: v}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16384})
			want = append(want, frame{length: 12, typ: frameSettings,
				payload: []byte{0, 4, byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v), 0, 5, 0, 0, 0x40, 0}})
		case 4:
			_ = fr.WriteRSTStream(stream, http2.ErrCodeCancel)
			want = append(want, frame{length: 4, typ: frameRSTStream, stream: stream, payload: []byte{0, 0, 0, 8}})
		}
	}
	return buf.Bytes(), want
}

func collect(s *scanner, chunks [][]byte) []frame {
	var got []frame
	for _, c := range chunks {
		s.scan(c, func(f frame) {
			f.payload = slices.Clone(f.payload)
			if len(f.payload) == 0 {
				f.payload = nil
			}
			got = append(got, f)
		})
	}
	return got
}

func equal(a, b []frame) bool {
	return slices.EqualFunc(a, b, func(x, y frame) bool {
		return x.length == y.length && x.typ == y.typ && x.flags == y.flags && x.stream == y.stream &&
			bytes.Equal(x.payload, y.payload)
	})
}

// split cuts b at random points, down to single bytes.
func split(r *rand.Rand, b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n := min(len(b), 1+r.IntN(64))
		if r.IntN(3) == 0 {
			n = min(len(b), 1+r.IntN(5000))
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

func TestScannerFramesAnyChunking(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		b, want := frames(t, r, 1+r.IntN(40))
		whole := collect(&scanner{}, [][]byte{b})
		if !equal(whole, want) {
			t.Fatalf("round %d, all at once: got %+v\nwant %+v", i, whole, want)
		}
		if chunked := collect(&scanner{}, split(r, b)); !equal(chunked, want) {
			t.Fatalf("round %d, in chunks: got %+v\nwant %+v", i, chunked, want)
		}
	}
}

func TestScannerSkipsClientPreface(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	b, want := frames(t, r, 10)
	in := append([]byte(clientPreface), b...)
	if got := collect(&scanner{preface: len(clientPreface)}, split(r, in)); !equal(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

func TestScannerEmptyFrameAtChunkEnd(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	_ = fr.WriteSettingsAck()
	_ = fr.WriteData(1, true, nil)
	b := buf.Bytes()
	got := collect(&scanner{}, [][]byte{b[:9], b[9:]})
	if len(got) != 2 || got[0].typ != frameSettings || got[0].flags != flagAck || got[1].typ != frameData {
		t.Fatalf("got %+v, want a SETTINGS ACK then an empty DATA frame", got)
	}
}

// FuzzScanner: any bytes, cut anywhere, give the same frames as the bytes in one piece, and
// never a panic or a kept payload over the bound.
func FuzzScanner(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 4 {
		b, _ := frames(f, r, 8)
		f.Add(b, uint64(7))
	}
	f.Add([]byte{0xff, 0xff, 0xff, 4, 0, 0, 0, 0, 0}, uint64(1)) // a 16 MiB SETTINGS frame, cut short
	f.Fuzz(func(t *testing.T, b []byte, seed uint64) {
		whole := collect(&scanner{}, [][]byte{b})
		for _, fr := range whole {
			if len(fr.payload) > maxControlPayload {
				t.Fatalf("kept %d payload bytes", len(fr.payload))
			}
		}
		if chunked := collect(&scanner{}, split(rand.New(rand.NewPCG(seed, seed)), b)); !equal(chunked, whole) {
			t.Fatalf("chunked %+v\nwhole %+v", chunked, whole)
		}
	})
}
