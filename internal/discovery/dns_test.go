package discovery_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatherproxy/gather/internal/discovery"
	"github.com/gatherproxy/gather/internal/discovery/dnstest"
	"github.com/gatherproxy/gather/internal/discovery/etcdtest"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/metrictest"
	"github.com/gatherproxy/gather/internal/replica"
)

// waitFor bounds every wait of these tests for something the source does: far beyond what any
// of it takes, so that only a source that never does it fails.
const waitFor = 20 * time.Second

// logBuffer collects log lines written from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// count returns the lines that contain s.
func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// dnsRun is a DNSSource running in a goroutine of the test.
type dnsRun struct {
	src       *discovery.DNSSource
	latest    *etcdtest.Latest[[]fanout.ShardSpec]
	published atomic.Int64
	reg       *prometheus.Registry
	logs      *logBuffer
	cancel    context.CancelFunc
	done      chan error
}

// runDNS starts a DNSSource of topo. The test's cleanup stops it and checks that Run returned
// the context's error.
func runDNS(t *testing.T, topo []fanout.ShardSpec, opts ...discovery.DNSOption) *dnsRun {
	t.Helper()
	r := &dnsRun{latest: etcdtest.NewLatest[[]fanout.ShardSpec](), reg: prometheus.NewRegistry(), logs: &logBuffer{}, done: make(chan error, 1)}
	opts = append([]discovery.DNSOption{discovery.WithDNSMetrics(discovery.NewDNSMetrics(r.reg)),
		discovery.WithDNSLogger(slog.New(slog.NewTextHandler(r.logs, nil)))}, opts...)
	src, err := discovery.NewDNSSource(topo, func(t []fanout.ShardSpec) {
		r.published.Add(1)
		r.latest.Set(t)
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	r.src = src
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		case <-time.After(waitFor):
			t.Errorf("Run did not return within %v of its context's end", waitFor)
		}
		if t.Failed() {
			t.Logf("source's log:\n%s", r.logs)
		}
	})
	return r
}

// lookups returns the lookups counted with result.
func (r *dnsRun) lookups(t *testing.T, result string) float64 {
	t.Helper()
	return metrictest.Sum(t, r.reg, "gather_discovery_dns_lookups_total", map[string]string{"result": result})
}

// eventually polls cond until it holds, failing the test after waitFor.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s within %v", what, waitFor)
		}
		<-tick.C
	}
}

// equalTopology compares topologies, nil and empty replica lists alike.
func equalTopology(a, b []fanout.ShardSpec) bool {
	return slices.EqualFunc(a, b, func(x, y fanout.ShardSpec) bool {
		return x.Name == y.Name && slices.Equal(x.Replicas, y.Replicas)
	})
}

// is returns a condition that holds when the latest topology is want.
func is(want []fanout.ShardSpec) func([]fanout.ShardSpec) bool {
	return func(got []fanout.ShardSpec) bool { return equalTopology(got, want) }
}

// entry returns the replica entry of name on srv's server, port 7071.
func entry(srv *dnstest.Server, name string) string {
	return fmt.Sprintf("dns://%s/%s:7071", srv.Addr(), name)
}

