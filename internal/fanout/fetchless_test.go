package fanout

import (
	"context"
	"fmt"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/merge"
	"github.com/gatherproxy/gather/internal/shardtest"
)

// TestFirstBatch: the hint is one more than the median of Binomial(k, 1/n), checked against the
// median computed exactly with rationals; no hint where it would be top_k or more.
func TestFirstBatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		n    int
		k    uint32
		want uint32
	}{
		{1, 100, 0}, {2, 1, 0}, {64, 100, 2}, {4, 10, 3}, {16, 10, 1}, {16, 100, 7}, {10, 29, 4},
		{2, 2, 0}, {3, 1000, 334}, {64, 1000, 16}, {2, 10000, 5001}, {1000, 10, 1},
	} {
		if got := FirstBatch(tc.n, tc.k); got != tc.want {
			t.Errorf("FirstBatch(%d, %d) = %d, want %d", tc.n, tc.k, got, tc.want)
		}
	}
	for n := 2; n <= 70; n += 3 {
		for k := 1; k <= 300; k += 7 {
			if got, want := binomialMedian(k, 1/float64(n)), exactMedian(k, n); got != want {
				t.Errorf("median of Binomial(%d, 1/%d) = %d, want %d", k, n, got, want)
			}
		}
	}
}

// exactMedian is the smallest m with P(X <= m) >= 1/2, X ~ Binomial(k, 1/n), in rationals.
func exactMedian(k, n int) int {
	// P(X = 0) = ((n-1)/n)^k; P(X = m+1) = P(X = m) (k-m) / ((m+1) (n-1)).
	term := new(big.Rat).SetFrac(new(big.Int).Exp(big.NewInt(int64(n-1)), big.NewInt(int64(k)), nil),
		new(big.Int).Exp(big.NewInt(int64(n)), big.NewInt(int64(k)), nil))
	half := big.NewRat(1, 2)
	cdf := new(big.Rat)
	for m := 0; ; m++ {
		if cdf.Add(cdf, term); cdf.Cmp(half) >= 0 {
			return m
		}
		term.Mul(term, big.NewRat(int64(k-m), int64(m+1)*int64(n-1)))
	}
}

// mergeAll merges a call's cursors the way the proxy does and returns the first k hits as
// shard/doc_id, stopping the call once it has them.
func mergeAll(call *Call, k int) []string {
	cursors := call.Cursors()
	seqs := make([]merge.Sequence[Hit], len(cursors))
	for i, c := range cursors {
		seqs[i] = c
	}
	tree := merge.New(Less, seqs...)
	var out []string
	for len(out) < k && tree.Next() {
		h := tree.At()
		out = append(out, fmt.Sprintf("%d/%s", h.Shard, h.DocID))
	}
	if len(out) == k {
		call.Stop()
	}
	return out
}

// referenceMerge is the full fetch: every hit every shard would send (its first k), sorted, the
// first k taken.
func referenceMerge(k int, perShard [][]*shardv1.Hit) []string {
	var all []Hit
	for i, hits := range perShard {
		for _, h := range hits[:min(k, len(hits))] {
			all = append(all, Hit{ShardHit: &ShardHit{DocID: h.GetDocId(), Score: h.GetScore()}, Shard: i})
		}
	}
	slices.SortFunc(all, func(a, b Hit) int {
		switch {
		case Less(a, b):
			return -1
		case Less(b, a):
			return 1
		}
		return 0
	})
	var out []string
	for _, h := range all[:min(k, len(all))] {
		out = append(out, fmt.Sprintf("%d/%s", h.Shard, h.DocID))
	}
	return out
}

