package discovery

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/gatherproxy/gather/internal/corpus"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/replica"
)

// reg is a registration's key and value for build.
func reg(shard, part, id, addr string) (string, []byte) {
	r := Registration{Shard: shard, Partition: part, ReplicaID: id, Address: addr}
	return r.Key("/p"), []byte(r.encode())
}

// keysOf numbers kvs (key, value, key, value...) by create revision in their order.
func keysOf(kvs ...any) map[string]entry {
	m := map[string]entry{}
	for i := 0; i < len(kvs); i += 2 {
		var v []byte
		switch x := kvs[i+1].(type) {
		case string:
			v = []byte(x)
		case []byte:
			v = x
		}
		m[kvs[i].(string)] = entry{value: v, createRev: int64(i/2 + 1)}
	}
	return m
}

func kv(shard, part, id, addr string) []any {
	k, v := reg(shard, part, id, addr)
	return []any{k, v}
}

func cat(xs ...[]any) []any {
	var out []any
	for _, x := range xs {
		out = append(out, x...)
	}
	return out
}

func TestBuildAcceptsAndSorts(t *testing.T) {
	t.Parallel()
	keys := keysOf(cat(
		kv("shard-1", "1/2", "b", "127.0.0.1:2"),
		kv("shard-0", "0/2", "z", "127.0.0.1:3"),
		kv("shard-0", "0/2", "a", "127.0.0.1:1"),
	)...)
	got := build("/p", keys, nil)
	want := []fanout.ShardSpec{{Name: "shard-0", Replicas: []string{"127.0.0.1:1", "127.0.0.1:3"}}, {Name: "shard-1", Replicas: []string{"127.0.0.1:2"}}}
	if !reflect.DeepEqual(got.Specs(), want) || got.Missing != nil || got.Rejected != nil {
		t.Errorf("build = %+v; want specs %+v, nothing missing or rejected", got, want)
	}
	if got.Shards[0].Partition != (corpus.Partition{Index: 0, Count: 2}) {
		t.Errorf("shard-0 partition = %v, want 0/2", got.Shards[0].Partition)
	}
}

func TestBuildRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		kvs        []any
		wantKey    string // the rejected key
		wantReason string
		wantSpecs  []fanout.ShardSpec
	}{
		{"malformed JSON", []any{"/p/shard-0/r0", "{not json"}, "/p/shard-0/r0", "not a JSON registration", []fanout.ShardSpec{}},
		{"trailing data", []any{"/p/shard-0/r0", `{"shard":"shard-0","replica_id":"r0","address":"127.0.0.1:1"} x`}, "/p/shard-0/r0", "data after its JSON object", []fanout.ShardSpec{}},
		{"missing address", []any{"/p/shard-0/r0", `{"shard":"shard-0","replica_id":"r0"}`}, "/p/shard-0/r0", "address:", []fanout.ShardSpec{}},
		{"wildcard address", kv("shard-0", "", "r0", "0.0.0.0:1"), "/p/shard-0/r0", "wildcard", []fanout.ShardSpec{}},
		{"too big", []any{"/p/shard-0/r0", strings.Repeat(" ", MaxValueBytes+1)}, "/p/shard-0/r0", "more than 4096", []fanout.ShardSpec{}},
		{"key shape", []any{"/p/shard-0", `{}`}, "/p/shard-0", "key is not /p/<shard>/<replica-id>", []fanout.ShardSpec{}},
		{"key too deep", []any{"/p/shard-0/r0/x", `{}`}, "/p/shard-0/r0/x", "key is not", []fanout.ShardSpec{}},
		{"key and value disagree", []any{"/p/shard-1/r0", `{"shard":"shard-0","replica_id":"r0","address":"127.0.0.1:1"}`}, "/p/shard-1/r0",
			`key names shard "shard-1" replica "r0" but its value says shard "shard-0"`, []fanout.ShardSpec{}},
		{"same replica id under two shards", cat(kv("shard-0", "", "r0", "127.0.0.1:1"), kv("shard-1", "", "r0", "127.0.0.1:2")),
			"/p/shard-1/r0", `replica id "r0" is already registered at /p/shard-0/r0`, []fanout.ShardSpec{{Name: "shard-0", Replicas: []string{"127.0.0.1:1"}}}},
		{"same address under two shards", cat(kv("shard-0", "", "r0", "127.0.0.1:1"), kv("shard-1", "", "r1", "127.0.0.1:1")),
			"/p/shard-1/r1", "address 127.0.0.1:1 is already registered at /p/shard-0/r0", []fanout.ShardSpec{{Name: "shard-0", Replicas: []string{"127.0.0.1:1"}}}},
		{"partition counts disagree", cat(kv("shard-0", "0/2", "r0", "127.0.0.1:1"), kv("shard-1", "1/3", "r1", "127.0.0.1:2")),
			"/p/shard-1/r1", "says there are 2 partitions", []fanout.ShardSpec{{Name: "shard-0", Replicas: []string{"127.0.0.1:1"}}}},
		{"one partition under two names", cat(kv("shard-0", "0/2", "r0", "127.0.0.1:1"), kv("zero", "0/2", "r1", "127.0.0.1:2")),
			"/p/zero/r1", `partition 0/2 is already served under shard "shard-0"`, []fanout.ShardSpec{{Name: "shard-0", Replicas: []string{"127.0.0.1:1"}}}},
		{"replicas of a shard disagree on its partition", cat(kv("shard-0", "0/2", "r0", "127.0.0.1:1"), kv("shard-0", "", "r1", "127.0.0.1:2")),
			"/p/shard-0/r1", `shard "shard-0": partition "", but its earlier replicas say "0/2"`, []fanout.ShardSpec{{Name: "shard-0", Replicas: []string{"127.0.0.1:1"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := build("/p", keysOf(tc.kvs...), nil)
			if len(got.Rejected) != 1 || got.Rejected[0].Key != tc.wantKey || !strings.Contains(got.Rejected[0].Reason, tc.wantReason) {
				t.Errorf("Rejected = %+v; want %s rejected because %q", got.Rejected, tc.wantKey, tc.wantReason)
			}
			if specs := got.Specs(); !reflect.DeepEqual(specs, tc.wantSpecs) {
				t.Errorf("Specs() = %+v, want %+v", specs, tc.wantSpecs)
			}
		})
	}
}

// TestBuildOldestWins checks that of two conflicting registrations the older stays, whichever
// way the map iterates: the outcome must not depend on the order a watcher saw them.
func TestBuildOldestWins(t *testing.T) {
	t.Parallel()
	k0, v0 := reg("shard-0", "", "r0", "127.0.0.1:1")
	k1, v1 := reg("shard-1", "", "r1", "127.0.0.1:1")
	for _, older := range []string{k0, k1} {
		keys := map[string]entry{k0: {value: v0, createRev: 2}, k1: {value: v1, createRev: 2}}
		e := keys[older]
		e.createRev = 1
		keys[older] = e
		for range 20 {
			got := build("/p", keys, nil)
			if len(got.Rejected) != 1 || got.Rejected[0].Key == older {
				t.Fatalf("older %s: Rejected = %+v; want the other key rejected", older, got.Rejected)
			}
		}
	}
}

func TestBuildMissing(t *testing.T) {
	t.Parallel()
	keys := keysOf(cat(kv("shard-0", "0/3", "r0", "127.0.0.1:1"), kv("shard-2", "2/3", "r2", "127.0.0.1:3"))...)
	if got := build("/p", keys, nil); !reflect.DeepEqual(got.Missing, []string{"shard-1"}) {
		t.Errorf("from the partition count: Missing = %v, want [shard-1]", got.Missing)
	}
	got := build("/p", keys, []string{"shard-2", "shard-9"})
	if !reflect.DeepEqual(got.Missing, []string{"shard-9"}) {
		t.Errorf("with expected shards: Missing = %v, want [shard-9]", got.Missing)
	}
	if len(got.Rejected) != 1 || !strings.Contains(got.Rejected[0].Reason, `shard "shard-0" is not one of the expected shards (shard-2, shard-9)`) {
		t.Errorf("with expected shards: Rejected = %+v, want shard-0 rejected as unexpected", got.Rejected)
	}
}

func TestBuildReplicaLimit(t *testing.T) {
	t.Parallel()
	var kvs []any
	for i := range replica.MaxReplicas + 1 {
		kvs = append(kvs, kv("shard-0", "", fmt.Sprintf("r%03d", i), fmt.Sprintf("127.0.0.1:%d", i+1))...)
	}
	got := build("/p", keysOf(kvs...), nil)
	if len(got.Shards[0].Replicas) != replica.MaxReplicas || len(got.Rejected) != 1 ||
		!strings.Contains(got.Rejected[0].Reason, "the most a shard may have") {
		t.Errorf("%d replicas: kept %d, rejected %+v; want %d kept and the newest rejected",
			replica.MaxReplicas+1, len(got.Shards[0].Replicas), got.Rejected, replica.MaxReplicas)
	}
}
