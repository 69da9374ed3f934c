package chaos

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/admission"
	"github.com/gatherproxy/gather/internal/lifecycle"
	"github.com/gatherproxy/gather/internal/sockdiag"
)

// ErrInterrupted is wrapped by Run's error when its context ends before the run does.
var ErrInterrupted = errors.New("chaos run interrupted")

const (
	scrapeTimeout = 5 * time.Second
	// beforeScrapeEvery, incidentScrapeEvery and recoveryScrapeEvery pace the reads of /metrics:
	// each makes the demo read its socket tables from /proc, milliseconds with many sockets.
	beforeScrapeEvery   = 500 * time.Millisecond
	incidentScrapeEvery = 2 * time.Second
	recoveryScrapeEvery = 250 * time.Millisecond
	// recoveredProbes is how many probe queries in a row, started after the heal, must be
	// answered with full coverage for the proxy to count as recovered.
	recoveredProbes = 3
)

// Run replays the incident against the demo at cfg.Addr (QueryService) and cfg.Admin (admin
// HTTP with /debug/fault), for cfg.Duration plus the recovery, and returns what it saw. The
// error is for a run that could not be made or finished: bad configuration, demo unreachable,
// without fault control or with fewer replicas than cfg.Replicas (ErrTooFewReplicas), or ctx
// ended (ErrInterrupted). A finished run returns its Report, clean or not, and a nil error. The
// shards are healed on every path; every goroutine and connection Run started is gone when it
// returns.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	transport := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, DisableCompression: true}
	defer transport.CloseIdleConnections()
	r := &runner{cfg: cfg, http: &http.Client{Transport: transport, Timeout: 10 * time.Second}}
	r.sc = scraper{client: r.http, admin: cfg.Admin}
	return r.run(ctx)
}

// runner is one run's state.
type runner struct {
	cfg  Config
	http *http.Client
	sc   scraper

	probe   *probe
	workers tally
	mu      sync.Mutex // guards stalls, hog and vanish
	stalls  StallStats
	hog     StallStats
	vanish  VanishStats

	stopLoad       context.CancelFunc // ends the workers and the stallers' and vanishers' rounds
	loadWG, sideWG sync.WaitGroup     // workers; stallers and vanishers

	last         State // the last successful scrape
	lastProgress time.Time
}

func (r *runner) run(ctx context.Context) (*Report, error) {
	cfg := r.cfg
	if cfg.Cluster != "" {
		ps, err := clusterProcesses(ctx, r.http, cfg.Cluster)
		if err != nil {
			return nil, err
		}
		if err := checkReplace(cfg, ps); err != nil {
			return nil, err
		}
	} else {
		specs, err := setFault(ctx, r.http, cfg.Admin, AllShards, allReplicas, "") // also proves fault control exists
		if err != nil {
			return nil, err
		}
		if err := checkShards(cfg, specs); err != nil {
			return nil, err
		}
	}
	var err error
	if r.last, err = r.sc.scrape(ctx, scrapeTimeout, false); err != nil {
		return nil, err
	}
	defer func() { _ = r.heal(ctx) }() // on every path; the recovery has healed already unless it failed

	probeConn, err := dial(cfg.Addr)
	if err != nil {
		return nil, err
	}
	defer func() { _ = probeConn.Close() }()
	r.probe = &probe{client: queryv1.NewQueryServiceClient(probeConn), timeout: cfg.Timeout, every: cfg.ProbeEvery}
	probeCtx, stopProbe := context.WithCancel(ctx)
	var probeWG sync.WaitGroup
	probeWG.Go(func() { r.probe.run(probeCtx) })
	var self stallMeter
	probeWG.Go(func() { self.run(probeCtx) })
	stopProbing := func() {
		stopProbe()
		probeWG.Wait()
	}
	defer stopProbing()
	defer r.stopClients() // before the probe stops: interrupted runs end here

	rep := &Report{Config: cfg, Start: time.Now()}
	if err := r.before(ctx, rep); err != nil {
		return nil, err
	}
	incidentStart := time.Now()
	if err := r.incident(ctx, rep); err != nil {
		return nil, err
	}
	rep.IncidentLen = time.Since(incidentStart)
	r.recover(ctx, rep)
	stopProbing()
	rep.SelfStall, rep.SelfStallAt = self.worst()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %w", ErrInterrupted, ctx.Err())
	}
	r.finish(rep)
	return rep, nil
}

