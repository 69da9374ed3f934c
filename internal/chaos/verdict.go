package chaos

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gatherproxy/gather/internal/sockdiag"
)

// Report is what a run saw. Checks turns it into the verdict.
type Report struct {
	// Config is the run's configuration, defaults filled in.
	Config Config
	// Start is when the before phase began; BeforeLen and IncidentLen are how long the first two
	// phases lasted.
	Start                  time.Time
	BeforeLen, IncidentLen time.Duration

	// Workers, Probe, Stalls, Hog and Vanish are what the clients saw.
	Workers Counts
	Probe   ProbeStats
	Stalls  StallStats
	Hog     StallStats
	Vanish  VanishStats

	// Before is the proxy at its baseline: the scrape of the before phase with the fewest
	// goroutines. Peak is the scrape of the incident or the recovery with the most sockets in
	// CLOSE_WAIT, or, if there never were any, with the most sockets. After is the first clean
	// scrape of the recovery, or its last scrape if the proxy never got clean.
	Before, Peak, After State
	// MaxCloseWait, MaxGoroutines and MaxHeapInuse are the highest values any scrape of the
	// incident or the recovery saw, and SocketsMost and UnownedMost the highest count of each
	// socket state (not one scrape's: each state's own maximum); Scrapes is how many scrapes
	// they are taken from.
	MaxCloseWait             int
	MaxGoroutines            int
	MaxHeapInuse             uint64
	SocketsMost, UnownedMost sockdiag.StateCounts
	Scrapes                  int

	// Recovered reports whether the proxy got clean within RecoveryTimeout; TimeToRecover is how
	// long it took, from healing the shards and stopping the load. NotRecovered says what was
	// still wrong at the last scrape when it did not.
	Recovered     bool
	TimeToRecover time.Duration
	NotRecovered  string

	// The proxy's own counts over the run, from its metrics (After minus Before).
	ShedByProxy        int64            // gather_admission_shed_total
	ShedOverShare      int64            // ... of them with reason over_share
	SendStalledByProxy int64            // SearchStreams ended as send_stalled (watchdog or flow guard)
	ConnsClosedByGuard int64            // QS connections the flow guard closed (gather_qs_stalled_connections_closed_total)
	ShardCalls         map[string]int64 // the proxy's shard calls, by how they ended
	// Hedges and Retries are the proxy's hedged and retried shard calls by outcome (won, lost,
	// failed, denied), Ejections how many times it ejected a replica as an outlier; all zero
	// against shards of one replica.
	Hedges, Retries map[string]int64
	Ejections       int64
	// In the cluster scenario (Config.Cluster): Replacement is the replica replaced, or
	// ReplaceErr why it was not; ReplaceAt is when, relative to Start, and WorkersAtReplace the
	// worker counts just before.
	Replacement      *Replacement
	ReplaceErr       string
	ReplaceAt        time.Duration
	WorkersAtReplace Counts
	// PeerGoneAfter is gather_grpc_peer_gone_calls in After: calls whose client is gone and
	// that still run, gRPC's CLOSE_WAIT.
	PeerGoneAfter int64
	// ListenOverflows is how much TcpExt ListenOverflows grew during the run (whole network
	// namespace, not only the proxy).
	ListenOverflows int64
	// SelfStall is the longest the chaos process itself could not run when it asked to (a
	// timer 10ms apart, woken late), and SelfStallAt when that ended: the clients share the
	// machine with the proxy, and a stall of the whole machine makes queries miss their timeout
	// as surely as a stuck proxy.
	SelfStall   time.Duration
	SelfStallAt time.Time
}

// ProbeStats are the probe's queries.
type ProbeStats struct {
	// Queries is how many resolved; OK, Degraded and Failed split them; AfterShed counts the
	// answered ones (OK or Degraded) that were shed first and answered on a retry.
	Queries, OK, Degraded, AfterShed, Failed int64
	// How admission control treated them: admitted on the first try, admitted on a retry after
	// being shed (MostSheds is the most sheds before an admission), or shed on every try until
	// the QS timeout (ShedOut). A query that failed otherwise counts as admitted.
	AdmittedFirst, AdmittedAfterShed, ShedOut int64
	MostSheds                                 int
	// LongestGap is the longest stretch of time in which no query the probe started was
	// answered, measured between the starts of answered queries (and from the probe's first
	// start to its last); GapAt is when it began, relative to the start of the run.
	LongestGap time.Duration
	GapAt      time.Duration
	// SlowestAnswer is the longest an answered query took, retries included.
	SlowestAnswer time.Duration
	// FailExample is the first failure's error.
	FailExample string
}

