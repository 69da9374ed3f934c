package fanout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/connectivity"

	"github.com/gatherproxy/gather/internal/shardtest"
)

// drain reads a cursor to its end and returns the doc ids.
func drain(cur *Cursor) []string {
	var ids []string
	for cur.Next() {
		ids = append(ids, cur.At().DocID)
	}
	return ids
}

// TestUpdateKeepsRunningCalls: a call keeps the topology it started with when Update replaces
// it; new calls use the new one; the connection of the replica that left stays open until the
// last call on it is over, and is closed then.
func TestUpdateKeepsRunningCalls(t *testing.T) {
	t.Parallel()
	// old sends one message and holds its stream open until the call ends.
	old := shardtest.Start(t, shardtest.Behavior{Hits: shardtest.Hits("old", 4, 1), Batch: 2, Hang: true, HangAfter: 1})
	repl := shardtest.Start(t, shardtest.Behavior{Hits: shardtest.Hits("new", 4, 2)})
	reg := prometheus.NewRegistry()
	c, err := New([]ShardSpec{{Name: "s", Replicas: []string{old.Addr()}}}, Config{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	first := c.Start(ctx, Request{Query: "q", TopK: 10})
	cur := first.Cursors()[0]
	if !cur.Next() || !strings.HasPrefix(cur.At().DocID, "old") {
		t.Fatal("the first call got no hit from the old replica")
	}
	ch, err := c.Update([]ShardSpec{{Name: "s", Replicas: []string{repl.Addr()}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("+replica s/%s, -replica s/%s", repl.Addr(), old.Addr()); ch.String() != want || ch.Version != 2 {
		t.Errorf("change %q (version %d), want %q (version 2)", ch, ch.Version, want)
	}
	if got := value(t, reg, "gather_shard_connections"); got != 2 {
		t.Errorf("%v connections while a call holds the old replica, want 2", got)
	}

	second := c.Start(ctx, Request{Query: "q", TopK: 10})
	ids := drain(second.Cursors()[0])
	res := second.Close()[0]
	if res.Status != StatusOK || len(ids) != 4 || !strings.HasPrefix(ids[0], "new") || second.Topology().Version() != 2 {
		t.Fatalf("a call after the update: %v %v from topology %d, want 4 hits of the new replica from 2", res.Status, ids, second.Topology().Version())
	}

	if first.Topology().Version() != 1 || old.Active() != 1 {
		t.Fatalf("the first call is on topology %d with %d streams on the old replica, want 1 and 1", first.Topology().Version(), old.Active())
	}
	conn := first.Topology().shards[0].replicas[0].conn
	first.Stop()
	first.Close()
	if got := value(t, reg, "gather_shard_connections"); got != 1 {
		t.Errorf("%v connections after the last call on the old replica, want 1", got)
	}
	waitFor(t, "the old replica's connection closed", func() bool { return conn.GetState() == connectivity.Shutdown })
	if got := value(t, reg, "gather_replica_selections_total", "replica", old.Addr()); got != 0 {
		t.Errorf("the removed replica still has selections series (%v)", got)
	}
	if got := value(t, reg, "gather_topology_changes_total"); got != 2 {
		t.Errorf("gather_topology_changes_total %v, want 2", got)
	}
}

// TestShardWithoutReplica: a shard that discovery knows but no replica of which is known ends
// each call UNAVAILABLE with ErrNoReplica, and the other shards answer.
func TestShardWithoutReplica(t *testing.T) {
	t.Parallel()
	a := shardtest.Start(t, shardtest.Behavior{Hits: shardtest.Hits("a", 3, 1)})
	c, err := New([]ShardSpec{{Name: "a", Replicas: []string{a.Addr()}}, {Name: "b"}}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if st := c.ReplicaStates()["b"]; st == nil || len(st) != 0 {
		t.Errorf("ReplicaStates of the shard without replicas: %v, want an empty map", st)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	call := c.Start(ctx, Request{Query: "q", TopK: 10})
	n := len(drain(call.Cursors()[0]))
	if len(drain(call.Cursors()[1])) != 0 {
		t.Error("hits from a shard without replicas")
	}
	res := call.Close()
	if n != 3 || res[0].Status != StatusOK {
		t.Errorf("shard a: %d hits, %v; want 3, OK", n, res[0].Status)
	}
	if res[1].Status != StatusUnavailable || !errors.Is(res[1].Err, ErrNoReplica) || res[1].ReplicaIndex != -1 || call.Failed() != 1 {
		t.Errorf("shard b: %v %v (replica index %d, %d failed); want UNAVAILABLE, ErrNoReplica, -1, 1", res[1].Status, res[1].Err, res[1].ReplicaIndex, call.Failed())
	}
}

// TestUpdateKeepsUnchangedShards: an update that changes nothing makes no new topology, and one
// that changes a shard keeps the state of the others (their replica sets and hedge delays).
func TestUpdateKeepsUnchangedShards(t *testing.T) {
	t.Parallel()
	spec := []ShardSpec{{Name: "a", Replicas: []string{"127.0.0.1:1", "127.0.0.1:2"}}, {Name: "b", Replicas: []string{"127.0.0.1:3"}}}
	c, err := New(spec, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	before := c.Current()
	ch, err := c.Update([]ShardSpec{spec[1], {Name: "a", Replicas: []string{" 127.0.0.1:1", "127.0.0.1:2"}}})
	if err != nil || !ch.Empty() || c.Current() != before || ch.Version != 1 {
		t.Fatalf("the same topology again: %v %v, version %d; want no change, version 1", ch, err, ch.Version)
	}
	ch, err = c.Update([]ShardSpec{spec[0], {Name: "b", Replicas: []string{"127.0.0.1:4"}}})
	if err != nil || ch.String() != "+replica b/127.0.0.1:4, -replica b/127.0.0.1:3" {
		t.Fatalf("replacing b's replica: %v, %v", ch, err)
	}
	if c.Current().shards[0] != before.shards[0] {
		t.Error("shard a was rebuilt by a change to shard b: its replica scores and hedge delay are lost")
	}
	ch, err = c.Update([]ShardSpec{{Name: "a", Replicas: []string{"127.0.0.1:2", "127.0.0.1:1"}}})
	if err != nil || ch.String() != "-shard b, -replica b/127.0.0.1:4, reordered a" {
		t.Fatalf("reordering a and removing b: %v, %v", ch, err)
	}
	if _, err := c.Update([]ShardSpec{{Name: "a"}, {Name: "a"}}); err == nil || c.Current().version != 3 {
		t.Errorf("an invalid update: %v, topology version %d; want an error and version 3 kept", err, c.Current().version)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Update(spec); err == nil {
		t.Error("Update after Close did not fail")
	}
}

// TestUpdateWhileQuerying: calls started, read and closed on many goroutines while the topology
// changes under them all see a whole topology, and when it is over only the current topology's
// connections are open (goleak checks the rest at exit).
func TestUpdateWhileQuerying(t *testing.T) {
	t.Parallel()
	var addrs []string
	for i := range 3 {
		s := shardtest.Start(t, shardtest.Behavior{Hits: shardtest.Hits(fmt.Sprintf("r%d-", i), 5, uint64(i)), Batch: 2})
		addrs = append(addrs, s.Addr())
	}
	specs := [][]ShardSpec{
		{{Name: "a", Replicas: addrs[:1]}, {Name: "b", Replicas: addrs[1:2]}},
		{{Name: "a", Replicas: addrs[:2]}},
		{{Name: "a", Replicas: addrs[2:]}, {Name: "b", Replicas: addrs[:1]}, {Name: "c"}},
	}
	reg := prometheus.NewRegistry()
	c, err := New(specs[0], Config{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for range 100 {
				call := c.Start(ctx, Request{Query: "q", TopK: 10})
				names := call.Topology().Shards()
				for _, cur := range call.Cursors() {
					drain(cur)
				}
				res := call.Close()
				if len(res) != len(names) {
					errs <- fmt.Errorf("%d results for %d shards", len(res), len(names))
					return
				}
				for i, r := range res {
					if r.Shard != names[i] || (r.Status != StatusOK && !errors.Is(r.Err, ErrNoReplica)) {
						errs <- fmt.Errorf("shard %s (topology %v): %v %w", r.Shard, names, r.Status, r.Err)
						return
					}
				}
			}
		})
	}
	for i := range 60 {
		if _, err := c.Update(specs[i%len(specs)]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, err := c.Update(specs[1]); err != nil {
		t.Fatal(err)
	}
	if got := value(t, reg, "gather_shard_connections"); got != 2 {
		t.Errorf("%v connections with every call over, want the current topology's 2", got)
	}
}

// TestOnReplicaDown: an attempt refused by a replica that is gone reports the replica.
func TestOnReplicaDown(t *testing.T) {
	t.Parallel()
	deadAddr := closedAddr(t)
	live := shardtest.Start(t, shardtest.Behavior{Hits: shardtest.Hits("x", 2, 1)})
	var mu sync.Mutex
	var downs []string
	c, err := New([]ShardSpec{{Name: "s", Replicas: []string{deadAddr}}, {Name: "t", Replicas: []string{live.Addr()}}},
		Config{OnReplicaDown: func(shard, addr string) {
			mu.Lock()
			downs = append(downs, shard+"/"+addr)
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	call := c.Start(ctx, Request{Query: "q", TopK: 5})
	for _, cur := range call.Cursors() {
		drain(cur)
	}
	res := call.Close()
	mu.Lock()
	defer mu.Unlock()
	if res[0].Status != StatusUnavailable || strings.Join(downs, ",") != "s/"+deadAddr {
		t.Errorf("shard s %v; replicas reported down %v, want s/%s alone", res[0].Status, downs, deadAddr)
	}
}
