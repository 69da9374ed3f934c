package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/chaos"
	"github.com/gatherproxy/gather/internal/discovery"
	"github.com/gatherproxy/gather/internal/discovery/etcdtest"
)

var (
	clusterReady   = regexp.MustCompile(`(?m)^(Ctrl-C) stops everything`)
	clusterControl = regexp.MustCompile(`control\s+http://(\S+)/cluster`)
	clusterURL     = regexp.MustCompile(`registered in (etcd://\S+)`)
)

// TestClusterReplacesReplicas runs gather cluster (etcd, 4 synthetic shards x 2 replicas, 2
// proxies, each a process) and checks: every replica is registered in etcd; each proxy answers
// with all 4 shards; while both proxies are queried in a loop, both original replicas of
// shard-1 are killed and replaced, one after the other, each once the proxies' topology has
// dropped the one before, so that shard-1 is served by new processes alone, and no query fails;
// a stop leaves no process behind, stopped in order (proxies, shards, etcd).
func TestClusterReplacesReplicas(t *testing.T) {
	t.Parallel()
	etcdtest.Skip(t)
	const ttl = 2 * time.Second
	c := startGather(t, "cluster", "--synthetic", "--register-ttl", ttl.String(), "--dir", t.TempDir())
	c.await(t, clusterReady)
	control := c.await(t, clusterControl)
	regURL := c.await(t, clusterURL)

	ps := clusterProcs(t, control)
	roles := map[string]int{}
	pids := map[int]string{}
	var proxies []chaos.Process
	for _, p := range ps {
		roles[p.Role]++
		pids[p.Pid] = p.Name
		if p.Role == "proxy" {
			proxies = append(proxies, p)
		}
	}
	if roles["etcd"] != 1 || roles["proxy"] != 2 || roles["shard"] != 8 || len(pids) != 11 {
		t.Fatalf("processes %+v: want etcd, 2 proxies and 8 shard replicas, each its own pid", ps)
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"discover", "--once", regURL}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "revision") || !strings.Contains(out.String(), ": 4 shards, 8 replicas, 0 missing, 0 rejected") {
		t.Errorf("gather discover --once printed\n%s\nwant 4 shards of 8 replicas", out.String())
	}
	clients := make([]queryv1.QueryServiceClient, len(proxies))
	for i, p := range proxies {
		clients[i] = queryv1.NewQueryServiceClient(dial(t, p.Addr))
		if err := fullAnswer(t.Context(), clients[i]); err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
	}

	// Load on both proxies while the replicas are replaced.
	var (
		queries, failed atomic.Int64
		mu              sync.Mutex
		firstFailure    string
	)
	loadCtx, stopLoad := context.WithCancel(t.Context())
	var load sync.WaitGroup
	for i := range 4 {
		load.Go(func() {
			for loadCtx.Err() == nil {
				err := fullAnswer(loadCtx, clients[i%len(clients)])
				if loadCtx.Err() != nil {
					return
				}
				queries.Add(1)
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if firstFailure == "" {
						firstFailure = err.Error()
					}
					mu.Unlock()
				}
			}
		})
	}
	defer func() { stopLoad(); load.Wait() }()

	w := watch(t, regURL)
	for _, id := range []string{"r0", "r1"} {
		rp := replace(t, control, "shard-1", id)
		pids[rp.Started.Pid] = rp.Started.Name
		if rp.Killed.Name != "shard-1/"+id || rp.Started.Shard != "shard-1" || rp.Started.Addr == rp.Killed.Addr {
			t.Fatalf("replacement %+v: want %s killed and a new replica of shard-1 on a new port", rp, id)
		}
		// The killed replica stays registered until its lease expires, within its TTL and a second
		// (and the time the replacement took).
		w.WaitFor(t, ttl+time.Second+rp.Registered, id+" gone and "+rp.Started.Name+" registered", func(top discovery.Topology) bool {
			return !w.has(top, rp.Killed.ReplicaID, rp.Killed.Addr) && w.has(top, rp.Started.ReplicaID, rp.Started.Addr)
		})
		// Both proxies follow: they send the new replica queries. Only then is the next replica
		// killed: a replica a proxy has not connected to yet is no sure retry target (see
		// docs/demo-cluster.md).
		for _, p := range proxies {
			waitMetric(t, c, p.Admin, "gather_replica_selections_total", `replica="`+rp.Started.Addr+`"`)
		}
	}
	before := queries.Load()
	for queries.Load() < before+20 { // some queries on the new replicas alone
		select {
		case <-c.exited:
			t.Fatalf("gather cluster exited (%v)", c.exitErr)
		case <-time.After(10 * time.Millisecond):
		}
	}
	stopLoad()
	load.Wait()
	t.Logf("%d queries through the replacements, %d failed or degraded", queries.Load(), failed.Load())
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d queries failed or were degraded while shard-1's replicas were replaced; the first: %s", n, queries.Load(), firstFailure)
	}
	for i, cl := range clients {
		if err := fullAnswer(t.Context(), cl); err != nil {
			t.Errorf("%s, after the replacements: %v", proxies[i].Name, err)
		}
		m := scrape(t, proxies[i].Admin)
		t.Logf("%s: shard-1 retries %v, shard calls reset %v", proxies[i].Name,
			m.sum("gather_shard_retries_total", `shard="shard-1"`), m.sum("gather_grpc_rpc_ends_total", `reason="reset"`, `side="client"`))
	}

	if err := c.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.exited:
		if c.exitErr != nil {
			t.Errorf("gather cluster exited with %v after Ctrl-C", c.exitErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("gather cluster did not stop within 30s of Ctrl-C")
	}
	all := c.out()
	i := strings.Index(all, "stopping:")
	if i < 0 {
		t.Fatalf("no stop progress in gather cluster's output:\n%s", all)
	}
	stopped := all[i:]
	lastProxy, firstShard := strings.LastIndex(stopped, "proxy-"), strings.Index(stopped, "shard-")
	lastShard, etcd := strings.LastIndex(stopped, "shard-"), strings.Index(stopped, "etcd ")
	if lastProxy < 0 || firstShard < lastProxy || etcd < lastShard {
		t.Errorf("stopped out of order (want the proxies, then the shards, then etcd):\n%s", stopped)
	}
	for pid, name := range pids {
		if processAlive(pid) {
			t.Errorf("%s (pid %d) still running after gather cluster stopped", name, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// fullAnswer asks a proxy one query and fails unless it is answered by all 4 shards.
func fullAnswer(ctx context.Context, c queryv1.QueryServiceClient) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := c.Search(ctx, &queryv1.SearchRequest{Query: "union constitution", TopK: 10})
	if err != nil {
		return err
	}
	if cov := resp.GetCoverage(); cov.GetDegraded() || cov.GetShardsSucceeded() != 4 || cov.GetShardsTotal() != 4 {
		var missing []string // which shard, why, and where its attempts went: what a failure needs to be told apart
		for _, r := range resp.GetShards() {
			if r.GetStatus() != queryv1.ShardStatus_SHARD_STATUS_OK {
				missing = append(missing, fmt.Sprintf("%s: %v after %s from the %v on %s (%d attempts): %s", r.GetShard(), r.GetStatus(),
					r.GetLatency().AsDuration(), r.GetSource(), r.GetReplica(), r.GetAttempts(), r.GetError()))
			}
		}
		return fmt.Errorf("coverage %v, want 4 of 4 shards; %s", cov, strings.Join(missing, "; "))
	}
	return nil
}

func clusterProcs(t *testing.T, control string) []chaos.Process {
	t.Helper()
	resp, err := http.Get("http://" + control + chaos.ClusterPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var ps []chaos.Process
	if err := json.NewDecoder(resp.Body).Decode(&ps); err != nil {
		t.Fatal(err)
	}
	return ps
}

func replace(t *testing.T, control, shard, replica string) chaos.Replacement {
	t.Helper()
	code, body := postControl(t.Context(), t, "http://"+control+chaos.ReplacePath, url.Values{"shard": {shard}, "replica": {replica}})
	if code != http.StatusOK {
		t.Fatalf("replace %s %s: %d: %s", shard, replica, code, body)
	}
	var rp chaos.Replacement
	if err := json.Unmarshal(body, &rp); err != nil {
		t.Fatal(err)
	}
	return rp
}

// processAlive reports whether pid is a process that has not exited (a zombie has).
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return syscall.Kill(pid, 0) == nil && !os.IsNotExist(err)
	}
	// pid (comm) STATE ...: comm may hold spaces, so read the state after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// metricsPage is a /metrics page.
type metricsPage string

func scrape(t *testing.T, admin string) metricsPage {
	t.Helper()
	return metricsPage(metricsText(t, admin))
}

// sum adds up the samples of name whose labels contain every one of match, by outcome label if
// they have one ("" otherwise).
func (m metricsPage) sum(name string, match ...string) map[string]float64 {
	out := map[string]float64{}
	outcome := regexp.MustCompile(`outcome="([^"]*)"`)
lines:
	for _, line := range strings.Split(string(m), "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		for _, s := range match {
			if !strings.Contains(line, s) {
				continue lines
			}
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		key := ""
		if o := outcome.FindStringSubmatch(line); o != nil {
			key = o[1]
		}
		out[key] += v
	}
	return out
}

// waitMetric polls a proxy's /metrics until a sample of name with match in its labels is above
// 0, for at most 20 s.
func waitMetric(t *testing.T, c *process, admin, name, match string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		total := 0.0
		for _, v := range scrape(t, admin).sum(name, match) {
			total += v
		}
		if total > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy at %s: no %s{%s} above 0 within 20s", admin, name, match)
		}
		select {
		case <-c.exited:
			t.Fatalf("gather cluster exited (%v)", c.exitErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestClusterUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cluster", "--shards", "0"}, "--shards 0, --replicas 2, --proxies 2: give 1 to 10 of each"},
		{[]string{"cluster", "--synthetic", "--corpus", "x.jsonl"}, "--synthetic serves no corpus"},
		{[]string{"cluster", "--register-ttl", "1s"}, "-register-ttl: 1s is below the minimum of 2s"},
		{[]string{"cluster", "extra"}, "unexpected arguments"},
	} {
		var stdout, stderr strings.Builder
		err := run(t.Context(), tc.args, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error()+stderr.String(), tc.want) {
			t.Errorf("gather %v: got %v (stderr %q), want an error mentioning %q", tc.args, err, stderr.String(), tc.want)
		}
	}
}
