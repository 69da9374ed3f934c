package loadgen

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
)

// The histograms' range, in microseconds: 1µs to 60s, 3 significant digits. Latencies outside it
// are recorded at its ends.
const (
	minUS     = 1
	maxUS     = 60_000_000
	sigDigits = 3
)

// recorder accumulates the outcomes of measured requests. It is safe for concurrent use.
type recorder struct {
	mu       sync.Mutex
	all, ok  *hdrhistogram.Histogram
	overhead *hdrhistogram.Histogram
	interval *hdrhistogram.Histogram // since the last progress snapshot
	counts   Counts
	last     time.Time // when the last recorded request ended
}

// NewHistogram returns an empty histogram of the range and precision of every Summary's (1µs to
// 60s, 3 significant digits), for merging the histograms of several runs.
func NewHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(minUS, maxUS, sigDigits) }

func newRecorder() *recorder {
	return &recorder{
		all:      hdrhistogram.New(minUS, maxUS, sigDigits),
		ok:       hdrhistogram.New(minUS, maxUS, sigDigits),
		overhead: hdrhistogram.New(minUS, maxUS, sigDigits),
		interval: hdrhistogram.New(minUS, maxUS, sigDigits),
		counts:   Counts{FailedByCode: map[string]int64{}},
	}
}

// class is the outcome of a completed request.
type class int

const (
	classOK class = iota
	classDegraded
	classShed
	classFailed
)

// classify returns the class of a request that ended with resp and err, and for a failed one its
// gRPC code.
func classify(resp *queryv1.SearchResponse, err error) (class, codes.Code) {
	switch code := status.Code(err); {
	case err == nil && resp.GetCoverage().GetDegraded():
		return classDegraded, codes.OK
	case err == nil:
		return classOK, codes.OK
	case code == codes.ResourceExhausted:
		return classShed, code
	default:
		return classFailed, code
	}
}

// record counts a completed request that took d (as the run measures latency) and ended at done
// with resp and err, having been sent at sent.
func (r *recorder) record(d time.Duration, resp *queryv1.SearchResponse, err error, sent, done time.Time) {
	c, code := classify(resp, err)
	v := toUS(d)
	overhead, hasOverhead := overheadOf(resp, done.Sub(sent))
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.all.RecordValue(v) // v is within range, so this cannot fail
	_ = r.interval.RecordValue(v)
	if hasOverhead {
		_ = r.overhead.RecordValue(toUS(overhead))
	}
	r.counts.Completed++
	switch c {
	case classOK:
		r.counts.OK++
		_ = r.ok.RecordValue(v)
	case classDegraded:
		r.counts.Degraded++
	case classShed:
		r.counts.Shed++
	case classFailed:
		r.counts.Failed++
		r.counts.FailedByCode[code.String()]++
	}
	if done.After(r.last) {
		r.last = done
	}
}

// overheadOf returns how much longer than its slowest shard an answer took: the time from sending
// the request to receiving resp, less the largest shard latency resp reports. ok is false for an
// error or an answer without shard results.
func overheadOf(resp *queryv1.SearchResponse, took time.Duration) (_ time.Duration, ok bool) {
	if resp == nil || len(resp.GetShards()) == 0 {
		return 0, false
	}
	var slowest time.Duration
	for _, s := range resp.GetShards() {
		slowest = max(slowest, s.GetLatency().AsDuration())
	}
	return took - slowest, true
}

// toUS converts d to whole microseconds within the histograms' range.
func toUS(d time.Duration) int64 {
	return min(max(d.Microseconds(), minUS), maxUS)
}

// interrupted counts a request cut short by the end of Run's context.
func (r *recorder) interrupted() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts.Interrupted++
}

// progress returns the counts and the interval p99 so far, and starts a new interval.
func (r *recorder) progress() Progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := Progress{Completed: r.counts.Completed, Shed: r.counts.Shed, Failed: r.counts.Failed}
	if r.interval.TotalCount() > 0 {
		p.P99 = time.Duration(r.interval.ValueAtQuantile(99)) * time.Microsecond
		r.interval.Reset()
	}
	return p
}

func (r *recorder) lastDone() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// final returns the counts (without Issued and Dropped, which the run keeps) and the summaries of
// all latencies, of the ok ones, and of the overheads.
func (r *recorder) final() (Counts, Summary, Summary, Summary) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.counts
	if len(c.FailedByCode) == 0 {
		c.FailedByCode = nil
	}
	return c, Summarize(r.all), Summarize(r.ok), Summarize(r.overhead)
}
