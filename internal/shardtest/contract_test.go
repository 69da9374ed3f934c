package shardtest

import (
	"math"
	"strings"
	"testing"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
)

func TestContractViolation(t *testing.T) {
	t.Parallel()
	h := func(id string, score float64) *shardv1.Hit { return &shardv1.Hit{DocId: id, Score: score} }
	tests := []struct {
		name string
		hits []*shardv1.Hit
		topK int
		want string // substring; "" means no violation
	}{
		{"ok", []*shardv1.Hit{h("b", 3), h("a", 2), h("c", 2), h("a2", 1)}, 4, ""},
		{"empty", nil, 1, ""},
		{"rising score", []*shardv1.Hit{h("a", 1), h("b", 2)}, 2, "score 2 after 1"},
		{"tie out of order", []*shardv1.Hit{h("b", 1), h("a", 1)}, 2, "tie"},
		{"repeated", []*shardv1.Hit{h("a", 2), h("a", 1)}, 2, "repeated"},
		{"nan", []*shardv1.Hit{h("a", math.NaN())}, 1, "NaN"},
		{"too many", []*shardv1.Hit{h("a", 2), h("b", 1)}, 1, "2 hits for top_k 1"},
	}
	for _, tt := range tests {
		got := ContractViolation(tt.hits, tt.topK)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("%s: ContractViolation = %q, want %q", tt.name, got, tt.want)
		}
	}
}
