package benchsuite

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/loadgen"
)

// scenario measures one server at one top_k: a probe query for the answer's size, a warmup, a
// saturation run bracketed by scrapes of the server's admin /metrics, then an open loop at half
// the saturating QPS. The result is appended to the report.
func (s *suite) scenario(ctx context.Context, round int, kind Kind, fanOut, topK int, server *child, addr, adminAddr string) error {
	sc := Scenario{Kind: kind, FanOut: fanOut, TopK: topK, Round: round}
	label := sc.Label()
	if err := s.settle(ctx); err != nil {
		return err
	}
	s.done++
	prefix := fmt.Sprintf("[%3d/%d] r%d %-28s", s.done, s.total, round+1, label)
	fail := func(err error) error {
		if aerr := server.alive(); aerr != nil {
			err = fmt.Errorf("%w; %w", err, aerr)
		}
		return fmt.Errorf("%s: %w", label, err)
	}

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fail(err)
	}
	defer func() { _ = conn.Close() }()
	client := queryv1.NewQueryServiceClient(conn)

	// The probe: the server answers, fully, with this many bytes.
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	resp, err := client.Search(pctx, &queryv1.SearchRequest{Query: loadgen.DefaultQueries[0], TopK: uint32(topK)})
	cancel()
	if err != nil {
		return fail(fmt.Errorf("probe query: %w", err))
	}
	if len(resp.GetHits()) != topK || resp.GetCoverage().GetDegraded() {
		return fail(fmt.Errorf("probe query: %d hits (want %d), coverage %v", len(resp.GetHits()), topK, resp.GetCoverage()))
	}
	sc.ResponseBytes = proto.Size(resp)

	base := loadgen.Config{TopK: uint32(topK), Timeout: 5 * time.Second}
	run := func(phase string, c loadgen.Config) (*loadgen.Result, error) {
		if s.cfg.Live && s.cfg.Progress != nil {
			c.Progress = func(p loadgen.Progress) {
				fmt.Fprintf(s.cfg.Progress, "\r\033[K%s %-9s %s", prefix, phase, p)
			}
		}
		res, err := loadgen.Run(ctx, client, c)
		if err == nil && res.Canceled {
			err = ctx.Err()
		}
		return res, err
	}

	// Saturation: warm up, then a measured closed loop between two scrapes of the server.
	warm := base
	warm.Mode, warm.Workers, warm.Duration = loadgen.Closed, s.t.workers, s.t.satWarmup
	if _, err := run("warmup", warm); err != nil {
		return fail(err)
	}
	adm := newAdmin(adminAddr)
	before, err := adm.metrics(ctx)
	if err != nil {
		return fail(err)
	}
	pids := s.procs.pids()
	loadBefore := sampleLoad(pids)
	sat := base
	sat.Mode, sat.Workers, sat.Duration = loadgen.Closed, s.t.workers, s.t.sat
	if sc.Saturation, err = run("saturate", sat); err != nil {
		return fail(err)
	}
	sc.BusyCores, sc.OtherCores = coresBetween(loadBefore, sampleLoad(pids), cores())
	if t := sc.Saturation.Throughput; t > 0 {
		sc.MachineCPUPerQueryUS = sc.BusyCores / t * 1e6
	}
	after, err := adm.metrics(ctx)
	if err != nil {
		return fail(err)
	}
	if s.cfg.CPUProfile != "" && round == 0 && kind == KindGather && fanOut == TargetFanOut && topK == TopKs[0] {
		// Profiled apart from the measured run, which the profiler would slow down.
		if sc.CPUProfile, err = s.profile(ctx, run, sat, adm); err != nil {
			return fail(err)
		}
	}
	sc.QPS = sc.Saturation.Throughput
	if n := float64(sc.Saturation.Counts.Completed); n > 0 {
		sc.ServerCPUPerQueryUS = (after.get(mCPU) - before.get(mCPU)) * 1e6 / n
		sc.ServerAllocBytesPerQuery = (after.get(mAllocBytes) - before.get(mAllocBytes)) / n
		sc.ServerAllocsPerQuery = (after.get(mMallocs) - before.get(mMallocs)) / n
		perQuery := func(name string) *float64 {
			v, ok := after.lookup(name)
			if !ok {
				return nil
			}
			x := (v - before.get(name)) / n
			return &x
		}
		sc.HitsReceivedPerQuery, sc.HitsDecodedPerQuery = perQuery(mHitsReceived), perQuery(mHitsDecoded)
	}
	if sc.QPS <= 0 {
		return fail(fmt.Errorf("no query completed in the saturation run (%+v)", sc.Saturation.Counts))
	}

	// Half the saturating load, open loop: the latency a caller sees at a sane load.
	open := base
	open.Mode, open.Rate, open.Warmup = loadgen.Open, sc.QPS/2, s.t.openWarmup
	open.Duration = s.openWindow(open.Rate)
	loadBefore = sampleLoad(pids)
	if sc.Open, err = run("half load", open); err != nil {
		return fail(err)
	}
	_, sc.OtherCoresOpen = coresBetween(loadBefore, sampleLoad(pids), cores())
	sc.summarize()
	if err := server.alive(); err != nil {
		return fail(err)
	}
	if kind == KindCeiling {
		sc.RelCeiling = 1
	} else if c := s.rep.ceilingNear(round, topK); c != nil {
		sc.RelCeiling = sc.QPS * float64(sc.FanOut+1) / c.QPS
	}
	s.rep.Scenarios = append(s.rep.Scenarios, sc)
	if s.cfg.Progress != nil {
		if s.cfg.Live {
			fmt.Fprint(s.cfg.Progress, "\r\033[K")
		}
		fmt.Fprintf(s.cfg.Progress, "%s %8.0f q/s  %5.2f× ceiling/(N+1)  at half load: p50 %s  p99 %s  added p50 %s  p99 %s  errors %d%s\n",
			prefix, sc.QPS, sc.RelCeiling, loadgen.FormatMicros(sc.Latency.P50US), loadgen.FormatMicros(sc.Latency.P99US),
			loadgen.FormatMicros(sc.Overhead.P50US), loadgen.FormatMicros(sc.Overhead.P99US), sc.Errors, otherLoadWarning(max(sc.OtherCores, sc.OtherCoresOpen)))
	}
	return nil
}

