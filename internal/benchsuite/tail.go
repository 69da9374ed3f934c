package benchsuite

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/loadgen"
)

// The shape of the tail scenario (issue 9): TailShards shards of TailReplicas replicas each,
// every replica a synthetic shard with the TailLatency model: 2ms, but one call in 100 takes 50
// times as long.
const (
	TailShards   = 4
	TailReplicas = 2
	TailLatency  = "slow:2ms,1in100,x50"
	// TailFloorLatency is TailLatency without its slow calls: the latency of the floor setting.
	TailFloorLatency = "fixed:2ms"
)

// The settings of the tail scenario, each a gather proxy of its own over the same shard
// processes.
const (
	// TailOff is hedging off (--hedge-budget 0): every slow call lands in the answer.
	TailOff = "off"
	// TailOn is hedging on, with the defaults (p95 delay, 5% budget).
	TailOn = "on"
	// TailHung is hedging on, with the second replica of every shard hung (a synthetic shard
	// with --fault hang: it never sends a message).
	TailHung = "hung"
	// TailFloor is hedging off over shards of their own with TailFloorLatency: no slow call at
	// all, the best any hedging could do on the machine at that rate.
	TailFloor = "floor"
)

// tailSettings are the settings in the order of the first round; each round rotates it by one.
var tailSettings = []string{TailOff, TailOn, TailHung, TailFloor}

// tailLabel describes a setting for the report.
func tailLabel(key string) string {
	switch key {
	case TailOff:
		return "hedging off"
	case TailOn:
		return "hedging on"
	case TailHung:
		return "hedging on, 1 replica of each shard hung"
	case TailFloor:
		return "floor: no slow calls, hedging off"
	}
	return key
}

// Metrics of the proxy the tail scenario reads.
const (
	mQueries    = "gather_queries_total"
	mSelections = "gather_replica_selections_total"
	mHedges     = "gather_shard_hedges_total"
	mDenied     = "gather_shard_hedges_denied_total"
	mRetries    = "gather_shard_retries_total"
	mHedgeDelay = "gather_shard_hedge_delay_seconds"
)

// The outcomes and denial reasons the proxy labels hedges with.
var (
	hedgeOutcomes = []string{"won", "lost", "failed", "denied"}
	denyReasons   = []string{"budget", "slow_shard", "no_candidate", "deadline"}
)

// TailResult is the tail scenario: the same shards behind a proxy with hedging off, one with
// hedging on, and one with hedging on whose shards each have a hung replica, driven in turn by
// open loops at the same rate, in rounds.
type TailResult struct {
	Shards   int    `json:"shards"`
	Replicas int    `json:"replicas"`
	Latency  string `json:"latency"`
	// SaturationOff and SaturationOn are the QPS of closed loops (Workers) against a proxy with
	// hedging off and one with hedging on (throwaway proxies: the measured ones start fresh).
	SaturationOff float64 `json:"saturation_qps_off"`
	SaturationOn  float64 `json:"saturation_qps_on"`
	Workers       int     `json:"saturation_workers"`
	// Rate is the open loops' rate: half the lower saturation QPS, unless RateGiven.
	Rate         float64 `json:"rate"`
	RateGiven    bool    `json:"rate_given,omitempty"`
	Rounds       int     `json:"rounds"`
	RoundSeconds float64 `json:"round_seconds"`
	// Settings are TailOff, TailOn, TailHung and TailFloor, in that order.
	Settings []TailSetting `json:"settings"`
	// Plot is the PNG file of the percentile plot, if one was written. PlotLink is how the
	// Markdown report links to it (set by whoever writes both; default Plot).
	Plot     string `json:"plot,omitempty"`
	PlotLink string `json:"-"`
}

// TailSetting is one setting over every round.
type TailSetting struct {
	Key   string `json:"key"`
	Label string `json:"label"`
	// Latency is every completed request's, all rounds merged (with its histogram).
	Latency loadgen.Summary `json:"latency"`
	Counts  loadgen.Counts  `json:"counts"`
	Rounds  []TailRound     `json:"rounds"`
	// The proxy's own counters over the measured rounds: queries answered, shard-call attempts
	// sent (first attempts, hedges and retries), hedges by outcome and denials by reason,
	// retries started, and attempts sent to hung replicas.
	Queries     float64            `json:"queries"`
	ShardCalls  float64            `json:"shard_calls"`
	Hedges      map[string]float64 `json:"hedges"`
	Denied      map[string]float64 `json:"hedges_denied"`
	Retries     float64            `json:"retries"`
	HungAttempt float64            `json:"attempts_on_hung_replicas"`
}

