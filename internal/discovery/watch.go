package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultMaxKeys bounds the keys a Watcher holds: the registrations of 64 shards of 64 replicas.
const DefaultMaxKeys = 4096

// DefaultResync is how often a Watcher reads the whole prefix again even when its watch is
// healthy. A watch cannot see an etcd cluster replaced by one with a new history (restored from
// an older backup, or started afresh): its revisions start again below the watch's, and no event
// comes until they pass it. The periodic read bounds how long such a topology stays stale.
const DefaultResync = time.Minute

// Watcher follows the registrations under a prefix and delivers the validated topology whenever
// it changes. Create it with NewWatcher and run it with Run.
type Watcher struct {
	cli      *clientv3.Client
	prefix   string
	onChange func(Topology)
	log      *slog.Logger
	m        *Metrics
	expected []string
	maxKeys  int
	resync   time.Duration

	// The state below belongs to Run's goroutine.
	keys     map[string]entry
	overflow int // keys left out because of maxKeys since the last full read
	last     *Topology
}

// WatchOption configures a Watcher.
type WatchOption func(*Watcher)

// WithExpected lists the shard names the topology must have: registrations of other shards are
// rejected, and the listed shards without a replica are reported in Topology.Missing. Default:
// the shards shard-0 to shard-(N-1) of the N partitions the registrations give, and any shard.
func WithExpected(names []string) WatchOption {
	return func(w *Watcher) { w.expected = append([]string(nil), names...) }
}

// WithWatchLogger sets where changes and rejections are logged. Default: slog.Default().
func WithWatchLogger(log *slog.Logger) WatchOption { return func(w *Watcher) { w.log = log } }

// WithWatchMetrics counts changes in m. Default: no metrics.
func WithWatchMetrics(m *Metrics) WatchOption { return func(w *Watcher) { w.m = m } }

// WithMaxKeys bounds the keys held; keys past it are reported in Topology.Rejected as one entry
// and left out until a full read finds room. Default: DefaultMaxKeys.
func WithMaxKeys(n int) WatchOption { return func(w *Watcher) { w.maxKeys = max(n, 1) } }

// WithResync sets how often the whole prefix is read again (0: never). Default: DefaultResync.
func WithResync(d time.Duration) WatchOption { return func(w *Watcher) { w.resync = d } }

// NewWatcher returns a Watcher of t's prefix that calls onChange with each new topology. onChange
// is called from Run's goroutine, one call at a time, first with the state Run reads at its
// start; it should return quickly (the watch waits for it) and must not modify the Topology
// (the Watcher compares the next one with it). cli stays the caller's.
func NewWatcher(cli *clientv3.Client, t Target, onChange func(Topology), opts ...WatchOption) *Watcher {
	w := &Watcher{cli: cli, prefix: t.Prefix, onChange: onChange, log: slog.Default(), maxKeys: DefaultMaxKeys, resync: DefaultResync}
	for _, o := range opts {
		o(w)
	}
	if w.m == nil {
		w.m = NewMetrics(prometheus.NewRegistry())
	}
	return w
}

// errCompacted ends a watch that fell behind etcd's compaction.
var errCompacted = errors.New("watch revision compacted")

