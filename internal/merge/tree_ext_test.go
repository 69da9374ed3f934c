package merge_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gatherproxy/gather/internal/merge"
)

func TestTree(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		keys [][]int
	}{
		{name: "no sequences", keys: nil},
		{name: "one empty", keys: [][]int{{}}},
		{name: "all empty", keys: [][]int{{}, {}, {}, {}, {}}},
		{name: "one", keys: [][]int{{1, 2, 2, 3}}},
		{name: "one and empties", keys: [][]int{{}, {}, {4, 5}, {}}},
		{name: "two interleaved", keys: [][]int{{1, 3, 5}, {2, 4, 6}}},
		{name: "two disjoint", keys: [][]int{{4, 5, 6}, {1, 2, 3}}},
		{name: "three", keys: [][]int{{1, 4, 7}, {2, 5, 8}, {3, 6, 9}}},
		{name: "all equal keys", keys: [][]int{{7, 7}, {7}, {7, 7, 7}, {7}, {7, 7}}},
		{name: "ties break by index", keys: [][]int{{2, 2}, {1, 2}, {1, 1}}},
		{name: "duplicates within", keys: [][]int{{1, 1, 1, 5}, {0, 1, 5, 5}}},
		{name: "negative", keys: [][]int{{-9, -3, 0}, {-5, -5}, {-10, 10}}},
		{name: "different lengths", keys: [][]int{{1}, {1, 2, 3, 4, 5, 6, 7, 8}, {}, {0, 9}}},
		{name: "five", keys: [][]int{{5}, {4}, {3}, {2}, {1}}},
		{name: "seven", keys: [][]int{{1, 8}, {2, 9}, {3}, {4}, {5}, {6}, {0, 7}}},
		{name: "eight", keys: [][]int{{8}, {7}, {6}, {5}, {4}, {3}, {2}, {1}}},
		{name: "nine, last wins", keys: [][]int{{9}, {9}, {9}, {9}, {9}, {9}, {9}, {9}, {0, 9}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := items(tt.keys)
			got := drain(t, in)
			want := reference(in)
			if !slices.Equal(got, want) {
				t.Errorf("merge(%v):\n got %v\nwant %v", tt.keys, got, want)
			}
		})
	}
}

// TestTreeRandom checks the merge against the reference on many random
// inputs: any number of sequences, empty ones, and runs of equal keys within
// and across sequences.
func TestTreeRandom(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for iter := range 2000 {
		keys := make([][]int, r.IntN(20))
		for s := range keys {
			keys[s] = make([]int, r.IntN(30))
			v := r.IntN(10) - 5
			for p := range keys[s] {
				v += r.IntN(3) // 0 a third of the time: duplicates
				keys[s][p] = v
			}
		}
		in := items(keys)
		got := drain(t, in)
		if want := reference(in); !slices.Equal(got, want) {
			t.Fatalf("iteration %d: merge(%v):\n got %v\nwant %v", iter, keys, got, want)
		}
	}
}

// countingSeq is an endless sorted sequence start, start+step, ... that
// counts the calls to its Next.
type countingSeq struct {
	cur, step int
	calls     int
}

func (c *countingSeq) Next() bool {
	if c.calls > 0 {
		c.cur += c.step
	}
	c.calls++
	return true
}

func (c *countingSeq) At() int { return c.cur }

// TestNextIsLazy merges endless sequences, which only works because the tree
// reads one element ahead per sequence: the first Next touches every
// sequence once, and each later one touches only the previous Source.
func TestNextIsLazy(t *testing.T) {
	t.Parallel()
	seqs := []*countingSeq{{cur: 3, step: 5}, {cur: 0, step: 2}, {cur: 1, step: 7}, {cur: 0, step: 1}, {cur: 10, step: 1}}
	in := make([]merge.Sequence[int], len(seqs))
	for i, s := range seqs {
		in[i] = s
	}
	tree := merge.New(func(a, b int) bool { return a < b }, in...)
	for i, s := range seqs {
		if s.calls != 0 {
			t.Fatalf("after New: sequence %d had %d calls to Next, want 0", i, s.calls)
		}
	}
	if !tree.Next() {
		t.Fatal("first Next returned false")
	}
	for i, s := range seqs {
		if s.calls != 1 {
			t.Fatalf("after the first Next: sequence %d had %d calls to Next, want 1", i, s.calls)
		}
	}

	const steps = 100
	prev := tree.At()
	for step := range steps {
		src := tree.Source()
		before := make([]int, len(seqs))
		for i, s := range seqs {
			before[i] = s.calls
		}
		if !tree.Next() {
			t.Fatalf("step %d: Next returned false on endless input", step)
		}
		for i, s := range seqs {
			want := before[i]
			if i == src {
				want++
			}
			if s.calls != want {
				t.Fatalf("step %d: sequence %d had %d calls to Next, want %d (Source was %d)", step, i, s.calls, want, src)
			}
		}
		if at := tree.At(); at < prev {
			t.Fatalf("step %d: At = %d after %d, not sorted", step, at, prev)
		}
		prev = tree.At()
	}
	total := 0
	for _, s := range seqs {
		total += s.calls
	}
	if want := len(seqs) + steps; total != want {
		t.Errorf("%d elements cost %d calls to Next, want %d", steps+1, total, want)
	}
}

