package loadgen

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Schema names the JSON layout of a Result; it changes only when a field changes meaning or is
// removed.
const Schema = "gather.loadgen.v1"

// Result is what a run measured. Its JSON form has stable field names in snake_case, with every
// duration a number of microseconds (fields named *_us).
type Result struct {
	// Schema is the layout of this JSON: [Schema].
	Schema string `json:"schema"`
	// Target is the address load was sent to, when Run was given one (RunAddr).
	Target string `json:"target,omitempty"`
	// Config is the run's configuration, defaults filled in (Progress and ProgressEvery cleared).
	Config Config `json:"config"`
	// Start is when the measured window began (after the warmup).
	Start time.Time `json:"start"`
	// ElapsedUS is the measured window: from Start until the last measured request ended or the
	// sending stopped, whichever is later.
	ElapsedUS int64 `json:"elapsed_us"`
	// Throughput is the completed requests per second over the measured window.
	Throughput float64 `json:"throughput_per_second"`
	// Canceled is set when Run's context ended before the run did: the counts are partial.
	Canceled bool `json:"canceled"`

	Counts Counts `json:"counts"`
	// Latency covers every completed request (ok, degraded, shed and failed).
	Latency Summary `json:"latency"`
	// OKLatency covers the ok requests only.
	OKLatency Summary `json:"ok_latency"`
	// Overhead is what the proxy and the network added on top of the slowest shard, for every
	// answered request (ok or degraded) that reported its shards: the time from sending the
	// request to receiving the answer, less the largest ShardResult.latency in it (which the
	// proxy measures from sending the shard request to the end of the shard's stream). Unlike
	// the latencies it never includes an open loop's queueing, and it does not depend on how
	// precisely the shards keep their own delays.
	Overhead Summary `json:"overhead"`
}

// Counts classifies the measured requests. Issued = Completed + Interrupted, and Completed = OK +
// Degraded + Shed + Failed.
type Counts struct {
	// Issued requests were sent in the measured window.
	Issued int64 `json:"issued"`
	// Completed requests ended in one of the four classes below.
	Completed int64 `json:"completed"`
	// OK requests were answered with full coverage.
	OK int64 `json:"ok"`
	// Degraded requests were answered with coverage.degraded set.
	Degraded int64 `json:"degraded"`
	// Shed requests were refused with RESOURCE_EXHAUSTED.
	Shed int64 `json:"shed"`
	// Failed requests ended with any other error; FailedByCode counts them by gRPC code name
	// (e.g. "Unavailable", "DeadlineExceeded").
	Failed       int64            `json:"failed"`
	FailedByCode map[string]int64 `json:"failed_by_code,omitempty"`
	// Dropped requests were due on an open loop's schedule within the measured window but were
	// never sent: MaxOutstanding requests stayed in flight (or the generator itself fell behind)
	// until 50ms after the window ended, or the run was canceled. Always 0 for a closed loop.
	Dropped int64 `json:"dropped"`
	// Interrupted requests were in flight when Run's context ended; they are in no class.
	Interrupted int64 `json:"interrupted"`
}

// Summary describes a latency distribution, in microseconds. Percentiles and the maximum are
// those of the HDR histogram (within 0.1% of the true values); all are 0 when Count is 0.
type Summary struct {
	Count  int64   `json:"count"`
	MeanUS float64 `json:"mean_us"`
	MinUS  int64   `json:"min_us"`
	P50US  int64   `json:"p50_us"`
	P90US  int64   `json:"p90_us"`
	P99US  int64   `json:"p99_us"`
	P999US int64   `json:"p99_9_us"`
	MaxUS  int64   `json:"max_us"`
	// HDR is the whole histogram in the standard HdrHistogram V2 compressed base64 encoding, for
	// merging runs or plotting percentile curves (see Histogram).
	HDR string `json:"hdr,omitempty"`
}

// Histogram decodes s.HDR.
func (s Summary) Histogram() (*hdrhistogram.Histogram, error) {
	return hdrhistogram.Decode([]byte(s.HDR))
}

// Summarize describes h, a histogram of microseconds, with its HDR encoding: for the merge of
// several runs' histograms (decode each Summary.HDR, Merge them, Summarize the sum).
func Summarize(h *hdrhistogram.Histogram) Summary {
	s := Summary{Count: h.TotalCount()}
	if s.Count == 0 {
		return s
	}
	s.MeanUS = h.Mean()
	s.MinUS = h.Min()
	s.P50US = h.ValueAtQuantile(50)
	s.P90US = h.ValueAtQuantile(90)
	s.P99US = h.ValueAtQuantile(99)
	s.P999US = h.ValueAtQuantile(99.9)
	s.MaxUS = h.Max()
	if b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase); err == nil {
		s.HDR = string(b)
	}
	return s
}

