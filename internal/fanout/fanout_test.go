package fanout

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/hedge"
	"github.com/gatherproxy/gather/internal/replica"
	"github.com/gatherproxy/gather/internal/shardtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCheck(t *testing.T) {
	t.Parallel()
	h := func(id string, score float64) *shardv1.Hit { return &shardv1.Hit{DocId: id, Score: score} }
	lim := Config{MaxDocIDBytes: 8, MaxTextBytes: 16, MaxFields: 2, MaxFieldBytes: 6}.withDefaults()
	for _, tc := range []struct {
		name    string
		prev    *shardv1.Hit
		hits    []*shardv1.Hit
		sent    uint32
		topK    uint32
		wantN   int
		wantErr error
		wantMsg string // in the error's text
	}{
		{"sorted", nil, []*shardv1.Hit{h("a", 3), h("b", 2), h("c", 1)}, 0, 10, 3, nil, ""},
		{"ties by id", nil, []*shardv1.Hit{h("a", 2), h("b", 2), h("c", 2)}, 0, 10, 3, nil, ""},
		{"continues prev batch", h("a", 5), []*shardv1.Hit{h("b", 5), h("c", 4)}, 1, 10, 2, nil, ""},
		{"score rises", nil, []*shardv1.Hit{h("a", 3), h("b", 4)}, 0, 10, 1, ErrOrder, "after doc"},
		{"rises across batches", h("z", 1), []*shardv1.Hit{h("a", 2)}, 1, 10, 0, ErrOrder, "after doc"},
		{"tie out of order", nil, []*shardv1.Hit{h("b", 2), h("a", 2)}, 0, 10, 1, ErrOrder, "equal score"},
		{"duplicate at a tie", nil, []*shardv1.Hit{h("a", 2), h("a", 2)}, 0, 10, 1, ErrOrder, "equal score"},
		{"duplicate at a lower score", nil, []*shardv1.Hit{h("a", 3), h("b", 2), h("a", 1)}, 0, 10, 2, ErrOrder, "repeated"},
		{"duplicate of an earlier batch", h("a", 5), []*shardv1.Hit{h("b", 4), h("a", 3)}, 1, 10, 1, ErrOrder, "repeated"},
		{"nan", nil, []*shardv1.Hit{h("a", 2), h("b", math.NaN())}, 0, 10, 1, ErrOrder, "not a finite"},
		{"+inf first", nil, []*shardv1.Hit{h("a", math.Inf(1)), h("b", 2)}, 0, 10, 0, ErrOrder, "+Inf"},
		{"-inf last", nil, []*shardv1.Hit{h("a", 2), h("b", math.Inf(-1))}, 0, 10, 1, ErrOrder, "-Inf"},
		{"too many", nil, []*shardv1.Hit{h("a", 3), h("b", 2), h("c", 1)}, 8, 10, 2, ErrTooMany, "10"},
		{"doc_id over", nil, []*shardv1.Hit{h("a", 3), h("123456789", 2)}, 0, 10, 1, ErrOverLimit, "max_hit_doc_id_bytes (8)"},
		{"text over", nil, []*shardv1.Hit{{DocId: "a", Score: 1, Text: strings.Repeat("t", 17)}}, 0, 10, 0, ErrOverLimit, "max_hit_text_bytes (16)"},
		{"text at the cap", nil, []*shardv1.Hit{{DocId: "a", Score: 1, Text: strings.Repeat("t", 16)}}, 0, 10, 1, nil, ""},
		{"too many fields", nil, []*shardv1.Hit{{DocId: "a", Score: 1, Fields: map[string]string{"a": "", "b": "", "c": ""}}}, 0, 10, 0, ErrOverLimit, "max_hit_fields (2)"},
		{"field over", nil, []*shardv1.Hit{{DocId: "a", Score: 1, Fields: map[string]string{"key": "valu"}}}, 0, 10, 0, ErrOverLimit, "max_hit_field_bytes (6)"},
		{"field at the cap", nil, []*shardv1.Hit{{DocId: "a", Score: 1, Fields: map[string]string{"key": "val"}}}, 0, 10, 1, nil, ""},
	} {
		c := contract{lim: &limits{docID: lim.MaxDocIDBytes, text: lim.MaxTextBytes, fields: lim.MaxFields, fieldBytes: lim.MaxFieldBytes},
			topK: tc.topK, sent: tc.sent, seen: map[string]struct{}{}}
		if tc.prev != nil {
			c.prev = &fromProto([]*shardv1.Hit{tc.prev})[0]
			c.seen[tc.prev.GetDocId()] = struct{}{}
		}
		n, cost, err := c.check(fromProto(tc.hits))
		if n != tc.wantN || !errors.Is(err, tc.wantErr) || (err != nil && !strings.Contains(err.Error(), tc.wantMsg)) {
			t.Errorf("%s: got (%d, %v), want (%d, %v mentioning %q)", tc.name, n, err, tc.wantN, tc.wantErr, tc.wantMsg)
		}
		var want int64
		for _, h := range tc.hits[:n] {
			want += hitCost(h)
		}
		if cost != want {
			t.Errorf("%s: cost %d, want %d (hitCost of the %d hits accepted)", tc.name, cost, want, n)
		}
		if c.sent != tc.sent+uint32(n) {
			t.Errorf("%s: sent %d after the batch, want %d", tc.name, c.sent, tc.sent+uint32(n))
		}
	}
}