// TestLaterMessagesDecodedOnDemand: a shard whose hits rank below the answer's has only its
// first message decoded, although it sent the rest; one whose hits make the answer is read as
// far as the merge needs.
func TestLaterMessagesDecodedOnDemand(t *testing.T) {
	t.Parallel()
	high := shardtest.Hits("high", 40, 0) // scores from 100 down
	low := shardtest.Hits("low", 40, 0)
	for i, h := range low {
		low[i] = &shardv1.Hit{DocId: h.GetDocId(), Score: h.GetScore() - 1000}
	}
	a := shardtest.Start(t, shardtest.Behavior{Hits: high, Paced: true, Batch: 64})
	b := shardtest.Start(t, shardtest.Behavior{Hits: low, Paced: true, Batch: 64})
	c := clientOver(t, Config{}, a, b)
	const k = 20
	first := int(FirstBatch(2, k)) // 11
	call := c.Start(t.Context(), Request{Query: "q", TopK: k})
	got := mergeAll(call, k)
	res := call.Close()
	if want := referenceMerge(k, [][]*shardv1.Hit{high, low}); !slices.Equal(got, want) {
		t.Fatalf("hits\n got %v\nwant %v", got, want)
	}
	// a: 11, then 9 of its next 22 are needed, and the 21st to compare (there is none: top_k).
	if res[0].Hits != k || res[1].Hits != first {
		t.Errorf("hits decoded: a %d, b %d; want a %d (its two messages), b %d (its first)", res[0].Hits, res[1].Hits, k, first)
	}
	if got, want := testutil.ToFloat64(c.metrics.received), float64(k+first); got != want {
		t.Errorf("gather_shard_hits_received_total %v, want %v", got, want)
	}
	for i, r := range res {
		if r.Status != StatusOK {
			t.Errorf("shard %d: %v (%v)", i, r.Status, r.Err)
		}
	}
}

// TestParkedShardIsNotIdle: a shard that has sent what the merge asked for is not cut by the
// idle timeout while the merge does not ask for more, even though it then pauses longer than
// the timeout before sending the rest; the answer is the full fetch.
func TestParkedShardIsNotIdle(t *testing.T) {
	t.Parallel()
	const idle = 100 * time.Millisecond
	low := shardtest.Hits("low", 6, 3)
	high := shardtest.Hits("high", 12, 0)
	// sends 2 hits, pauses for 2 × idle, sends the other 4
	pausing := shardtest.Start(t, shardtest.Behavior{Hits: low, Paced: true, First: 2, Batch: 64, BatchDelay: 2 * idle})
	// holds the merge up for 3 × idle before its first message
	slow := shardtest.Start(t, shardtest.Behavior{Hits: high, Delay: 3 * idle})
	c := clientOver(t, Config{IdleTimeout: idle, ShardTimeout: 10 * time.Second}, pausing, slow)
	const k = 18 // every hit of both shards
	call := c.Start(t.Context(), Request{Query: "q", TopK: k})
	got := mergeAll(call, k)
	res := call.Close()
	for i, r := range res {
		if r.Status != StatusOK {
			t.Fatalf("shard %d: %v (%v), want OK", i, r.Status, r.Err)
		}
	}
	if want := referenceMerge(k, [][]*shardv1.Hit{low, high}); !slices.Equal(got, want) {
		t.Errorf("hits\n got %v\nwant %v", got, want)
	}
}

// fuzzPool is a set of fake shards and one Client per fan-out, made once per fuzz target and
// reused by every input (a shard's behavior is set per input).
type fuzzPool struct {
	shards  []*shardtest.Shard
	clients []*Client // clients[n-1] fans out to the first n shards
	pullers []*Client // the same with Pull at every fan-out (Config.PullFanOut 1)
}

const fuzzMaxShards = 6

func newFuzzPool(f *testing.F) *fuzzPool {
	p := &fuzzPool{}
	for range fuzzMaxShards {
		p.shards = append(p.shards, shardtest.Start(f, shardtest.Behavior{}))
	}
	for n := 1; n <= fuzzMaxShards; n++ {
		var topo []ShardSpec
		for i := range n {
			topo = append(topo, ShardSpec{Name: fmt.Sprintf("s%d", i), Replicas: []string{p.shards[i].Addr()}})
		}
		for _, pullAt := range []int{-1, 1} {
			c, err := New(topo, Config{ShardTimeout: time.Minute, PullFanOut: pullAt})
			if err != nil {
				f.Fatal(err)
			}
			f.Cleanup(func() { _ = c.Close() })
			if pullAt < 0 {
				p.clients = append(p.clients, c)
			} else {
				p.pullers = append(p.pullers, c)
			}
		}
	}
	return p
}

