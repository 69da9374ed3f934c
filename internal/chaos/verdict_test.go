package chaos

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gatherproxy/gather/internal/sockdiag"
)

// cleanReport is the report of a run that came through clean.
func cleanReport() *Report {
	cfg := Config{Stallers: 2, Vanishers: 2, Hog: 256, WorkerCaller: DefaultWorkerCaller}.withDefaults()
	snap := func(established int) sockdiag.Snapshot {
		s := sockdiag.Snapshot{Available: true}
		s.Sockets[sockdiag.Established] = established
		s.Sockets[sockdiag.Listen] = 6
		return s
	}
	start := time.Unix(1_700_000_000, 0)
	return &Report{
		Config:    cfg,
		Start:     start,
		BeforeLen: 5 * time.Second, IncidentLen: 55 * time.Second,
		Workers: Counts{Degraded: 9000, Shed: 20000},
		Probe: ProbeStats{Queries: 600, OK: 100, Degraded: 500, LongestGap: 150 * time.Millisecond,
			AdmittedFirst: 590, AdmittedAfterShed: 10, MostSheds: 2},
		Stalls: StallStats{Held: 8, EndedByWatchdog: 8},
		Hog:    StallStats{Held: 900, EndedByWatchdog: 900, Shed: 3000},
		Vanish: VanishStats{Vanished: 6, MidQuery: 6, Dropped: 6, LongestDrop: 15 * time.Second},
		Before: State{Sockets: snap(9), Goroutines: 60, HeapInuse: 4 << 20, HeapCollected: true},
		After:  State{Sockets: snap(9), Goroutines: 60, HeapInuse: 6 << 20, HeapCollected: true, Time: start.Add(61 * time.Second)},
		Peak:   State{Sockets: snap(330), Goroutines: 3000},

		Recovered: true, TimeToRecover: time.Second,
		ShedByProxy: 20500, ShedOverShare: 19000, SendStalledByProxy: 908,
		ShardCalls: map[string]int64{"completed": 10, "canceled": 5},
	}
}

