package fanout

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/gatherproxy/gather/internal/hedge"
	"github.com/gatherproxy/gather/internal/replica"
)

// ErrNoReplica ends the call to a shard that has no replica in the topology the query started
// with: discovery knows the shard (it is expected) but no replica of it is registered.
var ErrNoReplica = errors.New("no replica of this shard is known (none registered or resolved)")

// Topology is one snapshot of the shards a Client fans out to. It never changes: Update makes a
// new one, and a query keeps the one it started with (Call.Topology) to its end.
//
// Lifetime: a topology is held by the Client while it is current and by every call that started
// on it. When the last of them lets go it is retired: the connections and metric series that no
// other topology holds are closed and deleted. So a replica that leaves the topology keeps
// serving the queries that were already using it, and is closed once they are over.
type Topology struct {
	c       *Client
	version uint64
	shards  []*shard // sorted by name
	// refs counts the calls that hold the topology, plus one while it is current. It never
	// rises again from 0 (acquire), so the topology is retired exactly once.
	refs atomic.Int64
}

// Version numbers the topologies of a Client from 1 in the order Update made them.
func (t *Topology) Version() uint64 { return t.version }

// Shards returns the shard names in merge order (ascending).
func (t *Topology) Shards() []string {
	names := make([]string, len(t.shards))
	for i, s := range t.shards {
		names[i] = s.name
	}
	return names
}

// Replicas returns the replica addresses of every shard, in Shards order, each list in the
// order given to Update (Result.ReplicaIndex indexes it); a shard without replicas has none.
func (t *Topology) Replicas() [][]string {
	out := make([][]string, len(t.shards))
	for i, s := range t.shards {
		out[i] = make([]string, len(s.replicas))
		for j, r := range s.replicas {
			out[i][j] = r.addr
		}
	}
	return out
}

// Specs returns the topology as Update takes it.
func (t *Topology) Specs() []ShardSpec {
	reps := t.Replicas()
	out := make([]ShardSpec, len(t.shards))
	for i, s := range t.shards {
		out[i] = ShardSpec{Name: s.name, Replicas: reps[i]}
	}
	return out
}

// Current returns the current topology. It stays readable after it is replaced, but only the
// calls of Start keep its connections open.
func (c *Client) Current() *Topology { return c.topo.Load() }

// acquire returns the current topology, held for a call: release it when the call is over.
func (c *Client) acquire() *Topology {
	for {
		t := c.topo.Load()
		for n := t.refs.Load(); n > 0; n = t.refs.Load() {
			if t.refs.CompareAndSwap(n, n+1) {
				return t
			}
		}
		// Retired between the load and the increment: a newer one is current.
	}
}

// release lets go of t, and retires it if nothing else holds it.
func (t *Topology) release() {
	if t.refs.Add(-1) == 0 {
		t.c.retire(t)
	}
}

// Change says what an Update changed. Replicas are named SHARD/ADDRESS.
type Change struct {
	Version                    uint64 // of the topology now current
	AddedShards, RemovedShards []string
	AddedReplicas              []string
	RemovedReplicas            []string
	Reordered                  []string // shards whose replicas are the same, in another order
}

// Empty reports whether nothing changed: Update kept the topology it had.
func (ch Change) Empty() bool {
	return len(ch.AddedShards)+len(ch.RemovedShards)+len(ch.AddedReplicas)+len(ch.RemovedReplicas)+len(ch.Reordered) == 0
}

func (ch Change) String() string {
	var parts []string
	for _, p := range []struct {
		what  string
		names []string
	}{{"+shard", ch.AddedShards}, {"-shard", ch.RemovedShards}, {"+replica", ch.AddedReplicas}, {"-replica", ch.RemovedReplicas}, {"reordered", ch.Reordered}} {
		for _, n := range p.names {
			parts = append(parts, p.what+" "+n)
		}
	}
	if len(parts) == 0 {
		return "no change"
	}
	return strings.Join(parts, ", ")
}

// Update makes spec the topology of the calls that start from now on, atomically; calls
// already running keep theirs. A shard whose replica list is unchanged keeps its state (replica
// scores, ejections, hedge delay); a replica that stays in its shard keeps its connection; the
// connections of replicas that left are closed once the last call using them is over. A shard
// may have no replica (see New). An invalid spec changes nothing and says what is wrong.
func (c *Client) Update(spec []ShardSpec) (Change, error) {
	spec, err := checkSpec(spec)
	if err != nil {
		return Change{}, err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return Change{}, errors.New("fan-out client closed")
	}
	old := c.topo.Load()
	ch := diff(old, spec)
	if old != nil && ch.Empty() {
		c.mu.Unlock()
		return Change{Version: old.version}, nil
	}
	oldShards := map[string]*shard{}
	if old != nil {
		for _, s := range old.shards {
			oldShards[s.name] = s
		}
	}
	t := &Topology{c: c, version: c.version + 1}
	var dialled []*endpoint
	for _, sp := range spec {
		if s := oldShards[sp.Name]; s != nil && slices.Equal(addrs(s.replicas), sp.Replicas) {
			t.shards = append(t.shards, s)
			continue
		}
		s, err := c.newShard(sp, oldShards[sp.Name], &dialled)
		if err != nil {
			for _, e := range dialled {
				delete(c.endpoints, endpointKey{sp.Name, e.addr})
				_ = e.conn.Close()
			}
			c.mu.Unlock()
			return Change{}, err
		}
		t.shards = append(t.shards, s)
	}
	for _, s := range t.shards {
		c.names[s.name]++
		for _, e := range s.replicas {
			e.refs++
		}
	}
	t.refs.Store(1)
	c.version = t.version
	c.topo.Store(t)
	c.metrics.changes.Inc()
	c.mu.Unlock()
	if old != nil {
		old.release()
	}
	ch.Version = t.version
	return ch, nil
}

