package discovery_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/gatherproxy/gather/internal/discovery"
	"github.com/gatherproxy/gather/internal/discovery/etcdtest"
	"github.com/gatherproxy/gather/internal/metrictest"
)

// testTTL is the lease TTL of the tests' registrations.
const testTTL = 2 * time.Second

// childEnv, when set to a registry URL, makes the test binary a registrant (see runChild).
const childEnv = "GATHER_DISCOVERY_TEST_REGISTRANT"

func TestMain(m *testing.M) {
	if u := os.Getenv(childEnv); u != "" {
		os.Exit(runChild(u))
	}
	goleak.VerifyTestMain(m)
}

// runChild registers shard-0/child at 127.0.0.1:9 with testTTL, prints "registered", and waits
// to be killed (at most a minute).
func runChild(u string) int {
	t, err := discovery.ParseTarget(u)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cli, err := t.Client()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := discovery.Register(ctx, cli, t, discovery.Registration{Shard: "shard-0", ReplicaID: "child", Address: "127.0.0.1:9"},
		discovery.WithTTL(testTTL), discovery.WithRegisterLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("registered")
	time.Sleep(time.Minute) // the test kills this process long before
	return 0
}

// env is a running etcd, a client of it and a Watcher of a prefix, with the topologies it
// delivers.
type env struct {
	srv    *etcdtest.Server
	target discovery.Target
	cli    *clientv3.Client
	reg    *prometheus.Registry
	m      *discovery.Metrics
	// the topologies the Watcher delivers: WaitFor, Holds
	*etcdtest.Latest[discovery.Topology]
}

func newEnv(t *testing.T, opts ...discovery.WatchOption) *env {
	t.Helper()
	e := &env{srv: etcdtest.Start(t), reg: prometheus.NewRegistry(), Latest: etcdtest.NewLatest[discovery.Topology]()}
	e.m = discovery.NewMetrics(e.reg)
	var err error
	if e.target, err = discovery.ParseTarget(e.srv.URL("gather/test")); err != nil {
		t.Fatal(err)
	}
	e.cli = e.client(t)
	w := discovery.NewWatcher(e.cli, e.target, e.Set, append([]discovery.WatchOption{discovery.WithWatchMetrics(e.m), discovery.WithWatchLogger(testLogger(t))}, opts...)...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
	return e
}

// client returns a new client of the env's etcd, closed when the test ends.
func (e *env) client(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := e.target.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// register registers shard/id at addr with a client of its own and testTTL; the test's cleanup
// closes the registration.
func (e *env) register(t *testing.T, shard, id, addr string) *discovery.Registrar {
	t.Helper()
	r, err := e.tryRegister(t, shard, id, addr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (e *env) tryRegister(t *testing.T, shard, id, addr string) (*discovery.Registrar, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := discovery.Register(ctx, e.client(t), e.target, discovery.Registration{Shard: shard, ReplicaID: id, Address: addr, Version: "test"},
		discovery.WithTTL(testTTL), discovery.WithRegisterLogger(testLogger(t)), discovery.WithRegisterMetrics(e.m))
	if err == nil {
		t.Cleanup(func() { _ = r.Close(context.Background()) })
	}
	return r, err
}

// hasReplica reports whether top has replica id of shard at addr.
func hasReplica(shard, id, addr string) func(discovery.Topology) bool {
	return func(top discovery.Topology) bool {
		for _, s := range top.Shards {
			for _, r := range s.Replicas {
				if s.Name == shard && r.ID == id && r.Address == addr {
					return true
				}
			}
		}
		return false
	}
}

func not(f func(discovery.Topology) bool) func(discovery.Topology) bool {
	return func(top discovery.Topology) bool { return !f(top) }
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// keyExists reports whether key is in etcd now.
func (e *env) keyExists(t *testing.T, key string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.Kvs) > 0
}

func TestRegisterWatchDeregister(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// The watcher's first, empty topology first: a replica registered before the watcher has
	// read the prefix arrives in that read, not as a put event, and the count below would be 1.
	e.WaitFor(t, 5*time.Second, "the first topology", func(discovery.Topology) bool { return true })
	r := e.register(t, "shard-0", "r0", "127.0.0.1:7071")
	e.WaitFor(t, 5*time.Second, "shard-0/r0", hasReplica("shard-0", "r0", "127.0.0.1:7071"))
	e.register(t, "shard-0", "r1", "127.0.0.1:7072")
	top := e.WaitFor(t, 5*time.Second, "shard-0/r1", hasReplica("shard-0", "r1", "127.0.0.1:7072"))
	if got := top.Specs(); len(got) != 1 || strings.Join(got[0].Replicas, ",") != "127.0.0.1:7071,127.0.0.1:7072" {
		t.Errorf("Specs() = %+v, want shard-0 with both replicas in replica id order", got)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Close revokes the lease, which deletes the key at once: no waiting for the TTL.
	if e.keyExists(t, r.Key()) {
		t.Errorf("%s still in etcd after Close", r.Key())
	}
	e.WaitFor(t, 5*time.Second, "shard-0/r0 gone", not(hasReplica("shard-0", "r0", "127.0.0.1:7071")))
	if got := metrictest.Sum(t, e.reg, "gather_discovery_events_total", map[string]string{"op": "put"}); got != 2 {
		t.Errorf("put events = %v, want 2", got)
	}
	if got := metrictest.Sum(t, e.reg, "gather_discovery_events_total", map[string]string{"op": "delete"}); got != 1 {
		t.Errorf("delete events = %v, want 1", got)
	}
	if got := metrictest.Sum(t, e.reg, "gather_discovery_replicas", nil); got != 1 {
		t.Errorf("gather_discovery_replicas = %v, want 1", got)
	}
}

// TestKilledRegistrantExpires kills a registrant process (SIGKILL: no Close) and checks that its
// registration leaves the topology once its lease expires, within the TTL and a second.
func TestKilledRegistrantExpires(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+e.target.String())
	cmd.Stderr = testWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	line, _ := bufio.NewReader(out).ReadString('\n')
	go func() { _ = cmd.Wait(); close(exited) }()
	if line != "registered\n" {
		t.Fatalf("registrant said %q, want registered", line)
	}
	child := hasReplica("shard-0", "child", "127.0.0.1:9")
	e.WaitFor(t, 5*time.Second, "the registrant", child)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	e.WaitFor(t, testTTL+time.Second, "the killed registrant gone", not(child))
}

// TestLostLeaseRegistersAgain revokes a registrant's lease behind its back (what etcd does to a
// lease it could not renew) and checks that the registrant writes its key again.
func TestLostLeaseRegistersAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.register(t, "shard-0", "r0", "127.0.0.1:7071")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.cli.Get(ctx, r.Key())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("Get %s = %v, %v", r.Key(), resp, err)
	}
	old := resp.Kvs[0].Lease
	if _, err := e.cli.Revoke(ctx, clientv3.LeaseID(old)); err != nil {
		t.Fatal(err)
	}
	e.WaitFor(t, 5*time.Second, "r0 gone", not(hasReplica("shard-0", "r0", "127.0.0.1:7071")))
	e.WaitFor(t, 10*time.Second, "r0 back", hasReplica("shard-0", "r0", "127.0.0.1:7071"))
	if got := metrictest.Sum(t, e.reg, "gather_discovery_registrations_total", map[string]string{"outcome": "lost"}); got != 1 {
		t.Errorf("lost registrations = %v, want 1", got)
	}
}

func TestConflictsAreRejected(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register(t, "shard-0", "r0", "127.0.0.1:7071")
	e.WaitFor(t, 5*time.Second, "r0", hasReplica("shard-0", "r0", "127.0.0.1:7071"))

	// The same replica id with another address, while r0 lives: refused outright.
	if _, err := e.tryRegister(t, "shard-0", "r0", "127.0.0.1:7099"); !errors.Is(err, discovery.ErrReplicaTaken) {
		t.Errorf("register r0 at another address = %v, want ErrReplicaTaken", err)
	}
	// The same replica at the same address (a restart within the TTL): taken over.
	if _, err := e.tryRegister(t, "shard-0", "r0", "127.0.0.1:7071"); err != nil {
		t.Errorf("register r0 again at its address = %v, want it taken over", err)
	}
	// The same address under another shard: written (the registrant cannot know), rejected by
	// the watcher with the reason.
	e.register(t, "shard-1", "r1", "127.0.0.1:7071")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.cli.Put(ctx, e.target.Prefix+"/shard-2/r2", "{garbage"); err != nil {
		t.Fatal(err)
	}
	top := e.WaitFor(t, 5*time.Second, "two rejections", func(top discovery.Topology) bool { return len(top.Rejected) == 2 })
	want := []string{"address 127.0.0.1:7071 is already registered at /gather/test/shard-0/r0", "not a JSON registration"}
	for i, r := range top.Rejected {
		if !strings.Contains(r.Reason, want[i]) {
			t.Errorf("rejection %d = %+v, want a reason with %q", i, r, want[i])
		}
	}
	if got := top.Specs(); len(got) != 1 || got[0].Name != "shard-0" {
		t.Errorf("Specs() = %+v, want shard-0 alone", got)
	}
	if got := metrictest.Sum(t, e.reg, "gather_discovery_rejections_total", nil); got != 2 {
		t.Errorf("rejections = %v, want 2", got)
	}
}

func TestMissingShardReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t, discovery.WithExpected([]string{"shard-0", "shard-1"}))
	e.register(t, "shard-0", "r0", "127.0.0.1:7071")
	top := e.WaitFor(t, 5*time.Second, "r0", hasReplica("shard-0", "r0", "127.0.0.1:7071"))
	if strings.Join(top.Missing, ",") != "shard-1" {
		t.Errorf("Missing = %v, want [shard-1]", top.Missing)
	}
	e.register(t, "shard-1", "r1", "127.0.0.1:7072")
	e.WaitFor(t, 5*time.Second, "nothing missing", func(top discovery.Topology) bool { return len(top.Missing) == 0 })
	if got := metrictest.Sum(t, e.reg, "gather_discovery_missing_shards", nil); got != 0 {
		t.Errorf("gather_discovery_missing_shards = %v, want 0", got)
	}
}

// TestWatchResumesAfterRestart restarts etcd under a running watcher and registrant: the
// registration survives (etcd keeps leases across a restart) and a replica registered after the
// restart reaches the watcher.
func TestWatchResumesAfterRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register(t, "shard-0", "r0", "127.0.0.1:7071")
	e.WaitFor(t, 5*time.Second, "r0", hasReplica("shard-0", "r0", "127.0.0.1:7071"))
	e.srv.Restart()
	e.register(t, "shard-1", "r1", "127.0.0.1:7072")
	e.WaitFor(t, 15*time.Second, "r1 after the restart", hasReplica("shard-1", "r1", "127.0.0.1:7072"))
	// r0's registrant keeps its lease alive across the restart: r0 stays for two TTLs more
	// (there is no event to wait for: it is the absence of one that is checked).
	e.Holds(t, 2*testTTL, "r0", hasReplica("shard-0", "r0", "127.0.0.1:7071"))
	if !e.keyExists(t, e.target.Prefix+"/shard-0/r0") {
		t.Error("r0's key is gone after the restart")
	}
}