func TestChecks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		change func(r *Report)
		failed string // the one check that must fail; "" for none
	}{
		{"clean", func(*Report) {}, ""},
		{"close_wait owned", func(r *Report) { r.After.Sockets.Sockets[sockdiag.CloseWait] = 1 }, "no CLOSE_WAIT at the end"},
		{"close_wait unaccepted", func(r *Report) { r.After.Sockets.ListenerUnowned[sockdiag.CloseWait] = 3 }, "no CLOSE_WAIT at the end"},
		{"close_wait during only", func(r *Report) { r.MaxCloseWait = 40 }, ""},
		{"grpc close_wait", func(r *Report) { r.PeerGoneAfter = 1 }, "no CLOSE_WAIT at the end"},
		{"no socket data", func(r *Report) { r.After.Sockets = sockdiag.Snapshot{} }, "no CLOSE_WAIT at the end"},
		{"goroutines at the slack", func(r *Report) { r.After.Goroutines = 65 }, ""},
		{"goroutines past the slack", func(r *Report) { r.After.Goroutines = 66 }, "goroutines back to baseline"},
		{"goroutines below", func(r *Report) { r.After.Goroutines = 50 }, ""},
		{"probe gap just under", func(r *Report) { r.Probe.LongestGap = 999 * time.Millisecond }, ""},
		{"probe gap 1s", func(r *Report) { r.Probe.LongestGap = time.Second }, "healthy queries answered throughout"},
		{"probe never answered", func(r *Report) { r.Probe = ProbeStats{Queries: 10, Failed: 10} }, "healthy queries answered throughout"},
		{"probe shed out", func(r *Report) { r.Probe.ShedOut, r.Probe.Failed = 1, 1 }, "probe never shed for its whole budget"},
		{"probe failed otherwise", func(r *Report) { r.Probe.Failed = 3 }, ""},
		{"not recovered", func(r *Report) { r.Recovered, r.NotRecovered = false, "3 sockets in CLOSE_WAIT" }, "recovered"},
		{"qs timeout", func(r *Report) { r.Workers.QSTimeout = 1 }, "answered before the QS timeout"},
		{"unavailable is no timeout", func(r *Report) { r.Workers.Unavailable = 3 }, ""},
		{"nothing shed", func(r *Report) { r.Workers.Shed, r.ShedByProxy = 0, 0 }, "overload shed, not queued"},
		{"stall completed", func(r *Report) { r.Stalls.EndedByWatchdog, r.Stalls.Completed = 7, 1 }, "stalled streams ended by the proxy"},
		{"stall not seen by the proxy", func(r *Report) { r.SendStalledByProxy = 907 }, "stalled streams ended by the proxy"},
		{"hog stream completed", func(r *Report) { r.Hog.EndedByWatchdog, r.Hog.Completed = 899, 1 }, "stalled streams ended by the proxy"},
		{"no hog", func(r *Report) { r.Config.Hog, r.Hog, r.SendStalledByProxy = 0, StallStats{}, 8 }, ""},
		{"no stream held", func(r *Report) { r.Stalls, r.Hog = StallStats{Shed: 40}, StallStats{Shed: 40} }, "stalled streams ended by the proxy"},
		{"stall ended by a connection the guard closed", func(r *Report) {
			r.Stalls.EndedByWatchdog, r.Stalls.ConnClosed, r.ConnsClosedByGuard = 5, 3, 1
		}, ""},
		{"streams on a closed connection recorded canceled", func(r *Report) {
			r.Hog.EndedByWatchdog, r.Hog.ConnClosed, r.SendStalledByProxy, r.ConnsClosedByGuard = 0, 900, 8, 4
		}, ""},
		{"connection closed, but not by the guard", func(r *Report) { r.Stalls.EndedByWatchdog, r.Stalls.ConnClosed = 5, 3 }, "stalled streams ended by the proxy"},
		{"no stallers asked", func(r *Report) { r.Config.Stallers, r.Stalls = 0, StallStats{} }, ""},
		{"neither stallers nor hog", func(r *Report) { r.Config.Stallers, r.Config.Hog, r.Stalls, r.Hog = 0, 0, StallStats{}, StallStats{} }, ""},
		{"vanished not dropped", func(r *Report) { r.Vanish.Dropped, r.Vanish.NotDropped = 5, 1 }, "vanished connections dropped by the proxy"},
		{"no vanishers asked", func(r *Report) { r.Config.Vanishers, r.Vanish = 0, VanishStats{} }, ""},
		{"heap back", func(r *Report) { r.After.HeapInuse = r.Before.HeapInuse + 16<<20 }, ""},
		{"heap held", func(r *Report) { r.After.HeapInuse = r.Before.HeapInuse + 16<<20 + 1 }, "heap back near baseline"},
		{"heap not collected", func(r *Report) { r.After.HeapCollected, r.After.HeapInuse = false, 1<<30 }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := cleanReport()
			tc.change(r)
			var failed []string
			for _, c := range r.Checks() {
				if !c.Pass {
					failed = append(failed, c.Name)
				}
			}
			want := []string{}
			if tc.failed != "" {
				want = []string{tc.failed}
			}
			if strings.Join(failed, "|") != strings.Join(want, "|") {
				t.Errorf("failed checks %q, want %q", failed, want)
			}
			if r.Clean() != (tc.failed == "") {
				t.Errorf("Clean() = %v", r.Clean())
			}
		})
	}
}

// replicasReport is the report of a clean run with replica 0 of the slow shards slowed, each of
// two replicas: the proxy routed around it, so no worker query was degraded.
func replicasReport() *Report {
	r := cleanReport()
	r.Config.Replicas = 2
	r.Workers = Counts{OK: 9000, Shed: 20000}
	r.Hedges = map[string]int64{"won": 40, "lost": 3, "denied": 2}
	r.Retries = map[string]int64{}
	r.Ejections = 2
	return r
}

// checkCase is a change to a clean report and the checks it must fail, in order.
type checkCase struct {
	name   string
	change func(r *Report)
	failed []string
}

