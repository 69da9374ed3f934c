package merge

// Sequence is one sorted input of a merge.
//
// A Tree owns the sequences given to [New] for the lifetime of the merge: the
// caller must not call their methods while the merge is in use.
type Sequence[T any] interface {
	// Next advances to the next element and reports whether there is one.
	// It may block (a network stream). After it returns false it is not
	// called again.
	Next() bool
	// At returns the current element; valid after Next returned true,
	// until the next call to Next.
	At() T
}

// SliceSequence is a [Sequence] over the elements of a slice, in slice order.
// It does not copy the slice. The zero value is an empty sequence.
type SliceSequence[T any] struct {
	s    []T
	next int // index of the element the next call to Next moves to
}

// FromSlice returns a sequence over the elements of s. The caller must not
// modify s while the sequence is in use.
func FromSlice[T any](s []T) *SliceSequence[T] {
	return &SliceSequence[T]{s: s}
}

// Reset makes the sequence start over on s, so a benchmark or a loop can
// reuse one SliceSequence without allocating.
func (q *SliceSequence[T]) Reset(s []T) {
	q.s, q.next = s, 0
}

// Next advances to the next element of the slice and reports whether there
// is one. Unlike the general contract, calling it again after it has
// returned false is allowed and keeps returning false.
func (q *SliceSequence[T]) Next() bool {
	if q.next >= len(q.s) {
		return false
	}
	q.next++
	return true
}

// At returns the current element. Like any Sequence, it is valid only after
// Next returned true; before the first call to Next it panics.
func (q *SliceSequence[T]) At() T {
	return q.s[q.next-1]
}
