package benchsuite

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/gatherproxy/gather/internal/loadgen"
)

// Schema names the JSON layout of a Report.
const Schema = "gather.benchsuite.v1"

// Kind is the server a scenario measures.
type Kind string

// The servers.
const (
	KindCeiling Kind = "ceiling" // Canned: a raw grpc-go unary hop with gather's payload
	KindGather  Kind = "gather"  // gather proxy
	KindNaive   Kind = "naive"   // Naive: unary fan-out, wait for all, concatenate, sort
)

// Report is what a suite run measured, and (after [Judge]) how it compares with the targets.
// Its JSON form has snake_case names; durations are microseconds (*_us) or milliseconds (*_ms).
type Report struct {
	Schema  string  `json:"schema"`
	Machine Machine `json:"machine"`
	// Quick is set for a --quick run, whose numbers mean little.
	Quick bool `json:"quick"`
	// Setup says how long the runs were and how they were paced.
	Setup string `json:"setup"`
	// BackgroundCores is how many cores other processes kept busy just before the run.
	BackgroundCores float64 `json:"background_cores"`
	// Rounds is how many times each core scenario ran, interleaved with the others.
	Rounds int `json:"rounds"`
	// Scenarios holds every round of every scenario.
	Scenarios []Scenario `json:"scenarios"`
	// Heap is the proxy's heap per in-flight query at the target's shape (HeapFanOut,
	// HeapTopK); nil if not measured. HeapScaling holds it at every shape measured.
	Heap        *HeapResult  `json:"heap_per_query,omitempty"`
	HeapScaling []HeapResult `json:"heap_per_query_scaling,omitempty"`
	// Cost is the cost model fitted to gather's CPU per query; nil without enough scenarios.
	Cost *CostModel `json:"cost_model,omitempty"`
	// Idle is the cost of idle QS connections; nil if not measured.
	Idle *IdleResult `json:"idle_connections,omitempty"`
	// Tail is the tail scenario (hedging off against on); nil if it did not run.
	Tail *TailResult `json:"tail,omitempty"`
	// GoBench are the Go benchmark results given to Judge.
	GoBench []GoBench `json:"go_benchmarks,omitempty"`
	// Targets are the verdicts of Judge.
	Targets        []Verdict `json:"targets,omitempty"`
	ElapsedSeconds float64   `json:"elapsed_seconds"`
}

// Scenario is one server at one fan-out and top_k.
type Scenario struct {
	Kind Kind `json:"kind"`
	// FanOut is the number of shards per query; 0 for the ceiling, which has none.
	FanOut int `json:"fan_out"`
	TopK   int `json:"top_k"`
	// Round is the round (from 0) the scenario was measured in.
	Round int `json:"round"`
	// ResponseBytes is the encoded size of one answer.
	ResponseBytes int `json:"response_bytes"`

	// QPS is the throughput of the saturation run.
	QPS float64 `json:"qps"`
	// RelCeiling is QPS compared with what the ceiling allows a query of FanOut+1 RPCs at the same
	// top_k: QPS × (FanOut+1) / ceiling QPS. 1 for the ceiling itself.
	RelCeiling float64 `json:"qps_vs_ceiling_per_rpc"`
	// BusyCores is the machine's average number of busy cores during the saturation run, and
	// OtherCores how many of them were busy with processes outside the suite (noise);
	// OtherCoresOpen is the same during the open loop.
	BusyCores      float64 `json:"busy_cores"`
	OtherCores     float64 `json:"other_cores"`
	OtherCoresOpen float64 `json:"other_cores_open_loop"`
	// MachineCPUPerQueryUS is the machine's busy CPU time per query at saturation: the server's,
	// its shards' and the load generator's.
	MachineCPUPerQueryUS float64 `json:"machine_cpu_per_query_us"`
	// The server process's CPU time, bytes allocated and allocations per query in the saturation
	// run (its shards not included), from its admin /metrics.
	ServerCPUPerQueryUS      float64 `json:"server_cpu_per_query_us"`
	ServerAllocBytesPerQuery float64 `json:"server_alloc_bytes_per_query"`
	ServerAllocsPerQuery     float64 `json:"server_allocs_per_query"`
	// HitsReceivedPerQuery and HitsDecodedPerQuery are the hits the proxy parsed out of its
	// shards' messages and those it decoded in full, per query in the saturation run, from its
	// gather_shard_hits_received_total and gather_shard_hits_decoded_total; nil where the server
	// has no such counter.
	HitsReceivedPerQuery *float64 `json:"hits_received_per_query,omitempty"`
	HitsDecodedPerQuery  *float64 `json:"hits_decoded_per_query,omitempty"`

	// Rate is the open loop's rate: half QPS.
	Rate float64 `json:"open_loop_rate"`
	// Latency and Overhead are those of the open loop (without their histograms, which are in
	// Open): every completed request's latency, and the latency added over the slowest shard.
	Latency  loadgen.Summary `json:"latency"`
	Overhead loadgen.Summary `json:"overhead"`
	// HopAtRate, measured for gather at the targets' fan-out only, is the ceiling's latency at
	// this scenario's open-loop rate and top_k: a raw hop carrying the same answer at the same
	// load, the floor under gather's added latency.
	HopAtRate *loadgen.Summary `json:"raw_hop_at_rate,omitempty"`
	// Errors counts the requests of both runs that were not answered in full; Dropped, the open
	// loop's requests that could not even be sent.
	Errors  int64 `json:"errors"`
	Dropped int64 `json:"dropped"`
	// CPUProfile is the file of the CPU profile taken during the saturation run, if one was.
	CPUProfile string `json:"cpu_profile,omitempty"`

	Saturation *loadgen.Result `json:"saturation"`
	Open       *loadgen.Result `json:"open_loop"`
}