// TestChecksReplicas: with one replica of each slow shard slowed, an answer missing a shard is
// a failure of the replica machinery, not the incident's expected degradation.
func TestChecksReplicas(t *testing.T) {
	t.Parallel()
	for _, tc := range []checkCase{
		{"clean", func(*Report) {}, nil},
		{"one degraded", func(r *Report) { r.Workers.Degraded = 1 }, []string{"every worker query answered in full"}},
		{"one unavailable", func(r *Report) { r.Workers.Unavailable = 1 }, []string{"every worker query answered in full"}},
		{"one other failure", func(r *Report) { r.Workers.Other = 1 }, []string{"every worker query answered in full"}},
		{"qs timeout", func(r *Report) { r.Workers.QSTimeout = 1 },
			[]string{"answered before the QS timeout", "every worker query answered in full"}},
		{"nothing shed", func(r *Report) { r.Workers.Shed, r.ShedByProxy = 0, 0 }, []string{"overload shed, not queued"}},
		{"the whole shards slowed: degraded is expected", func(r *Report) { r.Config.Replicas, r.Workers.Degraded = 1, 500 }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := replicasReport()
			tc.change(r)
			got, want := r.Failed(), tc.failed
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("failed checks %q, want %q", got, want)
			}
			if r.Clean() != (len(want) == 0) {
				t.Errorf("Clean() = %v", r.Clean())
			}
			names := map[string]bool{}
			for _, c := range r.Checks() {
				names[c.Name] = true
			}
			if want := r.Config.Replicas > 1; names["every worker query answered in full"] != want {
				t.Errorf("with %d replicas: the full-answer check is there: %v, want %v", r.Config.Replicas, !want, want)
			}
		})
	}

	r := replicasReport()
	r.Workers.Degraded = 7
	var buf bytes.Buffer
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := squeeze(buf.String())
	for _, want := range []string{
		"incident: replica 0 of shard-0,shard-1 (of 2 replicas each) slowed by 5s",
		"every worker query answered in full FAIL 7 worker queries degraded, 0 failed, 9000 answered in full, with replica 0 of shard-0,shard-1 slowed (2 replicas each)",
		"shard call hedges won 40", "shard call hedges lost 3", "shard call hedges denied 2", "replicas ejected 2",
		"verdict: NOT CLEAN (every worker query answered in full)",
	} {
		if !strings.Contains(out, squeeze(want)) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
	if strings.Contains(out, "retries") {
		t.Errorf("table shows retries although there were none:\n%s", buf.String())
	}
}

func TestWriteTable(t *testing.T) {
	t.Parallel()
	r := cleanReport()
	var buf bytes.Buffer
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"degraded        9000", "shed            20000",
		"CLOSE_WAIT", "ESTABLISHED", "TIME_WAIT",
		"goroutines", "time to recover", "longest probe gap",
		"no CLOSE_WAIT at the end                    PASS",
		"goroutines back to baseline                 PASS",
		"healthy queries answered throughout         PASS",
		"probe never shed for its whole budget       PASS",
		"admitted on the first try            590",
		"HOG (256 streams on one connection)",
		`incident: shard-0,shard-1 slowed by 5s, 320 workers (one caller, "chaos-qs", started over 1s)`,
		"verdict: CLEAN\n",
	} {
		// Column widths follow the longest cell, so a row is compared with its spaces collapsed.
		if !strings.Contains(squeeze(out), squeeze(want)) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	for i, line := range strings.Split(out, "\n") {
		if strings.HasSuffix(line, " ") {
			t.Errorf("line %d has trailing spaces: %q", i+1, line)
		}
	}

	r.After.Goroutines = 900
	buf.Reset()
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "verdict: NOT CLEAN (goroutines back to baseline)") {
		t.Errorf("leaking report does not say NOT CLEAN:\n%s", buf.String())
	}
}

func TestLongestGap(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_700_000_000, 0)
	at := func(ms int, answered bool) probeResult {
		return probeResult{start: t0.Add(time.Duration(ms) * time.Millisecond), answered: answered}
	}
	for _, tc := range []struct {
		name    string
		results []probeResult
		gap, at time.Duration
	}{
		{"none", nil, 0, 0},
		{"all answered", []probeResult{at(0, true), at(100, true), at(200, true)}, 100 * time.Millisecond, 0},
		{"a failed stretch", []probeResult{at(0, true), at(100, false), at(200, false), at(300, true), at(400, true)},
			300 * time.Millisecond, 0},
		{"failing at the start", []probeResult{at(0, false), at(100, false), at(200, true), at(300, true)},
			200 * time.Millisecond, 0},
		{"failing at the end", []probeResult{at(0, true), at(100, true), at(200, false), at(700, false)},
			600 * time.Millisecond, 100 * time.Millisecond},
		{"never answered", []probeResult{at(0, false), at(100, false), at(1500, false)}, 1500 * time.Millisecond, 0},
	} {
		gap, when := longestGap(tc.results, t0)
		if gap != tc.gap || when != tc.at {
			t.Errorf("%s: gap %s at +%s, want %s at +%s", tc.name, gap, when, tc.gap, tc.at)
		}
	}
}