// Run reads the prefix, delivers its topology, then follows changes from that revision. It reads
// the whole prefix again after a compaction, a watch error or a failed read (retrying with
// backoff while etcd is unreachable) and every resync interval. It returns when ctx is done;
// the error is ctx's.
func (w *Watcher) Run(ctx context.Context) error {
	reason := resyncStart
	backoff := 100 * time.Millisecond
	for {
		w.m.resyncs.WithLabelValues(reason).Inc()
		rev, err := w.load(ctx)
		if err == nil {
			backoff = 100 * time.Millisecond
			w.publish(rev)
			err = w.follow(ctx, rev)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case err == nil:
			reason = resyncPeriodic
			continue
		case errors.Is(err, errCompacted):
			reason = resyncCompacted
		default:
			reason = resyncError
		}
		w.log.Warn("registry watch interrupted; reading it again", "prefix", w.prefix, "in", backoff, "err", err)
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// load replaces the held keys with the prefix's current ones and returns the revision read.
func (w *Watcher) load(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := w.cli.Get(rctx, w.prefix+"/", clientv3.WithPrefix(), clientv3.WithLimit(int64(w.maxKeys)))
	if err != nil {
		return 0, fmt.Errorf("etcd %v: read %s/: %w", w.cli.Endpoints(), w.prefix, err)
	}
	w.keys = make(map[string]entry, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		w.keys[string(kv.Key)] = entry{value: kv.Value, createRev: kv.CreateRevision}
	}
	w.overflow = 0
	if resp.More {
		w.overflow = int(resp.Count) - len(resp.Kvs)
	}
	return resp.Header.Revision, nil
}

// follow applies the changes after rev until the watch ends (nil: the resync interval passed).
func (w *Watcher) follow(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel() // ends the watch's stream in the client
	var resync <-chan time.Time
	if w.resync > 0 {
		t := time.NewTimer(w.resync)
		defer t.Stop()
		resync = t.C
	}
	wch := w.cli.Watch(wctx, w.prefix+"/", clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		select {
		case <-resync:
			return nil
		case resp, ok := <-wch:
			if !ok {
				return errors.New("watch closed")
			}
			if resp.CompactRevision != 0 {
				return fmt.Errorf("%w at %d", errCompacted, resp.CompactRevision)
			}
			if err := resp.Err(); err != nil {
				return fmt.Errorf("etcd %v: watch %s/: %w", w.cli.Endpoints(), w.prefix, err)
			}
			if len(resp.Events) == 0 {
				continue
			}
			for _, ev := range resp.Events {
				w.apply(ev)
			}
			w.publish(resp.Header.Revision)
		}
	}
}

// apply applies one change to the held keys.
func (w *Watcher) apply(ev *clientv3.Event) {
	key := string(ev.Kv.Key)
	switch ev.Type {
	case mvccpb.DELETE:
		w.m.events.WithLabelValues("delete").Inc()
		w.log.Info("registry change", "op", "delete", "key", key)
		delete(w.keys, key)
	case mvccpb.PUT:
		w.m.events.WithLabelValues("put").Inc()
		w.log.Info("registry change", "op", "put", "key", key, "value", truncate(ev.Kv.Value))
		if _, ok := w.keys[key]; !ok && len(w.keys) >= w.maxKeys {
			w.overflow++
			return
		}
		w.keys[key] = entry{value: ev.Kv.Value, createRev: ev.Kv.CreateRevision}
	}
}

// publish builds the topology and delivers it if it differs from the last one delivered.
func (w *Watcher) publish(rev int64) {
	t := build(w.prefix, w.keys, w.expected)
	if w.overflow > 0 {
		t.Rejected = append(t.Rejected, Rejection{Key: w.prefix + "/...", Reason: fmt.Sprintf(
			"%d keys left out: the registry holds more than the %d keys a watcher keeps", w.overflow, w.maxKeys)})
	}
	t.Revision = rev
	if w.last != nil && sameTopology(*w.last, t) {
		return
	}
	old := map[Rejection]bool{}
	if w.last != nil {
		for _, r := range w.last.Rejected {
			old[r] = true
		}
	}
	for _, r := range t.Rejected {
		if !old[r] {
			w.m.rejections.Inc()
			w.log.Warn("registration rejected", "key", r.Key, "reason", r.Reason)
		}
	}
	w.m.snapshots.Inc()
	w.m.replicas.Set(float64(t.Replicas()))
	w.m.rejected.Set(float64(len(t.Rejected)))
	w.m.missing.Set(float64(len(t.Missing)))
	w.log.Info("topology", "revision", rev, "shards", len(t.Shards), "replicas", t.Replicas(),
		"missing", t.Missing, "rejected", len(t.Rejected))
	w.last = &t
	w.onChange(t)
}

// sameTopology reports whether a and b differ in nothing but their revision.
func sameTopology(a, b Topology) bool {
	a.Revision, b.Revision = 0, 0
	return reflect.DeepEqual(a, b)
}

// truncate returns v as a string of at most 256 bytes, for a log line.
func truncate(v []byte) string {
	const n = 256
	if len(v) > n {
		return string(v[:n]) + "..."
	}
	return string(v)
}
