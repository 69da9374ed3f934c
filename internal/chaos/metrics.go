package chaos

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

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
	metricPeerGone   = "gather_grpc_peer_gone_calls"
	metricInFlight   = "gather_admission_in_flight_queries"

	methodSearch      = "/gather.query.v1.QueryService/Search"
	methodSearchStrm  = "/gather.query.v1.QueryService/SearchStream"
	methodShardSearch = "/gather.shard.v1.ShardService/Search"
)

// Page is a parsed Prometheus text exposition (format 0.0.4, what promhttp serves to a client
// that sends no Accept header): every sample, by metric name.
type Page struct {
	samples map[string][]sample
}

type sample struct {
	labels map[string]string
	value  float64
}

// ParsePage parses a text exposition. Comments and blank lines are skipped; a sample line that
// cannot be parsed is an error wrapping ErrMetrics that names the line, because a page chaos
// misreads would make its verdict a guess.
func ParsePage(r io.Reader) (*Page, error) {
	p := &Page{samples: make(map[string][]sample)}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, s, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", ErrMetrics, n, err)
		}
		p.samples[name] = append(p.samples[name], s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	return p, nil
}

// parseLine parses `name{l="v",...} value [timestamp]`.
func parseLine(line string) (string, sample, error) {
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return "", sample{}, fmt.Errorf("no value in %q", line)
	}
	name, rest := line[:i], line[i:]
	s := sample{labels: map[string]string{}}
	if rest[0] == '{' {
		var err error
		if s.labels, rest, err = parseLabels(rest); err != nil {
			return "", sample{}, fmt.Errorf("%s: %w", name, err)
		}
	}
	f := strings.Fields(rest)
	if len(f) != 1 && len(f) != 2 {
		return "", sample{}, fmt.Errorf("%s: want a value and an optional timestamp, got %q", name, rest)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return "", sample{}, fmt.Errorf("%s: value: %w", name, err)
	}
	s.value = v
	return name, s, nil
}

// parseLabels parses `{name="value",...}` at the start of s, with the escapes \\, \" and \n,
// and returns the labels and what follows the closing brace.
func parseLabels(s string) (map[string]string, string, error) {
	labels := map[string]string{}
	i := 1
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == ',') {
			i++
		}
		if i >= len(s) {
			return nil, "", errors.New("label set without a closing brace")
		}
		if s[i] == '}' {
			return labels, s[i+1:], nil
		}
		eq := strings.IndexByte(s[i:], '=')
		if eq <= 0 || i+eq+1 >= len(s) || s[i+eq+1] != '"' {
			return nil, "", fmt.Errorf("want name=\"value\" at offset %d", i)
		}
		name := strings.TrimSpace(s[i : i+eq])
		i += eq + 2
		var v strings.Builder
		for {
			if i >= len(s) {
				return nil, "", fmt.Errorf("label %s: unterminated value", name)
			}
			c := s[i]
			i++
			if c == '"' {
				break
			}
			if c == '\\' && i < len(s) {
				c = s[i]
				i++
				if c == 'n' {
					c = '\n'
				}
			}
			v.WriteByte(c)
		}
		labels[name] = v.String()
	}
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
