package benchsuite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"
)

// Config configures [Run]. Only Binary is required.
type Config struct {
	// Binary is the gather binary whose subcommands serve the shards, the proxy and the targets;
	// `gather benchsuite` passes its own (os.Executable).
	Binary string
	// Quick makes every run short (well under a second each, a few workers, 100 idle
	// connections, 20 queries in flight): for tests of the suite itself; the numbers mean little.
	Quick bool
	// LogDir receives each child's stderr (its log, and the proxy's access log), one file per
	// process. Default: a temporary directory, removed after a run without error and kept, and
	// named in the error, otherwise.
	LogDir string
	// Progress, if set, gets a line as each scenario ends (and, with Live, a status line rewritten
	// in place while it runs).
	Progress io.Writer
	// Live rewrites the status line with \r about once a second: for a terminal.
	Live bool
	// CPUProfile, if set, is where a CPU profile of the proxy is saved, taken during the
	// saturation run of gather at fan-out 4, top_k 10.
	CPUProfile string
	// QuietWait is how long, in all, the run may wait before its scenarios for processes outside
	// the suite to stop using the CPU (on a shared machine). 0 means no waiting; the report
	// shows other processes' load either way.
	QuietWait time.Duration
	// IdleConns is the number of idle QS connections opened to the proxy. 0 means 10,000 (100
	// with Quick); negative skips the measurement.
	IdleConns int
	// Parts are the parts of the suite to run: PartCore (the scenarios, the memory measurements)
	// and PartTail (the tail scenario, see [TailResult]). Empty means both.
	Parts []string
	// Plot, if set, is the PNG file the tail scenario's percentile plot is written to.
	Plot string
	// TailRate, if positive, is the tail scenario's open-loop rate instead of half the
	// saturating one.
	TailRate float64
	// FanOuts are the fan-outs of gather's scenarios (the naive baseline's too, from 2 up),
	// ascending. Empty means DefaultFanOuts (QuickFanOuts with Quick).
	FanOuts []int
	// Rounds is how many times every core scenario runs, interleaved: each round runs them all,
	// in an order rotated from the round before, and every ratio is judged on its median over
	// the rounds. 0 means DefaultRounds (2 with Quick).
	Rounds int
	// CostPlot, if set, is the PNG file the cost model's plot (the proxy's CPU per query against
	// the fan-out, with the fit) is written to.
	CostPlot string
}

// DefaultRounds is the number of rounds of the core scenarios unless Config.Rounds says otherwise.
const DefaultRounds = 3

// fanOuts returns the run's fan-outs, ascending and without repeats.
func (c Config) fanOuts() []int {
	f := c.FanOuts
	if len(f) == 0 {
		f = DefaultFanOuts
		if c.Quick {
			f = QuickFanOuts
		}
	}
	f = slices.Clone(f)
	slices.Sort(f)
	return slices.Compact(f)
}

// rounds returns the run's number of rounds.
func (c Config) rounds() int {
	switch {
	case c.Rounds > 0:
		return c.Rounds
	case c.Quick:
		return 2
	}
	return DefaultRounds
}

// The parts of the suite (Config.Parts).
const (
	PartCore = "core"
	PartTail = "tail"
)

// Parts lists every part, in the order a run takes them.
var Parts = []string{PartCore, PartTail}

// runs reports whether the run includes part.
func (c Config) runs(part string) bool {
	return len(c.Parts) == 0 || slices.Contains(c.Parts, part)
}

// The scenarios' fan-outs and top_ks.
var (
	// DefaultFanOuts are gather's fan-outs in a full run; QuickFanOuts with Config.Quick.
	DefaultFanOuts = []int{1, 4, 16, 64, 128}
	QuickFanOuts   = []int{1, 4}
	TopKs          = []int{10, 100}
)

// NaiveMinFanOut is the least fan-out the naive baseline runs at: at fan-out 1 it has nothing
// to merge, and tells nothing gather's fan-out 1 does not.
const NaiveMinFanOut = 2

