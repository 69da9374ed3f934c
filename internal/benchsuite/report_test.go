package benchsuite

import (
	"strings"
	"testing"
	"time"

	"github.com/gatherproxy/gather/internal/loadgen"
)

func TestFormatting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		got, want string
	}{
		{loadgen.FormatMicros(0), "0s"},
		{loadgen.FormatMicros(87), "87µs"},
		{loadgen.FormatMicros(1234), "1.23ms"},
		{loadgen.FormatMicros(123456), "123ms"},
		{loadgen.FormatMicros(2_345_678), "2.35s"},
		{bytesIEC(0), "0 B"},
		{bytesIEC(1023), "1023 B"},
		{bytesIEC(2900), "2.8 KiB"},
		{bytesIEC(165 << 20), "165 MiB"},
		{bytesIEC(-80 << 10), "-80.0 KiB"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func sampleReport() *Report {
	r := &Report{
		Machine: Machine{CPU: "Test CPU", Cores: 2, MemoryGiB: 4, Kernel: "6.1", OS: "linux/amd64", Go: "go1.26",
			Date: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)},
		Setup: "setup line",
		Scenarios: []Scenario{
			{Kind: KindCeiling, TopK: 10, ResponseBytes: 2900, QPS: 20000, RelCeiling: 1, BusyCores: 1.95, Rate: 10000,
				MachineCPUPerQueryUS: 97.5,
				Latency:              loadgen.Summary{P50US: 250, P90US: 400, P99US: 900, P999US: 2000, MaxUS: 5000},
				Overhead:             loadgen.Summary{P50US: 240, P99US: 880}},
			{Kind: KindGather, FanOut: 4, TopK: 10, ResponseBytes: 2950, QPS: 3800, RelCeiling: 0.95, BusyCores: 1.9, OtherCores: 0.03,
				MachineCPUPerQueryUS: 500,
				ServerCPUPerQueryUS:  252, ServerAllocBytesPerQuery: 87.2 * 1024, ServerAllocsPerQuery: 1493, Rate: 1900,
				Latency:  loadgen.Summary{P50US: 812, P90US: 1500, P99US: 3100, P999US: 6000, MaxUS: 9000},
				Overhead: loadgen.Summary{P50US: 120, P99US: 700}, Errors: 2, Dropped: 5},
		},
		Rounds: 2,
		Heap: &HeapResult{FanOut: 8, TopK: 100, Queries: 400, ShardDelayMS: 3000, HeapBefore: 12 << 20, HeapDuring: 34 << 20,
			HeapPerQuery: 55 << 10},
		Idle: &IdleResult{Requested: 10000, Ready: 10000, RSSBefore: 27 << 20, RSSAfter: 192 << 20},
	}
	// A second round of gather, a little faster; it counts its shards' hits.
	g := r.Scenarios[1]
	g.Round, g.QPS, g.RelCeiling, g.ServerCPUPerQueryUS, g.Rate, g.Errors, g.Dropped = 1, 4200, 1.05, 248, 2100, 0, 0
	g.HitsReceivedPerQuery, g.HitsDecodedPerQuery = ptr(40), ptr(8)
	r.Scenarios = append(r.Scenarios, g)
	Judge(r, mergeResults(1000, 20000, 2, 2))
	return r
}

func TestWriteText(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	if err := sampleReport().WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"gather benchsuite on Test CPU, 2 cores, 4.0 GiB RAM, kernel 6.1 (linux/amd64), go1.26, 2025-01-02 03:04 UTC",
		"heap 55.0 KiB per in-flight query",
		"10000 connections READY",
		"NOT MET      10000 idle QS connections",
		"NOT MEASURED QPS ≥ ceiling/(N+1)",
		"fan-out 4: 4000 q/s against ceiling 20000/5: 0.95× ceiling/(N+1); fan-out 16: not measured", // round 2 had no ceiling
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
	// The rows, cell by cell (a cell may hold spaces, so compare the fields of the whole line).
	rows := map[string][]string{}
	for line := range strings.SplitSeq(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			rows[f[0]] = f
		}
	}
	for _, want := range []string{
		"server N top_k rounds answer QPS ÷ ceil/(N+1) busy cores (others) CPU/q srv CPU/q srv CPU/shard call srv alloc/q srv allocs/q " +
			"hits recv/q hits decoded/q half-load rate p50 p90 p99 p99.9 max added p50 added p99 errors",
		"ceiling - 10 1 2.8 KiB 20000 1.00 1.95 (0.00) 97µs 0s - 0 B 0 n/a n/a 10000/s 250µs 400µs 900µs 2ms 5ms 240µs 880µs 0",
		"gather 4 10 2 2.9 KiB 4000 (3800–4200) 1.00 (0.95–1.05) 1.90 (0.03) 500µs 250µs (248µs–252µs) 62µs 87.2 KiB 1493 40 8 2000/s " +
			"812µs 1.5ms 3.1ms 6ms 9ms 120µs 700µs 2 (+5 dropped)",
	} {
		f := strings.Fields(want)
		if got := strings.Join(rows[f[0]], " "); got != want {
			t.Errorf("row\n got %s\nwant %s", got, want)
		}
	}
}

func TestWriteMarkdown(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	if err := sampleReport().WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	var rows []string
	for line := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(line, "| ceiling |") || strings.HasPrefix(line, "| gather |") {
			rows = append(rows, line)
		}
	}
	if len(rows) != 2 {
		t.Fatalf("%d scenario rows, want 2:\n%s", len(rows), out)
	}
	header, _ := sampleReport().table()
	for _, row := range rows {
		if got := strings.Count(row, "|"); got != len(header)+1 {
			t.Errorf("row has %d cells, the header %d: %s", got-1, len(header), row)
		}
	}
	for _, want := range []string{
		"**Machine:** Test CPU",
		"|---|---|---|--:|",
		"| 64 | 1000 | 1000 | 20000 | 20.0× | 2 | 0 |",
		"| 10000 idle QS connections cost the proxy ≤ 100 MiB of RSS | **NOT MET** | 10000 idle connections: RSS +165 MiB |",
		"| **NOT MEASURED** | merge: losertree 1000 ns/op, sort 20000 ns/op: 20.0× faster;",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
}
