package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/corpus"
)

// gatherBin is the gather binary built once for the end-to-end tests.
var gatherBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gather-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gatherBin = filepath.Join(dir, "gather")
	if out, err := exec.Command("go", "build", "-race", "-o", gatherBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// smallCorpus writes the first n addresses of the bundled corpus to a JSON Lines file.
func smallCorpus(t *testing.T, n int) string {
	t.Helper()
	rc, err := corpus.Default().Open()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	zr, err := gzip.NewReader(rc)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 0, 1<<20), 4<<20)
	var buf bytes.Buffer
	for i := 0; i < n && sc.Scan(); i++ {
		buf.Write(sc.Bytes())
		buf.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "small.jsonl")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// process is a running gather subcommand whose stdout is scanned for addresses.
type process struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	stdout  bytes.Buffer
	stderr  bytes.Buffer
	exited  chan struct{} // closed when the process has exited; exitErr is then set
	exitErr error
}

func startGather(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(gatherBin, args...)}
	startProcess(t, p)
	return p
}

// startProcess starts p.cmd with its output captured, and kills it at the end of the test if it
// is still running.
func startProcess(t *testing.T, p *process) {
	t.Helper()
	p.cmd.Stdout = syncWriter{&p.mu, &p.stdout}
	p.cmd.Stderr = syncWriter{&p.mu, &p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func() {
		p.exitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s\nstdout:\n%s\nstderr:\n%s", strings.Join(p.cmd.Args, " "), p.out(), p.errOut())
		}
	})
}

type syncWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (s syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func (p *process) out() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String()
}

func (p *process) errOut() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// await polls stdout until re matches, and returns its first group.
func (p *process) await(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(p.out()); m != nil {
			return m[1]
		}
		select {
		case <-p.exited:
			t.Fatalf("gather exited early (%v)", p.exitErr)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("no %q in gather's output within 2 minutes", re)
	return ""
}

// stop sends SIGTERM and waits for a clean exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		if p.exitErr != nil {
			t.Errorf("gather exited with %v after SIGTERM", p.exitErr)
		}
	case <-time.After(30 * time.Second):
		t.Error("gather did not stop within 30s of SIGTERM")
	}
}

var (
	shardAddr = regexp.MustCompile(`ShardService on (\S+)`)
	proxyAddr = regexp.MustCompile(`QueryService on (\S+),`)
	demoProxy = regexp.MustCompile(`proxy\s+gather.query.v1.QueryService\s+(\S+)`)
)

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// byHand asks each shard for its top k and merges the answers by sorting everything.
func byHand(t *testing.T, ctx context.Context, query string, k uint32, shards map[string]string) []string {
	t.Helper()
	type hit struct {
		id, shard string
		score     float64
	}
	var all []hit
	for name, addr := range shards {
		st, err := shardv1.NewShardServiceClient(dial(t, addr)).Search(ctx, &shardv1.SearchRequest{Query: query, TopK: k})
		if err != nil {
			t.Fatal(err)
		}
		for {
			resp, err := st.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range resp.GetHits() {
				all = append(all, hit{h.GetDocId(), name, h.GetScore()})
			}
		}
	}
	slices.SortFunc(all, func(a, b hit) int {
		switch {
		case a.score != b.score:
			if a.score > b.score {
				return -1
			}
			return 1
		case a.id != b.id:
			return strings.Compare(a.id, b.id)
		}
		return strings.Compare(a.shard, b.shard)
	})
	var out []string
	for i, h := range all {
		if uint32(i) == k {
			break
		}
		out = append(out, h.shard+"/"+h.id)
	}
	return out
}