// TailRound is one setting in one round.
type TailRound struct {
	Round int       `json:"round"`
	Start time.Time `json:"start"`
	// Latency is the round's (without its histogram).
	Latency loadgen.Summary `json:"latency"`
	// BusyCores is how many cores were busy during the round, OtherCores how many of them with
	// processes outside the suite; LoadAvg is the machine's 1-minute load average at its end.
	BusyCores  float64 `json:"busy_cores"`
	OtherCores float64 `json:"other_cores"`
	LoadAvg    float64 `json:"load_average"`
	Queries    float64 `json:"queries"`
	ShardCalls float64 `json:"shard_calls"`
	// HedgeDelayUS is the largest hedge delay of the proxy's shards at the round's end (0 when
	// hedging is off).
	HedgeDelayUS int64 `json:"hedge_delay_us"`
}

// CallsPerQuery is the shard-call attempts the proxy sent per query.
func (s *TailSetting) CallsPerQuery() float64 {
	if s.Queries == 0 {
		return 0
	}
	return s.ShardCalls / s.Queries
}

// HedgesStarted is the hedges the proxy started (won, lost or failed).
func (s *TailSetting) HedgesStarted() float64 {
	return s.Hedges["won"] + s.Hedges["lost"] + s.Hedges["failed"]
}

// HedgeDelayRange is the least and the largest of the rounds' hedge delays.
func (s *TailSetting) HedgeDelayRange() (lo, hi int64) {
	for i, r := range s.Rounds {
		if i == 0 || r.HedgeDelayUS < lo {
			lo = r.HedgeDelayUS
		}
		hi = max(hi, r.HedgeDelayUS)
	}
	return lo, hi
}

// Setting returns the setting key, or nil.
func (t *TailResult) Setting(key string) *TailSetting {
	if t == nil {
		return nil
	}
	for i := range t.Settings {
		if t.Settings[i].Key == key {
			return &t.Settings[i]
		}
	}
	return nil
}

// Extra is the extra shard calls of setting key against hedging off: its shard calls per query
// over hedging off's, less one. ok is false if either was not measured.
func (t *TailResult) Extra(key string) (extra float64, ok bool) {
	s, off := t.Setting(key), t.Setting(TailOff)
	if s == nil || off == nil || s.Queries == 0 || off.CallsPerQuery() == 0 {
		return 0, false
	}
	return s.CallsPerQuery()/off.CallsPerQuery() - 1, true
}

// tailTiming is the tail scenario's part of timing.
type tailTiming struct {
	satWarmup, sat time.Duration
	// warmOff warms the proxy with hedging off; warmHedged each proxy that hedges, long enough
	// that a slice of its hedge delay's window ends after it has samples (hedge.DefaultRefresh),
	// so the rounds run with a measured delay rather than the initial one.
	warmOff, warmHedged time.Duration
	rounds              int
	round               time.Duration
}

func (c Config) tailTiming() tailTiming {
	if c.Quick {
		return tailTiming{satWarmup: 100 * time.Millisecond, sat: 250 * time.Millisecond,
			warmOff: 100 * time.Millisecond, warmHedged: 200 * time.Millisecond, rounds: 2, round: 300 * time.Millisecond}
	}
	return tailTiming{satWarmup: time.Second, sat: 3 * time.Second,
		warmOff: 2 * time.Second, warmHedged: 6 * time.Second, rounds: 5, round: 6 * time.Second}
}

// tailTarget is one proxy of the tail scenario and what the rounds gathered of it.
type tailTarget struct {
	key    string
	proc   *child
	conn   *grpc.ClientConn
	client queryv1.QueryServiceClient
	adm    admin
	hung   []string // addresses of its hung replicas
	hist   *hdrhistogram.Histogram
	set    TailSetting
}

