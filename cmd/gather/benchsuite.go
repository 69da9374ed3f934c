package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/benchsuite"
	"github.com/gatherproxy/gather/internal/synthetic"
)

// runBenchsuite runs the benchmark suite of `make bench` and prints its table; as
// `gather benchsuite target`, it serves one of the suite's comparison targets instead.
func runBenchsuite(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "target" {
		return runBenchTarget(ctx, args[1:], stdout, stderr)
	}
	fs := newFlags("benchsuite", "[--quick] [--parts core,tail] [--rounds N] [--fan-outs 4,16,64] [--cost-plot FILE] [--tail-rate R] [--markdown FILE] [--json FILE] [--plot FILE] [--gobench FILE] [--cpuprofile FILE] [--logs DIR] [--idle-conns N] [--quiet-wait D]\n"+
		"       gather benchsuite target --kind canned|naive --listen ADDR [--admin ADDR] [--shard NAME=ADDR ...]   (the suite's own helper)", stderr)
	quick := fs.Bool("quick", false, "make every run short, for testing the suite (the numbers mean little)")
	markdown := fs.String("markdown", "", "also write the report as Markdown to this `file`")
	jsonOut := fs.String("json", "", "also write the report as JSON to this `file` ('-' for stdout)")
	gobench := fs.String("gobench", "", "`file` with the output of go test -bench (merge, proxy): its results join the report and the verdicts")
	cpuprofile := fs.String("cpuprofile", "", "save a CPU profile of the proxy, taken during its saturation run at fan-out 4, top_k 10, to this `file`")
	logs := fs.String("logs", "", "`directory` for the processes' logs (default: a temporary one, removed after a clean run)")
	quietWait := fs.Duration("quiet-wait", 0, "on a shared machine, wait up to this long in all, before the scenarios, for other processes to stop using the CPU")
	idle := fs.Int("idle-conns", 0, "idle QS connections to open to the proxy (default 10000, 100 with --quick; -1 skips)")
	parts := fs.String("parts", strings.Join(benchsuite.Parts, ","), "comma-separated `parts` to run: core (gather vs a raw hop vs naive, memory) and tail (hedging off vs on, issue 9)")
	plotFile := fs.String("plot", "", "write the tail scenario's percentile plot to this PNG `file`")
	tailRate := fs.Float64("tail-rate", 0, "the tail scenario's open-loop `rate` in queries per second (default: half the saturating rate)")
	rounds := fs.Int("rounds", 0, fmt.Sprintf("run every core scenario this many `times`, interleaved, and judge each ratio on its median (default %d, 2 with --quick)", benchsuite.DefaultRounds))
	fanOutList := fs.String("fan-outs", "", fmt.Sprintf("comma-separated `fan-outs` of gather and the naive baseline (default %s; %s with --quick)",
		joinInts(benchsuite.DefaultFanOuts), joinInts(benchsuite.QuickFanOuts)))
	costPlot := fs.String("cost-plot", "", "write the cost model's plot (proxy CPU per query against fan-out, with the fit) to this PNG `file`")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("benchsuite: unexpected arguments %q", fs.Args())
	}
	if *rounds < 0 {
		return fmt.Errorf("--rounds %d: give 1 or more (0: the default)", *rounds)
	}
	var fanOuts []int
	if *fanOutList != "" {
		for f := range strings.SplitSeq(*fanOutList, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > maxBenchFanOut {
				return fmt.Errorf("--fan-outs: %q is not a fan-out from 1 to %d", f, maxBenchFanOut)
			}
			fanOuts = append(fanOuts, n)
		}
	}
	var partList []string
	for p := range strings.SplitSeq(*parts, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(benchsuite.Parts, p) {
			return fmt.Errorf("--parts: no part %q: want a comma-separated list of %s", p, strings.Join(benchsuite.Parts, ", "))
		}
		partList = append(partList, p)
	}
	var gb []benchsuite.GoBench
	if *gobench != "" {
		f, err := os.Open(*gobench)
		if err != nil {
			return fmt.Errorf("--gobench: %w", err)
		}
		gb, err = benchsuite.ParseGoBench(f)
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("--gobench %s: %w", *gobench, err)
		}
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("benchsuite: finding the gather binary: %w", err)
	}
	rep, runErr := benchsuite.Run(ctx, benchsuite.Config{
		Binary: bin, Quick: *quick, LogDir: *logs, Progress: stderr, Live: isTerminal(stderr),
		CPUProfile: *cpuprofile, IdleConns: *idle, QuietWait: *quietWait, Parts: partList, Plot: *plotFile, TailRate: *tailRate,
		FanOuts: fanOuts, Rounds: *rounds, CostPlot: *costPlot,
	})
	if rep == nil {
		return fmt.Errorf("benchsuite: %w", runErr)
	}
	benchsuite.Judge(rep, gb)
	if t := rep.Tail; t != nil && t.Plot != "" && *markdown != "" {
		// The Markdown report links to the plot from where it is.
		md, err1 := filepath.Abs(*markdown)
		png, err2 := filepath.Abs(t.Plot)
		if rel, err := filepath.Rel(filepath.Dir(md), png); err1 == nil && err2 == nil && err == nil {
			t.PlotLink = filepath.ToSlash(rel)
		}
	}
	fmt.Fprintln(stdout)
	if err := rep.WriteText(stdout); err != nil {
		return err
	}
	if *markdown != "" {
		var b strings.Builder
		if err := rep.WriteMarkdown(&b); err != nil {
			return err
		}
		if err := os.WriteFile(*markdown, []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	if *jsonOut != "" {
		if err := writeJSON(*jsonOut, stdout, rep); err != nil {
			return err
		}
	}
	if runErr != nil {
		return fmt.Errorf("benchsuite: %w", runErr)
	}
	return nil
}

// maxBenchFanOut is the largest fan-out --fan-outs accepts: a proxy over that many local shards.
const maxBenchFanOut = 1024

// joinInts formats ns as "1,4,16".
func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// isTerminal reports whether w is a character device, where a progress line may be rewritten
// in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// runBenchTarget serves a comparison target of the suite on a plain grpc-go server: no
// interceptors, no keepalive policy, no health or reflection. Only the admin port (metrics and
// pprof, for the suite's per-query CPU and allocation figures) is gather's.
func runBenchTarget(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("benchsuite target", "--kind canned|naive --listen ADDR [--admin ADDR] [--shards N] [--text-bytes N] [--shard NAME=ADDR ...]", stderr)
	kind := fs.String("kind", "", "canned: answer every Search at once with a prebuilt answer of gather's size (the ceiling); "+
		"naive: fan out unary-style to --shard, wait for all, concatenate, sort (the baseline)")
	listen := fs.String("listen", "127.0.0.1:0", "QueryService `address`")
	admin := fs.String("admin", "", "admin HTTP `address` for /metrics and /debug/pprof/ (default: none)")
	shardCount := fs.Int("shards", benchsuite.DefaultCannedShards, "canned: ShardResults per answer, as from this fan-out")
	textBytes := fs.Int("text-bytes", synthetic.DefaultTextBytes, "canned: bytes of text per hit, as the synthetic shards send")
	var shards shardFlags
	fs.Var(&shards, "shard", "naive: a shard as `NAME=ADDR` (the first replica is used); repeat for each shard")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("benchsuite target: unexpected arguments %q", fs.Args())
	}
	var svc queryv1.QueryServiceServer
	switch *kind {
	case "canned":
		svc = benchsuite.NewCanned(*shardCount, *textBytes)
	case "naive":
		list := make([]benchsuite.Shard, len(shards))
		for i, s := range shards {
			list[i] = benchsuite.Shard{Name: s.Name, Addr: s.Replicas[0]}
		}
		naive, err := benchsuite.NewNaive(list)
		if err != nil {
			return fmt.Errorf("benchsuite target: %w", err)
		}
		defer func() { _ = naive.Close() }()
		svc = naive
		*shardCount = len(list)
	default:
		return fmt.Errorf("benchsuite target: --kind %q: want canned or naive", *kind)
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	srv := grpc.NewServer()
	queryv1.RegisterQueryServiceServer(srv, svc)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		srv.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			fmt.Fprintln(stderr, "benchsuite target:", err)
		}
	}()
	adminAt := "none"
	if *admin != "" {
		// pprof always: the suite profiles its targets.
		a, err := newAdminServer(*admin, prometheus.NewRegistry(), func() error { return nil }, adminOptions{pprof: true})
		if err != nil {
			return err
		}
		a.Start()
		defer func() {
			stopCtx, cancel := graceContext(ctx, time.Second)
			defer cancel()
			a.Stop(stopCtx)
		}()
		adminAt = "http://" + a.Addr()
	}
	// The same shape as gather proxy's line, which the suite parses.
	fmt.Fprintf(stdout, "gather benchsuite target: %s QueryService on %s, admin on %s, %d shards\n", *kind, lis.Addr(), adminAt, *shardCount)
	<-ctx.Done()
	return nil
}