// TestProbeStats: answers that came late (slow shards, retries) do not count as gaps: what
// counts is whether the queries started in every stretch got answered.
func TestProbeStats(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_700_000_000, 0)
	var rs []probeResult
	for i := range 30 {
		start := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		r := probeResult{start: start, end: start.Add(5 * time.Millisecond), answered: true, full: true}
		if i >= 10 { // shards slowed: every answer takes a second, some after a shed
			r.end, r.full = start.Add(time.Second), false
			if i%3 == 0 {
				r.sheds = 1 + i%2
			}
		}
		rs = append(rs, r)
	}
	rs[20] = probeResult{start: rs[20].start, end: rs[20].start.Add(3 * time.Second), err: "deadline"}
	rs[25] = probeResult{start: rs[25].start, end: rs[25].start.Add(3 * time.Second), sheds: 20, shedOut: true, err: "shed 20 times"}
	ps := probeStats(rs, t0)
	want := ProbeStats{Queries: 30, OK: 10, Degraded: 18, AfterShed: 6, Failed: 2,
		AdmittedFirst: 23, AdmittedAfterShed: 6, ShedOut: 1, MostSheds: 2,
		LongestGap: 200 * time.Millisecond, GapAt: 1900 * time.Millisecond, SlowestAnswer: time.Second, FailExample: "deadline"}
	if ps != want {
		t.Errorf("probeStats =\n %+v\nwant\n %+v", ps, want)
	}
}

// squeeze collapses every run of spaces in s into one.
func squeeze(s string) string {
	return regexp.MustCompile(` +`).ReplaceAllString(s, " ")
}

// clusterReport is the report of a clean cluster run: a replica replaced, every worker query
// answered in full, nothing shed (the load stays below admission).
func clusterReport() *Report {
	r := cleanReport()
	r.Config.Cluster, r.Config.SlowShards, r.Config.ReplaceShard = "127.0.0.1:7072", []string{}, "shard-1"
	r.Workers = Counts{OK: 9000}
	r.ShedByProxy, r.ShedOverShare = 0, 0
	r.Replacement = &Replacement{
		Killed:     Process{Name: "shard-1/r0", Addr: "127.0.0.1:7110"},
		Started:    Process{Name: "shard-1/r2", Addr: "127.0.0.1:40000"},
		Registered: 120 * time.Millisecond,
	}
	r.ReplaceAt = 20 * time.Second
	r.Retries = map[string]int64{"won": 12}
	return r
}

// TestChecksCluster: the cluster scenario requires the replacement and every worker query in
// full, and does not ask for overload.
func TestChecksCluster(t *testing.T) {
	t.Parallel()
	for _, tc := range []checkCase{
		{"clean", func(*Report) {}, nil},
		{"not replaced", func(r *Report) { r.Replacement, r.ReplaceErr = nil, "POST: 500" }, []string{"replica replaced"}},
		{"one degraded", func(r *Report) { r.Workers.Degraded = 1 }, []string{"every worker query answered in full"}},
		{"one unavailable", func(r *Report) { r.Workers.Unavailable = 1 }, []string{"every worker query answered in full"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := clusterReport()
			tc.change(r)
			if got, want := r.Failed(), tc.failed; strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("failed checks %q, want %q", got, want)
			}
		})
	}
	var buf bytes.Buffer
	if err := clusterReport().WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := squeeze(buf.String())
	for _, want := range []string{
		"incident: the first replica of shard-1 killed and replaced a third of the way in (cluster control 127.0.0.1:7072)",
		"replica replaced PASS shard-1/r0 (127.0.0.1:7110) killed at +20s, shard-1/r2 (127.0.0.1:40000) serving and registered 120ms later",
		"every worker query answered in full PASS 0 worker queries degraded, 0 failed, 9000 answered in full",
		"verdict: CLEAN",
	} {
		if !strings.Contains(out, squeeze(want)) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
	if strings.Contains(out, "overload shed") {
		t.Errorf("the cluster scenario judges overload:\n%s", buf.String())
	}
}