// probeStats sums the probe's results; start is the start of the run.
func probeStats(results []probeResult, start time.Time) ProbeStats {
	var ps ProbeStats
	rs := slices.Clone(results)
	slices.SortStableFunc(rs, func(a, b probeResult) int { return a.start.Compare(b.start) })
	for _, r := range rs {
		ps.Queries++
		switch {
		case !r.answered:
			ps.Failed++
			if ps.FailExample == "" {
				ps.FailExample = r.err
			}
		case r.full:
			ps.OK++
		default:
			ps.Degraded++
		}
		if r.answered && r.sheds > 0 {
			ps.AfterShed++
		}
		switch {
		case r.shedOut:
			ps.ShedOut++
		case r.sheds == 0:
			ps.AdmittedFirst++
		default:
			ps.AdmittedAfterShed++
			ps.MostSheds = max(ps.MostSheds, r.sheds)
		}
		if r.answered {
			ps.SlowestAnswer = max(ps.SlowestAnswer, r.end.Sub(r.start))
		}
	}
	ps.LongestGap, ps.GapAt = longestGap(rs, start)
	return ps
}

// longestGap returns the longest stretch between the starts of two consecutive answered
// queries, counting the stretch from the first query's start to the first answered one and from
// the last answered one to the last query's start; rs is sorted by start. With no answered query
// at all the whole span is the gap. at is the gap's beginning, relative to start.
func longestGap(rs []probeResult, start time.Time) (gap, at time.Duration) {
	if len(rs) == 0 {
		return 0, 0
	}
	last := rs[0].start
	see := func(t time.Time) {
		if d := t.Sub(last); d > gap {
			gap, at = d, last.Sub(start)
		}
	}
	for _, r := range rs {
		if r.answered {
			see(r.start)
			last = r.start
		}
	}
	see(rs[len(rs)-1].start)
	return gap, at
}

// Check is one rule of the verdict.
type Check struct {
	Name   string
	Pass   bool
	Detail string
}

// since is t relative to the run's start, rounded for the report.
func (r *Report) since(t time.Time) time.Duration {
	return t.Sub(r.Start).Round(100 * time.Millisecond)
}

