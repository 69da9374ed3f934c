package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/connectivity"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/proxy"
	"github.com/gatherproxy/gather/internal/sockdiag"
)

var adminAddr = regexp.MustCompile(`admin on http://(\S+),`)

// proxySockets reads a gather proxy's own socket states from its admin /metrics.
func proxySockets(t *testing.T, admin string) sockdiag.Snapshot {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	snap, err := sockdiag.ParseMetrics(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func poll(t *testing.T, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestShardProcessKilled: a shard process is killed (SIGKILL) while a query waits on it. The
// query must end at once with that shard UNAVAILABLE, not at its timeout, and the proxy must keep
// no socket in CLOSE_WAIT.
func TestShardProcessKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processes")
	}
	t.Parallel()
	small := smallCorpus(t, 6)
	data := t.TempDir()
	live := startGather(t, "shard", "--listen", "127.0.0.1:0", "--partition", "0/2", "--corpus", small, "--data-dir", data)
	doomed := startGather(t, "shard", "--listen", "127.0.0.1:0", "--partition", "1/2", "--corpus", small, "--data-dir", data, "--fault", "hang")
	liveAddr, doomedAddr := live.await(t, shardAddr), doomed.await(t, shardAddr)
	px := startGather(t, "proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
		"--shard", "s0="+liveAddr, "--shard", "s1="+doomedAddr, "--shard-timeout", "1m", "--idle-timeout", "1m")
	addr := px.await(t, proxyAddr)
	admin := px.await(t, adminAddr)

	client := queryv1.NewQueryServiceClient(dial(t, addr))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	type answer struct {
		resp *queryv1.SearchResponse
		err  error
		took time.Duration
	}
	got := make(chan answer, 1)
	var killedAt time.Time
	go func() {
		start := time.Now()
		resp, err := client.Search(ctx, &queryv1.SearchRequest{Query: "union", TopK: 5})
		got <- answer{resp, err, time.Since(start)}
	}()
	poll(t, 10*time.Second, func() string { // the query is waiting on the hung shard
		if !strings.Contains(metricsText(t, admin), "gather_admission_in_flight_queries 1") {
			return "query not in flight"
		}
		return ""
	})
	killedAt = time.Now()
	if err := doomed.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	a := <-got
	if a.err != nil {
		t.Fatalf("query: %v", a.err)
	}
	if s := a.resp.GetShards()[1]; s.GetStatus() != queryv1.ShardStatus_SHARD_STATUS_UNAVAILABLE {
		t.Errorf("killed shard: %v (%s), want UNAVAILABLE", s.GetStatus(), s.GetError())
	}
	if cov := a.resp.GetCoverage(); cov.GetShardsSucceeded() != 1 || !cov.GetDegraded() {
		t.Errorf("coverage %v, want 1 of 2", cov)
	}
	t.Logf("answered %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	poll(t, 10*time.Second, func() string {
		if n := proxySockets(t, admin).Sockets[sockdiag.CloseWait]; n > 0 {
			return fmt.Sprintf("proxy has %d sockets in CLOSE_WAIT", n)
		}
		return ""
	})
	// Later queries fail over at once (connection refused) instead of waiting.
	resp, err := client.Search(ctx, &queryv1.SearchRequest{Query: "union", TopK: 5})
	if err != nil || resp.GetCoverage().GetShardsSucceeded() != 1 {
		t.Errorf("query after the kill: %v, coverage %v", err, resp.GetCoverage())
	}
	px.stop(t)
	live.stop(t)
}

func metricsText(t *testing.T, admin string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// netns is a network namespace with a veth pair to the test's namespace: the shard host of
// TestShardBlackholed. Its addresses are link-local and exist only between the two ends.
type netns struct {
	name, hostIf, nsIf string
	hostIP, nsIP       string
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetns creates the namespace, or skips the test with the reason it cannot.
func newNetns(t *testing.T) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create a network namespace (CI runs as root)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipped: %s not installed (apt-get install iproute2 nftables; .ci/run does)", tool)
		}
	}
	id := os.Getpid() % 100000
	n := &netns{
		name: fmt.Sprintf("gather-bh-%d", id), hostIf: fmt.Sprintf("gbh%da", id), nsIf: fmt.Sprintf("gbh%db", id),
		hostIP: "169.254.77.1", nsIP: "169.254.77.2",
	}
	if err := exec.Command("ip", "netns", "add", n.name).Run(); err != nil {
		t.Skipf("skipped: cannot create a network namespace here: %v", err)
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", n.name).Run()
		_ = exec.Command("ip", "link", "del", n.hostIf).Run()
	})
	sh(t, "ip", "link", "add", n.hostIf, "type", "veth", "peer", "name", n.nsIf)
	sh(t, "ip", "link", "set", n.nsIf, "netns", n.name)
	sh(t, "ip", "addr", "add", n.hostIP+"/30", "dev", n.hostIf)
	sh(t, "ip", "link", "set", n.hostIf, "up")
	sh(t, "ip", "netns", "exec", n.name, "ip", "addr", "add", n.nsIP+"/30", "dev", n.nsIf)
	sh(t, "ip", "netns", "exec", n.name, "ip", "link", "set", n.nsIf, "up")
	sh(t, "ip", "netns", "exec", n.name, "ip", "link", "set", "lo", "up")
	return n
}

// drop makes the namespace drop every packet that arrives: the shard's host is blackholed.
func (n *netns) drop(t *testing.T) {
	sh(t, "ip", "netns", "exec", n.name, "nft", "add", "table", "inet", "gather_bh")
	sh(t, "ip", "netns", "exec", n.name, "nft", "add", "chain", "inet", "gather_bh", "input",
		"{ type filter hook input priority 0 ; policy drop ; }")
}