// tail runs the tail scenario: it starts TailShards × TailReplicas synthetic shards, one hung
// replica per shard and as many floor shards, measures the saturation of a proxy with and
// without hedging, then drives four fresh proxies (TailOff, TailOn, TailHung, TailFloor) with
// open loops at half that rate (or Config.TailRate), in rounds, each round every proxy in turn
// (the order rotating), so that the machine's noise falls on all of them alike. Every process it
// starts is stopped before it returns.
func (s *suite) tail(ctx context.Context) (*TailResult, error) {
	tt := s.cfg.tailTiming()
	res := &TailResult{Shards: TailShards, Replicas: TailReplicas, Latency: TailLatency, Workers: s.t.workers,
		Rounds: tt.rounds, RoundSeconds: tt.round.Seconds()}
	s.progressf("tail: starting %d synthetic shards (%d × %d replicas, latency %s), %d hung replicas and %d floor shards (latency %s)",
		TailShards*TailReplicas, TailShards, TailReplicas, TailLatency, TailShards, TailShards*TailReplicas, TailFloorLatency)
	var procs []*child
	defer func() { stopGroup(procs...) }()
	// start starts TailReplicas sets of TailShards shards named prefix-rR-I and returns their
	// addresses, [r][i] for replica r of shard i.
	start := func(prefix, latency string) ([][]string, error) {
		sets := make([][]string, TailReplicas)
		for r := range TailReplicas {
			addrs, ps, err := s.startShards(ctx, fmt.Sprintf("%s-r%d", prefix, r), TailShards, TailShards, latency)
			procs = append(procs, ps...)
			if err != nil {
				return nil, fmt.Errorf("tail: %w", err)
			}
			sets[r] = addrs
		}
		return sets, nil
	}
	replicas, err := start("tail-shard", TailLatency)
	if err != nil {
		return nil, err
	}
	hung, ps, err := s.startShards(ctx, "tail-hung", TailShards, TailShards, TailLatency, "--fault", "hang")
	procs = append(procs, ps...)
	if err != nil {
		return nil, fmt.Errorf("tail: %w", err)
	}
	floor, err := start("tail-floor", TailFloorLatency)
	if err != nil {
		return nil, err
	}
	topology := func(key string) []string {
		out := make([]string, TailShards)
		for i := range out {
			rs := make([]string, TailReplicas)
			for r := range rs {
				rs[r] = replicas[r][i]
				if key == TailFloor {
					rs[r] = floor[r][i]
				}
			}
			if key == TailHung {
				rs[TailReplicas-1] = hung[i]
			}
			out[i] = strings.Join(rs, ",")
		}
		return out
	}
	proxyArgs := func(key string) []string {
		args := []string{"--max-in-flight", "4096"}
		if key == TailOff || key == TailFloor {
			args = append(args, "--hedge-budget", "0")
		}
		return args
	}

	// Saturation, on throwaway proxies: a closed loop leaves its times to first frame in a
	// hedging proxy's hedge-delay window for half a minute.
	for _, key := range []string{TailOff, TailOn} {
		t, err := s.startTailTarget(ctx, "tail-sat-"+key, key, topology(key), proxyArgs(key), nil)
		if err != nil {
			return nil, err
		}
		qps, err := t.saturate(ctx, s, tt)
		t.stop()
		if err != nil {
			return nil, err
		}
		if key == TailOff {
			res.SaturationOff = qps
		} else {
			res.SaturationOn = qps
		}
	}
	res.Rate = min(res.SaturationOff, res.SaturationOn) / 2
	if s.cfg.TailRate > 0 {
		res.Rate, res.RateGiven = s.cfg.TailRate, true
	}
	s.progressf("tail: saturation %.0f q/s with hedging off, %.0f q/s on; open loops at %.0f/s, %d rounds of %v per setting",
		res.SaturationOff, res.SaturationOn, res.Rate, tt.rounds, tt.round)

	targets := make([]*tailTarget, 0, len(tailSettings))
	defer func() {
		for _, t := range targets {
			t.stop()
		}
	}()
	for _, key := range tailSettings {
		var hungAddrs []string
		if key == TailHung {
			hungAddrs = hung
		}
		t, err := s.startTailTarget(ctx, "tail-proxy-"+key, key, topology(key), proxyArgs(key), hungAddrs)
		if err != nil {
			return nil, err
		}
		targets = append(targets, t)
	}
	for _, t := range targets {
		warm := tt.warmHedged
		if t.key == TailOff || t.key == TailFloor {
			warm = tt.warmOff
		}
		s.progressf("tail: warming up %s for %v", tailLabel(t.key), warm)
		if _, err := t.run(ctx, s, loadgen.Config{Mode: loadgen.Open, Rate: res.Rate, Duration: warm}, "warmup"); err != nil {
			return nil, err
		}
	}
	for round := range tt.rounds {
		if err := s.settle(ctx); err != nil {
			return nil, err
		}
		for i := range targets {
			t := targets[(round+i)%len(targets)]
			if err := t.round(ctx, s, round+1, res.Rate, tt); err != nil {
				return nil, err
			}
		}
	}
	for _, t := range targets {
		if err := t.proc.alive(); err != nil {
			return nil, err
		}
		t.set.Latency = loadgen.Summarize(t.hist)
		res.Settings = append(res.Settings, t.set)
	}
	if s.cfg.Plot != "" {
		if err := res.WritePlot(s.cfg.Plot); err != nil {
			return res, fmt.Errorf("tail: plot: %w", err)
		}
		res.Plot = s.cfg.Plot
	}
	return res, nil
}