// Checks returns the verdict's rules, in order: no CLOSE_WAIT at the end, goroutines back to
// the baseline, the heap back near it (only when both were read just after a GC), healthy
// queries answered throughout, no probe query shed for its whole budget, recovered at all,
// answered before the QS timeout, every worker query answered in full (only when one replica
// of shards of several was slowed, Config.Replicas > 1, or in the cluster scenario, after
// "replica replaced"), overload shed (not in the cluster scenario, whose load is below admission), stalled streams ended by
// the proxy (the stallers' and the hog's, by the send watchdog or the flow guard) and vanished
// connections dropped by the proxy (each left out when there were no such clients).
func (r *Report) Checks() []Check {
	cfg := r.Config
	var cs []Check
	add := func(name string, pass bool, format string, args ...any) {
		cs = append(cs, Check{Name: name, Pass: pass, Detail: fmt.Sprintf(format, args...)})
	}

	if !r.After.Sockets.Available {
		add("no CLOSE_WAIT at the end", false, "socket diagnostics unavailable: %v", r.After.Sockets.Err)
	} else {
		add("no CLOSE_WAIT at the end", r.After.CloseWait() == 0 && r.PeerGoneAfter == 0,
			"%d sockets in CLOSE_WAIT, %d calls whose client is gone still running (most seen during the run: %d sockets)",
			r.After.CloseWait(), r.PeerGoneAfter, r.MaxCloseWait)
	}

	add("goroutines back to baseline", r.After.Goroutines <= r.Before.Goroutines+cfg.GoroutineSlack,
		"%d after, %d before (up to +%d allowed), %d at most during the run",
		r.After.Goroutines, r.Before.Goroutines, cfg.GoroutineSlack, r.MaxGoroutines)

	if r.Before.HeapCollected && r.After.HeapCollected {
		add("heap back near baseline", r.After.HeapInuse <= r.Before.HeapInuse+cfg.HeapSlack,
			"%s after, %s before, both just after a GC (up to +%s allowed)",
			mib(r.After.HeapInuse), mib(r.Before.HeapInuse), mib(cfg.HeapSlack))
	}

	answered := r.Probe.OK + r.Probe.Degraded
	add("healthy queries answered throughout", answered > 0 && r.Probe.LongestGap < cfg.MaxProbeGap,
		"longest stretch without an answer %s at +%s (must be under %s); %d of %d probe queries answered",
		r.Probe.LongestGap.Round(time.Millisecond), r.Probe.GapAt.Round(100*time.Millisecond), cfg.MaxProbeGap,
		answered, r.Probe.Queries)

	add("probe never shed for its whole budget", r.Probe.Queries > 0 && r.Probe.ShedOut == 0,
		"%d probe queries shed on every try until their %s timeout; %d admitted on the first try, %d after being shed (at most %d times)",
		r.Probe.ShedOut, cfg.Timeout, r.Probe.AdmittedFirst, r.Probe.AdmittedAfterShed, r.Probe.MostSheds)

	if r.Recovered {
		add("recovered", true, "clean %s after the shards were healed and the load stopped (bound %s)",
			r.TimeToRecover.Round(10*time.Millisecond), cfg.RecoveryTimeout)
	} else {
		add("recovered", false, "not clean within %s: %s", cfg.RecoveryTimeout, r.NotRecovered)
	}

	if w := r.Workers; w.QSTimeout > 0 && !w.FirstQSTimeout.IsZero() {
		add("answered before the QS timeout", false, "%d worker queries hit their %s timeout, ending from +%s to +%s; chaos's own longest stall: %s, ending at +%s",
			w.QSTimeout, cfg.Timeout, r.since(w.FirstQSTimeout), r.since(w.LastQSTimeout), r.SelfStall.Round(time.Millisecond), r.since(r.SelfStallAt))
	} else {
		add("answered before the QS timeout", w.QSTimeout == 0, "%d worker queries hit their %s timeout", w.QSTimeout, cfg.Timeout)
	}

	if cfg.Cluster != "" {
		if r.Replacement != nil {
			rp := r.Replacement
			add("replica replaced", true, "%s (%s) killed at +%s, %s (%s) serving and registered %s later",
				rp.Killed.Name, rp.Killed.Addr, r.ReplaceAt.Round(100*time.Millisecond), rp.Started.Name, rp.Started.Addr, rp.Registered.Round(time.Millisecond))
		} else {
			add("replica replaced", false, "not replaced: %s", r.ReplaceErr)
		}
		// The replaced shard keeps a healthy replica throughout: a degraded or failed answer
		// means the proxy waited on the dead one instead of retrying around it.
		add("every worker query answered in full", r.Workers.Degraded == 0 && r.Workers.Failed() == 0,
			"%d worker queries degraded, %d failed, %d answered in full (%d degraded and %d failed before the replacement)",
			r.Workers.Degraded, r.Workers.Failed(), r.Workers.OK, r.WorkersAtReplace.Degraded, r.WorkersAtReplace.Failed())
	} else if cfg.Replicas > 1 {
		// Each slow shard keeps healthy replicas: a degraded or failed answer means the proxy
		// waited on the slow one instead of routing around it.
		add("every worker query answered in full", r.Workers.Degraded == 0 && r.Workers.Failed() == 0,
			"%d worker queries degraded, %d failed, %d answered in full, with replica 0 of %s slowed (%d replicas each)",
			r.Workers.Degraded, r.Workers.Failed(), r.Workers.OK, strings.Join(cfg.SlowShards, ","), cfg.Replicas)
	}

	if cfg.Cluster == "" {
		add("overload shed, not queued", r.Workers.Shed > 0 && r.ShedByProxy > 0,
			"%d worker queries shed with RESOURCE_EXHAUSTED; the proxy counted %d sheds%s",
			r.Workers.Shed, r.ShedByProxy, map[bool]string{true: " (none: the load never exceeded admission; raise --workers)"}[r.ShedByProxy == 0])
	}

	if cfg.Stallers > 0 || cfg.Hog > 0 {
		s, h := r.Stalls, r.Hog
		held := s.Held + h.Held
		watchdog, closed := s.EndedByWatchdog+h.EndedByWatchdog, s.ConnClosed+h.ConnClosed
		ended := watchdog + closed
		add("stalled streams ended by the proxy",
			// A stream whose connection the guard closed may have been merging rather than stalled
			// itself (the proxy records it as canceled), so the proxy's own counts must cover the
			// streams its watchdog ended, and show a closed connection if any stream saw one.
			held > 0 && ended == held && r.SendStalledByProxy >= watchdog && (closed == 0 || r.ConnsClosedByGuard > 0),
			"%d streams left unread (stallers %d, hog %d): %d ended with RESOURCE_EXHAUSTED (send stalled), %d with their connection closed by the flow guard, %d completed unread; the proxy counted %d streams ended as send_stalled and closed %d connections",
			held, s.Held, h.Held, watchdog, closed, s.Completed+h.Completed, r.SendStalledByProxy, r.ConnsClosedByGuard)
	}
	if cfg.Vanishers > 0 {
		v := r.Vanish
		add("vanished connections dropped by the proxy", v.Vanished > 0 && v.Dropped == v.Vanished,
			"%d connections went silent (%d mid-query): %d closed by the proxy, the last %s after going silent; %d still open after %s",
			v.Vanished, v.MidQuery, v.Dropped, v.LongestDrop.Round(100*time.Millisecond), v.NotDropped, cfg.VanishWait)
	}
	return cs
}

