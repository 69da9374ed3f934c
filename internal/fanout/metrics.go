package fanout

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatherproxy/gather/internal/hedge"
)

// metrics are the fan-out's metric families: counters kept as calls go, and gauges read from the
// replica sets, the hedge delays and the budget when scraped.
type metrics struct {
	hedges, denied, retries *prometheus.CounterVec
	failovers               *prometheus.CounterVec
	ejections, selections   *prometheus.CounterVec
	decoded                 prometheus.Counter
	// received counts every hit parsed out of a shard message, the first messages of attempts that
	// lost a hedge race included: what the proxy paid to decode, whether or not it was merged.
	received prometheus.Counter
	// outranked counts the streams cut because the answer could not take any more of them.
	outranked prometheus.Counter
	// changes counts the topologies Update made current.
	changes prometheus.Counter
	// lag is the time from a call's shard deadline to its answer, for answers after it.
	lag prometheus.Histogram

	reserve *prometheus.Desc

	score, ejected, delay, tokens *prometheus.Desc
	held, maxHeld                 *prometheus.Desc
	topoReplicas, conns           *prometheus.Desc
}

// Outcomes of hedges and retries (the outcome label): the attempt answered for the shard; it
// was cancelled because another attempt answered first; it ended without an answer and so did
// every other; it was not started (hedges: gather_shard_hedges_denied_total says why; retries: no
// budget or no replica left).
const (
	outcomeWon = iota
	outcomeLost
	outcomeFailed
	outcomeDenied
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"won", "lost", "failed", "denied"}

func newMetrics() *metrics {
	return &metrics{
		hedges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gather_shard_hedges_total",
			Help: "Hedged shard calls, by shard and outcome: won (the hedge answered), lost (cancelled: another attempt answered first), failed (no attempt answered), denied (the first request for a hedge was refused: see gather_shard_hedges_denied_total; the call asks again as it waits, so it may also count as won, lost or failed).",
		}, []string{"shard", "outcome"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gather_shard_hedges_denied_total",
			Help: "Shard calls whose first request for a hedge, after the hedge delay, was refused, by shard and reason: budget (no token), slow_shard (every other replica is as slow), no_candidate (no other replica ready), deadline (too little time left).",
		}, []string{"shard", "reason"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gather_shard_failovers_total",
			Help: "Hedges started without a budget token because the replica the shard call waited on was ejected after the call started (stalled or failing); they count in gather_shard_hedges_total too.",
		}, []string{"shard"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gather_shard_retries_total",
			Help: "Retries of shard calls whose attempt failed with UNAVAILABLE or RESOURCE_EXHAUSTED before its first message, by shard and outcome: won, lost, failed, denied (no token or no replica left).",
		}, []string{"shard", "outcome"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gather_replica_ejections_total",
			Help: "Times a replica was ejected as an outlier (consecutive failures, a success rate far below its siblings', or stalled: calls waiting on it for their first frame while a sibling answers later ones).",
		}, []string{"shard", "replica"}),
		selections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gather_replica_selections_total",
			Help: "Attempts sent to each replica: first attempts, hedges and retries.",
		}, []string{"shard", "replica"}),
		decoded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gather_shard_hits_decoded_total",
			Help: "Shard hits whose payload (text, fields) the proxy decoded into Go values. Answers carry the payload as the shard encoded it, so this stays near 0: it counts the hits of shard messages only protobuf-go could read, and those of answers to in-process callers.",
		}),
		outranked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gather_shard_streams_outranked_total",
			Help: "Shard streams stopped early (StatusOK) while read without the merge asking, once top_k hits given to the merge ranked before their last: the answer could take none of their rest.",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gather_shard_hits_received_total",
			Help: "Hits parsed out of shard messages, whether or not they reached an answer; divided by queries, what the fan-out decodes per query.",
		}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gather_topology_changes_total",
			Help: "Topologies the fan-out made current: the first, then one per change of shards or replicas (discovery, DNS, config reload).",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gather_answer_lag_seconds",
			Help:    "For answers written after their query's per-shard deadline: how long after it. The merge reserve (gather_merge_reserve_lag_seconds) follows its maximum over the last 30s.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		reserve: prometheus.NewDesc("gather_merge_reserve_lag_seconds",
			"The part of the merge reserve learnt from gather_answer_lag_seconds (1.5 times its maximum over the last 30s): a query's shard calls end at least this long (and at most half its remaining time) before its caller's deadline.",
			nil, nil),
		topoReplicas: prometheus.NewDesc("gather_topology_replicas",
			"Replicas of each shard in the current topology; 0 for a shard that discovery expects but no replica of which is known.",
			[]string{"shard"}, nil),
		conns: prometheus.NewDesc("gather_shard_connections",
			"Replica connections the fan-out holds open: those of the current topology and of earlier ones still used by queries in flight.",
			nil, nil),
		score: prometheus.NewDesc("gather_replica_score",
			"The replica's load score: its decaying peak-sensitive average time to first frame, in seconds, times its attempts in flight plus one. Lower is preferred.",
			[]string{"shard", "replica"}, nil),
		ejected: prometheus.NewDesc("gather_replica_ejected",
			"1 while the replica is ejected as an outlier, 0.5 while it is back on probation, 0 otherwise.",
			[]string{"shard", "replica"}, nil),
		delay: prometheus.NewDesc("gather_shard_hedge_delay_seconds",
			"How long a shard call waits for its first message before it is hedged: a percentile of the shard's recent times to first frame.",
			[]string{"shard"}, nil),
		tokens: prometheus.NewDesc("gather_hedge_budget_tokens",
			"Tokens in the bucket that hedges and retries spend one each from.", nil, nil),
		held: prometheus.NewDesc("gather_hit_bytes_in_flight",
			"Shard hits held by the queries in flight, in bytes of heap by the proxy's cost model.", nil, nil),
		maxHeld: prometheus.NewDesc("gather_max_hit_bytes_in_flight",
			"The bound on gather_hit_bytes_in_flight (max_hit_bytes_in_flight); a shard whose hits would cross it ends RESOURCE_EXHAUSTED.", nil, nil),
	}
}

