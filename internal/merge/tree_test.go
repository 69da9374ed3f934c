package merge

import (
	"math/rand/v2"
	"testing"
)

// checkInvariant recomputes every match of t from scratch and checks that
// losers and winner agree with it: the loser recorded at each internal node
// is the loser of the match between the winners of its two subtrees.
func checkInvariant[T any](tb testing.TB, t *Tree[T]) {
	tb.Helper()
	k := len(t.leaves)
	// winnerOf returns the winner of the subtree at position n by brute
	// force: the leaf that beats every other leaf below n.
	var leavesUnder func(n int) []int
	leavesUnder = func(n int) []int {
		if n >= k {
			return []int{n - k}
		}
		return append(leavesUnder(2*n), leavesUnder(2*n+1)...)
	}
	winnerOf := func(n int) int {
		ls := leavesUnder(n)
		w := ls[0]
		for _, l := range ls[1:] {
			if t.beats(l, w) {
				w = l
			}
		}
		for _, l := range ls {
			if l != w && !t.beats(w, l) {
				tb.Fatalf("node %d: winner %d does not beat leaf %d", n, w, l)
			}
		}
		return w
	}
	for n := 1; n < k; n++ {
		a, b := winnerOf(2*n), winnerOf(2*n+1)
		want := b
		if t.beats(b, a) {
			want = a
		}
		if t.losers[n] != want {
			tb.Fatalf("node %d: loser = %d, want %d (match %d vs %d)", n, t.losers[n], want, a, b)
		}
	}
	if w := winnerOf(1); t.winner != w && (t.winner != -1 || !t.leaves[w].done) {
		tb.Fatalf("winner = %d, want %d", t.winner, w)
	}
}

func TestTreeInvariant(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	less := func(a, b int) bool { return a < b }
	for range 300 {
		k := 1 + r.IntN(13)
		seqs := make([]Sequence[int], k)
		for i := range seqs {
			s := make([]int, r.IntN(10))
			v := 0
			for j := range s {
				v += r.IntN(3)
				s[j] = v
			}
			seqs[i] = FromSlice(s)
		}
		tree := New(less, seqs...)
		for tree.Next() {
			checkInvariant(t, tree)
		}
		checkInvariant(t, tree)
	}
}

// TestBeats checks that beats is a strict total order on the leaves, with
// ties broken by index and exhausted sequences last.
func TestBeats(t *testing.T) {
	t.Parallel()
	tree := New(func(a, b int) bool { return a < b })
	tree.leaves = []leaf[int]{{cur: 2}, {cur: 1}, {done: true}, {cur: 1}, {cur: 2}, {done: true}}
	order := []int{1, 3, 0, 4, 2, 5} // the leaves from first to last
	for i, a := range order {
		for j, b := range order {
			if i == j {
				continue
			}
			if got, want := tree.beats(a, b), i < j; got != want {
				t.Errorf("beats(%d, %d) = %v, want %v", a, b, got, want)
			}
		}
	}
}