// ErrTooFewReplicas is wrapped by Run's error when Config.Replicas asks for more replicas than
// the demo's slow shards have.
var ErrTooFewReplicas = errors.New("the demo has too few replicas")

// checkShards checks that the demo, whose replicas' specs are specs, has every slow shard, with
// at least cfg.Replicas replicas each.
func checkShards(cfg Config, specs map[string][]string) error {
	var unknown []string
	for _, s := range cfg.SlowShards {
		if _, ok := specs[s]; !ok {
			unknown = append(unknown, s)
		}
	}
	if len(unknown) > 0 {
		have := slices.Sorted(maps.Keys(specs))
		return fmt.Errorf("slow-shards: the demo has no shard %s (it has %s)", strings.Join(unknown, ", "), strings.Join(have, ", "))
	}
	for _, s := range cfg.SlowShards {
		if n := len(specs[s]); n < cfg.Replicas {
			return fmt.Errorf("replicas %d: the demo's %s has %s: start the demo with --replicas %d: %w",
				cfg.Replicas, s, countReplicas(n), cfg.Replicas, ErrTooFewReplicas)
		}
	}
	return nil
}

// slowReplica is the replica of a slow shard the incident slows: all of them, or with several
// replicas per shard only the first, which the proxy must then route around.
func (c Config) slowReplica() int {
	if c.Replicas > 1 {
		return 0
	}
	return allReplicas
}

// checkReplace checks that the cluster, whose processes are ps, has the replica to replace and
// another replica of its shard to answer for it.
func checkReplace(cfg Config, ps []Process) error {
	var ids []string
	found := cfg.ReplaceReplica == ""
	for _, p := range ps {
		if p.Role == "shard" && p.Shard == cfg.ReplaceShard {
			short := strings.TrimPrefix(p.Name, p.Shard+"/")
			ids = append(ids, short)
			found = found || p.ReplicaID == cfg.ReplaceReplica || short == cfg.ReplaceReplica
		}
	}
	switch {
	case len(ids) == 0:
		return fmt.Errorf("replace-shard: the cluster has no shard %s", cfg.ReplaceShard)
	case !found:
		return fmt.Errorf("replace-replica: the cluster's %s has no replica %s (it has %s)", cfg.ReplaceShard, cfg.ReplaceReplica, strings.Join(ids, ", "))
	case len(ids) < 2:
		return fmt.Errorf("replace-shard: the cluster's %s has 1 replica: start the cluster with --replicas 2, or every query would miss it: %w",
			cfg.ReplaceShard, ErrTooFewReplicas)
	}
	return nil
}

// heal clears every shard's fault, even if ctx has ended; a cluster has none.
func (r *runner) heal(ctx context.Context) error {
	if r.cfg.Cluster != "" {
		return nil
	}
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, err := setFault(hctx, r.http, r.cfg.Admin, AllShards, allReplicas, "")
	return err
}

// stopClients ends the load and waits for every client goroutine. Safe to call more than once.
func (r *runner) stopClients() {
	if r.stopLoad != nil {
		r.stopLoad()
	}
	r.loadWG.Wait()
	r.sideWG.Wait()
}

