package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/discovery"
	"github.com/gatherproxy/gather/internal/discovery/etcdtest"
)

// TestShardRegistersInEtcd runs gather shard --register against a real etcd: the shard appears
// in the topology under its partition and answers at the registered address; a graceful stop
// removes it at once; a killed shard drops out once its lease expires, within the TTL and a
// second; a replica started after them appears. gather discover prints the same topology.
func TestShardRegistersInEtcd(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	url := srv.URL("gather/e2e")
	const ttl = 2 * time.Second
	shard := func(id string) *process {
		return startGather(t, "shard", "--synthetic", "--listen", "127.0.0.1:0", "--partition", "0/2",
			"--register", url, "--register-ttl", ttl.String(), "--replica-id", id)
	}
	w := watch(t, url)

	a := shard("a")
	addrA := a.await(t, shardAddr)
	top := w.WaitFor(t, 10*time.Second, "replica a", func(top discovery.Topology) bool { return w.has(top, "a", addrA) })
	if len(top.Shards) != 1 || top.Shards[0].Name != "shard-0" || top.Shards[0].Partition.String() != "0/2" ||
		strings.Join(top.Missing, ",") != "shard-1" {
		t.Errorf("topology %+v; want shard-0 (0/2) alone and shard-1 missing", top)
	}
	st, err := shardv1.NewShardServiceClient(dial(t, top.Shards[0].Replicas[0].Address)).Search(t.Context(), &shardv1.SearchRequest{Query: "q", TopK: 3})
	if err != nil {
		t.Fatal(err)
	}
	hits := 0
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the registered shard: %v", err)
		}
		hits += len(resp.GetHits())
	}
	if hits != 3 {
		t.Errorf("the registered shard answered %d hits, want 3", hits)
	}

	var out bytes.Buffer
	if err := run(t.Context(), []string{"discover", "--once", url}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if want := regexp.MustCompile(`(?m)^  shard-0 \(0/2\)  a  ` + regexp.QuoteMeta(addrA) + `  \S+\n  shard-1  missing`); !want.MatchString(out.String()) {
		t.Errorf("gather discover --once printed\n%s\nwant shard-0's replica a and shard-1 missing", out.String())
	}

	// A graceful stop revokes the lease before the process exits: no waiting for the TTL.
	a.stop(t)
	if w.count(t, "/gather/e2e/shard-0/a") != 0 {
		t.Errorf("replica a's key still in etcd after its graceful stop")
	}
	w.WaitFor(t, ttl, "replica a gone after SIGTERM", func(top discovery.Topology) bool { return !w.has(top, "a", addrA) })

	b := shard("b")
	addrB := b.await(t, shardAddr)
	w.WaitFor(t, 10*time.Second, "replica b", func(top discovery.Topology) bool { return w.has(top, "b", addrB) })
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-b.exited
	w.WaitFor(t, ttl+time.Second, "replica b gone after SIGKILL", func(top discovery.Topology) bool { return !w.has(top, "b", addrB) })

	c := shard("c")
	addrC := c.await(t, shardAddr)
	w.WaitFor(t, 10*time.Second, "replica c", func(top discovery.Topology) bool { return w.has(top, "c", addrC) })
	c.stop(t)
}

func TestRegisterUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"shard", "--register", "http://127.0.0.1:2379/x"}, `--register: invalid registry URL "http://127.0.0.1:2379/x": scheme "http" is not "etcd"`},
		{[]string{"shard", "--register", "etcd://127.0.0.1:2379"}, "no key prefix"},
		{[]string{"shard", "--listen", "0.0.0.0:7071", "--register", "etcd://127.0.0.1:2379/x"}, "give --advertise HOST:PORT"},
		{[]string{"shard", "--register", "etcd://127.0.0.1:2379/x", "--advertise", "[::]:7071"}, "--advertise: \"[::]:7071\": :: is a wildcard"},
		{[]string{"shard", "--register", "etcd://127.0.0.1:2379/x", "--replica-id", "a/b"}, "--replica-id: replica_id: \"a/b\""},
		{[]string{"shard", "--register", "etcd://127.0.0.1:2379/x", "--register-ttl", "1s"}, "-register-ttl: 1s is below the minimum of 2s"},
		{[]string{"shard", "--advertise", "127.0.0.1:7071"}, "--advertise needs --register"},
		{[]string{"discover"}, "give one registry URL"},
		{[]string{"discover", "etcd://127.0.0.1:2379/"}, "no key prefix"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), tc.args, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error()+stderr.String(), tc.want) {
			t.Errorf("gather %v: got %v (stderr %q), want an error mentioning %q", tc.args, err, stderr.String(), tc.want)
		}
	}
}

// watcher holds the latest topology of a discovery.Watcher run for the test.
type watcher struct {
	cli *clientv3.Client
	*etcdtest.Latest[discovery.Topology]
}

func watch(t *testing.T, url string) *watcher {
	t.Helper()
	target, err := discovery.ParseTarget(url)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := target.Client()
	if err != nil {
		t.Fatal(err)
	}
	w := &watcher{cli: cli, Latest: etcdtest.NewLatest[discovery.Topology]()}
	dw := discovery.NewWatcher(cli, target, w.Set, discovery.WithWatchLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = dw.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; _ = cli.Close() })
	return w
}

// count returns the number of keys named key in etcd now (0 or 1).
func (w *watcher) count(t *testing.T, key string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := w.cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.Kvs)
}

func (w *watcher) has(top discovery.Topology, id, addr string) bool {
	for _, s := range top.Shards {
		for _, r := range s.Replicas {
			if r.ID == id && r.Address == addr {
				return true
			}
		}
	}
	return false
}