func TestDNSFirstResolutionPublishesAllAddresses(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t)
	srv.Set("a.gather.test", "10.0.0.10", "2001:db8::1", "10.0.0.2")
	srv.Set("b.gather.test", "10.0.1.1")
	topo := []fanout.ShardSpec{
		// A literal entry equal to a resolved address is one replica.
		{Name: "s0", Replicas: []string{entry(srv, "a.gather.test."), "127.0.0.1:9", "10.0.0.2:7071"}},
		{Name: "s1", Replicas: []string{entry(srv, "B.Gather.Test.")}},
		// The same name with another port: one lookup, other replicas.
		{Name: "s2", Replicas: []string{fmt.Sprintf("dns://%s/a.gather.test.:7072", srv.Addr())}},
		{Name: "s3", Replicas: []string{entry(srv, "none.gather.test.")}},
		{Name: "s4", Replicas: []string{"shard-4.example:7071", "127.0.0.1:8"}},
	}
	if !discovery.HasDNSNames(topo) || discovery.HasDNSNames(topo[4:]) {
		t.Error("HasDNSNames: wrong")
	}
	r := runDNS(t, topo, discovery.WithDNSInterval(time.Hour))
	if got, want := r.src.Static(), []fanout.ShardSpec{{Name: "s0", Replicas: []string{"127.0.0.1:9", "10.0.0.2:7071"}},
		{Name: "s1"}, {Name: "s2"}, {Name: "s3"}, {Name: "s4", Replicas: []string{"shard-4.example:7071", "127.0.0.1:8"}}}; !equalTopology(got, want) {
		t.Errorf("Static() = %v, want %v", got, want)
	}
	want := []fanout.ShardSpec{
		{Name: "s0", Replicas: []string{"10.0.0.2:7071", "10.0.0.10:7071", "127.0.0.1:9", "[2001:db8::1]:7071"}},
		{Name: "s1", Replicas: []string{"10.0.1.1:7071"}},
		{Name: "s2", Replicas: []string{"10.0.0.2:7072", "10.0.0.10:7072", "[2001:db8::1]:7072"}},
		{Name: "s3"},
		{Name: "s4", Replicas: []string{"127.0.0.1:8", "shard-4.example:7071"}}, // addresses before names
	}
	r.latest.WaitFor(t, waitFor, "every address", is(want))
	if n := r.published.Load(); n != 1 {
		t.Errorf("published %d topologies, want 1", n)
	}
	if got := r.lookups(t, "ok"); got != 2 {
		t.Errorf("ok lookups: %v, want 2 (a.gather.test is looked up once for s0 and s2)", got)
	}
	if got := r.lookups(t, "not_found"); got != 1 {
		t.Errorf("not_found lookups: %v, want 1", got)
	}
	for shard, want := range map[string]float64{"s0": 4, "s1": 1, "s3": 0} {
		if got := metrictest.Sum(t, r.reg, "gather_discovery_dns_replicas", map[string]string{"shard": shard}); got != want {
			t.Errorf("gather_discovery_dns_replicas{shard=%q} = %v, want %v", shard, got, want)
		}
	}
}

func TestDNSFollowsRecordChanges(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t)
	srv.Set("a.gather.test", "10.0.0.1")
	r := runDNS(t, []fanout.ShardSpec{{Name: "s0", Replicas: []string{entry(srv, "a.gather.test.")}}},
		discovery.WithDNSInterval(20*time.Millisecond))
	r.latest.WaitFor(t, waitFor, "the first address", is([]fanout.ShardSpec{{Name: "s0", Replicas: []string{"10.0.0.1:7071"}}}))

	srv.Set("a.gather.test", "10.0.0.1", "10.0.0.2")
	r.latest.WaitFor(t, waitFor, "the added address", is([]fanout.ShardSpec{{Name: "s0", Replicas: []string{"10.0.0.1:7071", "10.0.0.2:7071"}}}))
	srv.Set("a.gather.test", "10.0.0.2")
	r.latest.WaitFor(t, waitFor, "the address removed", is([]fanout.ShardSpec{{Name: "s0", Replicas: []string{"10.0.0.2:7071"}}}))
	if n := r.published.Load(); n != 3 {
		t.Errorf("published %d topologies, want 3", n)
	}
	for _, line := range []string{"added=[10.0.0.2:7071] removed=[]", "added=[] removed=[10.0.0.1:7071]"} {
		if r.logs.count(line) != 1 {
			t.Errorf("no log line with %q", line)
		}
	}
}

