package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
)

// roundRobin is the service config a QS gives its channel to spread queries over every proxy
// address its resolver returns (docs/several-proxies.md); grpc-go's default, pick_first, would
// send everything to one.
const roundRobin = `{"loadBalancingConfig": [{"round_robin": {}}]}`

// freeLoopbackPorts returns n loopback addresses, each with a port nothing listens on now, for
// processes that must come back on the same port after a restart.
func freeLoopbackPorts(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n { // all open at once, so that no two are the same
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = lis.Close() }()
		addrs = append(addrs, lis.Addr().String())
	}
	return addrs
}

// awaitAll polls stdout until re matches n times, and returns the first group of each match.
func (p *process) awaitAll(t *testing.T, re *regexp.Regexp, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		if ms := re.FindAllStringSubmatch(p.out(), -1); len(ms) >= n {
			var out []string
			for _, m := range ms[:n] {
				out = append(out, m[1])
			}
			return out
		}
		select {
		case <-p.exited:
			t.Fatalf("gather exited early (%v)", p.exitErr)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("fewer than %d %q in gather's output within a minute", n, re)
	return nil
}

// awaitReady polls the admin port's /readyz until it answers 200.
func awaitReady(t *testing.T, admin string) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+admin+"/readyz", nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := client.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond) // polling an HTTP endpoint: there is nothing to wait on
	}
	t.Fatalf("%s/readyz not 200 within 30s", admin)
}

// twoProxyLoad is the QS side of TestTwoProxiesDrainRestart: workers querying both proxies
// through one round_robin channel, each answer counted by the phase of the test it started in
// and the proxy that served it.
type twoProxyLoad struct {
	phase atomic.Int32

	mu       sync.Mutex
	served   map[int32]map[string]int // phase -> proxy address -> answers
	failures []string
	overlap  map[string]int // proxy address -> answers in flight when that proxy got SIGTERM
	sigterm  map[string]time.Time
	total    int
}

func (l *twoProxyLoad) count(phase int32, addr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.served[phase][addr]
}

// markSigterm records when addr is sent SIGTERM, to count the answers that were in flight on it.
func (l *twoProxyLoad) markSigterm(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sigterm[addr] = time.Now()
}

// work queries until ctx ends or max answers are in, each query with QS's 3s deadline.
func (l *twoProxyLoad) work(ctx context.Context, client queryv1.QueryServiceClient, max int) {
	for ctx.Err() == nil {
		phase := l.phase.Load()
		start := time.Now()
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		var p peer.Peer
		resp, err := client.Search(qctx, &queryv1.SearchRequest{Query: "union constitution", TopK: 10}, grpc.Peer(&p))
		cancel()
		end := time.Now()
		if ctx.Err() != nil && err != nil {
			return // the load's end, not the proxies, cut this one
		}
		var addr string
		if p.Addr != nil {
			addr = p.Addr.String()
		}
		l.mu.Lock()
		l.total++
		switch cov := resp.GetCoverage(); {
		case err != nil:
			l.failures = append(l.failures, fmt.Sprintf("phase %d, proxy %q: %v", phase, addr, err))
		case cov.GetShardsSucceeded() != 4 || cov.GetDegraded() || len(resp.GetHits()) != 10:
			l.failures = append(l.failures, fmt.Sprintf("phase %d, proxy %s: %d hits, coverage %v", phase, addr, len(resp.GetHits()), cov))
		default:
			l.served[phase][addr]++
			if at, ok := l.sigterm[addr]; ok && start.Before(at) && end.After(at) {
				l.overlap[addr]++
			}
		}
		done := l.total >= max
		l.mu.Unlock()
		if done {
			return
		}
	}
}

