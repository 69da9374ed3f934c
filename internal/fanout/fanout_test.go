package fanout

import (
	"context"
	"errors"
	"math"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/shardtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCheck(t *testing.T) {
	t.Parallel()
	h := func(id string, score float64) *shardv1.Hit { return &shardv1.Hit{DocId: id, Score: score} }
	for _, tc := range []struct {
		name    string
		prev    *shardv1.Hit
		hits    []*shardv1.Hit
		sent    uint32
		topK    uint32
		wantN   int
		wantErr error
	}{
		{"sorted", nil, []*shardv1.Hit{h("a", 3), h("b", 2), h("c", 1)}, 0, 10, 3, nil},
		{"ties by id", nil, []*shardv1.Hit{h("a", 2), h("b", 2), h("c", 2)}, 0, 10, 3, nil},
		{"continues prev batch", h("a", 5), []*shardv1.Hit{h("b", 5), h("a", 4)}, 1, 10, 2, nil},
		{"score rises", nil, []*shardv1.Hit{h("a", 3), h("b", 4)}, 0, 10, 1, ErrOrder},
		{"rises across batches", h("z", 1), []*shardv1.Hit{h("a", 2)}, 1, 10, 0, ErrOrder},
		{"tie out of order", nil, []*shardv1.Hit{h("b", 2), h("a", 2)}, 0, 10, 1, ErrOrder},
		{"duplicate", nil, []*shardv1.Hit{h("a", 2), h("a", 2)}, 0, 10, 1, ErrOrder},
		{"nan", nil, []*shardv1.Hit{h("a", 2), h("b", math.NaN())}, 0, 10, 1, ErrOrder},
		{"too many", nil, []*shardv1.Hit{h("a", 3), h("b", 2), h("c", 1)}, 8, 10, 2, ErrTooMany},
	} {
		n, err := check(tc.prev, tc.hits, tc.sent, tc.topK)
		if n != tc.wantN || !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: got (%d, %v), want (%d, %v)", tc.name, n, err, tc.wantN, tc.wantErr)
		}
	}
}

func TestNewRejectsBadTopology(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		topo []ShardSpec
	}{
		{"none", nil},
		{"no name", []ShardSpec{{Replicas: []string{"127.0.0.1:1"}}}},
		{"twice", []ShardSpec{{Name: "a", Replicas: []string{"127.0.0.1:1"}}, {Name: "a", Replicas: []string{"127.0.0.1:2"}}}},
		{"no replica", []ShardSpec{{Name: "a"}}},
	} {
		if c, err := New(tc.topo, Config{}); err == nil {
			_ = c.Close()
			t.Errorf("%s: no error", tc.name)
		}
	}
}

// TestReplicaFallback: a replica that refuses connections is skipped for the next one.
func TestReplicaFallback(t *testing.T) {
	t.Parallel()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	_ = dead.Close()
	live := shardtest.Start(t, shardtest.Behavior{Hits: shardtest.Hits("x", 5, 1)})
	c, err := New([]ShardSpec{{Name: "s", Replicas: []string{deadAddr, live.Addr()}}}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	call := c.Start(ctx, Request{Query: "q", TopK: 10})
	cur := call.Cursors()[0]
	n := 0
	for cur.Next() {
		n++
	}
	res := call.Close()[0]
	if res.Status != StatusOK || n != 5 || res.Replica != live.Addr() {
		t.Fatalf("got status %v, %d hits from %s (%v); want OK, 5 hits from %s", res.Status, n, res.Replica, res.Err, live.Addr())
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