// newShard builds the shard of sp, on the endpoints the Client has for its addresses and new
// ones (appended to dialled) for the others. Called with mu held.
func (c *Client) newShard(sp ShardSpec, prev *shard, dialled *[]*endpoint) (*shard, error) {
	s := &shard{name: sp.Name, spanName: "shard " + sp.Name, spanOpts: []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attribute.String("gather.shard", sp.Name)),
	}}
	for _, addr := range sp.Replicas {
		key := endpointKey{sp.Name, addr}
		e := c.endpoints[key]
		if e == nil {
			var err error
			if e, err = c.dial(sp.Name, addr); err != nil {
				return nil, err
			}
			c.endpoints[key] = e
			*dialled = append(*dialled, e)
		}
		s.replicas = append(s.replicas, e)
	}
	s.m = c.metrics.forShard(s)
	if len(s.replicas) > 1 {
		rcfg := c.cfg.Replica
		rcfg.Health = func(i int) replica.Health { return s.replicas[i].health() }
		rcfg.OnEject = func(i int, _ time.Duration) { s.m.ejections[i].Inc() }
		s.set = replica.NewSet(len(s.replicas), rcfg)
		if c.budget != nil {
			// The shard's times to first frame say as much about its new replica list as
			// about the old one: its queries are the same.
			if prev != nil && prev.delay != nil {
				s.delay = prev.delay
			} else {
				s.delay = hedge.NewDelay(c.cfg.Hedge)
			}
		}
	}
	return s, nil
}

// retire closes what only t held: the connections of replicas no other live topology has, and
// the metric series of shards and replicas that are gone.
func (c *Client) retire(t *Topology) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var dead []*endpoint
	for _, s := range t.shards {
		if c.names[s.name]--; c.names[s.name] == 0 {
			delete(c.names, s.name)
			c.metrics.forgetShard(s.name)
		}
		for _, e := range s.replicas {
			if e.refs--; e.refs > 0 {
				continue
			}
			c.metrics.forgetReplica(s.name, e.addr)
			if key := (endpointKey{s.name, e.addr}); c.endpoints[key] == e {
				delete(c.endpoints, key)
				dead = append(dead, e)
			}
		}
	}
	if c.closed || len(dead) == 0 {
		return // Close closed them all
	}
	// Not on the caller's goroutine, which is the last query's: closing a connection waits for
	// its transport to shut down.
	c.closers.Add(1)
	go func() {
		defer c.closers.Done()
		for _, e := range dead {
			_ = e.conn.Close()
		}
	}()
}

// checkSpec validates spec and returns it sorted by name, with addresses trimmed.
func checkSpec(spec []ShardSpec) ([]ShardSpec, error) {
	out := make([]ShardSpec, len(spec))
	seen := map[string]bool{}
	for i, sp := range spec {
		if sp.Name == "" {
			return nil, errors.New("a shard has no name")
		}
		if seen[sp.Name] {
			return nil, fmt.Errorf("shard %s: configured twice", sp.Name)
		}
		seen[sp.Name] = true
		if len(sp.Replicas) > replica.MaxReplicas {
			return nil, fmt.Errorf("shard %s: %d replicas, more than the %d a shard may have", sp.Name, len(sp.Replicas), replica.MaxReplicas)
		}
		out[i] = ShardSpec{Name: sp.Name, Replicas: make([]string, len(sp.Replicas))}
		for j, a := range sp.Replicas {
			a = strings.TrimSpace(a)
			if a == "" {
				return nil, fmt.Errorf("shard %s: replica %d has an empty address", sp.Name, j+1)
			}
			if slices.Contains(out[i].Replicas[:j], a) {
				return nil, fmt.Errorf("shard %s: replica %s listed twice", sp.Name, a)
			}
			out[i].Replicas[j] = a
		}
	}
	slices.SortFunc(out, func(a, b ShardSpec) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// diff is what replacing old (nil: none) with spec changes.
func diff(old *Topology, spec []ShardSpec) Change {
	var ch Change
	before := map[string][]string{}
	if old != nil {
		for _, s := range old.shards {
			before[s.name] = addrs(s.replicas)
		}
	}
	after := map[string][]string{}
	for _, sp := range spec {
		after[sp.Name] = sp.Replicas
		prev, had := before[sp.Name]
		if !had {
			ch.AddedShards = append(ch.AddedShards, sp.Name)
		}
		for _, a := range sp.Replicas {
			if !slices.Contains(prev, a) {
				ch.AddedReplicas = append(ch.AddedReplicas, sp.Name+"/"+a)
			}
		}
		if had && !slices.Equal(prev, sp.Replicas) && len(prev) == len(sp.Replicas) &&
			!slices.ContainsFunc(sp.Replicas, func(a string) bool { return !slices.Contains(prev, a) }) {
			ch.Reordered = append(ch.Reordered, sp.Name) // the replica indexes change
		}
	}
	if old != nil {
		for _, s := range old.shards {
			now, kept := after[s.name]
			if !kept {
				ch.RemovedShards = append(ch.RemovedShards, s.name)
			}
			for _, e := range s.replicas {
				if !slices.Contains(now, e.addr) {
					ch.RemovedReplicas = append(ch.RemovedReplicas, s.name+"/"+e.addr)
				}
			}
		}
	}
	return ch
}

func addrs(eps []*endpoint) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.addr
	}
	return out
}
