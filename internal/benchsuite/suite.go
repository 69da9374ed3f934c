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
	FanOuts = []int{1, 4, 16}
	TopKs   = []int{10, 100}
)

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

// core runs the scenarios and the memory measurements of issue 5.
func (s *suite) core(ctx context.Context) error {
	s.total = len(TopKs) * (1 + 2*len(FanOuts))
	maxFan := FanOuts[len(FanOuts)-1]
	s.progressf("starting %d synthetic shards", maxFan)
	shards, procs, err := s.startShards(ctx, "shard", maxFan, "none")
	defer stopGroup(procs...) // idle, but the tail scenario need not share the machine with them
	if err != nil {
		return err
	}
	s.shards = shards

	// The ceiling: one canned target answers every top_k.
	ceiling, addrs, err := s.procs.start(ctx, "ceiling", []*regexp.Regexp{reProxyAddr, reProxyAdmin},
		"benchsuite", "target", "--kind", "canned", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
		"--shards", strconv.Itoa(DefaultCannedShards))
	if err != nil {
		return err
	}
	for _, k := range TopKs {
		if err := s.scenario(ctx, KindCeiling, 0, k, ceiling, addrs[0], addrs[1]); err != nil {
			return err
		}
	}
	ceilingAddr := addrs[0] // kept serving for the raw hop at gather's rate, below

	for _, n := range FanOuts {
		proxy, paddrs, err := s.startProxy(ctx, fmt.Sprintf("proxy-%d", n), s.shards[:n], "--max-in-flight", "4096")
		if err != nil {
			return err
		}
		for _, k := range TopKs {
			if err := s.scenario(ctx, KindGather, n, k, proxy, paddrs[0], paddrs[1]); err != nil {
				return err
			}
		}
		stopGroup(proxy)
		if n == TargetFanOut {
			for _, k := range TopKs {
				if err := s.hopAtRate(ctx, ceilingAddr, s.rep.scenario(KindGather, n, k)); err != nil {
					return err
				}
			}
			stopGroup(ceiling)
		}
		naiveArgs := []string{"benchsuite", "target", "--kind", "naive", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}
		for i, a := range s.shards[:n] {
			naiveArgs = append(naiveArgs, "--shard", ShardName(i)+"="+a)
		}
		naive, naddrs, err := s.procs.start(ctx, fmt.Sprintf("naive-%d", n), []*regexp.Regexp{reProxyAddr, reProxyAdmin}, naiveArgs...)
		if err != nil {
			return err
		}
		for _, k := range TopKs {
			if err := s.scenario(ctx, KindNaive, n, k, naive, naddrs[0], naddrs[1]); err != nil {
				return err
			}
		}
		stopGroup(naive)
	}

	s.progressf("heap per in-flight query: %d queries at fan-out %d, top_k %d, shards delayed %v",
		s.t.heapQueries, HeapFanOut, HeapTopK, s.t.heapDelay)
	if s.rep.Heap, err = s.heapPerQuery(ctx); err != nil {
		return err
	}
	s.progressf("  %s", s.rep.Heap)
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

// startShards starts n synthetic shards named prefix-I serving partition I/n with the given
// latency spec and extra flags, all at once, and returns their addresses and processes in order
// (nil for those that did not start).
func (s *suite) startShards(ctx context.Context, prefix string, n int, latency string, extra ...string) ([]string, []*child, error) {
	addrs := make([]string, n)
	procs := make([]*child, n)
	g, gctx := errgroup.WithContext(ctx)
	for i := range n {
		g.Go(func() error {
			ch, got, err := s.procs.start(gctx, fmt.Sprintf("%s-%d", prefix, i), []*regexp.Regexp{reShardAddr},
				append([]string{"shard", "--synthetic", "--latency", latency, "--listen", "127.0.0.1:0",
					"--partition", fmt.Sprintf("%d/%d", i, n), "--log-format", "text"}, extra...)...)
			if err != nil {
				return err
			}
			addrs[i], procs[i] = got[0], ch
			return nil
		})
	}
	return addrs, procs, g.Wait()
}

// startProxy starts a gather proxy over shards (named shard-0, shard-1, ...) and returns it with
// its QueryService and admin addresses. Its access log goes to its log file; its admin port
// serves pprof, for the suite's CPU profile and heap figures.
func (s *suite) startProxy(ctx context.Context, name string, shards []string, extra ...string) (*child, []string, error) {
	args := []string{"proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-format", "text", "--pprof"}
	for i, a := range shards {
		args = append(args, "--shard", ShardName(i)+"="+a)
	}
	return s.procs.start(ctx, name, []*regexp.Regexp{reProxyAddr, reProxyAdmin}, append(args, extra...)...)
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