// Label names the scenario, e.g. "gather fan-out 4 top_k 10".
func (sc *Scenario) Label() string {
	if sc.Kind == KindCeiling {
		return fmt.Sprintf("%s top_k %d", sc.Kind, sc.TopK)
	}
	return fmt.Sprintf("%s fan-out %d top_k %d", sc.Kind, sc.FanOut, sc.TopK)
}

// summarize fills the summary fields from the two runs.
func (sc *Scenario) summarize() {
	o := sc.Open
	sc.Rate = o.Config.Rate
	sc.Latency, sc.Overhead = o.Latency, o.Overhead
	sc.Latency.HDR, sc.Overhead.HDR = "", ""
	sc.Errors = o.Counts.Completed - o.Counts.OK
	if s := sc.Saturation; s != nil {
		sc.Errors += s.Counts.Completed - s.Counts.OK
	}
	sc.Dropped = o.Counts.Dropped
}

// HeapResult is the proxy's heap per in-flight query.
type HeapResult struct {
	FanOut       int   `json:"fan_out"`
	TopK         int   `json:"top_k"`
	Queries      int   `json:"queries"`
	ShardDelayMS int64 `json:"shard_delay_ms"`
	// Degraded counts the measured round's answers that came back degraded (a shard call failed
	// after the measurement: on an overloaded machine).
	Degraded int `json:"degraded,omitempty"`
	// Heap in use, goroutine stacks in use and goroutines, after a GC, before the round and while
	// its queries were in flight.
	HeapBefore       uint64 `json:"heap_inuse_before"`
	HeapDuring       uint64 `json:"heap_inuse_during"`
	StackBefore      uint64 `json:"stack_inuse_before"`
	StackDuring      uint64 `json:"stack_inuse_during"`
	GoroutinesBefore int    `json:"goroutines_before"`
	GoroutinesDuring int    `json:"goroutines_during"`
	// The growth divided by Queries.
	HeapPerQuery       float64 `json:"heap_per_query"`
	StackPerQuery      float64 `json:"stack_per_query"`
	GoroutinesPerQuery float64 `json:"goroutines_per_query"`
}

func (h *HeapResult) String() string {
	s := fmt.Sprintf("heap %s per in-flight query (%s → %s for %d queries); goroutine stacks %s and %.1f goroutines per query",
		bytesIEC(h.HeapPerQuery), bytesIEC(float64(h.HeapBefore)), bytesIEC(float64(h.HeapDuring)), h.Queries,
		bytesIEC(h.StackPerQuery), h.GoroutinesPerQuery)
	if h.Degraded > 0 {
		s += fmt.Sprintf(" (%d answers degraded after the measurement)", h.Degraded)
	}
	return s
}

// IdleResult is what idle QS connections cost the proxy.
type IdleResult struct {
	Requested int `json:"requested"`
	// Ready is how many reached READY in time (all of them, unless Note says otherwise).
	Ready          int     `json:"ready"`
	ConnectSeconds float64 `json:"connect_seconds"`
	// Skipped says why the measurement was not made; the other fields are then 0.
	Skipped string `json:"skipped,omitempty"`
	Note    string `json:"note,omitempty"`
	// The proxy's resident memory, heap in use, stacks, goroutines and open descriptors, each
	// after a GC, before the connections and with them open.
	RSSBefore        uint64 `json:"rss_before"`
	RSSAfter         uint64 `json:"rss_after"`
	HeapBefore       uint64 `json:"heap_inuse_before"`
	HeapAfter        uint64 `json:"heap_inuse_after"`
	StackBefore      uint64 `json:"stack_inuse_before"`
	StackAfter       uint64 `json:"stack_inuse_after"`
	GoroutinesBefore int    `json:"goroutines_before"`
	GoroutinesAfter  int    `json:"goroutines_after"`
	FDsBefore        int    `json:"fds_before"`
	FDsAfter         int    `json:"fds_after"`
}