// ShardProcs is the most processes the fast synthetic shards are served by: fan-out 64 and 128
// put several shards in each (`gather shard --partitions`), so the machine's cores are not
// spent on 128 runtimes; fan-out 16 and below get a process per shard, as before.
const ShardProcs = 16

// HeapFanOut and HeapTopK are the shape of the heap-per-query measurement.
const (
	HeapFanOut = 8
	HeapTopK   = 100
)

// timing holds the lengths and sizes of the runs.
type timing struct {
	satWarmup, sat   time.Duration
	openWarmup, open time.Duration
	workers          int
	heapQueries      int
	heapDelay        time.Duration
	idleConns        int
	idleTimeout      time.Duration
}

func (c Config) timing() timing {
	t := timing{
		satWarmup: time.Second, sat: 4 * time.Second,
		openWarmup: time.Second, open: 5 * time.Second,
		workers:     64,
		heapQueries: 400, heapDelay: 3 * time.Second,
		idleConns: 10_000, idleTimeout: 2 * time.Minute,
	}
	if c.Quick {
		t = timing{
			satWarmup: 100 * time.Millisecond, sat: 250 * time.Millisecond,
			openWarmup: 100 * time.Millisecond, open: 250 * time.Millisecond,
			workers:     8,
			heapQueries: 20, heapDelay: 1200 * time.Millisecond,
			idleConns: 100, idleTimeout: 30 * time.Second,
		}
	}
	switch {
	case c.IdleConns > 0:
		t.idleConns = c.IdleConns
	case c.IdleConns < 0:
		t.idleConns = 0
	}
	return t
}

// Run starts the servers, runs every scenario and the memory measurements, stops every process
// it started, and returns the report (without Go benchmarks and verdicts: see [Judge]). On an
// error, or when ctx ends, it stops at once and returns what it measured so far with the error.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	if cfg.Binary == "" {
		return nil, errors.New("benchsuite: no gather binary")
	}
	start := time.Now()
	t := cfg.timing()
	logDir := cfg.LogDir
	if logDir == "" {
		if logDir, err = os.MkdirTemp("", "gather-benchsuite-"); err != nil {
			return nil, err
		}
		defer func() {
			if err == nil {
				_ = os.RemoveAll(logDir)
			} else {
				err = fmt.Errorf("%w (the processes' logs are in %s)", err, logDir)
			}
		}()
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	s := &suite{
		cfg:       cfg,
		t:         t,
		procs:     &children{bin: cfg.Binary, dir: logDir},
		quietLeft: cfg.QuietWait,
		rep: &Report{
			Schema:  Schema,
			Machine: DescribeMachine(),
			Quick:   cfg.Quick,
			Setup: fmt.Sprintf("saturation: closed loop, %d workers, %v after %v warmup; then an open loop at half "+
				"that QPS, %v after %v warmup; all on 127.0.0.1", t.workers, t.sat, t.satWarmup, t.open, t.openWarmup),
		},
	}
	defer s.procs.stopAll()
	defer func() { s.rep.ElapsedSeconds = time.Since(start).Seconds() }()
	err = s.run(ctx)
	return s.rep, err
}

// suite is the state of one Run.
type suite struct {
	cfg    Config
	t      timing
	procs  *children
	rep    *Report
	shards []string // addresses of the fast synthetic shards, shard-0 first
	// quietLeft is what is left of cfg.QuietWait.
	quietLeft time.Duration
	done      int // scenarios finished, for the progress lines
	total     int
}

func (s *suite) run(ctx context.Context) error {
	for _, p := range s.cfg.Parts {
		if !slices.Contains(Parts, p) {
			return fmt.Errorf("benchsuite: no part %q: want %v", p, Parts)
		}
	}
	if err := s.checkQuiet(ctx); err != nil {
		return err
	}
	if s.cfg.runs(PartCore) {
		if err := s.core(ctx); err != nil {
			return err
		}
	}
	if s.cfg.runs(PartTail) {
		tail, err := s.tail(ctx)
		s.rep.Tail = tail
		if err != nil {
			return err
		}
	}
	return nil
}

