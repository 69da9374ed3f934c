package fault

import (
	"testing"
)

// frame returns an HTTP/2 frame header of the given type and payload length, then the payload.
func frame(typ byte, payload int) []byte {
	b := []byte{byte(payload >> 16), byte(payload >> 8), byte(payload), typ, 0, 0, 0, 0, 1}
	return append(b, make([]byte, payload)...)
}

func TestFrameCounter(t *testing.T) {
	t.Parallel()
	var stream []byte
	stream = append(stream, frame(0x4, 18)...)    // SETTINGS
	stream = append(stream, frame(0x4, 0)...)     // SETTINGS ack
	stream = append(stream, frame(0x1, 40)...)    // HEADERS
	stream = append(stream, frame(0x0, 100)...)   // DATA
	stream = append(stream, frame(0x8, 4)...)     // WINDOW_UPDATE
	stream = append(stream, frame(0x0, 0)...)     // empty DATA
	stream = append(stream, frame(0x0, 70000)...) // DATA longer than a 16-bit length
	stream = append(stream, frame(0x1, 12)...)    // HEADERS (trailers)
	const want = 100 + 70000

	// Any way of cutting the stream into writes gives the same count.
	for _, size := range []int{1, 2, 8, 9, 10, 17, 1000, len(stream)} {
		var f frameCounter
		got := 0
		for p := stream; len(p) > 0; {
			k := min(size, len(p))
			got += f.count(p[:k])
			p = p[k:]
		}
		if got != want {
			t.Errorf("writes of %d bytes: counted %d DATA bytes, want %d", size, got, want)
		}
	}
}