// startTailTarget starts a proxy of the tail scenario over shards (each "ADDR,ADDR") and checks
// that it answers in full.
func (s *suite) startTailTarget(ctx context.Context, name, key string, shards, args, hung []string) (*tailTarget, error) {
	proc, addrs, err := s.startProxy(ctx, name, shards, args...)
	if err != nil {
		return nil, fmt.Errorf("tail: %w", err)
	}
	conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		stopGroup(proc)
		return nil, fmt.Errorf("tail: %w", err)
	}
	t := &tailTarget{key: key, proc: proc, conn: conn, client: queryv1.NewQueryServiceClient(conn), adm: newAdmin(addrs[1]), hung: hung,
		hist: loadgen.NewHistogram(), set: TailSetting{Key: key, Label: tailLabel(key), Hedges: map[string]float64{}, Denied: map[string]float64{}}}
	if key != TailHung { // with a hung replica, a first query may wait for its hedge
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := t.client.Search(pctx, &queryv1.SearchRequest{Query: loadgen.DefaultQueries[0], TopK: 10})
		cancel()
		if err == nil && (len(resp.GetHits()) != 10 || resp.GetCoverage().GetDegraded()) {
			err = fmt.Errorf("%d hits, coverage %v", len(resp.GetHits()), resp.GetCoverage())
		}
		if err != nil {
			t.stop()
			return nil, fmt.Errorf("tail: %s: probe query: %w", name, err)
		}
	}
	return t, nil
}

// stop closes t's connection and stops its proxy.
func (t *tailTarget) stop() {
	_ = t.conn.Close()
	stopGroup(t.proc)
}

// run drives t with cfg (top_k 10, 5s timeout), showing progress as phase.
func (t *tailTarget) run(ctx context.Context, s *suite, cfg loadgen.Config, phase string) (*loadgen.Result, error) {
	cfg.TopK, cfg.Timeout = 10, 5*time.Second
	if s.cfg.Live && s.cfg.Progress != nil {
		cfg.Progress = func(p loadgen.Progress) {
			fmt.Fprintf(s.cfg.Progress, "\r\033[Ktail %-12s %-9s %s", tailLabel(t.key), phase, p)
		}
	}
	res, err := loadgen.Run(ctx, t.client, cfg)
	if err == nil && res.Canceled {
		err = ctx.Err()
	}
	if err == nil {
		err = t.proc.alive()
	}
	if err != nil {
		return nil, fmt.Errorf("tail: %s: %s: %w", tailLabel(t.key), phase, err)
	}
	return res, nil
}

// saturateTries is how many closed loops saturate runs, each twice as long as the one before,
// before it gives up on one in which no query completed.
const saturateTries = 3