func (n *netns) undrop(t *testing.T) {
	sh(t, "ip", "netns", "exec", n.name, "nft", "delete", "table", "inet", "gather_bh")
}

// TestShardBlackholed: the packets of one shard silently vanish (an nft DROP rule in the shard's
// network namespace). The idle connection must be found dead by keepalive within Time + Timeout
// (10s + 3s), queries must still be answered before their deadline, and once the packets flow
// again the shard must be back. (With a query in flight the kernel finds it sooner: grpc-go sets
// TCP_USER_TIMEOUT to the keepalive timeout, so unacknowledged data ends it after 3s.)
func TestShardBlackholed(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processes and waits for keepalive")
	}
	t.Parallel()
	ns := newNetns(t)
	small := smallCorpus(t, 6)
	data := t.TempDir()
	local := startGather(t, "shard", "--listen", "127.0.0.1:0", "--partition", "0/2", "--corpus", small, "--data-dir", data)
	remote := &process{cmd: exec.Command("ip", "netns", "exec", ns.name, gatherBin, "shard", "--listen", ns.nsIP+":7171",
		"--partition", "1/2", "--corpus", small, "--data-dir", data)}
	startProcess(t, remote)
	localAddr := local.await(t, shardAddr)
	remoteAddr := remote.await(t, shardAddr)

	fan, err := fanout.New([]fanout.ShardSpec{{Name: "s0", Replicas: []string{localAddr}}, {Name: "s1", Replicas: []string{remoteAddr}}},
		fanout.Config{ShardTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fan.Close() }()
	svc := proxy.New(fan, proxy.Config{})
	search := func(timeout time.Duration) (*queryv1.SearchResponse, error) {
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		return svc.Search(ctx, &queryv1.SearchRequest{Query: "union", TopK: 5})
	}
	poll(t, 20*time.Second, func() string {
		if resp, err := search(2 * time.Second); err != nil || resp.GetCoverage().GetShardsSucceeded() != 2 {
			return fmt.Sprintf("cluster not healthy: %v %v", err, resp.GetCoverage())
		}
		return ""
	})

	ns.drop(t)
	droppedAt := time.Now()
	// No query now, so nothing is in flight on the connection: only keepalive can find it dead
	// (a ping after 10s of silence, given up 3s later); the connection then leaves READY.
	poll(t, 30*time.Second, func() string {
		if st := fan.ReplicaStates()["s1"][remoteAddr]; st == connectivity.Ready {
			return fmt.Sprintf("connection to the blackholed shard still %v", st)
		}
		return ""
	})
	t.Logf("keepalive found the dead connection %s after the drop", time.Since(droppedAt).Round(100*time.Millisecond))
	resp, err := search(3 * time.Second)
	if err != nil {
		t.Fatalf("query with s1 blackholed: %v", err)
	}
	if resp.GetShards()[1].GetStatus() == queryv1.ShardStatus_SHARD_STATUS_OK || resp.GetCoverage().GetShardsSucceeded() != 1 {
		t.Errorf("s1 blackholed: %v (%s), coverage %v; want s1 missing and 1 of 2",
			resp.GetShards()[1].GetStatus(), resp.GetShards()[1].GetError(), resp.GetCoverage())
	}

	ns.undrop(t)
	poll(t, 20*time.Second, func() string {
		if resp, err := search(2 * time.Second); err != nil || resp.GetCoverage().GetShardsSucceeded() != 2 {
			return fmt.Sprintf("not recovered: %v %v", err, resp.GetCoverage())
		}
		return ""
	})
	local.stop(t)
	remote.stop(t)
}

// TestGracefulShutdown: SIGTERM while a query is in flight. The proxy turns NOT_SERVING on
// /readyz at once, lets the query finish with its answer, and exits cleanly.
func TestGracefulShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processes")
	}
	t.Parallel()
	small := smallCorpus(t, 4)
	sh := startGather(t, "shard", "--listen", "127.0.0.1:0", "--partition", "0/1", "--corpus", small, "--data-dir", t.TempDir(), "--fault", "delay=1500ms")
	shardAt := sh.await(t, shardAddr)
	px := startGather(t, "proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--shard", "s0="+shardAt, "--shard-timeout", "10s")
	addr, admin := px.await(t, proxyAddr), px.await(t, adminAddr)
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		resp, err := queryv1.NewQueryServiceClient(dial(t, addr)).Search(ctx, &queryv1.SearchRequest{Query: "union", TopK: 3})
		if err == nil && resp.GetCoverage().GetShardsSucceeded() != 1 {
			err = fmt.Errorf("coverage %v", resp.GetCoverage())
		}
		got <- err
	}()
	poll(t, 10*time.Second, func() string {
		if !strings.Contains(metricsText(t, admin), "gather_admission_in_flight_queries 1") {
			return "query not in flight"
		}
		return ""
	})
	if err := px.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, func() string {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return err.Error()
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			return fmt.Sprintf("/readyz %d while draining", resp.StatusCode)
		}
		return ""
	})
	if err := <-got; err != nil {
		t.Errorf("the in-flight query was not drained: %v", err)
	}
	select {
	case <-px.exited:
		if px.exitErr != nil {
			t.Errorf("proxy exited with %v", px.exitErr)
		}
	case <-time.After(15 * time.Second):
		t.Error("proxy did not exit after draining")
	}
	sh.stop(t)
}
