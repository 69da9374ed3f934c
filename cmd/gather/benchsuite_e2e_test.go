package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatherproxy/gather/internal/benchsuite"
)

// TestBenchsuiteQuick runs `gather benchsuite --quick`: every server a real process, every
// scenario, the memory measurements, and the report in all three forms. It checks the report's
// shape and what must hold whatever the machine's speed, never the speed itself.
func TestBenchsuiteQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs about 25 processes")
	}
	t.Parallel()
	dir := t.TempDir()
	gobench := filepath.Join(dir, "gobench.txt")
	if err := os.WriteFile(gobench, []byte("pkg: github.com/gatherproxy/gather/internal/merge\n"+
		"BenchmarkMerge/N=64/K=10/impl=losertree-2 100 1000 ns/op 2 allocs/op\n"+
		"BenchmarkMerge/N=64/K=10/impl=sort-2 100 9000 ns/op 0 allocs/op\n"+
		"BenchmarkMerge/N=64/K=1000/impl=losertree-2 100 50000 ns/op 2 allocs/op\n"+
		"BenchmarkMerge/N=64/K=1000/impl=sort-2 100 900000 ns/op 0 allocs/op\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	jsonPath, mdPath, profPath := filepath.Join(dir, "report.json"), filepath.Join(dir, "report.md"), filepath.Join(dir, "cpu.pprof")
	p := startGather(t, "benchsuite", "--quick", "--gobench", gobench, "--json", jsonPath, "--markdown", mdPath,
		"--cpuprofile", profPath, "--logs", filepath.Join(dir, "logs"))
	select {
	case <-p.exited:
	case <-time.After(3 * time.Minute):
		t.Fatal("gather benchsuite --quick still running after 3 minutes")
	}
	if p.exitErr != nil {
		t.Fatalf("gather benchsuite --quick: %v\nstdout:\n%s\nstderr:\n%s", p.exitErr, p.out(), p.errOut())
	}

	var rep benchsuite.Report
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if want := len(benchsuite.TopKs) * (1 + 2*len(benchsuite.FanOuts)); len(rep.Scenarios) != want {
		t.Fatalf("%d scenarios, want %d", len(rep.Scenarios), want)
	}
	size := map[string]int{}
	for _, sc := range rep.Scenarios {
		if sc.QPS <= 0 || sc.Rate <= 0 || sc.Latency.Count == 0 || sc.Overhead.Count == 0 || sc.Saturation == nil || sc.Open == nil {
			t.Errorf("%s: QPS %v, rate %v, %d latencies, %d overheads", sc.Label(), sc.QPS, sc.Rate, sc.Latency.Count, sc.Overhead.Count)
		}
		if sc.Kind != benchsuite.KindCeiling && sc.Overhead.P50US > sc.Latency.P50US {
			t.Errorf("%s: added latency p50 %dµs above the latency p50 %dµs", sc.Label(), sc.Overhead.P50US, sc.Latency.P50US)
		}
		if sc.ServerCPUPerQueryUS <= 0 || sc.ServerAllocsPerQuery <= 0 {
			t.Errorf("%s: server CPU %vµs, %v allocations per query, from its /metrics", sc.Label(), sc.ServerCPUPerQueryUS, sc.ServerAllocsPerQuery)
		}
		if hop := sc.HopAtRate; (sc.Kind == benchsuite.KindGather && sc.FanOut == benchsuite.TargetFanOut) != (hop != nil && hop.Count > 0) {
			t.Errorf("%s: raw hop at its rate %+v; want one for gather at fan-out %d only", sc.Label(), hop, benchsuite.TargetFanOut)
		}
		size[sc.Label()] = sc.ResponseBytes
	}
	// The ceiling carries gather's payload: its answer is the size of gather's at its fan-out.
	for _, k := range benchsuite.TopKs {
		c := size[(&benchsuite.Scenario{Kind: benchsuite.KindCeiling, TopK: k}).Label()]
		g := size[(&benchsuite.Scenario{Kind: benchsuite.KindGather, FanOut: benchsuite.DefaultCannedShards, TopK: k}).Label()]
		n := size[(&benchsuite.Scenario{Kind: benchsuite.KindNaive, FanOut: benchsuite.DefaultCannedShards, TopK: k}).Label()]
		if g == 0 || c < g*98/100 || c > g*102/100 || n < g*98/100 || n > g*102/100 {
			t.Errorf("top_k %d: answers of %d (ceiling), %d (gather) and %d (naive) bytes; want within 2%%", k, c, g, n)
		}
	}
	if h := rep.Heap; h == nil || h.Queries == 0 || h.HeapDuring == 0 || h.GoroutinesDuring <= h.GoroutinesBefore {
		t.Errorf("heap per query: %+v", h)
	}
	if i := rep.Idle; i == nil || (i.Skipped == "" && (i.Ready != i.Requested || i.FDsAfter-i.FDsBefore < i.Ready*9/10)) {
		t.Errorf("idle connections: %+v", i)
	}
	if len(rep.Targets) != 4 || rep.Targets[2].Status != benchsuite.Met {
		t.Errorf("targets: %+v; want 4, the merge one met on the given benchmark lines", rep.Targets)
	}

	out := p.out()
	for _, want := range []string{"QUICK RUN", "server", "naive", "targets:", "idle QS connections"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(p.errOut(), "[14/14] naive fan-out 16 top_k 100") {
		t.Errorf("no progress line for the last scenario on stderr:\n%s", p.errOut())
	}
	md, err := os.ReadFile(mdPath)
	if err != nil || !strings.Contains(string(md), "| gather | 4 | 10 |") {
		t.Errorf("markdown report (%v):\n%s", err, md)
	}
	if st, err := os.Stat(profPath); err != nil || st.Size() == 0 {
		t.Errorf("no CPU profile of the proxy: %v", err)
	}
	// Every server ran as a process of its own, each with its log.
	logs, err := os.ReadDir(filepath.Join(dir, "logs"))
	if err != nil || len(logs) < 20 {
		t.Errorf("%d log files (%v), want one per process", len(logs), err)
	}
}