// server is one process a core scenario measures: the ceiling, a proxy or a naive baseline.
type server struct {
	kind        Kind
	fanOut      int
	proc        *child
	addr, admin string
}

// core runs the scenarios, interleaved over the rounds, and the memory measurements.
func (s *suite) core(ctx context.Context) error {
	fanOuts, rounds := s.cfg.fanOuts(), s.cfg.rounds()
	maxFan := fanOuts[len(fanOuts)-1]
	s.progressf("starting %d synthetic shards in %d processes", maxFan, min(maxFan, ShardProcs))
	shards, procs, err := s.startShards(ctx, "shard", maxFan, ShardProcs, "none")
	defer stopGroup(procs...) // idle, but the tail scenario need not share the machine with them
	if err != nil {
		return err
	}
	s.shards = shards

	// Every server runs for all the rounds; only the one measured is busy.
	var servers []server
	defer func() {
		for _, sv := range servers {
			stopGroup(sv.proc)
		}
	}()
	start := func(kind Kind, n int, name string, args ...string) error {
		ch, addrs, err := s.procs.start(ctx, name, []*regexp.Regexp{reProxyAddr, reProxyAdmin}, args...)
		if err != nil {
			return err
		}
		servers = append(servers, server{kind: kind, fanOut: n, proc: ch, addr: addrs[0], admin: addrs[1]})
		return nil
	}
	// The ceiling: one canned target answers every top_k.
	if err := start(KindCeiling, 0, "ceiling", "benchsuite", "target", "--kind", "canned", "--listen", "127.0.0.1:0",
		"--admin", "127.0.0.1:0", "--shards", strconv.Itoa(DefaultCannedShards)); err != nil {
		return err
	}
	ceilingAddr := servers[0].addr
	for _, n := range fanOuts {
		if err := start(KindGather, n, fmt.Sprintf("proxy-%d", n), s.proxyArgs(s.shards[:n], "--max-in-flight", "4096")...); err != nil {
			return err
		}
		if n < NaiveMinFanOut {
			continue
		}
		args := []string{"benchsuite", "target", "--kind", "naive", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}
		for i, a := range s.shards[:n] {
			args = append(args, "--shard", ShardName(i)+"="+a)
		}
		if err := start(KindNaive, n, fmt.Sprintf("naive-%d", n), args...); err != nil {
			return err
		}
	}

	type job struct {
		sv   server
		topK int
	}
	var jobs []job
	for _, sv := range servers {
		for _, k := range TopKs {
			jobs = append(jobs, job{sv, k})
		}
	}
	s.total = rounds * len(jobs)
	s.rep.Rounds = rounds
	for r := range rounds {
		// Each round starts a little further down the list: drifts of the machine fall on every
		// server alike.
		off := r * len(jobs) / rounds
		for i := range jobs {
			j := jobs[(off+i)%len(jobs)]
			if err := s.scenario(ctx, r, j.sv.kind, j.sv.fanOut, j.topK, j.sv.proc, j.sv.addr, j.sv.admin); err != nil {
				return err
			}
		}
		for _, k := range TopKs {
			if err := s.hopAtRate(ctx, ceilingAddr, s.rep.scenarioIn(r, KindGather, TargetFanOut, k)); err != nil {
				return err
			}
		}
	}
	s.rep.relateToCeiling()
	if s.rep.Cost = fitCost(s.rep); s.rep.Cost != nil {
		s.progressf("cost model: %s", s.rep.Cost)
		if s.cfg.CostPlot != "" {
			if err := s.rep.Cost.WritePlot(s.cfg.CostPlot); err != nil {
				return fmt.Errorf("cost model plot: %w", err)
			}
		}
	}
	for _, sv := range servers {
		stopGroup(sv.proc)
	}
	servers = nil

	if s.rep.HeapScaling, err = s.heapScaling(ctx, fanOuts); err != nil {
		return err
	}
	s.rep.Heap = s.rep.heapAt(HeapFanOut, HeapTopK)
	if s.t.idleConns > 0 {
		s.progressf("idle QS connections: opening %d", s.t.idleConns)
		if s.rep.Idle, err = s.idleConns(ctx); err != nil {
			return err
		}
		s.progressf("  %s", s.rep.Idle)
	}
	return nil
}

