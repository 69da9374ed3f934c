package discovery

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/gatherproxy/gather/internal/corpus"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/replica"
)

// Topology is the validated state of a registry at one revision.
type Topology struct {
	// Revision is the etcd revision the topology reflects.
	Revision int64
	// Shards are the shards with at least one accepted replica, sorted by name.
	Shards []Shard
	// Missing are the expected shards with no accepted replica, sorted: the proxy reports them
	// in coverage and /readyz. Expected shards are those given to WithExpected or, without
	// that, shard-0 to shard-(N-1) once registrations say there are N partitions.
	Missing []string
	// Rejected are the keys under the prefix that are not part of the topology, sorted by key,
	// each with the reason.
	Rejected []Rejection
}

// Shard is one shard's accepted replicas.
type Shard struct {
	Name string
	// Partition is the shard's partition, if its registrations give one (Count 0 if not).
	Partition corpus.Partition
	// Replicas are sorted by ID.
	Replicas []Replica
}

// Replica is one accepted registration.
type Replica struct {
	ID, Address, Version string
}

// Rejection is a key left out of the topology.
type Rejection struct {
	Key, Reason string
}

// Specs returns the shards as the proxy's fan-out takes them, sorted by name, each replica list
// in the order of Replica IDs. Missing shards are not in it: fanout.New needs a replica per shard.
func (t Topology) Specs() []fanout.ShardSpec {
	out := make([]fanout.ShardSpec, len(t.Shards))
	for i, s := range t.Shards {
		addrs := make([]string, len(s.Replicas))
		for j, r := range s.Replicas {
			addrs[j] = r.Address
		}
		out[i] = fanout.ShardSpec{Name: s.Name, Replicas: addrs}
	}
	return out
}

// Replicas returns the number of accepted replicas.
func (t Topology) Replicas() int {
	n := 0
	for _, s := range t.Shards {
		n += len(s.Replicas)
	}
	return n
}

// entry is one key under the prefix as read from etcd.
type entry struct {
	value     []byte
	createRev int64
}

// build validates the keys under prefix (key -> entry) and returns the topology. Conflicts are
// settled by age: of two registrations that conflict, the one created first (lower create
// revision) stays and the other is rejected, so the outcome does not depend on the order in
// which a watcher saw them. expected, if not empty, lists the only shard names accepted.
func build(prefix string, keys map[string]entry, expected []string) Topology {
	type cand struct {
		key string
		entry
	}
	cands := make([]cand, 0, len(keys))
	for k, e := range keys {
		cands = append(cands, cand{k, e})
	}
	slices.SortFunc(cands, func(a, b cand) int {
		return cmp.Or(cmp.Compare(a.createRev, b.createRev), strings.Compare(a.key, b.key))
	})
	var (
		t          Topology
		shards     = map[string]*Shard{}
		byReplica  = map[string]string{} // replica id -> its key
		byAddress  = map[string]string{} // address -> its key
		byIndex    = map[int]string{}    // partition index -> shard name
		count      int                   // N of the first registration that gives a partition
		countKey   string
		expectedOK = map[string]bool{}
	)
	for _, e := range expected {
		expectedOK[e] = true
	}
	reject := func(key, format string, args ...any) {
		t.Rejected = append(t.Rejected, Rejection{Key: key, Reason: fmt.Sprintf(format, args...)})
	}
	for _, c := range cands {
		rest, ok := strings.CutPrefix(c.key, prefix+"/")
		shardName, id, ok2 := strings.Cut(rest, "/")
		if !ok || !ok2 || strings.Contains(id, "/") {
			reject(c.key, "key is not %s/<shard>/<replica-id>", prefix)
			continue
		}
		r, err := decodeRegistration(c.value)
		if err != nil {
			reject(c.key, "%v", err)
			continue
		}
		if r.Shard != shardName || r.ReplicaID != id {
			reject(c.key, "key names shard %q replica %q but its value says shard %q replica %q", shardName, id, r.Shard, r.ReplicaID)
			continue
		}
		if len(expected) > 0 && !expectedOK[r.Shard] {
			reject(c.key, "shard %q is not one of the expected shards (%s)", r.Shard, strings.Join(expected, ", "))
			continue
		}
		if other, ok := byReplica[r.ReplicaID]; ok {
			reject(c.key, "replica id %q is already registered at %s", r.ReplicaID, other)
			continue
		}
		if other, ok := byAddress[r.Address]; ok {
			reject(c.key, "address %s is already registered at %s", r.Address, other)
			continue
		}
		var part corpus.Partition
		if r.Partition != "" {
			part, _ = corpus.ParsePartition(r.Partition) // validated by decodeRegistration
			if count != 0 && part.Count != count {
				reject(c.key, "partition %s: %s (registered earlier) says there are %d partitions", part, countKey, count)
				continue
			}
			if name, ok := byIndex[part.Index]; ok && name != r.Shard {
				reject(c.key, "partition %s is already served under shard %q", part, name)
				continue
			}
		}
		s := shards[r.Shard]
		if s != nil {
			if s.Partition != part {
				reject(c.key, "shard %q: partition %q, but its earlier replicas say %q", r.Shard, r.Partition, partitionString(s.Partition))
				continue
			}
			if len(s.Replicas) >= replica.MaxReplicas {
				reject(c.key, "shard %q already has %d replicas, the most a shard may have", r.Shard, replica.MaxReplicas)
				continue
			}
		} else {
			s = &Shard{Name: r.Shard, Partition: part}
			shards[r.Shard] = s
		}
		if part.Count != 0 {
			if count == 0 {
				count, countKey = part.Count, c.key
			}
			byIndex[part.Index] = r.Shard
		}
		s.Replicas = append(s.Replicas, Replica{ID: r.ReplicaID, Address: r.Address, Version: r.Version})
		byReplica[r.ReplicaID] = c.key
		byAddress[r.Address] = c.key
	}
	for _, s := range shards {
		slices.SortFunc(s.Replicas, func(a, b Replica) int { return strings.Compare(a.ID, b.ID) })
		t.Shards = append(t.Shards, *s)
	}
	slices.SortFunc(t.Shards, func(a, b Shard) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(t.Rejected, func(a, b Rejection) int { return strings.Compare(a.Key, b.Key) })
	want := expected
	if len(want) == 0 {
		for i := range count {
			want = append(want, ShardName(corpus.Partition{Index: i, Count: count}))
		}
	}
	for _, name := range want {
		if shards[name] == nil {
			t.Missing = append(t.Missing, name)
		}
	}
	slices.Sort(t.Missing)
	t.Missing = slices.Compact(t.Missing)
	return t
}

func partitionString(p corpus.Partition) string {
	if p.Count == 0 {
		return ""
	}
	return p.String()
}