// before scrapes the proxy while only the probe runs, and keeps the scrape with the fewest
// goroutines as the baseline: the one least likely to have caught a probe query in flight.
func (r *runner) before(ctx context.Context, rep *Report) error {
	length := min(5*time.Second, r.cfg.Duration/10)
	end := rep.Start.Add(length)
	tick := time.NewTicker(beforeScrapeEvery)
	defer tick.Stop()
	var lastErr error
	have := false
	for {
		st, err := r.sc.scrape(ctx, scrapeTimeout, true)
		switch {
		case err != nil:
			lastErr = err
		case !have || st.Goroutines < rep.Before.Goroutines:
			rep.Before, have = st, true
		}
		if err == nil {
			r.last = st
		}
		r.progress("before", rep, false)
		if !time.Now().Before(end) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrInterrupted, ctx.Err())
		case <-tick.C:
		}
	}
	if !have {
		return fmt.Errorf("before: no read of the proxy's metrics succeeded: %w", lastErr)
	}
	rep.BeforeLen = time.Since(rep.Start)
	rep.Peak = rep.Before
	rep.MaxGoroutines, rep.MaxHeapInuse = rep.Before.Goroutines, rep.Before.HeapInuse
	return nil
}

// incident slows the shards (only their replica 0 when cfg.Replicas > 1), starts the load and watches the proxy until cfg.Duration from the
// start of the run. It leaves the stallers and vanishers finishing their last rounds.
func (r *runner) incident(ctx context.Context, rep *Report) error {
	cfg := r.cfg
	end := rep.Start.Add(cfg.Duration)
	replaceAt := time.Time{} // zero: nothing to replace
	if cfg.Cluster != "" {
		replaceAt = time.Now().Add(time.Until(end) / 3)
	}
	for _, s := range cfg.SlowShards {
		if _, err := setFault(ctx, r.http, cfg.Admin, s, cfg.slowReplica(), "delay="+cfg.Slow.String()); err != nil {
			return err
		}
	}
	// The load ends when the recovery stops it, not at a deadline of its own, which would cut
	// the deadlines of the last queries below the QS timeout.
	loadCtx, stop := context.WithCancel(ctx)
	r.stopLoad = stop
	// The workers start over workerRamp, not in the same instant: the proxy, the demo's shards
	// and chaos itself share the machine, and 320 dials and queries at once kept every core busy
	// for a second or two, so that some queries reached the proxy with most of their 3s gone
	// (the proxy's deadline comes from the request, and cannot account for that).
	for i := range cfg.Workers {
		r.loadWG.Go(func() {
			if sleep(loadCtx, time.Duration(i)*workerRamp/time.Duration(cfg.Workers)) {
				worker(loadCtx, cfg, i, &r.workers)
			}
		})
	}
	for range cfg.Stallers {
		r.sideWG.Go(func() { staller(loadCtx, ctx, cfg, end, &r.mu, &r.stalls) })
	}
	for i := range cfg.Vanishers {
		r.sideWG.Go(func() { vanisher(loadCtx, ctx, cfg, i, end, &r.mu, &r.vanish) })
	}
	if cfg.Hog > 0 {
		r.sideWG.Go(func() { hog(loadCtx, ctx, cfg, end, &r.mu, &r.hog) })
	}

	tick := time.NewTicker(cfg.ProgressEvery)
	defer tick.Stop()
	done := time.NewTimer(time.Until(end))
	defer done.Stop()
	var scraped time.Time
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrInterrupted, ctx.Err())
		case <-done.C:
			return nil
		case <-tick.C:
		}
		if !replaceAt.IsZero() && !time.Now().Before(replaceAt) {
			replaceAt = time.Time{}
			r.replace(ctx, rep)
		}
		if time.Since(scraped) >= incidentScrapeEvery {
			scraped = time.Now()
			if st, err := r.sc.scrape(ctx, scrapeTimeout, false); err == nil {
				r.observe(rep, st)
			}
		}
		r.progress("incident", rep, true) // the ticks are ProgressEvery apart
	}
}

// replace has the cluster replace a replica mid-incident and records what happened, with the
// worker counts at that moment.
func (r *runner) replace(ctx context.Context, rep *Report) {
	cfg := r.cfg
	rep.ReplaceAt = time.Since(rep.Start)
	rep.WorkersAtReplace = r.workers.counts()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute) // a new replica may open an index
	defer cancel()
	rp, err := replaceReplica(rctx, r.http, cfg.Cluster, cfg.ReplaceShard, cfg.ReplaceReplica)
	if err != nil {
		rep.ReplaceErr = err.Error()
		return
	}
	rep.Replacement = &rp
	if w := cfg.Progress; w != nil {
		fmt.Fprintf(w, "chaos replaced %s (%s, pid %d, killed) by %s (%s, pid %d) serving and registered %s later\n",
			rp.Killed.Name, rp.Killed.Addr, rp.Killed.Pid, rp.Started.Name, rp.Started.Addr, rp.Started.Pid, rp.Registered.Round(time.Millisecond))
	}
}

