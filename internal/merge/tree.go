package merge

// Tree merges sorted sequences lazily. It is a loser tree: each internal node
// remembers which sequence lost the match played there, so replacing the
// winner replays only the matches on one leaf-to-root path.
//
// A Tree is not safe for concurrent use. See the package documentation for
// the ordering, laziness and blocking contracts.
type Tree[T any] struct {
	less func(a, b T) bool

	// leaves[i] is input i and its current element.
	leaves []leaf[T]

	// losers[n], for internal node n in [1, len(leaves)), is the index of
	// the sequence that lost the match at n. Node n has children 2n and
	// 2n+1; position len(leaves)+i is the leaf of sequence i. This heap
	// layout gives a full binary tree for any number of leaves, powers of
	// two or not. losers[0] is unused.
	losers []int

	// winner is the index of the sequence holding the current element, or
	// -1 when there is none: before the first call to Next and after Next
	// has returned false.
	winner int

	started bool
}

// leaf is one input of the merge.
type leaf[T any] struct {
	seq  Sequence[T]
	cur  T    // the sequence's current element; zero once done
	done bool // the sequence's Next has returned false
}

// New returns a merge of seqs, each of which must be sorted by less. less
// must be a strict weak ordering; ties are broken by the position of the
// sequence in seqs, lower first.
//
// New does not call the sequences; the first call to [Tree.Next] does. The
// Tree takes ownership of the sequences until the merge is abandoned or
// exhausted (see [Sequence]); New copies seqs, so the caller may reuse that
// slice. New is the only allocation a merge makes.
func New[T any](less func(a, b T) bool, seqs ...Sequence[T]) *Tree[T] {
	t := &Tree[T]{
		less:   less,
		leaves: make([]leaf[T], len(seqs)),
		winner: -1,
	}
	for i, s := range seqs {
		t.leaves[i].seq = s
	}
	if len(seqs) > 1 {
		t.losers = make([]int, len(seqs))
	}
	return t
}

// Next advances the merge and reports whether there is a current element.
//
// The first call calls Next once on every sequence, in index order; each
// later call calls Next only on the sequence that supplied the previous
// element (the one [Tree.Source] reported). Next therefore blocks whenever
// that sequence's Next blocks. Next returns false once every sequence is
// exhausted, and keeps returning false without calling any sequence.
//
// The element returned by the previous [Tree.At] may be invalidated by Next,
// as it would be by its own sequence's Next.
func (t *Tree[T]) Next() bool {
	if !t.started {
		t.started = true
		if len(t.leaves) == 0 {
			return false
		}
		for i := range t.leaves {
			t.advance(i)
		}
		t.winner = t.build(1)
	} else {
		if t.winner < 0 {
			return false
		}
		t.advance(t.winner)
		t.replay(t.winner)
	}
	if t.leaves[t.winner].done {
		// Exhausted sequences lose to every element, so a done winner
		// means that all sequences are done.
		t.winner = -1
		return false
	}
	return true
}

// At returns the current smallest element (per less), that is the element
// of sequence [Tree.Source]. It is valid after Next returned true, until the
// next call to Next; otherwise At returns the zero value of T.
func (t *Tree[T]) At() T {
	if t.winner < 0 {
		var zero T
		return zero
	}
	return t.leaves[t.winner].cur
}

// Source returns the index (in the seqs given to [New]) of the sequence that
// supplied At. The next call to [Tree.Next] will advance that sequence and
// no other, so a caller can check whether that call can block (for example
// whether that stream has a buffered message) before making it.
//
// Source returns -1 when there is no current element: before the first call
// to Next, which advances every sequence, and after Next has returned false,
// when Next calls no sequence.
func (t *Tree[T]) Source() int {
	return t.winner
}

// advance moves sequence i to its next element, or marks it done.
func (t *Tree[T]) advance(i int) {
	l := &t.leaves[i]
	if l.seq.Next() {
		l.cur = l.seq.At()
		return
	}
	// Drop references so that the sequence and its last element can be
	// collected while the rest of the merge goes on.
	var zero T
	l.cur, l.seq, l.done = zero, nil, true
}

// build plays every match in the subtree rooted at position n, records the
// losers and returns the winner.
func (t *Tree[T]) build(n int) int {
	k := len(t.leaves)
	if n >= k {
		return n - k
	}
	a, b := t.build(2*n), t.build(2*n+1)
	if t.beats(b, a) {
		a, b = b, a
	}
	t.losers[n] = b
	return a
}

// replay replays the matches from the leaf of sequence w, whose element has
// changed, up to the root, and records the new overall winner.
func (t *Tree[T]) replay(w int) {
	for n := (len(t.leaves) + w) / 2; n > 0; n /= 2 {
		if l := t.losers[n]; t.beats(l, w) {
			t.losers[n], w = w, l
		}
	}
	t.winner = w
}

// beats reports whether the current element of sequence a comes before that
// of sequence b (a != b): it is smaller, or equal and a is the lower index.
// An exhausted sequence comes after every element. Knowing which index is
// lower settles ties up front, so each match costs one call to less.
func (t *Tree[T]) beats(a, b int) bool {
	la, lb := &t.leaves[a], &t.leaves[b]
	switch {
	case la.done:
		return lb.done && a < b
	case lb.done:
		return true
	case a < b:
		return !t.less(lb.cur, la.cur)
	default:
		return t.less(la.cur, lb.cur)
	}
}