// TestCheckQuotesIDsShortly: a violation quotes at most a short prefix of a hostile doc_id.
func TestCheckQuotesIDsShortly(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("\x00", 3000)
	c := contract{lim: &limits{docID: 1 << 20, text: 1, fields: 1, fieldBytes: 1}, topK: 10, seen: map[string]struct{}{}}
	_, _, err := c.check(fromProto([]*shardv1.Hit{{DocId: "b" + long, Score: 1}, {DocId: "a" + long, Score: 1}}))
	if !errors.Is(err, ErrOrder) || len(err.Error()) > 300 {
		t.Fatalf("got a %d-byte error %v, want ErrOrder in at most 300 bytes", len(err.Error()), err)
	}
}

// TestCheckAllocatesNothingPerHit: checking a batch allocates nothing once the duplicate set has
// room, whatever the batch's length.
func TestCheckAllocatesNothingPerHit(t *testing.T) {
	hits := fromProto(shardtest.Hits("x", 200, 1))
	lim := &limits{docID: 512, text: 1 << 14, fields: 32, fieldBytes: 1024}
	seen := make(map[string]struct{}, 256)
	allocs := testing.AllocsPerRun(50, func() {
		clear(seen)
		c := contract{lim: lim, topK: 1000, seen: seen}
		if n, _, err := c.check(hits); n != len(hits) || err != nil {
			t.Fatalf("check: %d, %v", n, err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per batch of %d hits, want 0", allocs, len(hits))
	}
}

func TestNewRejectsBadTopology(t *testing.T) {
	t.Parallel()
	var many []string
	for i := range replica.MaxReplicas + 1 {
		many = append(many, fmt.Sprintf("127.0.0.1:%d", i+1))
	}
	for _, tc := range []struct {
		name string
		topo []ShardSpec
	}{
		{"no name", []ShardSpec{{Replicas: []string{"127.0.0.1:1"}}}},
		{"twice", []ShardSpec{{Name: "a", Replicas: []string{"127.0.0.1:1"}}, {Name: "a", Replicas: []string{"127.0.0.1:2"}}}},
		{"empty address", []ShardSpec{{Name: "a", Replicas: []string{" "}}}},
		{"replica twice", []ShardSpec{{Name: "a", Replicas: []string{"127.0.0.1:1", "127.0.0.1:1 "}}}},
		{"too many replicas", []ShardSpec{{Name: "a", Replicas: many}}},
	} {
		if c, err := New(tc.topo, Config{}); err == nil {
			_ = c.Close()
			t.Errorf("%s: no error", tc.name)
		}
	}
}

// closedAddr returns a loopback address nothing listens on: it refuses connections.
func closedAddr(t *testing.T) string {
	t.Helper()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := dead.Addr().String()
	_ = dead.Close()
	return addr
}

// TestReplicaFallback: a replica that refuses connections is skipped for the next one, also
// with hedging and budgeted retries off: a request that never reached a replica is retried
// without a token. Each client queries at once, while both its connections are still being
// made, so that the dead replica is as likely to be picked as the live one.
func TestReplicaFallback(t *testing.T) {
	t.Parallel()
	deadAddr := closedAddr(t)
	live := shardtest.Start(t, shardtest.Behavior{Hits: shardtest.Hits("x", 5, 1)})
	for _, budget := range []float64{0, hedge.Off} {
		retried := 0
		for range 16 {
			c, err := New([]ShardSpec{{Name: "s", Replicas: []string{deadAddr, live.Addr()}}}, Config{Hedge: hedge.Config{Budget: budget}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			call := c.Start(ctx, Request{Query: "q", TopK: 10})
			cur := call.Cursors()[0]
			n := 0
			for cur.Next() {
				n++
			}
			res := call.Close()[0]
			cancel()
			_ = c.Close()
			if res.Status != StatusOK || n != 5 || res.Replica != live.Addr() {
				t.Fatalf("budget %v: got status %v, %d hits from %s (%v); want OK, 5 hits from %s",
					budget, res.Status, n, res.Replica, res.Err, live.Addr())
			}
			if res.Attempts == 2 {
				retried++
			}
		}
		if retried == 0 {
			t.Errorf("budget %v: the dead replica was never tried first in 16 calls", budget)
		}
	}
}

// TestCloseWithoutReading: a caller that never reads the cursors still gets every goroutine back
// from Close, even while shards keep sending.
func TestCloseWithoutReading(t *testing.T) {
	t.Parallel()
	s := shardtest.Start(t, shardtest.Behavior{Hits: shardtest.Hits("x", 500, 1), Batch: 1})
	c, err := New([]ShardSpec{{Name: "s", Replicas: []string{s.Addr()}}}, Config{Buffer: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	call := c.Start(t.Context(), Request{Query: "q", TopK: 500})
	for s.Started() == 0 {
		time.Sleep(time.Millisecond)
	}
	res := call.Close()[0]
	if res.Status != StatusCanceled && res.Status != StatusOK {
		t.Errorf("status %v (%v), want Canceled", res.Status, res.Err)
	}
	s.WaitIdle(t, 5*time.Second)
}

// TestRepeatedIDs: a doc_id repeated at another score is found among a stream's first hits,
// which take no set from the pool, and past them, once they are in the set.
func TestRepeatedIDs(t *testing.T) {
	t.Parallel()
	lim := &limits{docID: 64, text: 1 << 10, fields: 8, fieldBytes: 64}
	hits := func(n int, dup string) []ShardHit {
		var ps []*shardv1.Hit
		for i := range n {
			ps = append(ps, &shardv1.Hit{DocId: fmt.Sprintf("d%02d", i), Score: float64(100 - i)})
		}
		return fromProto(append(ps, &shardv1.Hit{DocId: dup, Score: 1}))
	}
	for _, n := range []int{5, 8, 20} {
		c := contract{lim: lim, topK: 100, sets: &Client{}}
		got, _, err := c.check(hits(n, "d03"))
		if got != n || !errors.Is(err, ErrOrder) {
			t.Errorf("%d hits then d03 again: %d kept, %v; want %d and ErrOrder", n, got, err, n)
		}
		if taken := c.seen != nil; taken != (n > len(c.few)) {
			t.Errorf("%d hits: a set taken from the pool is %v, want %v", n, taken, n > len(c.few))
		}
		c.release()
		c = contract{lim: lim, topK: 100, sets: &Client{}}
		if got, _, err := c.check(hits(n, "new")); got != n+1 || err != nil {
			t.Errorf("%d hits then a new id: %d kept, %v; want all", n, got, err)
		}
	}
}
