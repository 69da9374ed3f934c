package merge_test

import (
	"slices"
	"sort"
	"testing"

	"github.com/gatherproxy/gather/internal/merge"
)

// item is a merge element that remembers where it came from, so that tests
// can tell equal keys apart and check stability.
type item struct {
	Key int
	Seq int // index of the input sequence
	Pos int // position within that sequence
}

func lessKey(a, b item) bool { return a.Key < b.Key }

// items turns per-sequence keys into items.
func items(keys [][]int) [][]item {
	out := make([][]item, len(keys))
	for s, ks := range keys {
		out[s] = make([]item, len(ks))
		for p, k := range ks {
			out[s][p] = item{Key: k, Seq: s, Pos: p}
		}
	}
	return out
}

// reference is the simple merge the tree must agree with: concatenate every
// input and sort stably by less, with the sequence index as tiebreak.
func reference(in [][]item) []item {
	var all []item
	for _, s := range in {
		all = append(all, s...)
	}
	sort.SliceStable(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if lessKey(a, b) {
			return true
		}
		return !lessKey(b, a) && a.Seq < b.Seq
	})
	return all
}

// recordingSeq wraps a sequence and appends its index to *calls on every
// call to Next, so a test can see which inputs a step of the merge touched.
type recordingSeq struct {
	t     testing.TB
	inner merge.Sequence[item]
	idx   int
	calls *[]int
	done  bool
}

func (r *recordingSeq) Next() bool {
	if r.done {
		r.t.Errorf("sequence %d: Next called after it returned false", r.idx)
	}
	*r.calls = append(*r.calls, r.idx)
	ok := r.inner.Next()
	r.done = !ok
	return ok
}

func (r *recordingSeq) At() item {
	if r.done {
		r.t.Errorf("sequence %d: At called after Next returned false", r.idx)
	}
	return r.inner.At()
}

// drain merges in to the end and returns what the tree produced. Along the
// way it checks the laziness and Source contracts: the first Next advances
// every sequence once in index order, each later Next advances exactly the
// sequence Source named, Source names the sequence At came from, and an
// exhausted tree calls nothing.
func drain(t testing.TB, in [][]item) []item {
	t.Helper()
	var calls []int
	seqs := make([]merge.Sequence[item], len(in))
	for i, s := range in {
		seqs[i] = &recordingSeq{t: t, inner: merge.FromSlice(s), idx: i, calls: &calls}
	}
	tree := merge.New(lessKey, seqs...)
	if got := tree.Source(); got != -1 {
		t.Fatalf("Source before Next = %d, want -1", got)
	}
	if len(calls) != 0 {
		t.Fatalf("New called Next on sequences %v, want none", calls)
	}

	var got []item
	wantCalls := make([]int, len(in))
	for i := range wantCalls {
		wantCalls[i] = i
	}
	for step := 0; ; step++ {
		calls = calls[:0]
		ok := tree.Next()
		if !slices.Equal(calls, wantCalls) {
			t.Fatalf("step %d: Next advanced sequences %v, want %v", step, calls, wantCalls)
		}
		if !ok {
			break
		}
		at, src := tree.At(), tree.Source()
		if src != at.Seq {
			t.Fatalf("step %d: Source = %d, but At = %+v came from sequence %d", step, src, at, at.Seq)
		}
		got = append(got, at)
		wantCalls = append(wantCalls[:0], src)
	}

	if src := tree.Source(); src != -1 {
		t.Errorf("Source after the end = %d, want -1", src)
	}
	if at := tree.At(); at != (item{}) {
		t.Errorf("At after the end = %+v, want the zero item", at)
	}
	calls = calls[:0]
	if tree.Next() {
		t.Errorf("Next after the end returned true")
	}
	if len(calls) != 0 {
		t.Errorf("Next after the end advanced sequences %v, want none", calls)
	}
	return got
}
