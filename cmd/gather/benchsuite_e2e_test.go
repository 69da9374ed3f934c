package main

import (
	"encoding/json"
	"fmt"
	"image/png"
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
	costPath := filepath.Join(dir, "cost.png")
	p, rep := benchsuiteReport(t, jsonPath, "--quick", "--parts", "core", "--gobench", gobench, "--json", jsonPath, "--markdown", mdPath,
		"--cpuprofile", profPath, "--cost-plot", costPath, "--logs", filepath.Join(dir, "logs"))
	// Per round: the ceiling, gather at every fan-out, naive at every fan-out but 1; each at both top_ks.
	const rounds = 2
	fanOuts := len(benchsuite.QuickFanOuts)
	if want := rounds * len(benchsuite.TopKs) * (1 + fanOuts + fanOuts - 1); len(rep.Scenarios) != want || rep.Rounds != rounds {
		t.Fatalf("%d scenarios in %d rounds, want %d in %d", len(rep.Scenarios), rep.Rounds, want, rounds)
	}
	perRound := map[int]int{}
	for _, sc := range rep.Scenarios {
		perRound[sc.Round]++
	}
	if perRound[0] != perRound[1] || rep.Scenarios[0].Label() == rep.Scenarios[len(rep.Scenarios)/2].Label() {
		t.Errorf("rounds of %v scenarios, the second starting with %s like the first: want equal rounds in rotated orders",
			perRound, rep.Scenarios[0].Label())
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
	if h := rep.Heap; h == nil || h.Queries == 0 || h.HeapDuring == 0 || h.GoroutinesDuring <= h.GoroutinesBefore ||
		h.FanOut != benchsuite.HeapFanOut || h.TopK != benchsuite.HeapTopK {
		t.Errorf("heap per query: %+v", h)
	}
	if len(rep.HeapScaling) != 1 {
		t.Errorf("heap per query at %d shapes, want 1 (the target's, with --quick)", len(rep.HeapScaling))
	}
	if i := rep.Idle; i == nil || (i.Skipped == "" && (i.Ready != i.Requested || i.FDsAfter-i.FDsBefore < i.Ready*9/10)) {
		t.Errorf("idle connections: %+v", i)
	}
	if len(rep.Targets) != 9 || !strings.Contains(rep.Targets[6].Detail, "merge: losertree 50000 ns/op, sort 900000 ns/op: 18.0× faster") ||
		rep.Targets[7].Status != benchsuite.NotMeasured {
		t.Errorf("targets: %+v; want 9, the no-regression one judging the given merge benchmark lines, the tail ones not measured", rep.Targets)
	}
	if c := rep.Cost; c == nil || len(c.Points) != fanOuts*len(benchsuite.TopKs) || len(c.Projections) != len(benchsuite.TopKs) {
		t.Errorf("cost model %+v; want one fitted to gather's %d scenarios", c, fanOuts*len(benchsuite.TopKs))
	}
	if f, err := os.Open(costPath); err != nil {
		t.Errorf("no cost plot: %v", err)
	} else {
		if _, err := png.Decode(f); err != nil {
			t.Errorf("the cost plot is not a PNG: %v", err)
		}
		_ = f.Close()
	}
	if rep.Tail != nil {
		t.Errorf("--parts core ran the tail scenario: %+v", rep.Tail)
	}

	out := p.out()
	for _, want := range []string{"QUICK RUN", "server", "naive", "targets:", "idle QS connections", "cost model: proxy CPU per query"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if last := fmt.Sprintf("[%3d/%d] r%d ", len(rep.Scenarios), len(rep.Scenarios), rounds); !strings.Contains(p.errOut(), last) {
		t.Errorf("no progress line for the last scenario on stderr:\n%s", p.errOut())
	}
	md, err := os.ReadFile(mdPath)
	if err != nil || !strings.Contains(string(md), "| gather | 4 | 10 | 2 |") {
		t.Errorf("markdown report (%v):\n%s", err, md)
	}
	if st, err := os.Stat(profPath); err != nil || st.Size() == 0 {
		t.Errorf("no CPU profile of the proxy: %v", err)
	}
	// Every server ran as a process of its own, each with its log.
	logs, err := os.ReadDir(filepath.Join(dir, "logs"))
	// 4 shards, the ceiling, 2 proxies and a naive target, 4 slow-shard processes and 2 proxies for
	// the memory measurements.
	if err != nil || len(logs) < 14 {
		t.Errorf("%d log files (%v), want one per process", len(logs), err)
	}
}

// TestBenchsuiteTailQuick runs `gather benchsuite --quick --parts tail`: the tail scenario with
// every shard and proxy a real process, its table, the verdicts and the plot. It checks what
// holds whatever the machine's speed: every setting measured in every round, the proxies' own
// counters read, hedges only where hedging is on, the plot a PNG the Markdown links to.
func TestBenchsuiteTailQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs about 25 processes")
	}
	t.Parallel()
	dir := t.TempDir()
	jsonPath, mdPath, plotPath := filepath.Join(dir, "report.json"), filepath.Join(dir, "report.md"), filepath.Join(dir, "img", "tail.png")
	if err := os.Mkdir(filepath.Dir(plotPath), 0o755); err != nil {
		t.Fatal(err)
	}
	p, rep := benchsuiteReport(t, jsonPath, "--quick", "--parts", "tail", "--json", jsonPath, "--markdown", mdPath,
		"--plot", plotPath, "--logs", filepath.Join(dir, "logs"))
	if len(rep.Scenarios) != 0 || rep.Heap != nil {
		t.Errorf("--parts tail ran the core scenarios: %d scenarios, heap %+v", len(rep.Scenarios), rep.Heap)
	}
	tail := rep.Tail
	if tail == nil || tail.Rate <= 0 || tail.SaturationOff <= 0 || tail.SaturationOn <= 0 || len(tail.Settings) != 4 {
		t.Fatalf("tail: %+v", tail)
	}
	for _, s := range tail.Settings {
		if len(s.Rounds) != tail.Rounds || s.Latency.Count == 0 || s.Latency.HDR == "" || s.Queries < float64(s.Latency.Count) {
			t.Errorf("%s: %d rounds (want %d), %d latencies, %v queries by the proxy's count", s.Label, len(s.Rounds), tail.Rounds, s.Latency.Count, s.Queries)
		}
		// Every query calls each of the 4 shards at least once.
		if calls := s.CallsPerQuery(); calls < benchsuite.TailShards {
			t.Errorf("%s: %.3f shard calls per query, want at least %d", s.Label, calls, benchsuite.TailShards)
		}
		hedging := s.Key == benchsuite.TailOn || s.Key == benchsuite.TailHung
		if s.Hedges["won"]+s.Hedges["lost"]+s.Hedges["denied"] > 0 && !hedging {
			t.Errorf("%s: hedges %v with hedging off", s.Label, s.Hedges)
		}
		// Only the hung setting has hung replicas; in a quick run the proxy may have learned to
		// avoid them during the warmup, so none of the measured calls need go there.
		if s.HungAttempt > 0 && s.Key != benchsuite.TailHung {
			t.Errorf("%s: %v attempts on hung replicas", s.Label, s.HungAttempt)
		}
	}
	if _, ok := tail.Extra(benchsuite.TailOn); !ok {
		t.Error("no extra shard calls for hedging on")
	}
	if len(rep.Targets) != 9 || rep.Targets[7].Status == benchsuite.NotMeasured || rep.Targets[8].Status == benchsuite.NotMeasured ||
		rep.Targets[0].Status != benchsuite.NotMeasured {
		t.Errorf("targets: %+v; want 9, the tail's two judged, the others not measured", rep.Targets)
	}
	f, err := os.Open(plotPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("the plot is not a PNG: %v", err)
	}
	md, err := os.ReadFile(mdPath)
	if err != nil || !strings.Contains(string(md), "](img/tail.png)") || !strings.Contains(string(md), "| hedging on |") {
		t.Errorf("markdown report (%v), want the tail table and the plot linked from its directory:\n%s", err, md)
	}
	if out := p.out(); !strings.Contains(out, "tail (issue 9)") || !strings.Contains(out, "floor: no slow calls") {
		t.Errorf("stdout lacks the tail section:\n%s", out)
	}
}

// benchsuiteReport runs gather benchsuite with args, waits at most 3 minutes for it to succeed, and
// returns the process and the report it wrote to jsonPath.
func benchsuiteReport(t *testing.T, jsonPath string, args ...string) (*process, benchsuite.Report) {
	t.Helper()
	p := startGather(t, append([]string{"benchsuite"}, args...)...)
	select {
	case <-p.exited:
	case <-time.After(3 * time.Minute):
		t.Fatalf("gather benchsuite %s still running after 3 minutes", strings.Join(args, " "))
	}
	if p.exitErr != nil {
		t.Fatalf("gather benchsuite: %v\nstdout:\n%s\nstderr:\n%s", p.exitErr, p.out(), p.errOut())
	}
	var rep benchsuite.Report
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	return p, rep
}