// TestResyncAfterNewHistory replaces etcd by an empty one on the same address (revisions start
// again from 1, below the watch's): only the periodic read of the whole prefix brings the
// watcher's topology up to date.
func TestResyncAfterNewHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, discovery.WithResync(500*time.Millisecond))
	// Enough revisions that the new history stays below the watch's revision.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 20 {
		if _, err := e.cli.Put(ctx, fmt.Sprintf("/elsewhere/%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	e.register(t, "shard-0", "r0", "127.0.0.1:7071")
	e.WaitFor(t, 5*time.Second, "r0", hasReplica("shard-0", "r0", "127.0.0.1:7071"))
	e.srv.RestartEmpty()
	e.register(t, "shard-1", "r1", "127.0.0.1:7072")
	e.WaitFor(t, 10*time.Second, "r1 in the new history", hasReplica("shard-1", "r1", "127.0.0.1:7072"))
}

// TestOutageLongerThanTTL stops etcd for longer than the TTL (as a network cut would): the
// registrant's client gives the lease up, and once etcd is back the registrant writes its key
// under a new lease, which the old lease's expiry then leaves alone.
func TestOutageLongerThanTTL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.register(t, "shard-0", "r0", "127.0.0.1:7071")
	r0 := hasReplica("shard-0", "r0", "127.0.0.1:7071")
	e.WaitFor(t, 5*time.Second, "r0", r0)
	before := e.lease(t, r.Key())
	e.srv.Stop()
	lost := func() bool {
		return metrictest.Sum(t, e.reg, "gather_discovery_registrations_total", map[string]string{"outcome": "lost"}) == 1
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for !lost() {
		if time.Now().After(deadline) {
			t.Fatal("the registrant did not give its lease up within 10s of etcd stopping")
		}
		<-tick.C
	}
	e.srv.Resume()
	for e.lease(t, r.Key()) == before {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatal("the registrant did not register again within 10s of etcd's return")
		}
		<-tick.C
	}
	// The old lease, restored with etcd, expires within its TTL; the key is no longer under it.
	e.Holds(t, 2*testTTL, "r0", r0)
}

// lease returns the lease of key (0 if there is no key).
func (e *env) lease(t *testing.T, key string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return 0
	}
	return resp.Kvs[0].Lease
}
