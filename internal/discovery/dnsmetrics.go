package discovery

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// dnsMetrics are a DNSSource's metric families.
type dnsMetrics struct {
	lookups   *prometheus.CounterVec
	rounds    *prometheus.CounterVec
	addresses *prometheus.GaugeVec
	changes   prometheus.Counter
}

// newDNSMetrics registers a DNSSource's metric families on reg, with a series for each of
// shards and each label value, so that a dashboard sees zeros rather than nothing.
func newDNSMetrics(reg prometheus.Registerer, shards []string) *dnsMetrics {
	f := promauto.With(reg)
	m := &dnsMetrics{
		lookups: f.NewCounterVec(prometheus.CounterOpts{
			Name: "gather_discovery_dns_lookups_total",
			Help: "Lookups of a dns replica entry's name, by result: ok (addresses), not_found (NXDOMAIN or no A/AAAA record: the name's replicas are dropped), error (the DNS server failed or did not answer: the last addresses are kept).",
		}, []string{"result"}),
		rounds: f.NewCounterVec(prometheus.CounterOpts{
			Name: "gather_discovery_dns_rounds_total",
			Help: "Rounds of lookups of every dns name, by trigger: start, interval (periodic), refresh (a lost replica connection asked, rate-limited).",
		}, []string{"trigger"}),
		addresses: f.NewGaugeVec(prometheus.GaugeOpts{
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
	for _, s := range shards {
		m.addresses.WithLabelValues(s)
	}
	return m
}