// fuzzHits makes one shard's hits from r: correctly ordered, with the given score distribution,
// doc_ids unique across shards.
func fuzzHits(r *rand.Rand, shard, n int, scores uint8) []*shardv1.Hit {
	hits := make([]*shardv1.Hit, n)
	for i := range hits {
		var s float64
		switch scores % 4 {
		case 0: // few distinct scores: ties within and across shards
			s = float64(r.IntN(3))
		case 1: // every hit the same score
			s = 7
		case 2: // spread
			s = r.Float64() * 100
		default: // a shard-dependent offset, so that some shards rank far below the others
			s = float64(shard*10) + float64(r.IntN(5))
		}
		hits[i] = &shardv1.Hit{DocId: fmt.Sprintf("d%03d-%d-%d", r.IntN(1000), shard, i), Score: s}
	}
	slices.SortFunc(hits, func(a, b *shardv1.Hit) int {
		switch {
		case a.Score != b.Score:
			if a.Score > b.Score {
				return -1
			}
			return 1
		case a.DocId < b.DocId:
			return -1
		case a.DocId > b.DocId:
			return 1
		}
		return 0
	})
	return hits
}

// FuzzFetchLess: whatever the fan-out, top_k, first batch, batching, score distribution and
// shard lengths (shards that end before top_k, or send nothing), the merged answer of shards
// decoded on demand equals the full fetch, and every shard call ends OK. Shards follow the
// proxy's first-batch hint, or one of their own, or none. With slow odd, the first shard holds
// the merge up past drainAt, so that the others are read without demand and cut once they are
// outranked (shardCall.drained). With bit 1 of slow, the shards are called with Pull, which
// sends each batch after the first only when asked.
func FuzzFetchLess(f *testing.F) {
	f.Add(uint64(1), uint8(4), uint8(10), uint8(0), uint8(0), uint8(0), uint8(0))
	f.Add(uint64(2), uint8(6), uint8(30), uint8(1), uint8(3), uint8(1), uint8(0))
	f.Add(uint64(3), uint8(3), uint8(7), uint8(2), uint8(64), uint8(2), uint8(0))
	f.Add(uint64(4), uint8(5), uint8(50), uint8(0), uint8(5), uint8(3), uint8(0))
	f.Add(uint64(5), uint8(1), uint8(20), uint8(3), uint8(2), uint8(0), uint8(0))
	f.Add(uint64(6), uint8(6), uint8(1), uint8(1), uint8(0), uint8(3), uint8(0))
	f.Add(uint64(7), uint8(2), uint8(60), uint8(5), uint8(7), uint8(1), uint8(0))
	f.Add(uint64(8), uint8(5), uint8(12), uint8(0), uint8(2), uint8(0), uint8(1))
	f.Add(uint64(9), uint8(6), uint8(40), uint8(1), uint8(3), uint8(2), uint8(1))
	f.Add(uint64(10), uint8(4), uint8(25), uint8(0), uint8(1), uint8(3), uint8(1))
	f.Add(uint64(11), uint8(5), uint8(30), uint8(0), uint8(2), uint8(2), uint8(2))
	f.Add(uint64(12), uint8(6), uint8(45), uint8(1), uint8(3), uint8(3), uint8(3))
	f.Add(uint64(13), uint8(3), uint8(9), uint8(2), uint8(0), uint8(0), uint8(2))
	pool := newFuzzPool(f)
	f.Fuzz(func(t *testing.T, seed uint64, n, k, first, batch, scores, slow uint8) {
		nShards := 1 + int(n)%fuzzMaxShards
		topK := 1 + int(k)%64
		r := rand.New(rand.NewPCG(seed, uint64(n)<<8|uint64(k)))
		perShard := make([][]*shardv1.Hit, nShards)
		for i := range perShard {
			length := r.IntN(topK + 4) // some end early, some have more than top_k
			if r.IntN(5) == 0 {
				length = r.IntN(3)
			}
			perShard[i] = fuzzHits(r, i, length, scores)
			b := shardtest.Behavior{Hits: perShard[i], Batch: int(batch) % 9, Pull: true}
			switch first % 3 {
			case 0: // the proxy's hint
				b.Paced = true
			case 1: // a first batch of the shard's own
				b.Paced, b.First = true, 1+r.IntN(8)
			}
			if i == 0 && slow%2 == 1 {
				b.Delay = 300 * time.Millisecond
			}
			pool.shards[i].SetBehavior(b)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		req := Request{Query: "q", TopK: uint32(topK)}
		if slow%2 == 1 {
			req.ShardTimeout = time.Second // drainAt at 250ms, before the first shard answers
		}
		client := pool.clients[nShards-1]
		if slow&2 != 0 {
			client = pool.pullers[nShards-1]
		}
		call := client.Start(ctx, req)
		got := mergeAll(call, topK)
		res := call.Close()
		for i, r := range res {
			if r.Status != StatusOK {
				t.Fatalf("shard %d: %v (%v)", i, r.Status, r.Err)
			}
		}
		if want := referenceMerge(topK, perShard); !slices.Equal(got, want) {
			t.Fatalf("n %d, top_k %d: hits\n got %v\nwant %v", nShards, topK, got, want)
		}
	})
}

// TestOutrankedStreamIsCut: while a slow shard holds the merge up past drainAt, the others are
// read without demand; one whose last hit given ranks after top_k hits given by another is cut
// there, stopped early, instead of being read to its end. The answer is the full fetch.
func TestOutrankedStreamIsCut(t *testing.T) {
	t.Parallel()
	const k = 20
	top := shardtest.Hits("top", k, 0) // scores from 100 down: the answer
	mid := shardtest.Hits("mid", k, 0)
	low := shardtest.Hits("low", k, 0)
	for i := range k {
		mid[i] = &shardv1.Hit{DocId: mid[i].GetDocId(), Score: mid[i].GetScore() - 500}
		low[i] = &shardv1.Hit{DocId: low[i].GetDocId(), Score: low[i].GetScore() - 1000}
	}
	// Room for all of low's batches: a stream waiting for room in its cursor reads nothing.
	c, res := fetchMerged(t, Config{ShardTimeout: 2 * time.Second, Buffer: 16}, k,
		shardtest.Behavior{Hits: top, Paced: true, First: 2, Batch: 64},
		// 2 hits, then 2 per message, 100ms apart: its last at 900ms
		shardtest.Behavior{Hits: low, Paced: true, First: 2, Batch: 2, BatchDelay: 100 * time.Millisecond},
		// holds the merge up: its first message comes after drainAt (500ms), and after low's last
		shardtest.Behavior{Hits: mid, Delay: 1200 * time.Millisecond})
	for i, r := range res {
		if r.Status != StatusOK {
			t.Errorf("shard %d: %v (%v), want OK", i, r.Status, r.Err)
		}
	}
	if got := testutil.ToFloat64(c.metrics.outranked); got != 1 {
		t.Errorf("gather_shard_streams_outranked_total %v, want 1 (the low shard)", got)
	}
	if r := res[1]; !r.StoppedEarly || r.Hits >= k {
		t.Errorf("low shard: %d hits read, stopped early %v; want it cut before its end", r.Hits, r.StoppedEarly)
	}
	if r := res[0]; r.Hits != k || r.StoppedEarly {
		t.Errorf("top shard: %d hits read, stopped early %v; want all %d, to its end", r.Hits, r.StoppedEarly, k)
	}
}

// TestDrainedStreamWaitsWhileFirstBatchesCome: past drainAt, while other shards are still
// giving their first batches, a stream that is not outranked yet waits for them instead of
// reading on; the one that outranks it cuts it after its first message. Read on at drainAt (as
// the fan-out did), it would have parsed some 10 of its hits before 10 given ones outranked it.
func TestDrainedStreamWaitsWhileFirstBatchesCome(t *testing.T) {
	t.Parallel()
	const k = 10
	low := shardtest.Hits("low", 2*k, 0) // all of its messages sent at once, 2 hits each
	mid := shardtest.Hits("mid", 3, 1)
	top := shardtest.Hits("top", k, 2) // the answer
	late := shardtest.Hits("late", 3, 3)
	for i := range low {
		low[i] = &shardv1.Hit{DocId: low[i].GetDocId(), Score: low[i].GetScore() - 1000}
	}
	for i := range mid {
		mid[i] = &shardv1.Hit{DocId: mid[i].GetDocId(), Score: mid[i].GetScore() - 500}
		late[i] = &shardv1.Hit{DocId: late[i].GetDocId(), Score: late[i].GetScore() - 500}
	}
	// A 4s shard timeout: drainAt at 1s; first batches at 0, 900ms and 1.1s, each within a
	// second of the one before (quiet is a quarter of the timeout); late holds the merge up.
	c, res := fetchMerged(t, Config{ShardTimeout: 4 * time.Second, Buffer: 16}, k,
		shardtest.Behavior{Hits: low, Paced: true, First: 2, Batch: 2},
		shardtest.Behavior{Hits: mid, Delay: 900 * time.Millisecond},
		shardtest.Behavior{Hits: top, Delay: 1100 * time.Millisecond},
		shardtest.Behavior{Hits: late, Delay: 2 * time.Second})
	if r := res[0]; r.Status != StatusOK || !r.StoppedEarly || r.Hits != 2 {
		t.Errorf("low shard: %v (%v), %d hits read, stopped early %v; want OK, cut after its first 2", r.Status, r.Err, r.Hits, r.StoppedEarly)
	}
	if got := testutil.ToFloat64(c.metrics.outranked); got != 1 {
		t.Errorf("gather_shard_streams_outranked_total %v, want 1 (the low shard)", got)
	}
}

// clientOver returns a Client with cfg over shards, one replica each, named s0, s1, ... in the
// order given (the order of the call's cursors), closed when the test ends.
func clientOver(t *testing.T, cfg Config, shards ...*shardtest.Shard) *Client {
	t.Helper()
	var topo []ShardSpec
	for i, s := range shards {
		topo = append(topo, ShardSpec{Name: fmt.Sprintf("s%d", i), Replicas: []string{s.Addr()}})
	}
	c, err := New(topo, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// fetchMerged starts a shard for each behavior and a Client over them with cfg, merges the top
// k of one query, checks that the answer is the full fetch's and returns the Client and the
// shards' results.
func fetchMerged(t *testing.T, cfg Config, k int, behaviors ...shardtest.Behavior) (*Client, []Result) {
	t.Helper()
	var shards []*shardtest.Shard
	var all [][]*shardv1.Hit
	for _, b := range behaviors {
		shards = append(shards, shardtest.Start(t, b))
		all = append(all, b.Hits)
	}
	c := clientOver(t, cfg, shards...)
	call := c.Start(t.Context(), Request{Query: "q", TopK: uint32(k)})
	got := mergeAll(call, k)
	res := call.Close()
	if want := referenceMerge(k, all); !slices.Equal(got, want) {
		t.Fatalf("hits\n got %v\nwant %v", got, want)
	}
	return c, res
}

// TestCompleteStreamEndsCleanly: a shard that has sent all it matched, or top_k hits, is read to
// the end of its stream at once rather than left waiting for demand, so its call ends cleanly
// (not stopped early) although the merge stops the query before needing anything more from it;
// one that could still send waits, and is stopped early.
func TestCompleteStreamEndsCleanly(t *testing.T) {
	t.Parallel()
	all := shardtest.Hits("all", 3, 0)    // 3 matches, all in its first message (the hint is 6)
	topK := shardtest.Hits("topk", 30, 0) // top_k of them in one message
	more := shardtest.Hits("more", 30, 0) // 6 first, more to come
	for i, h := range more {              // below the answer, as are all's
		more[i] = &shardv1.Hit{DocId: h.GetDocId(), Score: h.GetScore() - 1000}
	}
	for i, h := range all {
		all[i] = &shardv1.Hit{DocId: h.GetDocId(), Score: h.GetScore() - 500}
	}
	var topo []ShardSpec
	// The last shard holds the merge (and so the early stop) up long after the others have sent
	// their first messages, and their streams' ends.
	late := shardtest.Hits("late", 30, 0)
	for i, b := range []shardtest.Behavior{{Hits: all, Paced: true}, {Hits: topK}, {Hits: more, Paced: true, Batch: 64},
		{Hits: late, Delay: 200 * time.Millisecond}} {
		topo = append(topo, ShardSpec{Name: fmt.Sprint(i), Replicas: []string{shardtest.Start(t, b).Addr()}})
	}
	c, err := New(topo, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	const k = 10
	call := c.Start(t.Context(), Request{Query: "q", TopK: k})
	if got := mergeAll(call, k); len(got) != k {
		t.Fatalf("%d hits, want %d", len(got), k)
	}
	res := call.Close()
	for i, want := range []bool{false, false, true} {
		if r := res[i]; r.Status != StatusOK || r.StoppedEarly != want {
			t.Errorf("shard %d: %v (%v), stopped early %v; want OK, stopped early %v", i, r.Status, r.Err, r.StoppedEarly, want)
		}
	}
}
