package sockdiag

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names; ParseMetrics reads them back.
const (
	metricUp        = "gather_sockdiag_up"
	metricSockets   = "gather_tcp_sockets"
	metricUnowned   = "gather_tcp_listener_unowned_sockets"
	metricOverflows = "gather_tcp_listen_overflows_total"
	metricDrops     = "gather_tcp_listen_drops_total"
	labelState      = "state"
)

// Collector exports a fresh Snapshot on every scrape:
//
//	gather_sockdiag_up                              1, or 0 when /proc could not be read
//	gather_tcp_sockets{state}                       the process's own sockets, every state
//	gather_tcp_listener_unowned_sockets{state}      ownerless sockets on our listen addresses
//	gather_tcp_listen_overflows_total               TcpExt ListenOverflows (namespace-wide)
//	gather_tcp_listen_drops_total                   TcpExt ListenDrops (namespace-wide)
//
// When /proc is unavailable only gather_sockdiag_up is exported, and the two counters are left
// out when the kernel has no TcpExt counters: a missing series is more honest than a zero. A
// scrape never fails because of sockdiag.
type Collector struct {
	r         *Reader
	up        *prometheus.Desc
	sockets   *prometheus.Desc
	unowned   *prometheus.Desc
	overflows *prometheus.Desc
	drops     *prometheus.Desc
}

// NewCollector returns a Collector reading r. It registers nothing; the caller does, e.g.
// reg.MustRegister(sockdiag.NewCollector(sockdiag.New(""))). Every scrape reads /proc, so scrape
// concurrency is read concurrency.
func NewCollector(r *Reader) *Collector {
	return &Collector{
		r: r,
		up: prometheus.NewDesc(metricUp,
			"1 if this process's TCP sockets could be read from /proc, 0 if not (then no gather_tcp_* series are exported).",
			nil, nil),
		sockets: prometheus.NewDesc(metricSockets,
			"TCP sockets held open by this process, by state; close_wait counts connections the peer closed and this process has not. TIME_WAIT and other ownerless sockets are never counted here.",
			[]string{labelState}, nil),
		unowned: prometheus.NewDesc(metricUnowned,
			"TCP sockets owned by no process whose local address is one this process listens on, by state: time_wait after close, syn_recv handshakes, established or close_wait not yet accepted, fin_wait/last_ack/closing after close. Attributed by address, so another process sharing the port (SO_REUSEPORT) is counted too.",
			[]string{labelState}, nil),
		overflows: prometheus.NewDesc(metricOverflows,
			"TcpExt ListenOverflows from /proc/net/netstat: times a connection found an accept queue full. System-wide (whole network namespace), not specific to this process.",
			nil, nil),
		drops: prometheus.NewDesc(metricDrops,
			"TcpExt ListenDrops from /proc/net/netstat: connections dropped by listening sockets for any reason, overflows included. System-wide (whole network namespace), not specific to this process.",
			nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.sockets
	ch <- c.unowned
	ch <- c.overflows
	ch <- c.drops
}

// Collect implements prometheus.Collector. It reads /proc once per call.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	snap, err := c.r.Read()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	for _, st := range States() {
		ch <- prometheus.MustNewConstMetric(c.sockets, prometheus.GaugeValue, float64(snap.Sockets[st]), st.Label())
		ch <- prometheus.MustNewConstMetric(c.unowned, prometheus.GaugeValue, float64(snap.ListenerUnowned[st]), st.Label())
	}
	if snap.ListenStatsAvailable {
		ch <- prometheus.MustNewConstMetric(c.overflows, prometheus.CounterValue, float64(snap.ListenOverflows))
		ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(snap.ListenDrops))
	}
}