// hopAtRate measures the ceiling (at addr) at sc's open-loop rate and top_k: the latency of a
// raw hop with gather's answer at the load gather was measured at, the floor under its added
// latency.
func (s *suite) hopAtRate(ctx context.Context, addr string, sc *Scenario) error {
	if sc == nil {
		return nil
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	res, err := loadgen.Run(ctx, queryv1.NewQueryServiceClient(conn), loadgen.Config{
		Mode: loadgen.Open, Rate: sc.Rate, TopK: uint32(sc.TopK), Warmup: s.t.openWarmup, Duration: s.openWindow(sc.Rate),
	})
	if err == nil && res.Canceled {
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("raw hop at the rate of %s: %w", sc.Label(), err)
	}
	h := res.Latency
	h.HDR = ""
	sc.HopAtRate = &h
	s.progressf("        raw hop (ceiling) at %.0f/s, top_k %d, for comparison: p50 %s  p99 %s",
		sc.Rate, sc.TopK, loadgen.FormatMicros(h.P50US), loadgen.FormatMicros(h.P99US))
	return nil
}

// profile saves a CPU profile of the server at adm, taken while run drives it with cfg again,
// to the configured file, and returns the file's absolute path.
func (s *suite) profile(ctx context.Context, run func(string, loadgen.Config) (*loadgen.Result, error),
	cfg loadgen.Config, adm admin,
) (string, error) {
	path, err := filepath.Abs(s.cfg.CPUProfile)
	if err != nil {
		return "", err
	}
	var (
		wg      sync.WaitGroup
		profErr error
	)
	// The profile covers the middle of the run: it starts once the load has and ends before it.
	cfg.Warmup, cfg.Duration = 0, s.t.sat
	wg.Go(func() { profErr = adm.cpuProfile(ctx, s.t.sat-s.t.sat/4, path) })
	_, err = run("profile", cfg)
	wg.Wait()
	if err != nil {
		return "", err
	}
	if profErr != nil {
		return "", fmt.Errorf("cpu profile: %w", profErr)
	}
	return path, nil
}

// otherLoadWarning says, if others is noticeable, that processes outside the suite used that
// many cores during a measurement.
func otherLoadWarning(others float64) string {
	if others < noticeableLoad {
		return ""
	}
	return fmt.Sprintf("  WARNING: other processes used %.2f cores", others)
}

// noticeableLoad is the CPU use, in cores, of processes outside the suite above which its
// numbers are flagged as disturbed.
const noticeableLoad = 0.1

// settleSample is the window over which settle measures other processes' load.
const settleSample = 500 * time.Millisecond

// settle waits until processes outside the suite leave the machine alone (use less than
// noticeableLoad cores over settleSample), for as long as the run's QuietWait budget lasts; with
// no budget left it returns at once.
func (s *suite) settle(ctx context.Context) error {
	waited, start := false, time.Now()
	for s.quietLeft > 0 {
		pids := s.procs.pids()
		before := sampleLoad(pids)
		t := time.NewTimer(settleSample)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		_, others := coresBetween(before, sampleLoad(pids), cores())
		if others < noticeableLoad {
			if waited {
				s.progressf("        quiet again after %v", time.Since(start).Round(100*time.Millisecond))
			}
			return nil
		}
		s.quietLeft -= settleSample
		if !waited {
			s.progressf("waiting for other processes to leave the machine alone (%.2f cores busy; %v of waiting left)",
				others, s.quietLeft.Round(time.Second))
			waited = true
		}
	}
	if waited {
		s.progressf("still busy, and the --quiet-wait budget is spent: going on")
	}
	return nil
}

// minOpenRequests is the fewest requests an open loop's measured window is made long enough for:
// with --quick on a loaded machine the saturation run can measure so few queries a second that
// the short window would hold none of them.
const minOpenRequests = 20

// openWindow is the measured window of an open loop at rate: the configured one, or longer if
// that would hold fewer than minOpenRequests, up to 20 times the configured one.
func (s *suite) openWindow(rate float64) time.Duration {
	if rate <= 0 {
		return s.t.open
	}
	return min(max(s.t.open, time.Duration(minOpenRequests/rate*float64(time.Second))), 20*s.t.open)
}