// shardMetrics are one shard's counters, bound to its labels once.
type shardMetrics struct {
	// hedge and retry outcomes, and denied hedges by hedge.Denial; nil for a shard of one
	// replica, which never hedges nor retries.
	hedge, retry []prometheus.Counter // by outcome
	denied       []prometheus.Counter // by hedge.Denial
	failovers    prometheus.Counter
	// by replica index
	selections, ejections []prometheus.Counter
}

func (m *metrics) forShard(s *shard) shardMetrics {
	var sm shardMetrics
	for _, r := range s.replicas {
		sm.selections = append(sm.selections, m.selections.WithLabelValues(s.name, r.addr))
		sm.ejections = append(sm.ejections, m.ejections.WithLabelValues(s.name, r.addr))
	}
	if len(s.replicas) < 2 {
		return sm
	}
	for _, o := range outcomeNames {
		sm.hedge = append(sm.hedge, m.hedges.WithLabelValues(s.name, o))
		sm.retry = append(sm.retry, m.retries.WithLabelValues(s.name, o))
	}
	sm.failovers = m.failovers.WithLabelValues(s.name)
	sm.denied = make([]prometheus.Counter, hedge.DeniedDeadline+1)
	for d := hedge.DeniedBudget; d <= hedge.DeniedDeadline; d++ {
		sm.denied[d] = m.denied.WithLabelValues(s.name, d.String())
	}
	return sm
}

// forgetShard deletes the series of a shard no topology has any more.
func (m *metrics) forgetShard(name string) {
	for _, v := range []*prometheus.CounterVec{m.hedges, m.denied, m.retries, m.failovers} {
		v.DeletePartialMatch(prometheus.Labels{"shard": name})
	}
}

// forgetReplica deletes the series of a replica no topology has any more.
func (m *metrics) forgetReplica(shard, addr string) {
	m.selections.DeleteLabelValues(shard, addr)
	m.ejections.DeleteLabelValues(shard, addr)
}

// collector is what New registers: the counters, and the gauges of c read at scrape time.
func (m *metrics) collector(c *Client) prometheus.Collector { return &collector{m: m, c: c} }

type collector struct {
	m *metrics
	c *Client
}

func (col *collector) Describe(ch chan<- *prometheus.Desc) {
	m := col.m
	for _, v := range []*prometheus.CounterVec{m.hedges, m.denied, m.retries, m.failovers, m.ejections, m.selections} {
		v.Describe(ch)
	}
	m.decoded.Describe(ch)
	m.received.Describe(ch)
	m.outranked.Describe(ch)
	m.changes.Describe(ch)
	m.lag.Describe(ch)
	ch <- m.reserve
	ch <- m.topoReplicas
	ch <- m.conns
	ch <- m.score
	ch <- m.ejected
	ch <- m.delay
	ch <- m.tokens
	ch <- m.held
	ch <- m.maxHeld
}

func (col *collector) Collect(ch chan<- prometheus.Metric) {
	m := col.m
	for _, v := range []*prometheus.CounterVec{m.hedges, m.denied, m.retries, m.failovers, m.ejections, m.selections} {
		v.Collect(ch)
	}
	m.decoded.Collect(ch)
	m.received.Collect(ch)
	m.outranked.Collect(ch)
	m.changes.Collect(ch)
	m.lag.Collect(ch)
	ch <- prometheus.MustNewConstMetric(m.reserve, prometheus.GaugeValue, (time.Duration(float64(col.c.lag.get(time.Now())) * lagMargin)).Seconds())
	col.c.mu.Lock()
	conns := len(col.c.endpoints)
	col.c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.conns, prometheus.GaugeValue, float64(conns))
	for _, s := range col.c.topo.Load().shards {
		ch <- prometheus.MustNewConstMetric(m.topoReplicas, prometheus.GaugeValue, float64(len(s.replicas)), s.name)
		if s.set != nil {
			for i, r := range s.replicas {
				snap := s.set.Snapshot(i)
				ejected := 0.0
				switch {
				case snap.Ejected:
					ejected = 1
				case snap.Probation:
					ejected = 0.5
				}
				ch <- prometheus.MustNewConstMetric(m.score, prometheus.GaugeValue, snap.Score.Seconds(), s.name, r.addr)
				ch <- prometheus.MustNewConstMetric(m.ejected, prometheus.GaugeValue, ejected, s.name, r.addr)
			}
		}
		if s.delay != nil {
			ch <- prometheus.MustNewConstMetric(m.delay, prometheus.GaugeValue, s.delay.Current().Seconds(), s.name)
		}
	}
	if col.c.budget != nil {
		ch <- prometheus.MustNewConstMetric(m.tokens, prometheus.GaugeValue, col.c.budget.Tokens())
	}
	ch <- prometheus.MustNewConstMetric(m.held, prometheus.GaugeValue, float64(col.c.held.Load()))
	ch <- prometheus.MustNewConstMetric(m.maxHeld, prometheus.GaugeValue, float64(col.c.cfg.MaxHitBytesInFlight))
}