func TestDNSUnchangedAnswersPublishNothing(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t)
	srv.Set("a.gather.test", "10.0.0.1", "10.0.0.2")
	r := runDNS(t, []fanout.ShardSpec{{Name: "s0", Replicas: []string{entry(srv, "a.gather.test.")}}},
		discovery.WithDNSInterval(5*time.Millisecond))
	eventually(t, "10 lookups", func() bool { return r.lookups(t, "ok") >= 10 })
	if n := r.published.Load(); n != 1 {
		t.Errorf("published %d topologies for one unchanged answer, want 1", n)
	}
	if n := r.logs.count("dns topology change"); n != 1 {
		t.Errorf("%d change log lines, want 1", n)
	}
}

func TestDNSRefreshResolvesAtOnce(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t)
	srv.Set("a.gather.test", "10.0.0.1")
	// The interval is an hour: only Refresh can make the source see the change.
	r := runDNS(t, []fanout.ShardSpec{{Name: "s0", Replicas: []string{entry(srv, "a.gather.test.")}}},
		discovery.WithDNSInterval(time.Hour), discovery.WithDNSMinRefresh(10*time.Millisecond))
	r.latest.WaitFor(t, waitFor, "the first address", is([]fanout.ShardSpec{{Name: "s0", Replicas: []string{"10.0.0.1:7071"}}}))
	srv.Set("a.gather.test", "10.0.0.3")
	r.src.Refresh()
	r.latest.WaitFor(t, waitFor, "the new address", is([]fanout.ShardSpec{{Name: "s0", Replicas: []string{"10.0.0.3:7071"}}}))
	if got := metrictest.Sum(t, r.reg, "gather_discovery_dns_rounds_total", map[string]string{"trigger": "refresh"}); got != 1 {
		t.Errorf("refresh rounds: %v, want 1", got)
	}
}

func TestDNSRefreshIsRateLimited(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t)
	srv.Set("a.gather.test", "10.0.0.1")
	const minRefresh = 50 * time.Millisecond
	r := runDNS(t, []fanout.ShardSpec{{Name: "s0", Replicas: []string{entry(srv, "a.gather.test.")}}},
		discovery.WithDNSInterval(time.Hour), discovery.WithDNSMinRefresh(minRefresh))
	r.latest.WaitFor(t, waitFor, "the first address", is([]fanout.ShardSpec{{Name: "s0", Replicas: []string{"10.0.0.1:7071"}}}))
	// A flapping connection: Refresh every 2ms until the server has seen 3 more lookups
	// (bounded by waitFor).
	eventually(t, "3 lookups after the first", func() bool {
		r.src.Refresh()
		return len(srv.Times()) >= 4
	})
	// Each round's lookup reached the server at least minRefresh after the one before: a round
	// waits minRefresh from the end of the last, which came after its lookup reached the server.
	times := srv.Times()
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < minRefresh {
			t.Errorf("lookups %d and %d were %v apart, less than the %v between refreshes", i-1, i, gap, minRefresh)
		}
	}
}

func TestDNSFailingServerKeepsTheLastAddresses(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t)
	srv.Set("a.gather.test", "10.0.0.1")
	want := []fanout.ShardSpec{{Name: "s0", Replicas: []string{"10.0.0.1:7071"}}}
	r := runDNS(t, []fanout.ShardSpec{{Name: "s0", Replicas: []string{entry(srv, "a.gather.test.")}}},
		discovery.WithDNSInterval(5*time.Millisecond), discovery.WithDNSLookupTimeout(50*time.Millisecond))
	r.latest.WaitFor(t, waitFor, "the first address", is(want))

	srv.SetMode(dnstest.Fail) // SERVFAIL
	eventually(t, "3 failed lookups", func() bool { return r.lookups(t, "error") >= 3 })
	srv.SetMode(dnstest.Silent) // timeouts
	errs := r.lookups(t, "error")
	eventually(t, "3 lookups timed out", func() bool { return r.lookups(t, "error") >= errs+3 })
	if got := r.latest.Get(); !equalTopology(got, want) || r.published.Load() != 1 {
		t.Errorf("while the server failed: published %d topologies, the last %v; want only %v", r.published.Load(), got, want)
	}
	if n := r.logs.count("dns lookup failed"); n != 1 {
		t.Errorf("%d log lines for one streak of failures, want 1", n)
	}

	srv.Set("a.gather.test", "10.0.0.2")
	srv.SetMode(dnstest.Answer)
	r.latest.WaitFor(t, waitFor, "the new address", is([]fanout.ShardSpec{{Name: "s0", Replicas: []string{"10.0.0.2:7071"}}}))
	if n := r.logs.count("dns name resolves again"); n != 1 {
		t.Errorf("%d log lines for the end of the failures, want 1", n)
	}
}

