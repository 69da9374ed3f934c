package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/liveness"
	"github.com/gatherproxy/gather/internal/metrictest"
	"github.com/gatherproxy/gather/internal/synthetic"
)

// helperEnv, set to the number of shards, turns TestInFlightHelper into the helper process of
// BenchmarkInFlightHeap.
const helperEnv = "GATHER_INFLIGHT_HELPER_SHARDS"

// BenchmarkInFlightHeap measures the proxy's memory per query in flight at N=8, K=100. The shards
// and the QS clients run in a helper process (this test binary, re-executed), so the heap of this
// process is the proxy's alone: its server transport, interceptors, handler, fan-out and shard
// client streams. Each cycle holds M queries in flight, measures HeapAlloc, StackInuse and the
// goroutine count after runtime.GC() against the same taken before the queries, then releases
// them (the clients cancel). Reported per query:
//
//   - held=all: every shard holds the call before its first message, the common in-flight state
//     (the proxy waits for the slowest shard). heap-B/query is the proxy's overhead per query.
//   - held=straggler: shard 0 holds, the other 7 have answered their 100 hits each, which wait in
//     the fan-out's buffers for the merge (the loser tree needs every shard's first hit before it
//     can emit one). heap-B/query adds 700 received hits (200-byte texts, two fields) per query.
//
// ns/op is the time of one hold-measure-release cycle of M queries and means little.
func BenchmarkInFlightHeap(b *testing.B) {
	const n, k, m = 8, 100, 200
	// GATHER_INFLIGHT_HEAPPROFILE=FILE writes the in-use heap of every held state to FILE.MODE,
	// for go tool pprof -sample_index=inuse_space.
	profile := os.Getenv("GATHER_INFLIGHT_HEAPPROFILE")
	if profile != "" {
		runtime.MemProfileRate = 1
	}
	h := startHelper(b, n)
	// A long per-shard timeout: a cycle must not be cut by the proxy's default 2s.
	p := newBenchProxy(b, h.addrs, fanout.Config{ShardTimeout: time.Minute})
	clientDone := func() float64 {
		return metrictest.Sum(b, p.w.reg, "gather_grpc_rpc_ends_total",
			map[string]string{"side": "client", "method": "/gather.shard.v1.ShardService/Search"})
	}
	serverDone := func() float64 {
		return metrictest.Sum(b, p.w.reg, "gather_grpc_rpc_ends_total",
			map[string]string{"side": "server", "method": "/gather.query.v1.QueryService/Search"})
	}
	waitFor := func(what string, cond func() bool) {
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				b.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for _, mode := range []string{"all", "straggler"} {
		b.Run("held="+mode, func(b *testing.B) {
			// answered is how many shard calls of a cycle end before the release.
			answered := 0
			if mode == "straggler" {
				answered = (n - 1) * m
			}
			var heap, stack, goroutines float64
			cycle := func(measure bool) {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.GC()
				runtime.ReadMemStats(&before)
				g0 := runtime.NumGoroutine()
				ends := clientDone()
				served := serverDone()
				h.do(b, fmt.Sprintf("hold %s %d %d %s", p.addr, m, k, mode), "ready")
				// Every held shard call has arrived; wait until the answered ones are fully
				// received too (read to io.EOF by the fan-out).
				waitFor("the answered shard calls", func() bool { return clientDone() >= ends+float64(answered) })
				runtime.GC()
				runtime.ReadMemStats(&after)
				g1 := runtime.NumGoroutine()
				if measure && profile != "" {
					writeHeapProfile(b, profile+"."+mode)
				}
				h.do(b, "release", "released")
				waitFor("the queries to end", func() bool { return serverDone() >= served+m })
				if measure {
					heap += float64(int64(after.HeapAlloc) - int64(before.HeapAlloc))
					stack += float64(int64(after.StackInuse) - int64(before.StackInuse))
					goroutines += float64(g1 - g0)
				}
			}
			cycle(false) // warm up: connections, transport buffers, pools
			cycles := 0
			for b.Loop() {
				cycle(true)
				cycles++
			}
			per := float64(cycles * m)
			b.ReportMetric(heap/per, "heap-B/query")
			b.ReportMetric(stack/per, "stack-B/query")
			b.ReportMetric(goroutines/per, "goroutines/query")
		})
	}
}

func writeHeapProfile(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

// helper is the helper process: n synthetic shards and the QS clients.
type helper struct {
	addrs []string
	in    io.Writer
	out   *bufio.Scanner
}

func startHelper(tb testing.TB, n int) *helper {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestInFlightHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	h := &helper{in: in, out: bufio.NewScanner(out)}
	tb.Cleanup(func() {
		_ = in.Close() // the helper stops when its input ends
		_ = cmd.Wait()
	})
	line := h.line(tb)
	addrs, ok := strings.CutPrefix(line, "addrs ")
	if !ok {
		tb.Fatalf("helper said %q, want its addresses", line)
	}
	h.addrs = strings.Split(addrs, ",")
	return h
}

func (h *helper) line(tb testing.TB) string {
	tb.Helper()
	for h.out.Scan() {
		// The test framework prints its own lines (=== RUN, PASS); ours start with a marker.
		if l, ok := strings.CutPrefix(h.out.Text(), "@ "); ok {
			return l
		}
	}
	tb.Fatalf("helper process ended: %v", h.out.Err())
	return ""
}

// do sends cmd and waits for the helper to answer want.
func (h *helper) do(tb testing.TB, cmd, want string) {
	tb.Helper()
	if _, err := fmt.Fprintln(h.in, cmd); err != nil {
		tb.Fatal(err)
	}
	if got := h.line(tb); got != want {
		tb.Fatalf("helper answered %q to %q, want %q", got, cmd, want)
	}
}

// TestInFlightHelper is BenchmarkInFlightHeap's helper process; run normally it skips. It serves
// synthetic shards and prints their addresses, then obeys commands on stdin, one per line:
//
//   - "hold ADDR M K MODE": start M Search queries (top_k K) at the proxy at ADDR, whose shard
//     calls are held (MODE all: on every shard; straggler: on shard 0, the others answer at
//     once), and answer "ready" once every held shard call has arrived;
//   - "release": cancel those queries, wait for them and for every held shard call to end, and
//     answer "released".
//
// It stops when stdin ends.
func TestInFlightHelper(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv(helperEnv))
	if err != nil {
		t.Skip("only run as the helper process of BenchmarkInFlightHeap")
	}
	var held atomic.Int64
	addrs := make([]string, n)
	for i := range addrs {
		s := &holdingShard{Server: synthetic.New(uint64(i + 1)), index: i, held: &held}
		addrs[i] = serve(t, func(g *grpc.Server) { shardv1.RegisterShardServiceServer(g, s) }, liveness.Server{}.ServerOptions()...)
	}
	fmt.Printf("@ addrs %s\n", strings.Join(addrs, ","))
	clients := map[string]queryv1.QueryServiceClient{}
	var wg sync.WaitGroup
	cancel := func() {}
	defer func() { cancel(); wg.Wait() }()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 5 && f[0] == "hold":
			c, ok := clients[f[1]]
			if !ok {
				conn, err := grpc.NewClient(f[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = conn.Close() }()
				c = queryv1.NewQueryServiceClient(conn)
				clients[f[1]] = c
			}
			m, _ := strconv.Atoi(f[2])
			k, _ := strconv.Atoi(f[3])
			want := int64(m)
			if f[4] == "all" {
				want *= int64(n)
			}
			cancel = startQueries(&wg, c, m, &queryv1.SearchRequest{Query: "hold-" + f[4], TopK: uint32(k)})
			for held.Load() < want {
				time.Sleep(time.Millisecond)
			}
			fmt.Println("@ ready")
		case len(f) == 1 && f[0] == "release":
			cancel()
			wg.Wait()
			for held.Load() > 0 {
				time.Sleep(time.Millisecond)
			}
			fmt.Println("@ released")
		default:
			t.Fatalf("unknown command %q", in.Text())
		}
	}
}

// startQueries starts m calls of req in goroutines counted by wg, and returns the function that
// cancels them.
func startQueries(wg *sync.WaitGroup, c queryv1.QueryServiceClient, m int, req *queryv1.SearchRequest) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	for range m {
		wg.Go(func() { _, _ = c.Search(ctx, req) })
	}
	return cancel
}

// holdingShard is a synthetic shard that holds a call for query "hold-all" (and, on shard 0,
// "hold-straggler") until the call is cancelled.
type holdingShard struct {
	*synthetic.Server
	index int
	held  *atomic.Int64
}

func (s *holdingShard) Search(req *shardv1.SearchRequest, stream grpc.ServerStreamingServer[shardv1.SearchResponse]) error {
	if q := req.GetQuery(); q == "hold-all" || (q == "hold-straggler" && s.index == 0) {
		s.held.Add(1)
		defer s.held.Add(-1)
		<-stream.Context().Done()
		return stream.Context().Err()
	}
	return s.Server.Search(req, stream)
}