// TestTwoProxiesDrainRestart runs two `gather proxy` processes over the same four shards, on fixed
// loopback ports, behind one QS channel that balances over both with round_robin. Under a steady
// load, proxy A gets SIGTERM, exits, is started again on its port and takes queries again; then
// proxy B. No query may fail or come back degraded: a draining proxy finishes what it has
// (answers in flight at SIGTERM are counted, and there must be some) and GOAWAY moves the channel
// to the other proxy before the listener goes away. Not parallel: goleak checks the test's own
// goroutines (the channel's, the workers') at the end, and the drain must not race a dozen other
// gather processes for the CPU.
func TestTwoProxiesDrainRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processes")
	}
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // the last cleanup: after every process is gone

	// Four synthetic shards in one process; 30ms each, so that a proxy always has queries in flight.
	sh := startGather(t, "shard", "--synthetic", "--partitions", "4", "--partition", "0/4", "--listen", "127.0.0.1:0",
		"--latency", "fixed:30ms")
	var shardArgs []string
	for i, a := range sh.awaitAll(t, shardAddr, 4) {
		shardArgs = append(shardArgs, "--shard", fmt.Sprintf("s%d=%s", i, a))
	}
	addrs := freeLoopbackPorts(t, 2)
	startProxyAt := func(addr string) *process {
		p := startGather(t, append([]string{"proxy", "--listen", addr, "--admin", "127.0.0.1:0"}, shardArgs...)...)
		if got := p.await(t, proxyAddr); got != addr {
			t.Fatalf("proxy serves on %s, want %s", got, addr)
		}
		awaitReady(t, p.await(t, adminAddr))
		return p
	}
	proxies := []*process{startProxyAt(addrs[0]), startProxyAt(addrs[1])}

	// The QS channel: a static list of both proxies, round_robin, and a reconnect backoff capped
	// at 1s so that a restarted proxy is found within a second of serving again.
	r := manual.NewBuilderWithScheme("twoproxy")
	r.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: addrs[0]}, {Addr: addrs[1]}}})
	conn, err := grpc.NewClient(r.Scheme()+":///proxies", grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultServiceConfig(roundRobin),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond,
			Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}, MinConnectTimeout: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	client := queryv1.NewQueryServiceClient(conn)

	load := &twoProxyLoad{served: map[int32]map[string]int{}, overlap: map[string]int{}, sigterm: map[string]time.Time{}}
	for ph := range int32(5) {
		load.served[ph] = map[string]int{}
	}
	// Bounded: at most 60s and 20000 answers, whichever comes first. The test ends long before
	// either (12-18s in all on 2 cores), but under heavy load from elsewhere each restart of a
	// race-built proxy can take seconds.
	const loadBound = 60 * time.Second
	ctx, stopLoad := context.WithTimeout(t.Context(), loadBound)
	defer stopLoad()
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() { load.work(ctx, client, 20000) })
	}
	finish := func() {
		stopLoad()
		wg.Wait()
	}
	defer finish() // also on a t.Fatal below, before the channel closes
	// until waits for the load to have served n answers in phase ph on addr.
	until := func(ph int32, addr string, n int) bool {
		for ctx.Err() == nil && load.count(ph, addr) < n {
			time.Sleep(10 * time.Millisecond) // the workers count as they go; nothing to wait on
		}
		return load.count(ph, addr) >= n
	}

	// Phase 0: both proxies serve. Then for each proxy i: phase 2i+1 while it drains and
	// restarts, phase 2i+2 once it serves again.
	for _, a := range addrs {
		if !until(0, a, 20) {
			t.Fatalf("before any restart, proxy %s served %d queries, want 20 (the load ends %v after it started)", a, load.count(0, a), loadBound)
		}
	}
	for i, a := range addrs {
		load.phase.Store(int32(2*i + 1))
		load.markSigterm(a)
		proxies[i].stop(t) // SIGTERM, and a clean exit
		proxies[i] = startProxyAt(a)
		load.phase.Store(int32(2*i + 2))
		ready := time.Now()
		if !until(int32(2*i+2), a, 20) {
			t.Fatalf("proxy %s restarted, and served %d queries in the %v after it was ready, want 20 (the load ends %v after it started)",
				a, load.count(int32(2*i+2), a), time.Since(ready).Round(time.Millisecond), loadBound)
		}
	}
	finish()
	for _, p := range append(proxies, sh) {
		p.stop(t)
	}

	t.Logf("%d queries; by phase and proxy: %v; in flight at SIGTERM: %v", load.total, load.served, load.overlap)
	if n := len(load.failures); n > 0 {
		t.Errorf("%d of %d queries failed or were degraded; the first ones:\n%s", n, load.total,
			strings.Join(load.failures[:min(n, 10)], "\n"))
	}
	for _, a := range addrs {
		if load.count(4, a) == 0 {
			t.Errorf("after both restarts, proxy %s served no query", a)
		}
		if load.overlap[a] == 0 {
			t.Errorf("no query was in flight on %s when it got SIGTERM: the test did not test the drain", a)
		}
	}
}