// observe records a scrape of the incident or the recovery.
func (r *runner) observe(rep *Report, st State) {
	r.last = st
	cw, peakCW := st.CloseWait(), rep.Peak.CloseWait()
	if cw > peakCW || (cw == peakCW && st.Sockets.Sockets.Total() > rep.Peak.Sockets.Sockets.Total()) {
		rep.Peak = st
	}
	rep.Scrapes++
	for _, state := range sockdiag.States() {
		rep.SocketsMost[state] = max(rep.SocketsMost[state], st.Sockets.Sockets[state])
		rep.UnownedMost[state] = max(rep.UnownedMost[state], st.Sockets.ListenerUnowned[state])
	}
	rep.MaxCloseWait = max(rep.MaxCloseWait, cw)
	rep.MaxGoroutines = max(rep.MaxGoroutines, st.Goroutines)
	rep.MaxHeapInuse = max(rep.MaxHeapInuse, st.HeapInuse)
}

// recover heals the shards, stops the load, waits for the stallers and vanishers to finish
// their last rounds (each bounded by its hold or wait) and polls the proxy until it is clean or
// cfg.RecoveryTimeout has passed.
func (r *runner) recover(ctx context.Context, rep *Report) {
	cfg := r.cfg
	start := time.Now()
	healErr := r.heal(ctx)
	r.stopLoad()
	r.loadWG.Wait() // every worker has closed its connection
	sideDone := make(chan struct{})
	go func() { // joined: recover waits for sideDone before it returns
		r.sideWG.Wait()
		close(sideDone)
	}()
	defer func() { <-sideDone }()

	deadline := start.Add(cfg.RecoveryTimeout)
	tick := time.NewTicker(recoveryScrapeEvery)
	defer tick.Stop()
	for {
		st, err := r.sc.scrape(ctx, scrapeTimeout, true)
		if err == nil {
			r.observe(rep, st)
		}
		why := r.unclean(st, err, healErr, sideDone, rep.Before.Goroutines, start)
		if why == "" {
			rep.Recovered, rep.TimeToRecover, rep.After = true, st.Time.Sub(start), st
			return
		}
		r.progress("recovery", rep, false)
		if time.Now().After(deadline) {
			rep.NotRecovered, rep.After = why, r.last
			return
		}
		select {
		case <-ctx.Done():
			rep.NotRecovered, rep.After = "interrupted", r.last
			return
		case <-tick.C:
		}
	}
}

// unclean says what keeps the proxy from counting as recovered, or "" if nothing does.
func (r *runner) unclean(st State, err, healErr error, sideDone <-chan struct{}, baseline int, healedAt time.Time) string {
	if healErr != nil {
		return fmt.Sprintf("shards not healed: %v", healErr)
	}
	select {
	case <-sideDone:
	default:
		return "stallers or vanishers still finishing their last round"
	}
	if err != nil {
		return err.Error()
	}
	if !st.Sockets.Available {
		return fmt.Sprintf("socket diagnostics unavailable: %v", st.Sockets.Err)
	}
	if n := st.CloseWait(); n > 0 {
		return fmt.Sprintf("%d sockets in CLOSE_WAIT", n)
	}
	if n := st.Page.count(metricPeerGone); n > 0 {
		return fmt.Sprintf("%d calls whose client is gone still running", n)
	}
	if limit := baseline + r.cfg.GoroutineSlack; st.Goroutines > limit {
		return fmt.Sprintf("%d goroutines, more than the baseline %d + %d", st.Goroutines, baseline, r.cfg.GoroutineSlack)
	}
	var since []probeResult
	for _, p := range r.probe.snapshot() {
		if p.start.After(healedAt) {
			since = append(since, p)
		}
	}
	slices.SortFunc(since, func(a, b probeResult) int { return a.start.Compare(b.start) })
	if len(since) < recoveredProbes {
		return "probe not yet answered since the heal"
	}
	for _, p := range since[len(since)-recoveredProbes:] {
		if !p.answered || !p.full {
			return "probe queries not answered with full coverage"
		}
	}
	return ""
}

