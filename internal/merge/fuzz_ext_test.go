package merge_test

import (
	"slices"
	"testing"
)

// decode turns fuzz bytes into sorted sequences of ints with many
// duplicates. The first byte picks the number of sequences (0 to 16); each
// later byte appends to sequence b%k a key that is the previous one plus 0
// (half the time) or plus a small step taken from the high bits.
func decode(data []byte) [][]int {
	if len(data) == 0 {
		return nil
	}
	keys := make([][]int, int(data[0])%17)
	if len(keys) == 0 {
		return keys
	}
	last := make([]int, len(keys))
	for _, b := range data[1:] {
		s := int(b) % len(keys)
		if b&0x80 != 0 {
			last[s] += int(b>>4) & 7
		}
		keys[s] = append(keys[s], last[s])
	}
	return keys
}

func FuzzTree(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 1, 2, 3})
	f.Add([]byte{1, 0, 0x80, 0x90, 0})
	f.Add([]byte{3, 0, 1, 2, 0, 1, 2, 0xf0, 0xf1, 0xf2})
	f.Add([]byte{5, 0, 0, 0, 4, 4, 4, 0x84, 0xf3, 2, 1})
	f.Add([]byte{16, 0xff, 0xfe, 0xfd, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee})
	f.Fuzz(func(t *testing.T, data []byte) {
		keys := decode(data)
		in := items(keys)
		got := drain(t, in) // also checks the Source and laziness contracts
		if want := reference(in); !slices.Equal(got, want) {
			t.Fatalf("merge(%v):\n got %v\nwant %v", keys, got, want)
		}
	})
}