// checkQuiet measures how busy the machine is before the suite starts anything, and warns when
// other processes use a noticeable share of it.
func (s *suite) checkQuiet(ctx context.Context) error {
	window := time.Second
	if s.cfg.Quick {
		window = 200 * time.Millisecond
	}
	pids := s.procs.pids()
	before := sampleLoad(pids)
	t := time.NewTimer(window)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	_, s.rep.BackgroundCores = coresBetween(before, sampleLoad(pids), cores())
	if s.rep.BackgroundCores >= noticeableLoad {
		s.progressf("WARNING: before the start, other processes kept %.2f of %d cores busy: the numbers will be noisy",
			s.rep.BackgroundCores, cores())
	}
	return nil
}

// startShards starts n synthetic shards with the given latency spec and extra flags, served by
// procs processes named prefix-P (at most n; all started at once), and returns the shards'
// addresses in shard order and the processes. Shard i is served by process i mod procs, so the
// first k shards are spread over min(k, procs) processes; every shard is a partition of its own,
// with its own seed. A process that did not start is nil.
func (s *suite) startShards(ctx context.Context, prefix string, n, procs int, latency string, extra ...string) ([]string, []*child, error) {
	procs = max(min(procs, n), 1)
	per := (n + procs - 1) / procs
	addrs := make([]string, n)
	children := make([]*child, procs)
	g, gctx := errgroup.WithContext(ctx)
	for p := range procs {
		g.Go(func() error {
			args := append([]string{"shard", "--synthetic", "--latency", latency, "--listen", "127.0.0.1:0",
				"--partition", fmt.Sprintf("%d/%d", p*per, procs*per), "--log-format", "text"}, extra...)
			if per > 1 {
				args = append(args, "--partitions", strconv.Itoa(per))
			}
			ch, got, err := s.procs.startMany(gctx, fmt.Sprintf("%s-%d", prefix, p), reShardAddr, per, args...)
			if err != nil {
				return err
			}
			children[p] = ch
			for j, a := range got {
				if i := j*procs + p; i < n {
					addrs[i] = a
				}
			}
			return nil
		})
	}
	return addrs, children, g.Wait()
}

// startProxy starts a gather proxy over shards (named shard-0, shard-1, ...) and returns it with
// its QueryService and admin addresses. Its access log goes to its log file; its admin port
// serves pprof, for the suite's CPU profile and heap figures.
func (s *suite) startProxy(ctx context.Context, name string, shards []string, extra ...string) (*child, []string, error) {
	return s.procs.start(ctx, name, []*regexp.Regexp{reProxyAddr, reProxyAdmin}, s.proxyArgs(shards, extra...)...)
}

// proxyArgs are startProxy's arguments to the gather binary.
func (s *suite) proxyArgs(shards []string, extra ...string) []string {
	args := []string{"proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-format", "text", "--pprof"}
	for i, a := range shards {
		args = append(args, "--shard", ShardName(i)+"="+a)
	}
	return append(args, extra...)
}

// progressf prints a progress line, if asked to.
func (s *suite) progressf(format string, args ...any) {
	if s.cfg.Progress == nil {
		return
	}
	if s.cfg.Live {
		fmt.Fprint(s.cfg.Progress, "\r\033[K")
	}
	fmt.Fprintf(s.cfg.Progress, format+"\n", args...)
}

// cores is the number of CPUs the machine's load shares.
func cores() int { return runtime.NumCPU() }