// RSSPerConn is the resident memory each ready connection added.
func (r *IdleResult) RSSPerConn() float64 {
	if r.Ready == 0 {
		return 0
	}
	return (float64(r.RSSAfter) - float64(r.RSSBefore)) / float64(r.Ready)
}

func (r *IdleResult) String() string {
	if r.Skipped != "" {
		return "skipped: " + r.Skipped
	}
	per := func(a, b uint64) string { return bytesIEC((float64(b) - float64(a)) / float64(max(r.Ready, 1))) }
	s := fmt.Sprintf("%d connections READY in %.1fs: RSS %s → %s (+%s, %s each); heap +%s (%s each), stacks +%s (%s each), "+
		"goroutines %d → %d, fds %d → %d",
		r.Ready, r.ConnectSeconds, bytesIEC(float64(r.RSSBefore)), bytesIEC(float64(r.RSSAfter)),
		bytesIEC(float64(r.RSSAfter)-float64(r.RSSBefore)), bytesIEC(r.RSSPerConn()),
		bytesIEC(float64(r.HeapAfter)-float64(r.HeapBefore)), per(r.HeapBefore, r.HeapAfter),
		bytesIEC(float64(r.StackAfter)-float64(r.StackBefore)), per(r.StackBefore, r.StackAfter),
		r.GoroutinesBefore, r.GoroutinesAfter, r.FDsBefore, r.FDsAfter)
	if r.Note != "" {
		s += " (" + r.Note + ")"
	}
	return s
}

// table is the scenario table: one header, one row per scenario with its medians over the rounds
// (and, for the throughput and CPU columns, their range).
func (r *Report) table() (header []string, rows [][]string) {
	header = []string{"server", "N", "top_k", "rounds", "answer", "QPS", "÷ ceil/(N+1)", "busy cores (others)",
		"CPU/q", "srv CPU/q", "srv CPU/shard call", "srv alloc/q", "srv allocs/q", "hits recv/q", "hits decoded/q", "half-load rate",
		"p50", "p90", "p99", "p99.9", "max", "added p50", "added p99", "errors"}
	num := func(format string) func(float64) string {
		return func(v float64) string { return fmt.Sprintf(format, v) }
	}
	us := func(v float64) string { return loadgen.FormatMicros(int64(v)) }
	for _, g := range r.groups() {
		med := func(f func(*Scenario) float64) float64 { return g.spread(f).Median }
		n, perCall := "-", "-"
		if g.Kind != KindCeiling {
			n = fmt.Sprint(g.FanOut)
			perCall = us(med(func(sc *Scenario) float64 { return sc.ServerCPUPerQueryUS / float64(sc.FanOut) }))
		}
		var errs, dropped int64
		others := 0.0
		for _, sc := range g.Rounds {
			errs += sc.Errors
			dropped += sc.Dropped
			others = max(others, sc.OtherCores, sc.OtherCoresOpen)
		}
		errText := fmt.Sprint(errs)
		if dropped > 0 {
			errText += fmt.Sprintf(" (+%d dropped)", dropped)
		}
		lat := func(f func(loadgen.Summary) int64) string {
			return us(med(func(sc *Scenario) float64 { return float64(f(sc.Latency)) }))
		}
		added := func(f func(loadgen.Summary) int64) string {
			return us(med(func(sc *Scenario) float64 { return float64(f(sc.Overhead)) }))
		}
		rows = append(rows, []string{
			string(g.Kind), n, fmt.Sprint(g.TopK), fmt.Sprint(len(g.Rounds)),
			bytesIEC(med(func(sc *Scenario) float64 { return float64(sc.ResponseBytes) })),
			g.spread(func(sc *Scenario) float64 { return sc.QPS }).format(num("%.0f")),
			g.spread(func(sc *Scenario) float64 { return sc.RelCeiling }).format(num("%.2f")),
			fmt.Sprintf("%.2f (%.2f)", med(func(sc *Scenario) float64 { return sc.BusyCores }), others),
			us(med(func(sc *Scenario) float64 { return sc.MachineCPUPerQueryUS })),
			g.spread(func(sc *Scenario) float64 { return sc.ServerCPUPerQueryUS }).format(us),
			perCall,
			bytesIEC(med(func(sc *Scenario) float64 { return sc.ServerAllocBytesPerQuery })),
			fmt.Sprintf("%.0f", med(func(sc *Scenario) float64 { return sc.ServerAllocsPerQuery })),
			g.spread(func(sc *Scenario) float64 { return optional(sc.HitsReceivedPerQuery) }).format(num("%.0f")),
			g.spread(func(sc *Scenario) float64 { return optional(sc.HitsDecodedPerQuery) }).format(num("%.0f")),
			fmt.Sprintf("%.0f/s", med(func(sc *Scenario) float64 { return sc.Rate })),
			lat(func(s loadgen.Summary) int64 { return s.P50US }), lat(func(s loadgen.Summary) int64 { return s.P90US }),
			lat(func(s loadgen.Summary) int64 { return s.P99US }), lat(func(s loadgen.Summary) int64 { return s.P999US }),
			lat(func(s loadgen.Summary) int64 { return s.MaxUS }),
			added(func(s loadgen.Summary) int64 { return s.P50US }), added(func(s loadgen.Summary) int64 { return s.P99US }),
			errText,
		})
	}
	return header, rows
}

