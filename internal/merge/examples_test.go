package merge_test

import (
	"fmt"

	"github.com/gatherproxy/gather/internal/merge"
)

// Example merges three sorted slices. Equal elements come out in the order
// of the sequences given to New, and Source names the sequence each element
// came from (and the one the next call to Next will read).
func Example() {
	shards := [][]int{
		{1, 4, 7},
		{2, 4, 8},
		{3, 4, 9},
	}
	seqs := make([]merge.Sequence[int], len(shards))
	for i, s := range shards {
		seqs[i] = merge.FromSlice(s)
	}
	tree := merge.New(func(a, b int) bool { return a < b }, seqs...)
	for tree.Next() {
		fmt.Printf("%d from shard %d\n", tree.At(), tree.Source())
	}
	// Output:
	// 1 from shard 0
	// 2 from shard 1
	// 3 from shard 2
	// 4 from shard 0
	// 4 from shard 1
	// 4 from shard 2
	// 7 from shard 0
	// 8 from shard 1
	// 9 from shard 2
}