// Progress is a snapshot of a running run, for a live progress line.
type Progress struct {
	// Warmup is set while the warmup runs; the counts are then all 0.
	Warmup bool
	// Elapsed is the time since the measured window began (since the run began, during warmup).
	Elapsed time.Duration
	// Completed, Shed and Failed count measured requests so far (Completed includes the others).
	Completed, Shed, Failed int64
	// InFlight is the number of requests outstanding now.
	InFlight int64
	// QPS is Completed per second of the measured window so far.
	QPS float64
	// P99 is the 99th percentile latency of the requests completed since the previous snapshot
	// (0 if none did).
	P99 time.Duration
}

// String formats p as a one-line status, e.g.
// "12.0s  120345 done  10028.7/s  p99 1.25ms  12 in flight  0 shed  0 failed".
func (p Progress) String() string {
	if p.Warmup {
		return fmt.Sprintf("%5.1fs  warming up  %d in flight", p.Elapsed.Seconds(), p.InFlight)
	}
	return fmt.Sprintf("%5.1fs  %d done  %.1f/s  p99 %v  %d in flight  %d shed  %d failed",
		p.Elapsed.Seconds(), p.Completed, p.QPS, p.P99, p.InFlight, p.Shed, p.Failed)
}

// WriteText writes a human summary of r to w: the setup, the counts, the throughput, and a table
// of the latency percentiles.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	c := r.Config
	if r.Target != "" {
		fmt.Fprintf(&b, "target %s\n", r.Target)
	}
	switch c.Mode {
	case Open:
		fmt.Fprintf(&b, "open loop: %g/s, at most %d outstanding", c.Rate, c.MaxOutstanding)
	default:
		fmt.Fprintf(&b, "closed loop: %d workers", c.Workers)
	}
	if c.Duration > 0 {
		fmt.Fprintf(&b, ", %v", c.Duration)
	}
	if c.Requests > 0 {
		fmt.Fprintf(&b, ", %d requests", c.Requests)
	}
	if c.Warmup > 0 {
		fmt.Fprintf(&b, " after %v warmup", c.Warmup)
	}
	fmt.Fprintf(&b, "; top_k %d, timeout %v, %d queries\n", c.TopK, c.Timeout, len(c.Queries))
	if r.Canceled {
		b.WriteString("CANCELED: the counts below are partial\n")
	}

	n := r.Counts
	fmt.Fprintf(&b, "requests: %d issued, %d completed: %d ok, %d degraded, %d shed, %d failed",
		n.Issued, n.Completed, n.OK, n.Degraded, n.Shed, n.Failed)
	if len(n.FailedByCode) > 0 {
		parts := make([]string, 0, len(n.FailedByCode))
		for _, code := range slices.Sorted(maps.Keys(n.FailedByCode)) {
			parts = append(parts, fmt.Sprintf("%s %d", code, n.FailedByCode[code]))
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	fmt.Fprintf(&b, "; %d dropped, %d interrupted\n", n.Dropped, n.Interrupted)
	elapsed := time.Duration(r.ElapsedUS) * time.Microsecond
	fmt.Fprintf(&b, "throughput: %.1f/s over %v\n", r.Throughput, elapsed.Round(time.Millisecond))
	if c.Mode == Open {
		b.WriteString("latency includes each request's wait for a free slot; overhead does not\n")
	}

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "latency\tcount\tmean\tp50\tp90\tp99\tp99.9\tmax\t")
	for _, row := range []struct {
		name string
		s    Summary
	}{{"all", r.Latency}, {"ok", r.OKLatency}, {"overhead", r.Overhead}} {
		if row.name == "overhead" && row.s.Count == 0 {
			continue
		}
		s := row.s
		fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t%v\t%v\t%v\t%v\t\n", row.name, s.Count,
			FormatMicros(int64(s.MeanUS)), FormatMicros(s.P50US), FormatMicros(s.P90US), FormatMicros(s.P99US), FormatMicros(s.P999US), FormatMicros(s.MaxUS))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// FormatMicros formats a number of microseconds as a duration with about 3 significant digits
// (the unit of every latency in a Result).
func FormatMicros(v int64) string {
	d := time.Duration(v) * time.Microsecond
	switch {
	case d >= 10*time.Second:
		d = d.Round(100 * time.Millisecond)
	case d >= time.Second:
		d = d.Round(10 * time.Millisecond)
	case d >= 100*time.Millisecond:
		d = d.Round(time.Millisecond)
	case d >= 10*time.Millisecond:
		d = d.Round(100 * time.Microsecond)
	case d >= time.Millisecond:
		d = d.Round(10 * time.Microsecond)
	}
	return d.String()
}
