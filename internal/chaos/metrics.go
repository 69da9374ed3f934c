package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gatherproxy/gather/internal/sockdiag"
)

// ErrMetrics is wrapped by the errors of ParsePage and of reading a proxy's /metrics.
var ErrMetrics = errors.New("bad metrics page")

// Metric names and label values chaos reads from the proxy's /metrics.
const (
	metricGoroutines = "go_goroutines"
	metricHeapInuse  = "go_memstats_heap_inuse_bytes"
	metricShed       = "gather_admission_shed_total"
	metricEnds       = "gather_grpc_rpc_ends_total"
	metricGuardClose = "gather_qs_stalled_connections_closed_total"
	metricPeerGone   = "gather_grpc_peer_gone_calls"
	metricInFlight   = "gather_admission_in_flight_queries"
	metricHedges     = "gather_shard_hedges_total"
	metricRetries    = "gather_shard_retries_total"
	metricEjections  = "gather_replica_ejections_total"

	// the outcome label values of metricHedges and metricRetries
	outcomeWon, outcomeLost, outcomeFailed, outcomeDenied = "won", "lost", "failed", "denied"

	methodSearch      = "/gather.query.v1.QueryService/Search"
	methodSearchStrm  = "/gather.query.v1.QueryService/SearchStream"
	methodShardSearch = "/gather.shard.v1.ShardService/Search"
	methodShardPull   = "/gather.shard.v1.ShardService/Pull"
)

// Page is a parsed Prometheus text exposition (format 0.0.4, what promhttp serves to a client
// that sends no Accept header): every counter, gauge and untyped sample, by metric name.
type Page struct {
	samples map[string][]sample
}

type sample struct {
	labels map[string]string
	value  float64
}

// ParsePage parses a text exposition with the Prometheus project's parser (expfmt). A page that
// cannot be parsed is an error wrapping ErrMetrics that names the line, because a page chaos
// misreads would make its verdict a guess. Histograms and summaries are skipped: chaos reads
// counters and gauges only.
func ParsePage(r io.Reader) (*Page, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMetrics, err)
	}
	p := &Page{samples: make(map[string][]sample, len(families))}
	for name, mf := range families {
		for _, m := range mf.GetMetric() {
			var v float64
			switch {
			case m.GetCounter() != nil:
				v = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				v = m.GetGauge().GetValue()
			case m.GetUntyped() != nil:
				v = m.GetUntyped().GetValue()
			default:
				continue
			}
			labels := make(map[string]string, len(m.GetLabel()))
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			p.samples[name] = append(p.samples[name], sample{labels: labels, value: v})
		}
	}
	return p, nil
}

// Sum returns the sum of the samples of metric name whose labels include every pair in match
// (label name, value, label name, value, ...), and whether there was any such sample.
func (p *Page) Sum(name string, match ...string) (float64, bool) {
	var sum float64
	found := false
outer:
	for _, s := range p.samples[name] {
		for i := 0; i+1 < len(match); i += 2 {
			if s.labels[match[i]] != match[i+1] {
				continue outer
			}
		}
		sum += s.value
		found = true
	}
	return sum, found
}

// count returns Sum(name, match...) as a count, 0 when there is no such sample.
func (p *Page) count(name string, match ...string) int64 {
	v, _ := p.Sum(name, match...)
	return int64(v)
}

// Goroutines returns go_goroutines.
func (p *Page) Goroutines() (int, error) {
	v, ok := p.Sum(metricGoroutines)
	if !ok || v < 0 || v != math.Trunc(v) {
		return 0, fmt.Errorf("%w: no usable %s sample (is the Go collector registered?)", ErrMetrics, metricGoroutines)
	}
	return int(v), nil
}

// HeapInuse returns go_memstats_heap_inuse_bytes.
func (p *Page) HeapInuse() (uint64, error) {
	v, ok := p.Sum(metricHeapInuse)
	if !ok || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%w: no usable %s sample (is the Go collector registered?)", ErrMetrics, metricHeapInuse)
	}
	return uint64(v), nil
}

// State is the proxy process as one scrape of its admin /metrics saw it.
type State struct {
	// Time is when the scrape was answered.
	Time time.Time
	// Sockets is the process's TCP sockets by state; Sockets.Available is false (and Err says
	// why) when the process could not read /proc.
	Sockets sockdiag.Snapshot
	// Goroutines and HeapInuse are go_goroutines and go_memstats_heap_inuse_bytes.
	Goroutines int
	HeapInuse  uint64
	// HeapCollected reports whether a garbage collection ran just before the scrape, so that
	// HeapInuse is live data and not garbage waiting for the next cycle.
	HeapCollected bool
	// Page is the whole page, for the counters.
	Page *Page
}

// CloseWait returns the sockets in CLOSE_WAIT, owned and not yet accepted together.
func (s State) CloseWait() int {
	return s.Sockets.Sockets[sockdiag.CloseWait] + s.Sockets.ListenerUnowned[sockdiag.CloseWait]
}

// scraper reads a proxy's admin /metrics.
type scraper struct {
	client *http.Client
	admin  string
}

// scrape reads and parses the page, within timeout. With gc it first asks the demo for a
// garbage collection (see GCHandler), and the State's HeapCollected says whether one ran.
func (sc scraper) scrape(ctx context.Context, timeout time.Duration, gc bool) (State, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	collected := false
	if gc {
		var err error
		if collected, err = collectGarbage(ctx, sc.client, sc.admin); err != nil {
			return State{}, err
		}
	}
	url := "http://" + sc.admin + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return State{}, err
	}
	resp, err := sc.client.Do(req)
	if err != nil {
		return State{}, fmt.Errorf("GET %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return State{}, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return State{}, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	st := State{Time: time.Now(), HeapCollected: collected}
	if st.Page, err = ParsePage(bytes.NewReader(body)); err != nil {
		return State{}, fmt.Errorf("%s: %w", url, err)
	}
	if st.Goroutines, err = st.Page.Goroutines(); err != nil {
		return State{}, fmt.Errorf("%s: %w", url, err)
	}
	if st.HeapInuse, err = st.Page.HeapInuse(); err != nil {
		return State{}, fmt.Errorf("%s: %w", url, err)
	}
	if st.Sockets, err = sockdiag.ParseMetrics(bytes.NewReader(body)); err != nil {
		return State{}, fmt.Errorf("%s: %w", url, err)
	}
	st.Sockets.Time = st.Time
	return st, nil
}