func TestDNSShardWithoutAnswerYetIsPublishedEmpty(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t)
	srv.Set("a.gather.test", "10.0.0.1")
	srv.SetMode(dnstest.Fail)
	r := runDNS(t, []fanout.ShardSpec{{Name: "s0", Replicas: []string{entry(srv, "a.gather.test.")}}},
		discovery.WithDNSInterval(5*time.Millisecond))
	r.latest.WaitFor(t, waitFor, "the shard without replica", func(t []fanout.ShardSpec) bool {
		return len(t) == 1 && t[0].Name == "s0" && len(t[0].Replicas) == 0
	})
	srv.SetMode(dnstest.Answer)
	r.latest.WaitFor(t, waitFor, "the address", is([]fanout.ShardSpec{{Name: "s0", Replicas: []string{"10.0.0.1:7071"}}}))
}

func TestDNSNameWithoutAddressDropsItsReplicas(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t)
	srv.Set("a.gather.test", "10.0.0.1")
	srv.Set("b.gather.test", "10.0.1.1", "10.0.1.2")
	r := runDNS(t, []fanout.ShardSpec{
		{Name: "s0", Replicas: []string{entry(srv, "a.gather.test."), "127.0.0.1:9"}},
		{Name: "s1", Replicas: []string{entry(srv, "b.gather.test.")}},
	}, discovery.WithDNSInterval(5*time.Millisecond))
	r.latest.WaitFor(t, waitFor, "every address", is([]fanout.ShardSpec{
		{Name: "s0", Replicas: []string{"10.0.0.1:7071", "127.0.0.1:9"}},
		{Name: "s1", Replicas: []string{"10.0.1.1:7071", "10.0.1.2:7071"}},
	}))

	// Every pod behind the headless Services is gone: NXDOMAIN.
	srv.Set("a.gather.test")
	srv.Set("b.gather.test")
	r.latest.WaitFor(t, waitFor, "the addresses dropped", is([]fanout.ShardSpec{
		{Name: "s0", Replicas: []string{"127.0.0.1:9"}},
		{Name: "s1"},
	}))
	nf := r.lookups(t, "not_found")
	eventually(t, "4 more NXDOMAIN answers", func() bool { return r.lookups(t, "not_found") >= nf+4 })
	if n := r.logs.count("dns name has no address"); n != 2 {
		t.Errorf("%d log lines for two names without address, want 2 (one per name)", n)
	}
	if got := metrictest.Sum(t, r.reg, "gather_discovery_dns_replicas", map[string]string{"shard": "s1"}); got != 0 {
		t.Errorf("gather_discovery_dns_replicas{shard=s1} = %v, want 0", got)
	}

	srv.Set("b.gather.test", "10.0.1.3")
	r.latest.WaitFor(t, waitFor, "the name back", is([]fanout.ShardSpec{
		{Name: "s0", Replicas: []string{"127.0.0.1:9"}},
		{Name: "s1", Replicas: []string{"10.0.1.3:7071"}},
	}))
}