// saturate measures t's QPS with a closed loop. A loop in which no query completed is run again,
// twice as long: a --quick loop lasts 250ms, and with the rest of a test suite keeping both
// cores busy its queries can all outlast it (CI, 2026-12-02: 0 issued).
func (t *tailTarget) saturate(ctx context.Context, s *suite, tt tailTiming) (float64, error) {
	cfg := loadgen.Config{Mode: loadgen.Closed, Workers: s.t.workers, Warmup: tt.satWarmup, Duration: tt.sat}
	for try := 1; ; try++ {
		res, err := t.run(ctx, s, cfg, "saturate")
		if err != nil {
			return 0, err
		}
		if res.Throughput > 0 {
			return res.Throughput, nil
		}
		if try == saturateTries {
			return 0, fmt.Errorf("tail: %s: no query completed in %d saturation runs, the last %s long (%+v)",
				tailLabel(t.key), try, cfg.Duration, res.Counts)
		}
		cfg.Duration *= 2
	}
}

// round drives t for one round at rate, between two scrapes of its /metrics.
func (t *tailTarget) round(ctx context.Context, s *suite, n int, rate float64, tt tailTiming) error {
	before, err := t.adm.metrics(ctx)
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	pids := s.procs.pids()
	loadBefore := sampleLoad(pids)
	start := time.Now()
	res, err := t.run(ctx, s, loadgen.Config{Mode: loadgen.Open, Rate: rate, Duration: tt.round}, fmt.Sprintf("round %d", n))
	if err != nil {
		return err
	}
	busy, others := coresBetween(loadBefore, sampleLoad(pids), cores())
	after, err := t.adm.metrics(ctx)
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	h, err := res.Latency.Histogram()
	if err != nil {
		return fmt.Errorf("tail: decoding a round's histogram: %w", err)
	}
	t.hist.Merge(h)
	delta := func(name string, match ...string) float64 {
		return after.get(name, match...) - before.get(name, match...)
	}
	r := TailRound{Round: n, Start: start, Latency: res.Latency, BusyCores: busy, OtherCores: others, LoadAvg: loadAverage(),
		Queries: delta(mQueries), ShardCalls: delta(mSelections)}
	r.Latency.HDR = ""
	for i := range TailShards {
		r.HedgeDelayUS = max(r.HedgeDelayUS, int64(after.get(mHedgeDelay, "shard", ShardName(i))*1e6))
	}
	set := &t.set
	set.Rounds = append(set.Rounds, r)
	set.Queries += r.Queries
	set.ShardCalls += r.ShardCalls
	for _, o := range hedgeOutcomes {
		set.Hedges[o] += delta(mHedges, "outcome", o)
	}
	for _, why := range denyReasons {
		set.Denied[why] += delta(mDenied, "reason", why)
	}
	for _, o := range hedgeOutcomes[:3] {
		set.Retries += delta(mRetries, "outcome", o)
	}
	for _, a := range t.hung {
		set.HungAttempt += delta(mSelections, "replica", a)
	}
	c := &set.Counts
	rc := res.Counts
	c.Issued, c.Completed, c.OK, c.Degraded = c.Issued+rc.Issued, c.Completed+rc.Completed, c.OK+rc.OK, c.Degraded+rc.Degraded
	c.Shed, c.Failed, c.Dropped, c.Interrupted = c.Shed+rc.Shed, c.Failed+rc.Failed, c.Dropped+rc.Dropped, c.Interrupted+rc.Interrupted
	for code, k := range rc.FailedByCode {
		if c.FailedByCode == nil {
			c.FailedByCode = map[string]int64{}
		}
		c.FailedByCode[code] += k
	}
	extra := ""
	if r.Queries > 0 {
		extra = fmt.Sprintf("  %.3f shard calls/query", r.ShardCalls/r.Queries)
	}
	if r.HedgeDelayUS > 0 {
		extra += "  hedge delay " + loadgen.FormatMicros(r.HedgeDelayUS)
	}
	if s.cfg.Live && s.cfg.Progress != nil {
		fmt.Fprint(s.cfg.Progress, "\r\033[K")
	}
	s.progressf("tail round %d/%d %-40s p50 %-8s p99 %-8s p99.9 %-8s max %-8s%s  load %.2f%s", n, tt.rounds, tailLabel(t.key),
		loadgen.FormatMicros(r.Latency.P50US), loadgen.FormatMicros(r.Latency.P99US), loadgen.FormatMicros(r.Latency.P999US),
		loadgen.FormatMicros(r.Latency.MaxUS), extra, r.LoadAvg, otherLoadWarning(others))
	return nil
}

// loadAverage is the machine's 1-minute load average, 0 if it cannot be read.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0
	}
	return v
}
