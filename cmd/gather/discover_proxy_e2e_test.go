package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/discovery/etcdtest"
	"github.com/gatherproxy/gather/internal/sockdiag"
)

// metricValue returns the value of the sample of /metrics whose name and labels are series
// (e.g. `gather_topology_replicas{shard="shard-0"}`), or -1 without one.
func metricValue(t *testing.T, admin, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(metricsText(t, admin))
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// readyz returns the status code and body of admin's /readyz, or of /readyz?partial=1.
func readyz(t *testing.T, admin string, partial ...bool) (int, string) {
	t.Helper()
	url := "http://" + admin + "/readyz"
	if len(partial) > 0 && partial[0] {
		url += "?partial=1"
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestProxyFollowsDiscovery: gather proxy --discover against a real etcd, with queries running
// the whole time. Shards register and are queried; a second replica joins; a killed replica
// leaves the topology once its lease expires (within the TTL and a second) and its connection
// is closed; a shard whose every replica is gone is reported in coverage and /readyz; a new
// replica registers and takes queries. The proxy answers every query throughout.
func TestProxyFollowsDiscovery(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	url := srv.URL("gather/px")
	const ttl = 2 * time.Second
	shard := func(part, id string) *process {
		p := startGather(t, "shard", "--synthetic", "--latency", "none", "--listen", "127.0.0.1:0", "--partition", part,
			"--register", url, "--register-ttl", ttl.String(), "--replica-id", id)
		p.await(t, shardAddr)
		return p
	}
	a0, a1 := shard("0/2", "s0a"), shard("1/2", "s1a")
	px := startGather(t, "proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--discover", url)
	addr, admin := px.await(t, proxyAddr), px.await(t, adminAddr)
	replicas := func(shard string) float64 {
		return metricValue(t, admin, fmt.Sprintf(`gather_topology_replicas{shard=%q}`, shard))
	}
	poll(t, 10*time.Second, func() string {
		if n := replicas("shard-0") + replicas("shard-1"); n != 2 {
			return fmt.Sprintf("the proxy knows %v replicas, want 2", n)
		}
		return ""
	})

	// Queries the whole time, as QS sends them.
	client := queryv1.NewQueryServiceClient(dial(t, addr))
	ctx, cancel := context.WithCancel(t.Context())
	var (
		wg                         sync.WaitGroup
		mu                         sync.Mutex
		answered, partial, failed  int
		firstErr                   error
		lastCoverage               *queryv1.Coverage
		missingSeen, noReplicaSeen bool
	)
	wg.Go(func() {
		for i := 0; i < 100000 && ctx.Err() == nil; i++ {
			qctx, qcancel := context.WithTimeout(ctx, 3*time.Second)
			resp, err := client.Search(qctx, &queryv1.SearchRequest{Query: "q", TopK: 5})
			qcancel()
			mu.Lock()
			switch {
			case ctx.Err() != nil:
			case err != nil:
				failed++
				if firstErr == nil {
					firstErr = err
				}
			default:
				answered++
				lastCoverage = resp.GetCoverage()
				if lastCoverage.GetShardsSucceeded() < lastCoverage.GetShardsTotal() {
					partial++
				}
				for _, sr := range resp.GetShards() {
					if sr.GetShard() == "shard-0" && strings.Contains(sr.GetError(), "no replica") {
						noReplicaSeen = true
					}
				}
			}
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	})
	defer func() { cancel(); wg.Wait() }()
	full := func() string {
		mu.Lock()
		defer mu.Unlock()
		if c := lastCoverage; c == nil || c.GetShardsTotal() != 2 || c.GetShardsSucceeded() != 2 {
			return fmt.Sprintf("last coverage %v, want 2 of 2", c)
		}
		return ""
	}
	poll(t, 10*time.Second, full)

	// A second replica of shard-0 joins, then the first is killed: gone within TTL + 1s.
	b0 := shard("0/2", "s0b")
	poll(t, 10*time.Second, func() string {
		if n := replicas("shard-0"); n != 2 {
			return fmt.Sprintf("shard-0 has %v replicas, want 2", n)
		}
		return ""
	})
	if err := a0.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a0.exited
	poll(t, ttl+time.Second, func() string {
		if n := replicas("shard-0"); n != 1 {
			return fmt.Sprintf("shard-0 has %v replicas %s after its replica a was killed, want 1", n, ttl+time.Second)
		}
		return ""
	})
	if n := metricValue(t, admin, "gather_shard_connections"); n > 3 {
		// Calls in flight may hold the old topology for a moment; never more than one extra.
		t.Errorf("%v shard connections after replica a left, want at most 3", n)
	}
	poll(t, 5*time.Second, func() string {
		if n := metricValue(t, admin, "gather_shard_connections"); n != 2 {
			return fmt.Sprintf("%v shard connections, want 2 (b of shard-0, a of shard-1)", n)
		}
		return ""
	})

	// shard-0 loses every replica: it is missing, in coverage and /readyz.
	b0.stop(t)
	poll(t, ttl+time.Second, func() string {
		if code, body := readyz(t, admin); code == http.StatusOK || !strings.Contains(body, "shard-0") {
			return fmt.Sprintf("/readyz %d %q, want a failure naming shard-0", code, body)
		}
		mu.Lock()
		defer mu.Unlock()
		if !noReplicaSeen {
			return "no answer reported shard-0 as having no replica"
		}
		missingSeen = true
		return ""
	})
	// ... while a load balancer that takes partial answers keeps it: shard-1 still answers.
	if code, body := readyz(t, admin, true); code != http.StatusOK || !strings.Contains(body, "partial") || !strings.Contains(body, "shard-0") {
		t.Errorf("/readyz?partial=1 %d %q with shard-1 up, want 200 naming shard-0", code, body)
	}

	// A new replica registers and takes queries.
	c0 := shard("0/2", "s0c")
	poll(t, 10*time.Second, func() string {
		if code, body := readyz(t, admin); code != http.StatusOK {
			return fmt.Sprintf("/readyz %d %q after replica c registered", code, body)
		}
		return ""
	})
	poll(t, 10*time.Second, full)

	cancel()
	wg.Wait()
	// The killed and stopped replicas' connections are closed, not left half-open.
	poll(t, 10*time.Second, func() string {
		if n := proxySockets(t, admin).Sockets[sockdiag.CloseWait]; n > 0 {
			return fmt.Sprintf("the proxy has %d sockets in CLOSE_WAIT", n)
		}
		return ""
	})
	mu.Lock()
	t.Logf("%d queries answered (%d partial), %d failed", answered, partial, failed)
	if failed > 0 || firstErr != nil {
		t.Errorf("%d queries failed while the topology changed, the first with %v", failed, firstErr)
	}
	if !missingSeen {
		t.Error("shard-0 was never reported missing")
	}
	mu.Unlock()
	px.stop(t)
	for _, p := range []*process{c0, a1} {
		p.stop(t)
	}
}
