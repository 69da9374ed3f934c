package discovery

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// DNSMetrics are the metric families of a DNSSource. Make one per registry with NewDNSMetrics
// and give it to each source in turn (WithDNSMetrics): a proxy that re-reads its configuration
// replaces its source, not the metrics. One source at a time: each resets the per-shard gauge to
// its own shards.
type DNSMetrics struct {
	lookups  *prometheus.CounterVec
	rounds   *prometheus.CounterVec
	replicas *prometheus.GaugeVec
	changes  prometheus.Counter
}

// NewDNSMetrics registers the DNS source's metric families on reg.
func NewDNSMetrics(reg prometheus.Registerer) *DNSMetrics {
	f := promauto.With(reg)
	m := &DNSMetrics{
		lookups: f.NewCounterVec(prometheus.CounterOpts{
			Name: "gather_discovery_dns_lookups_total",
			Help: "Lookups of a dns replica entry's name, by result: ok (addresses), not_found (NXDOMAIN or no A/AAAA record: the name's replicas are dropped), error (the DNS server failed or did not answer: the last addresses are kept).",
		}, []string{"result"}),
		rounds: f.NewCounterVec(prometheus.CounterOpts{
			Name: "gather_discovery_dns_rounds_total",
			Help: "Rounds of lookups of every dns name, by trigger: start, interval (periodic), refresh (a lost replica connection asked, rate-limited).",
		}, []string{"trigger"}),
		replicas: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gather_discovery_dns_replicas",
			Help: "Replica addresses of each shard in the topology the DNS source last published (resolved addresses and literal entries).",
		}, []string{"shard"}),
		changes: f.NewCounter(prometheus.CounterOpts{
			Name: "gather_discovery_dns_topology_changes_total",
			Help: "Topologies published by the DNS source: each differs from the one before.",
		}),
	}
	for _, r := range []string{resultOK, resultNotFound, resultError} {
		m.lookups.WithLabelValues(r)
	}
	for _, t := range []string{triggerStart, triggerInterval, triggerRefresh} {
		m.rounds.WithLabelValues(t)
	}
	return m
}

// forShards makes the per-shard gauge have a series for each of shards and no other, so that a
// dashboard sees a shard at 0 before the first round rather than nothing.
func (m *DNSMetrics) forShards(shards []string) {
	m.replicas.Reset()
	for _, s := range shards {
		m.replicas.WithLabelValues(s)
	}
}