// Clean reports whether every check passes.
func (r *Report) Clean() bool {
	for _, c := range r.Checks() {
		if !c.Pass {
			return false
		}
	}
	return true
}

// Failed returns the names of the checks that failed.
func (r *Report) Failed() []string {
	var out []string
	for _, c := range r.Checks() {
		if !c.Pass {
			out = append(out, c.Name)
		}
	}
	return out
}

// WriteTable prints the report for a person: the run, the queries by outcome, the proxy's
// sockets by state before, at the peak and after, its goroutines and heap, and the checks, then
// "verdict: CLEAN" or "verdict: NOT CLEAN". w sees the whole table in one Write, or nothing.
func (r *Report) WriteTable(w io.Writer) error {
	cfg := r.Config
	var buf bytes.Buffer
	section := func(rows func(printf func(string, ...any))) {
		tw := tabwriter.NewWriter(&buf, 0, 8, 2, ' ', 0)
		rows(func(format string, args ...any) { _, _ = fmt.Fprintf(tw, format, args...) })
		_ = tw.Flush() // into a bytes.Buffer: cannot fail
		buf.WriteByte('\n')
	}
	fmt.Fprintf(&buf, "gather chaos against %s (admin %s): %s before, %s incident\n", cfg.Addr, cfg.Admin,
		r.BeforeLen.Round(100*time.Millisecond), r.IncidentLen.Round(100*time.Millisecond))
	workersAs := "each connection its own caller"
	if cfg.WorkerCaller != "" {
		workersAs = fmt.Sprintf("one caller, %q", cfg.WorkerCaller)
	}
	slowed := strings.Join(cfg.SlowShards, ",") + " slowed by " + cfg.Slow.String()
	if cfg.Replicas > 1 {
		slowed = fmt.Sprintf("replica 0 of %s (of %d replicas each) slowed by %s", strings.Join(cfg.SlowShards, ","), cfg.Replicas, cfg.Slow)
	}
	if cfg.Cluster != "" {
		replica := cfg.ReplaceReplica
		if replica == "" {
			replica = "the first replica"
		}
		slowed = fmt.Sprintf("%s of %s killed and replaced a third of the way in (cluster control %s)", replica, cfg.ReplaceShard, cfg.Cluster)
	}
	fmt.Fprintf(&buf, "incident: %s, %d workers (%s, started over %s) with a %s timeout, %d stallers, a hog with %d streams, %d vanishers\n\n",
		slowed, cfg.Workers, workersAs, workerRamp, cfg.Timeout, cfg.Stallers, cfg.Hog, cfg.Vanishers)

	section(func(printf func(string, ...any)) {
		c := r.Workers
		printf("WORKER QUERIES\tCOUNT\n")
		printf("ok\t%d\n", c.OK)
		printf("degraded\t%d\n", c.Degraded)
		printf("shed\t%d\n", c.Shed)
		printf("failed\t%d\n", c.Failed())
		for _, f := range []struct {
			kind string
			n    int64
		}{{"qs timeout", c.QSTimeout}, {"unavailable", c.Unavailable}, {"other", c.Other}} {
			printf("  %s\t%d", f.kind, f.n)
			if ex := c.Examples[f.kind]; ex != "" {
				printf("\te.g. %s", clip(ex, 100))
			}
			printf("\n")
		}
	})
	section(func(printf func(string, ...any)) {
		p, s, v := r.Probe, r.Stalls, r.Vanish
		printf("PROBE (one query every %s)\tCOUNT\n", cfg.ProbeEvery)
		printf("ok\t%d\n", p.OK)
		printf("degraded\t%d\n", p.Degraded)
		printf("  answered after being shed\t%d\n", p.AfterShed)
		printf("failed\t%d", p.Failed)
		if p.FailExample != "" {
			printf("\te.g. %s", clip(p.FailExample, 100))
		}
		printf("\n")
		printf("slowest answer\t%s\n", p.SlowestAnswer.Round(time.Millisecond))
		printf("longest stretch without an answer\t%s\n", p.LongestGap.Round(time.Millisecond))
		printf("admitted on the first try\t%d\n", p.AdmittedFirst)
		printf("admitted after being shed\t%d", p.AdmittedAfterShed)
		if p.AdmittedAfterShed > 0 {
			printf("\tat most %d sheds before admission", p.MostSheds)
		}
		printf("\n")
		printf("shed for its whole budget\t%d\n", p.ShedOut)
		streams := func(title string, s StallStats) {
			printf("%s\tCOUNT\n", title)
			printf("streams left unread\t%d\n", s.Held)
			printf("  ended by the send watchdog\t%d\n", s.EndedByWatchdog)
			printf("  connection closed by the flow guard\t%d\n", s.ConnClosed)
			printf("  completed unread\t%d\n", s.Completed)
			printf("shed before starting\t%d\n", s.Shed)
			printf("other\t%d", s.Other)
			if s.Example != "" {
				printf("\te.g. %s", clip(s.Example, 100))
			}
			printf("\n")
		}
		if cfg.Stallers > 0 {
			streams("STALLERS", s)
		}
		if cfg.Hog > 0 {
			streams(fmt.Sprintf("HOG (%d streams on one connection)", cfg.Hog), r.Hog)
		}
		if cfg.Vanishers > 0 {
			printf("VANISHERS\tCOUNT\n")
			printf("connections gone silent\t%d\n", v.Vanished)
			printf("  mid-query\t%d\n", v.MidQuery)
			printf("    before the connection was ready\t%d\n", v.BeforeReady)
			printf("  closed by the proxy\t%d\n", v.Dropped)
			printf("  longest until closed\t%s\n", v.LongestDrop.Round(100*time.Millisecond))
			printf("  still open after %s\t%d\n", cfg.VanishWait, v.NotDropped)
			if v.Other > 0 {
				printf("set-up failures\t%d\te.g. %s\n", v.Other, clip(v.Example, 100))
			}
		}
	})
	section(func(printf func(string, ...any)) {
		printf("THE PROXY, FROM ITS /metrics\tCOUNT\n")
		printf("queries shed (gather_admission_shed_total)\t%d\n", r.ShedByProxy)
		printf("  callers over their fair share\t%d\n", r.ShedOverShare)
		printf("streams ended as send stalled\t%d\n", r.SendStalledByProxy)
		printf("connections closed by the flow guard\t%d\n", r.ConnsClosedByGuard)
		for _, reason := range slices.Sorted(maps.Keys(r.ShardCalls)) {
			printf("shard calls %s\t%d\n", strings.ReplaceAll(reason, "_", " "), r.ShardCalls[reason])
		}
		for _, c := range []struct {
			what string
			n    map[string]int64
		}{{"hedges", r.Hedges}, {"retries", r.Retries}} {
			for _, outcome := range []string{outcomeWon, outcomeLost, outcomeFailed, outcomeDenied} {
				if n := c.n[outcome]; n != 0 {
					printf("shard call %s %s\t%d\n", c.what, outcome, n)
				}
			}
		}
		if r.Ejections != 0 {
			printf("replicas ejected\t%d\n", r.Ejections)
		}
		printf("ListenOverflows (whole host)\t+%d\n", r.ListenOverflows)
	})
	section(func(printf func(string, ...any)) {
		printf("PROXY SOCKETS BY STATE\tBEFORE\tMOST DURING\tAFTER\tUNOWNED: BEFORE\tMOST DURING\tAFTER\n")
		if !r.Before.Sockets.Available || !r.After.Sockets.Available {
			printf("unavailable\t%v\t\t%v\n", r.Before.Sockets.Err, r.After.Sockets.Err)
			return
		}
		for _, st := range sockdiag.States() {
			printf("%s\t%d\t%d\t%d\t%d\t%d\t%d\n", st,
				r.Before.Sockets.Sockets[st], r.SocketsMost[st], r.After.Sockets.Sockets[st],
				r.Before.Sockets.ListenerUnowned[st], r.UnownedMost[st], r.After.Sockets.ListenerUnowned[st])
		}
		printf("TOTAL\t%d\t%d\t%d\t%d\t%d\t%d\n",
			r.Before.Sockets.Sockets.Total(), r.SocketsMost.Total(), r.After.Sockets.Sockets.Total(),
			r.Before.Sockets.ListenerUnowned.Total(), r.UnownedMost.Total(), r.After.Sockets.ListenerUnowned.Total())
	})
	fmt.Fprintf(&buf, "MOST DURING: each state's highest count over %d reads of /metrics in the incident and the recovery.\n", r.Scrapes)
	fmt.Fprintf(&buf, "UNOWNED: sockets no process holds on the proxy's listen addresses (TIME_WAIT, accept queue, closing).\n")
	if r.MaxCloseWait > 0 {
		fmt.Fprintf(&buf, "CLOSE_WAIT peaked at %d, at +%s.\n", r.MaxCloseWait, r.Peak.Time.Sub(r.Start).Round(100*time.Millisecond))
	}
	buf.WriteByte('\n')
	section(func(printf func(string, ...any)) {
		printf("PROCESS\tBEFORE\tMOST DURING\tAFTER\n")
		printf("goroutines\t%d\t%d\t%d\n", r.Before.Goroutines, r.MaxGoroutines, r.After.Goroutines)
		gc := " (no GC before reading)"
		if r.Before.HeapCollected && r.After.HeapCollected {
			gc = " (BEFORE, AFTER: just after a GC)"
		}
		printf("heap in use%s\t%s\t%s\t%s\n", gc, mib(r.Before.HeapInuse), mib(r.MaxHeapInuse), mib(r.After.HeapInuse))
		if r.Recovered {
			printf("time to recover\t%s\n", r.TimeToRecover.Round(10*time.Millisecond))
		} else {
			printf("time to recover\tnot within %s\n", cfg.RecoveryTimeout)
		}
		printf("longest probe gap\t%s\n", r.Probe.LongestGap.Round(time.Millisecond))
		if !r.SelfStallAt.IsZero() {
			printf("chaos's own longest stall\t%s at +%s\n", r.SelfStall.Round(time.Millisecond), r.since(r.SelfStallAt))
		}
	})
	checks := r.Checks()
	section(func(printf func(string, ...any)) {
		printf("CHECK\tRESULT\tDETAIL\n")
		for _, c := range checks {
			printf("%s\t%s\t%s\n", c.Name, map[bool]string{true: "PASS", false: "FAIL"}[c.Pass], c.Detail)
		}
	})
	if r.Clean() {
		buf.WriteString("verdict: CLEAN\n")
	} else {
		fmt.Fprintf(&buf, "verdict: NOT CLEAN (%s)\n", strings.Join(r.Failed(), "; "))
	}
	_, err := w.Write(buf.Bytes())
	return err
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// clip shortens s to at most n runes, on one line.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