func TestDNSCapsAShardAtMaxReplicasOverTCP(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t)
	const n = replica.MaxReplicas + 6
	var addrs []string
	for i := range n {
		addrs = append(addrs, fmt.Sprintf("10.1.%d.%d", i/200, 1+i%200))
	}
	srv.Set("many.gather.test", addrs...)
	r := runDNS(t, []fanout.ShardSpec{{Name: "s0", Replicas: []string{entry(srv, "many.gather.test."), "127.0.0.1:9"}}},
		discovery.WithDNSInterval(5*time.Millisecond))
	var want []string
	for _, a := range addrs[:replica.MaxReplicas-1] {
		want = append(want, a+":7071")
	}
	want = append(want, "127.0.0.1:9") // the literal entry is kept
	r.latest.WaitFor(t, waitFor, "the first addresses", is([]fanout.ShardSpec{{Name: "s0", Replicas: want}}))
	eventually(t, "3 lookups", func() bool { return r.lookups(t, "ok") >= 3 })
	if got := r.logs.count("left_out=7"); got != 1 {
		t.Errorf("%d log lines about the cut, want 1", got)
	}
	// The answer does not fit the server's UDP answers: the resolver asked again over TCP.
	if srv.Queries("tcp") == 0 {
		t.Error("no query over TCP")
	}
}

func TestDNSRunReturnsWhileALookupHangs(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t)
	srv.SetMode(dnstest.Silent)
	r := runDNS(t, []fanout.ShardSpec{{Name: "s0", Replicas: []string{entry(srv, "a.gather.test.")}}},
		discovery.WithDNSLookupTimeout(time.Hour))
	eventually(t, "the A and AAAA queries at the server", func() bool { return srv.Queries("udp") >= 2 })
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup's check
	case <-time.After(waitFor):
		t.Fatalf("Run did not return within %v of its context's end", waitFor)
	}
	if n := r.published.Load(); n != 0 {
		t.Errorf("a round cut short published %d topologies, want 0", n)
	}
	// The lookup was abandoned when the context ended, not when Go's resolver gave up on the
	// server (its resolv.conf timeout, then another attempt).
	if n := srv.Queries("udp") + srv.Queries("tcp"); n != 2 {
		t.Errorf("the server saw %d queries, want 2 (A and AAAA, once)", n)
	}
}

func TestDNSSystemResolver(t *testing.T) {
	t.Parallel()
	// localhost resolves offline, from /etc/hosts, through the system's resolver.
	r := runDNS(t, []fanout.ShardSpec{{Name: "s0", Replicas: []string{"dns:///localhost:7071"}}})
	got := r.latest.WaitFor(t, waitFor, "a topology", func(t []fanout.ShardSpec) bool { return t != nil })
	if !slices.Contains(got[0].Replicas, "127.0.0.1:7071") {
		t.Errorf("dns:///localhost:7071 resolved to %v, want 127.0.0.1:7071 among them", got[0].Replicas)
	}
}

func TestNewDNSSourceNamesTheBadEntry(t *testing.T) {
	t.Parallel()
	_, err := discovery.NewDNSSource([]fanout.ShardSpec{{Name: "s0", Replicas: []string{"127.0.0.1:1"}},
		{Name: "s1", Replicas: []string{"dns:///shards"}}}, func([]fanout.ShardSpec) {})
	if err == nil || !strings.Contains(err.Error(), `shard s1: invalid dns replica entry "dns:///shards"`) {
		t.Errorf("got %v, want an error naming shard s1 and its entry", err)
	}
}

func TestDNSMetricsOutliveASource(t *testing.T) {
	t.Parallel()
	// A proxy that re-reads its configuration replaces its source and keeps the metrics.
	reg := prometheus.NewRegistry()
	m := discovery.NewDNSMetrics(reg)
	for _, shard := range []string{"old", "new"} {
		if _, err := discovery.NewDNSSource([]fanout.ShardSpec{{Name: shard, Replicas: []string{"dns:///localhost:1"}}},
			func([]fanout.ShardSpec) {}, discovery.WithDNSMetrics(m)); err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "gather_discovery_dns_replicas" {
			continue
		}
		if got := mf.GetMetric(); len(got) != 1 || got[0].GetLabel()[0].GetValue() != "new" {
			t.Errorf("gather_discovery_dns_replicas: %v, want the series of shard new only", got)
		}
	}
}