// finish fills in the counts.
func (r *runner) finish(rep *Report) {
	rep.Workers = r.workers.counts()
	r.mu.Lock()
	rep.Stalls, rep.Hog, rep.Vanish = r.stalls, r.hog, r.vanish
	r.mu.Unlock()
	rep.Probe = probeStats(r.probe.snapshot(), rep.Start)
	b, a := rep.Before.Page, rep.After.Page
	if a == nil { // no scrape in the recovery succeeded
		return
	}
	delta := func(name string, match ...string) int64 { return a.count(name, match...) - b.count(name, match...) }
	rep.ShedByProxy = delta(metricShed)
	rep.ShedOverShare = delta(metricShed, "reason", admission.ReasonOverShare)
	rep.SendStalledByProxy = delta(metricEnds, "side", "server", "method", methodSearchStrm, "reason", lifecycle.SendStalled)
	rep.ConnsClosedByGuard = delta(metricGuardClose)
	rep.ShardCalls = map[string]int64{}
	for _, reason := range []string{lifecycle.Completed, lifecycle.Failed, lifecycle.Canceled, lifecycle.DeadlineExceeded,
		lifecycle.Reset, lifecycle.Shed, lifecycle.Abandoned, lifecycle.HedgeLost} {
		// Search or Pull (fan-outs from pull_fan_out on): the same shard call
		n := delta(metricEnds, "side", "client", "method", methodShardSearch, "reason", reason) +
			delta(metricEnds, "side", "client", "method", methodShardPull, "reason", reason)
		if n != 0 {
			rep.ShardCalls[reason] = n
		}
	}
	rep.Hedges, rep.Retries = map[string]int64{}, map[string]int64{}
	for _, outcome := range []string{outcomeWon, outcomeLost, outcomeFailed, outcomeDenied} {
		if n := delta(metricHedges, "outcome", outcome); n != 0 {
			rep.Hedges[outcome] = n
		}
		if n := delta(metricRetries, "outcome", outcome); n != 0 {
			rep.Retries[outcome] = n
		}
	}
	rep.Ejections = delta(metricEjections)
	rep.PeerGoneAfter = a.count(metricPeerGone)
	rep.ListenOverflows = int64(rep.After.Sockets.ListenOverflows) - int64(rep.Before.Sockets.ListenOverflows)
}

// progress prints one line about the run, at most every cfg.ProgressEvery unless force.
func (r *runner) progress(phase string, rep *Report, force bool) {
	w := r.cfg.Progress
	if w == nil || (!force && time.Since(r.lastProgress) < r.cfg.ProgressEvery) {
		return
	}
	r.lastProgress = time.Now()
	c := r.workers.counts()
	r.mu.Lock()
	s, h, v := r.stalls, r.hog, r.vanish
	r.mu.Unlock()
	var answered, probed, shedOut int
	for _, p := range r.probe.snapshot() {
		probed++
		if p.answered {
			answered++
		}
		if p.shedOut {
			shedOut++
		}
	}
	fmt.Fprintf(w, "chaos %-8s %5.1fs  ok %d  degraded %d  shed %d  failed %d (qs timeout %d)  stalled %d/%d  hog %d/%d  vanished %d dropped %d  probe %d/%d answered, %d shed out  CLOSE_WAIT %d  goroutines %d\n",
		phase, time.Since(rep.Start).Seconds(), c.OK, c.Degraded, c.Shed, c.Failed(), c.QSTimeout,
		s.EndedByWatchdog+s.ConnClosed, s.Held, h.EndedByWatchdog+h.ConnClosed, h.Held, v.Vanished, v.Dropped, answered, probed, shedOut, r.last.CloseWait(), r.last.Goroutines)
}