// legend explains the table's columns.
const legend = `Each cell is the median over the rounds (each round runs every scenario, interleaved); where a range follows, it is the least and largest round.
QPS: saturation (closed loop). ÷ ceil/(N+1): QPS × (N+1) / ceiling QPS at the same top_k in the same round (a query at fan-out N costs N+1 RPCs).
busy cores: the machine's during the saturation run; (others): the most that processes outside the suite kept busy, in either run (noise).
CPU/q: the machine's busy time per query at saturation (server, shards, load generator); srv CPU/q, alloc/q, allocs/q: the server process's own; srv CPU/shard call: srv CPU/q ÷ N.
hits recv/q, hits decoded/q: hits the proxy parsed out of shard messages, and decoded in full, per query (its gather_shard_hits_received_total and gather_shard_hits_decoded_total; n/a without them).
p50 to max: latency of an open loop at half the saturating QPS. added: that latency less the slowest shard's, as the server reports it (the ceiling has no shards: its added latency is the whole round trip).`

// WriteText writes the report as text: the setup, the scenario table, the memory measurements,
// the Go benchmarks and the verdicts.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "gather benchsuite on %s\n%s\n", r.Machine, r.Setup)
	if r.Quick {
		b.WriteString("QUICK RUN: runs are too short for the numbers to mean much\n")
	}
	if r.BackgroundCores >= noticeableLoad {
		fmt.Fprintf(&b, "WARNING: other processes kept %.2f cores busy before the run\n", r.BackgroundCores)
	}
	b.WriteString("\n")
	if len(r.Scenarios) > 0 {
		if err := writeAligned(&b, r.table); err != nil {
			return err
		}
		b.WriteString("\n" + legend + "\n")
	}
	if c := r.Cost; c != nil {
		fmt.Fprintf(&b, "\ncost model: %s\n", c)
		if err := writeAligned(&b, c.table); err != nil {
			return err
		}
		for _, l := range c.projectionLines() {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	if len(r.HeapScaling) > 0 {
		b.WriteString("\nproxy heap per in-flight query (queries waiting on delayed shards):\n")
		for i := range r.HeapScaling {
			h := &r.HeapScaling[i]
			fmt.Fprintf(&b, "  fan-out %d, top_k %d: %s; heap and stacks %s per shard call\n", h.FanOut, h.TopK, h, bytesIEC((h.HeapPerQuery+h.StackPerQuery)/float64(h.FanOut)))
		}
	} else if r.Heap != nil {
		fmt.Fprintf(&b, "\nproxy heap per in-flight query (fan-out %d, top_k %d, %d queries waiting on shards delayed %dms): %s\n",
			r.Heap.FanOut, r.Heap.TopK, r.Heap.Queries, r.Heap.ShardDelayMS, r.Heap)
	}
	if r.Idle != nil {
		fmt.Fprintf(&b, "idle QS connections to the proxy: %s\n", r.Idle)
	}
	if r.Tail != nil {
		if err := r.Tail.writeText(&b); err != nil {
			return err
		}
	}
	if len(r.GoBench) > 0 {
		b.WriteString("\nGo benchmarks:\n")
		writeMergeTable(&b, r.GoBench, false)
		for _, g := range otherBenchmarks(r.GoBench) {
			fmt.Fprintf(&b, "  %s\n", g)
		}
	}
	if len(r.Targets) > 0 {
		b.WriteString("\ntargets:\n")
		for _, v := range r.Targets {
			fmt.Fprintf(&b, "  %-12s %s\n  %12s %s\n", v.Status, v.Target, "", v.Detail)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteMarkdown writes the report as the body of a Markdown section: the machine, the table, the
// memory measurements, the Go benchmarks and the verdicts.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString("**Machine:** " + r.Machine.String() + "  \n")
	b.WriteString("**Setup:** " + r.Setup + "\n")
	if r.Quick {
		b.WriteString("\n**Quick run**: the runs are too short for the numbers to mean much.\n")
	}
	if r.BackgroundCores >= noticeableLoad {
		fmt.Fprintf(&b, "\n**Warning**: other processes kept %.2f cores busy before the run.\n", r.BackgroundCores)
	}
	if len(r.Scenarios) > 0 {
		b.WriteString("\n")
		writeMarkdownTable(&b, r.table, 3)
		b.WriteString("\n" + strings.ReplaceAll(legend, "\n", "  \n") + "\n")
	}
	if c := r.Cost; c != nil {
		fmt.Fprintf(&b, "\n**Cost model:** %s.\n\n", c)
		writeMarkdownTable(&b, c.table, 0)
		b.WriteString("\n")
		for _, l := range c.projectionLines() {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	if len(r.HeapScaling) > 0 {
		b.WriteString("\n**Proxy heap per in-flight query** (queries waiting on delayed shards):\n\n")
		for i := range r.HeapScaling {
			h := &r.HeapScaling[i]
			fmt.Fprintf(&b, "- fan-out %d, top_k %d: %s; heap and stacks %s per shard call\n", h.FanOut, h.TopK, h, bytesIEC((h.HeapPerQuery+h.StackPerQuery)/float64(h.FanOut)))
		}
	} else if r.Heap != nil {
		fmt.Fprintf(&b, "\n**Proxy heap per in-flight query** (fan-out %d, top_k %d, %d queries waiting on shards delayed %dms): %s.\n",
			r.Heap.FanOut, r.Heap.TopK, r.Heap.Queries, r.Heap.ShardDelayMS, r.Heap)
	}
	if r.Idle != nil {
		fmt.Fprintf(&b, "\n**Idle QS connections** to the proxy: %s.\n", r.Idle)
	}
	if r.Tail != nil {
		r.Tail.writeMarkdown(&b)
	}
	if len(r.GoBench) > 0 {
		b.WriteString("\n**Go benchmarks**\n\n")
		writeMergeTable(&b, r.GoBench, true)
		if others := otherBenchmarks(r.GoBench); len(others) > 0 {
			b.WriteString("\n```\n")
			for _, g := range others {
				fmt.Fprintf(&b, "%s\n", g)
			}
			b.WriteString("```\n")
		}
	}
	if len(r.Targets) > 0 {
		b.WriteString("\n**Targets**\n\n| target | verdict | measured |\n|---|---|---|\n")
		for _, v := range r.Targets {
			fmt.Fprintf(&b, "| %s | **%s** | %s |\n", v.Target, v.Status, v.Detail)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeAligned writes the table that table returns as text, in right-aligned columns.
func writeAligned(b *strings.Builder, table func() ([]string, [][]string)) error {
	header, rows := table()
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, row := range rows {
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	return tw.Flush()
}

// writeMarkdownTable writes the table that table returns as Markdown, its first left columns
// aligned left and the others right.
func writeMarkdownTable(b *strings.Builder, table func() ([]string, [][]string), left int) {
	header, rows := table()
	b.WriteString("| " + strings.Join(header, " | ") + " |\n|")
	for i := range header {
		if i < left {
			b.WriteString("---|")
		} else {
			b.WriteString("--:|")
		}
	}
	b.WriteString("\n")
	for _, row := range rows {
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
}

// bytesIEC formats a byte count with a binary unit, e.g. "3.1 KiB", "-12 B".
func bytesIEC(v float64) string {
	sign := ""
	if v < 0 {
		sign, v = "-", -v
	}
	units := []string{"B", "KiB", "MiB", "GiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%s%.0f B", sign, v)
	}
	if v >= 100 {
		return fmt.Sprintf("%s%.0f %s", sign, v, units[i])
	}
	return fmt.Sprintf("%s%.1f %s", sign, v, units[i])
}