// chanSeq reads a channel; its Next blocks while the channel is empty and
// open.
type chanSeq struct {
	ch  chan int
	cur int
}

func (c *chanSeq) Next() bool {
	v, ok := <-c.ch
	c.cur = v
	return ok
}

func (c *chanSeq) At() int { return c.cur }

// TestSourceTellsWhichStreamBlocks uses Source the way a caller with
// network streams would: it stops before a Next that would wait on an empty
// stream, instead of blocking.
func TestSourceTellsWhichStreamBlocks(t *testing.T) {
	t.Parallel()
	fast := &chanSeq{ch: make(chan int, 4)}
	slow := &chanSeq{ch: make(chan int, 4)}
	for _, v := range []int{1, 3, 5, 7} {
		fast.ch <- v
	}
	close(fast.ch)
	slow.ch <- 4 // more is coming, but not yet
	streams := []*chanSeq{fast, slow}

	tree := merge.New(func(a, b int) bool { return a < b }, merge.Sequence[int](fast), slow)
	var got []int
	for tree.Next() {
		got = append(got, tree.At())
		if s := streams[tree.Source()]; len(s.ch) == 0 && s == slow {
			break // the next Next would block on slow
		}
	}
	if want := []int{1, 3, 4}; !slices.Equal(got, want) {
		t.Fatalf("before the slow stream ran dry: got %v, want %v", got, want)
	}

	slow.ch <- 6
	close(slow.ch)
	for tree.Next() {
		got = append(got, tree.At())
	}
	if want := []int{1, 3, 4, 5, 6, 7}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestSliceSequence(t *testing.T) {
	t.Parallel()
	var zero merge.SliceSequence[int]
	if zero.Next() {
		t.Error("zero SliceSequence: Next returned true")
	}

	s := merge.FromSlice([]int{1, 2})
	var got []int
	for s.Next() {
		got = append(got, s.At())
	}
	if s.Next() {
		t.Error("Next after the end returned true")
	}
	s.Reset([]int{3})
	for s.Next() {
		got = append(got, s.At())
	}
	if want := []int{1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// TestAllocs checks that only New allocates: merging allocates nothing per
// element, including the first Next that builds the tree.
func TestAllocs(t *testing.T) {
	const k, n = 7, 2000
	data := make([][]int, k)
	for s := range data {
		data[s] = make([]int, n)
		for p := range data[s] {
			data[s][p] = p*k + s
		}
	}
	less := func(a, b int) bool { return a < b }
	sl := make([]*merge.SliceSequence[int], k)
	seqs := make([]merge.Sequence[int], k)
	for i := range sl {
		sl[i] = merge.FromSlice(data[i])
		seqs[i] = sl[i]
	}
	var sink int

	t.Run("steady state", func(t *testing.T) {
		for i := range sl {
			sl[i].Reset(data[i])
		}
		tree := merge.New(less, seqs...)
		tree.Next()
		allocs := testing.AllocsPerRun(1000, func() {
			if !tree.Next() {
				t.Fatal("merge ran dry")
			}
			sink += tree.At()
		})
		if allocs != 0 {
			t.Errorf("Next+At allocated %v times per element, want 0", allocs)
		}
	})

	t.Run("whole merge", func(t *testing.T) {
		newOnly := testing.AllocsPerRun(20, func() {
			for i := range sl {
				sl[i].Reset(data[i])
			}
			sink += merge.New(less, seqs...).Source()
		})
		for _, take := range []int{1, 10, k * n} {
			allocs := testing.AllocsPerRun(20, func() {
				for i := range sl {
					sl[i].Reset(data[i])
				}
				tree := merge.New(less, seqs...)
				for range take {
					if !tree.Next() {
						t.Fatal("merge ran dry")
					}
					sink += tree.At()
				}
			})
			if allocs != newOnly {
				t.Errorf("New and %d elements: %v allocations, want %v as for New alone", take, allocs, newOnly)
			}
		}
		t.Logf("New: %v allocations", newOnly)
	})
	_ = sink
}
