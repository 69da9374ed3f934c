package corpus_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/gatherproxy/gather/internal/corpus"
)

func TestParsePartition(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    corpus.Partition
		wantErr string // a substring of the error; "" for none
	}{
		{in: "0/1", want: corpus.Partition{Index: 0, Count: 1}},
		{in: "0/4", want: corpus.Partition{Index: 0, Count: 4}},
		{in: "3/4", want: corpus.Partition{Index: 3, Count: 4}},
		{in: "15/16", want: corpus.Partition{Index: 15, Count: 16}},
		{in: "", wantErr: "want I/N, e.g. 0/4"},
		{in: "1", wantErr: "want I/N, e.g. 0/4"},
		{in: "1-4", wantErr: "want I/N, e.g. 0/4"},
		{in: "a/4", wantErr: `index "a" is not an integer`},
		{in: "1/", wantErr: `count "" is not an integer`},
		{in: "1/4/5", wantErr: `count "4/5" is not an integer`},
		{in: " 1/4", wantErr: `index " 1" is not an integer`},
		{in: "0/0", wantErr: "the count must be at least 1"},
		{in: "0/-2", wantErr: "the count must be at least 1"},
		{in: "4/4", wantErr: "the index is 0-based and must be in [0, 3]"},
		{in: "1/1", wantErr: "the index is 0-based and must be in [0, 0]"},
		{in: "-1/4", wantErr: "the index is 0-based and must be in [0, 3]"},
	}
	for _, tt := range tests {
		got, err := corpus.ParsePartition(tt.in)
		if tt.wantErr == "" {
			if err != nil || got != tt.want {
				t.Errorf("ParsePartition(%q) = %v, %v; want %v, nil", tt.in, got, err, tt.want)
			}
			if s := got.String(); s != tt.in {
				t.Errorf("ParsePartition(%q).String() = %q", tt.in, s)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, corpus.ErrInvalidPartition) {
			t.Errorf("ParsePartition(%q) error = %v, want ErrInvalidPartition containing %q", tt.in, err, tt.wantErr)
		}
	}
}

// TestPartitionOfGolden pins the partition function: changing it would move
// passages between shards of existing deployments. The values were computed
// independently of this package (FNV-1a-64: offset basis 0xcbf29ce484222325,
// prime 0x100000001b3).
func TestPartitionOfGolden(t *testing.T) {
	t.Parallel()
	tests := []struct {
		docID string
		count int
		want  int
	}{
		{"", 16, 5},                            // 0xcbf29ce484222325
		{"a", 16, 12},                          // 0xaf63dc4c8601ec8c
		{"a", 3, 1},                            //
		{"doc#001", 3, 0},                      // 0x135a5552836ad0b9
		{"doc#001", 4, 1},                      //
		{"1790_george_washington_n#001", 4, 2}, // 0xf905fe839971cd7a
		{"1790_george_washington_n#001", 3, 2},
		{"1861_abraham_lincoln_r#007", 4, 1}, // 0xac8ea2f335309145
		{"1861_abraham_lincoln_r#007", 2, 1},
		{"2021_joseph_r_biden_d#042", 4, 0}, // 0x40e5005da25d0818
		{"2021_joseph_r_biden_d#042", 16, 8},
		{"anything", 1, 0},
	}
	for _, tt := range tests {
		if got := corpus.PartitionOf(tt.docID, tt.count); got != tt.want {
			t.Errorf("PartitionOf(%q, %d) = %d, want %d", tt.docID, tt.count, got, tt.want)
		}
		p := corpus.Partition{Index: tt.want, Count: tt.count}
		if !p.Contains(tt.docID) {
			t.Errorf("%v.Contains(%q) = false, want true", p, tt.docID)
		}
	}
}

func TestPartitionContainsInvalid(t *testing.T) {
	t.Parallel()
	for _, p := range []corpus.Partition{{}, {Index: 0, Count: -1}, {Index: 5, Count: 4}} {
		if p.Contains("a") {
			t.Errorf("%v.Contains(%q) = true, want false", p, "a")
		}
		if err := p.Validate(); !errors.Is(err, corpus.ErrInvalidPartition) {
			t.Errorf("%v.Validate() = %v, want ErrInvalidPartition", p, err)
		}
	}
}
