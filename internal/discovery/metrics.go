package discovery

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the discovery metric families, shared by a process's Registrar and Watcher. Make
// one per registry with NewMetrics.
type Metrics struct {
	registrations *prometheus.CounterVec
	events        *prometheus.CounterVec
	resyncs       *prometheus.CounterVec
	snapshots     prometheus.Counter
	rejections    prometheus.Counter
	replicas      prometheus.Gauge
	rejected      prometheus.Gauge
	missing       prometheus.Gauge
}

// Reasons a Watcher reads the whole prefix again (the reason label of
// gather_discovery_resyncs_total).
const (
	resyncStart     = "start"
	resyncCompacted = "compacted"
	resyncError     = "error"
	resyncPeriodic  = "periodic"
)

// NewMetrics registers the discovery metric families on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		registrations: f.NewCounterVec(prometheus.CounterOpts{
			Name: "gather_discovery_registrations_total",
			Help: "Registrations of this shard in the registry, by outcome: ok (the key was written under a new lease), lost (the lease ended without Close: etcd expired it or was unreachable for its TTL; the registrant registers again), error (an attempt failed).",
		}, []string{"outcome"}),
		events: f.NewCounterVec(prometheus.CounterOpts{
			Name: "gather_discovery_events_total",
			Help: "Changes to registry keys seen by the watcher, by op: put or delete.",
		}, []string{"op"}),
		resyncs: f.NewCounterVec(prometheus.CounterOpts{
			Name: "gather_discovery_resyncs_total",
			Help: "Reads of the whole registry prefix, by reason: start, compacted (the watch fell behind etcd's compaction), error (the watch or the read failed), periodic.",
		}, []string{"reason"}),
		snapshots: f.NewCounter(prometheus.CounterOpts{
			Name: "gather_discovery_topology_changes_total",
			Help: "Topologies delivered by the watcher: each differs from the one before.",
		}),
		rejections: f.NewCounter(prometheus.CounterOpts{
			Name: "gather_discovery_rejections_total",
			Help: "Registrations rejected by the watcher (malformed, or conflicting with an older one); each is logged with its reason once.",
		}),
		replicas: f.NewGauge(prometheus.GaugeOpts{
			Name: "gather_discovery_replicas",
			Help: "Replicas in the watcher's current topology.",
		}),
		rejected: f.NewGauge(prometheus.GaugeOpts{
			Name: "gather_discovery_rejected_keys",
			Help: "Registry keys the watcher's current topology leaves out.",
		}),
		missing: f.NewGauge(prometheus.GaugeOpts{
			Name: "gather_discovery_missing_shards",
			Help: "Expected shards with no replica in the watcher's current topology.",
		}),
	}
	for _, o := range []string{"ok", "lost", "error"} {
		m.registrations.WithLabelValues(o)
	}
	for _, op := range []string{"put", "delete"} {
		m.events.WithLabelValues(op)
	}
	for _, r := range []string{resyncStart, resyncCompacted, resyncError, resyncPeriodic} {
		m.resyncs.WithLabelValues(r)
	}
	return m
}