// TestEndToEnd runs real bleve shards and the proxy as separate gather processes on loopback,
// and checks the merged answer against the shards' own answers merged by hand.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds indexes and runs processes")
	}
	t.Parallel()
	small := smallCorpus(t, 12)
	data := t.TempDir()
	shards := map[string]string{}
	var procs []*process
	var flags []string
	for i := range 3 {
		p := startGather(t, "shard", "--listen", "127.0.0.1:0", "--partition", fmt.Sprintf("%d/3", i), "--corpus", small, "--data-dir", data)
		name := fmt.Sprintf("s%d", i)
		shards[name] = p.await(t, shardAddr)
		flags = append(flags, "--shard", name+"="+shards[name])
		procs = append(procs, p)
	}
	px := startGather(t, append([]string{"proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, flags...)...)
	addr := px.await(t, proxyAddr)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	client := queryv1.NewQueryServiceClient(dial(t, addr))
	for _, q := range []struct {
		text string
		k    uint32
	}{{"union constitution war", 10}, {"the people", 25}, {"indian treaty", 3}} {
		resp, err := client.Search(ctx, &queryv1.SearchRequest{Query: q.text, TopK: q.k})
		if err != nil {
			t.Fatalf("%q: %v", q.text, err)
		}
		var got []string
		for _, h := range resp.GetHits() {
			got = append(got, h.GetShard()+"/"+h.GetDocId())
		}
		if want := byHand(t, ctx, q.text, q.k, shards); !slices.Equal(got, want) || len(got) == 0 {
			t.Errorf("%q: proxy answered\n %v\nby hand\n %v", q.text, got, want)
		}
		if cov := resp.GetCoverage(); cov.GetShardsSucceeded() != 3 || cov.GetDegraded() {
			t.Errorf("%q: coverage %v, want 3 of 3", q.text, cov)
		}
	}

	// gather query prints the table and the coverage.
	out, err := exec.CommandContext(ctx, gatherBin, "query", "--addr", addr, "--top-k", "4", "union").CombinedOutput()
	if err != nil {
		t.Fatalf("gather query: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "coverage: 3 of 3 shards (complete)") || strings.Count(string(out), "\n") < 8 ||
		!strings.Contains(string(out), "SOURCE") || strings.Count(string(out), " primary ") != 3 {
		t.Errorf("gather query output:\n%s", out)
	}

	// A stopped shard degrades the answer instead of failing it.
	procs[1].stop(t)
	resp, err := client.Search(ctx, &queryv1.SearchRequest{Query: "union", TopK: 5})
	if err != nil {
		t.Fatal(err)
	}
	if cov := resp.GetCoverage(); cov.GetShardsSucceeded() != 2 || !cov.GetDegraded() {
		t.Errorf("with s1 stopped: coverage %v, want 2 of 3, degraded", cov)
	}
	if s := resp.GetShards()[1]; s.GetStatus() != queryv1.ShardStatus_SHARD_STATUS_UNAVAILABLE {
		t.Errorf("with s1 stopped: s1 is %v (%s), want UNAVAILABLE", s.GetStatus(), s.GetError())
	}

	px.stop(t)
	procs[0].stop(t)
	procs[2].stop(t)

	// A second start reuses the indexes instead of building them again.
	again := startGather(t, "shard", "--listen", "127.0.0.1:0", "--partition", "0/3", "--corpus", small, "--data-dir", data)
	again.await(t, shardAddr)
	if !strings.Contains(again.errOut(), "reusing index") {
		t.Errorf("second start did not reuse the index:\n%s", again.errOut())
	}
	again.stop(t)
}

// TestDemo runs `gather demo` on a small corpus and asks it through its printed address.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds indexes and runs processes")
	}
	t.Parallel()
	p := startGather(t, "demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--corpus", smallCorpus(t, 8), "--data-dir", t.TempDir())
	addr := p.await(t, demoProxy)
	if !strings.Contains(p.out(), "grpcurl -plaintext") {
		t.Errorf("demo prints no grpcurl line:\n%s", p.out())
	}
	resp, err := queryv1.NewQueryServiceClient(dial(t, addr)).Search(t.Context(), &queryv1.SearchRequest{Query: "union constitution war", TopK: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetHits()) != 10 || resp.GetCoverage().GetShardsSucceeded() != 4 {
		t.Errorf("demo answered %d hits, coverage %v; want 10 hits from 4 of 4", len(resp.GetHits()), resp.GetCoverage())
	}
	// The CPU bound is on in the demo (its one process runs the shards too), starting at
	// max_in_flight/16.
	m := metricsText(t, p.await(t, demoAdmin))
	for _, want := range []string{"\ngather_admission_limit_queries 16\n", "\ngather_admission_sched_latency_p99_seconds "} {
		if !strings.Contains(m, want) {
			t.Errorf("demo /metrics has no %q:\n%s", strings.TrimSpace(want), grep(m, "gather_admission_"))
		}
	}
	p.stop(t)
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"shard", "--partition", "4/4"}, "--partition"},
		{[]string{"proxy", "--listen", "127.0.0.1:0"}, "no shard configured"},
		{[]string{"proxy", "--shard", "nonsense"}, "NAME=HOST:PORT"},
		{[]string{"query"}, "no query text"},
		{[]string{"demo", "--shards", "0"}, "--shards 0"},
		{[]string{"demo", "--replicas", "0"}, "--replicas 0: give 1 to 8"},
		{[]string{"demo", "--replicas", "9"}, "--replicas 9: give 1 to 8"},
		{[]string{"shard", "--tls-cert", "shard.pem"}, "--tls-key: missing: --tls-cert is set"},
		{[]string{"shard", "--authz-policy", "/nonexistent/policy.json"}, "--authz-policy: authz.policy_file: open /nonexistent/policy.json"},
		{[]string{"proxy", "--shard", "a=127.0.0.1:1", "--tls-cert", "/nonexistent/proxy.pem", "--tls-key", "/nonexistent/key.pem"},
			"tls.cert_file: open /nonexistent/proxy.pem"},
		{[]string{"query", "--tls-cert", "client.pem", "union"}, "--tls-key: missing"},
		{[]string{"demo", "--max-in-flight", "100000"}, "max_in_flight: 100000 is above the maximum of 10000"},
		{[]string{"demo", "--admission-sched-target", "2s"}, "admission_sched_target: 2s is above the maximum of 1s"},
		{[]string{"proxy", "--shard", "s=127.0.0.1:1", "--admission-sched-target", "1us"}, "admission_sched_target: 1µs is below the minimum of 1ms"},
		{[]string{"demo", "--keepalive-time", "100ms"}, "keepalive.time: 100ms is below the minimum of 1s"},
		{[]string{"shard", "--max-top-k", "20000"}, `invalid value "20000" for flag -max-top-k: 20000 is above the maximum of 10000`},
		{[]string{"shard", "--max-query-bytes", "2000000000"}, "-max-query-bytes: 2000000000 bytes (1953125 KiB) is above the maximum"},
		{[]string{"shard", "--synthetic", "--text-bytes", "-1"}, "-text-bytes: -1 bytes is negative"},
		{[]string{"shard", "--partitions", "2", "--partition", "0/2"}, "--partitions 2 needs --synthetic"},
		{[]string{"shard", "--synthetic", "--partitions", "3", "--partition", "2/4"}, "partitions 2 to 4 do not exist in --partition 2/4"},
		{[]string{"shard", "--synthetic", "--partitions", "0"}, "--partitions 0: give 1 or more"},
		{[]string{"shard", "--synthetic", "--partitions", "2", "--partition", "0/2", "--listen", "127.0.0.1:65535"}, "give port 0 (free ports) or a port from 1 to 65534"},
		{[]string{"shard", "--corpus-max-line-bytes", "1"}, "-corpus-max-line-bytes: 1 bytes is below the minimum"},
		{[]string{"proxy", "--shard", "s=127.0.0.1:1", "--shard-timeout", "10000h"}, "shard_timeout: 10000h0m0s is above the maximum of 5m0s"},
		{[]string{"proxy", "--shard", "s=127.0.0.1:1", "--max-top-k", "99999999999"}, "max_top_k: 4294967295 is above the maximum"},
		{[]string{"proxy", "--shard", "s=127.0.0.1:0"}, `port "0" is not a number from 1 to 65535`},
		{[]string{"proxy", "--shard", "s=127.0.0.1:1", "--hedge-budget", "2"}, "hedge_budget: 2 is above the maximum of 1"},
		{[]string{"demo", "--hedge-percentile", "100"}, "hedge_percentile: 100 is above the maximum of 99.9"},
		{[]string{"proxy", "--shard", "s=127.0.0.1:1", "--listen", "192.0.2.1:7070"}, "192.0.2.1 is not an address of this machine"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), tc.args, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error()+stderr.String(), tc.want) {
			t.Errorf("gather %v: got %v (stderr %q), want an error mentioning %q", tc.args, err, stderr.String(), tc.want)
		}
	}
}
