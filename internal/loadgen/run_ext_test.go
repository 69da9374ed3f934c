package loadgen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/loadgen"
)

// None of these tests asserts speed. Bounds on latency are lower bounds that follow from the fake's
// delays and the run's structure; a slow machine only makes them hold by more.

func TestClassifiesOutcomes(t *testing.T) {
	t.Parallel()
	f := &fake{}
	addr, _ := serve(t, f)
	res, err := loadgen.RunAddr(t.Context(), addr, loadgen.Config{
		Workers:  4,
		Requests: 60,
		Queries:  []string{"ok", "degraded", "shed", "unavailable", "invalid", "ok"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := loadgen.Counts{
		Issued: 60, Completed: 60, OK: 20, Degraded: 10, Shed: 10, Failed: 20,
		FailedByCode: map[string]int64{"Unavailable": 10, "InvalidArgument": 10},
	}
	if !reflect.DeepEqual(res.Counts, want) {
		t.Errorf("counts = %+v, want %+v", res.Counts, want)
	}
	if got := f.calls.Load(); got != 60 {
		t.Errorf("the target got %d calls, want 60", got)
	}
	if res.Latency.Count != 60 || res.OKLatency.Count != 20 {
		t.Errorf("latency counts %d (ok %d), want 60 (ok 20)", res.Latency.Count, res.OKLatency.Count)
	}
	if res.Target != addr || res.Schema != loadgen.Schema || res.Canceled {
		t.Errorf("target %q, schema %q, canceled %v", res.Target, res.Schema, res.Canceled)
	}
	if res.Throughput <= 0 || res.ElapsedUS <= 0 {
		t.Errorf("throughput %v over %dµs", res.Throughput, res.ElapsedUS)
	}
}

// TestRunAddrSpreadsOverAList: given two addresses, RunAddr sends to both, round_robin over one
// connection each (pick_first, grpc-go's default, sends everything to the first); a list with an
// empty element is refused with what to give.
func TestRunAddrSpreadsOverAList(t *testing.T) {
	t.Parallel()
	a, b := &fake{delay: 5 * time.Millisecond}, &fake{delay: 5 * time.Millisecond}
	addrA, _ := serve(t, a)
	addrB, _ := serve(t, b)
	list := addrA + "," + addrB
	res, err := loadgen.RunAddr(t.Context(), list, loadgen.Config{Workers: 4, Requests: 100, Queries: []string{"ok"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Counts.OK != 100 || res.Target != list {
		t.Errorf("%d ok to %q, want 100 to %q", res.Counts.OK, res.Target, list)
	}
	// round_robin alternates between READY connections: each gets about half.
	if ca, cb := a.calls.Load(), b.calls.Load(); ca+cb != 100 || ca < 10 || cb < 10 {
		t.Errorf("calls: %d to the first address, %d to the second; want about 50 each", ca, cb)
	}
	if _, err := loadgen.RunAddr(t.Context(), addrA+",", loadgen.Config{Requests: 1}); err == nil ||
		!strings.Contains(err.Error(), "give HOST:PORT,HOST:PORT") {
		t.Errorf("a list with an empty address: %v, want an error saying what to give", err)
	}
}

func TestOverheadSubtractsSlowestShard(t *testing.T) {
	t.Parallel()
	const delay = 10 * time.Millisecond
	_, client := serve(t, &fake{delay: delay})
	res, err := loadgen.Run(t.Context(), client, loadgen.Config{
		Workers: 2, Requests: 20, Queries: []string{"ok", "degraded", "shed", "ok"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Answered requests (ok and degraded) report shards; the shed ones do not.
	if got, want := res.Overhead.Count, res.Counts.OK+res.Counts.Degraded; got != want || got != 15 {
		t.Errorf("%d overheads recorded, want one per answered request, %d", got, want)
	}
	// Each overhead is its request's latency less the 10ms the slowest shard reported.
	if res.Overhead.MaxUS > res.Latency.MaxUS-9_900 {
		t.Errorf("overhead max %dµs, latency max %dµs: want at least 10ms apart", res.Overhead.MaxUS, res.Latency.MaxUS)
	}
}

func TestRequestsCarryConfig(t *testing.T) {
	t.Parallel()
	f := &fake{}
	_, client := serve(t, f)
	_, err := loadgen.Run(t.Context(), client, loadgen.Config{
		Requests:      1,
		Queries:       []string{"gold standard"},
		TopK:          100,
		PartialPolicy: queryv1.PartialPolicy_PARTIAL_POLICY_REQUIRE_FULL,
		ShardTimeout:  75 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	req := f.last.Load()
	if req.GetQuery() != "gold standard" || req.GetTopK() != 100 ||
		req.GetPartialPolicy() != queryv1.PartialPolicy_PARTIAL_POLICY_REQUIRE_FULL ||
		req.GetShardTimeout().AsDuration() != 75*time.Millisecond {
		t.Errorf("request = %v", req)
	}
}

func TestTimeoutCountsAsFailed(t *testing.T) {
	t.Parallel()
	_, client := serve(t, &fake{})
	res, err := loadgen.Run(t.Context(), client, loadgen.Config{
		Workers: 1, Requests: 3, Queries: []string{"hang"}, Timeout: 30 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Counts.Failed != 3 || res.Counts.FailedByCode["DeadlineExceeded"] != 3 {
		t.Errorf("counts = %+v, want 3 failed with DeadlineExceeded", res.Counts)
	}
	if res.Latency.MinUS < 29_900 {
		t.Errorf("min latency %dµs, below the 30ms timeout", res.Latency.MinUS)
	}
}

func TestClosedLoopBoundsOutstanding(t *testing.T) {
	t.Parallel()
	f := &fake{delay: 2 * time.Millisecond}
	_, client := serve(t, f)
	res, err := loadgen.Run(t.Context(), client, loadgen.Config{Workers: 3, Requests: 60})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.maxActive.Load(); got > 3 {
		t.Errorf("%d requests outstanding at once, want at most 3 workers' worth", got)
	}
	if res.Counts.Issued != 60 || res.Counts.OK != 60 || res.Counts.Dropped != 0 {
		t.Errorf("counts = %+v, want 60 issued and ok", res.Counts)
	}
}

func TestOpenLoopIssuesRateTimesDuration(t *testing.T) {
	t.Parallel()
	f := &fake{}
	_, client := serve(t, f)
	res, err := loadgen.Run(t.Context(), client, loadgen.Config{
		Mode: loadgen.Open, Rate: 400, MaxOutstanding: 16,
		Warmup: 50 * time.Millisecond, Duration: 250 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	c := res.Counts
	// The schedule has exactly 400/s × 250ms = 100 requests due in the window: each was either
	// sent or dropped. How many could be sent depends on the machine, hence the loose bound.
	if c.Issued+c.Dropped != 100 {
		t.Errorf("issued %d + dropped %d, want 100 due in the window", c.Issued, c.Dropped)
	}
	if c.Issued < 50 {
		t.Errorf("only %d of 100 requests sent", c.Issued)
	}
	if c.Completed != c.Issued || c.OK != c.Issued || c.Interrupted != 0 {
		t.Errorf("counts = %+v, want every issued request ok", c)
	}
	if got := f.calls.Load(); got < c.Issued+10 {
		t.Errorf("the target got %d calls, want the %d measured and about 20 of warmup", got, c.Issued)
	}
	if got := f.maxActive.Load(); got > 16 {
		t.Errorf("%d requests outstanding at once, want at most 16", got)
	}
}

func TestOpenLoopDropsWhatItCannotSend(t *testing.T) {
	t.Parallel()
	_, client := serve(t, &fake{delay: 50 * time.Millisecond})
	res, err := loadgen.Run(t.Context(), client, loadgen.Config{
		Mode: loadgen.Open, Rate: 1000, MaxOutstanding: 1, Duration: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	c := res.Counts
	// One request at a time, each taking at least 50ms: at most 4 can start in the 100ms window
	// and the 50ms of grace after it.
	if c.Issued+c.Dropped != 100 || c.Issued > 4 {
		t.Errorf("issued %d, dropped %d; want at most 4 issued and the rest of 100 dropped", c.Issued, c.Dropped)
	}
}

func TestOpenLoopTooFastForTheGeneratorStillEnds(t *testing.T) {
	t.Parallel()
	_, client := serve(t, &fake{})
	res, err := loadgen.Run(t.Context(), client, loadgen.Config{
		Mode: loadgen.Open, Rate: 1e6, MaxOutstanding: 4, Duration: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	// 100000 due: far more than the generator can send in 100ms (plus the 50ms grace).
	if c := res.Counts; c.Issued+c.Dropped != 100000 || c.Dropped == 0 || c.Completed != c.Issued {
		t.Errorf("counts = %+v, want issued + dropped = 100000, some dropped", c)
	}
}

// The coordinated-omission property: when the target is slower than the schedule, the wait for a
// free slot counts in each request's latency, so latencies grow far past the service time.
func TestOpenLoopLatencyIncludesQueueing(t *testing.T) {
	t.Parallel()
	_, client := serve(t, &fake{delay: 20 * time.Millisecond})
	res, err := loadgen.Run(t.Context(), client, loadgen.Config{
		Mode: loadgen.Open, Rate: 200, MaxOutstanding: 1, Requests: 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Counts.Issued != 20 || res.Counts.OK != 20 || res.Counts.Dropped != 0 {
		t.Fatalf("counts = %+v, want 20 issued and ok", res.Counts)
	}
	// Request k is due at 5k ms but cannot end before 20(k+1) ms, one at a time: its latency is at
	// least 15k+20 ms, so the median of 20 is at least 155ms and the maximum at least 305ms, where
	// a closed loop would see about 20ms each.
	if res.Latency.P50US < 150_000 || res.Latency.MaxUS < 300_000 {
		t.Errorf("p50 %dµs, max %dµs; want at least 150ms and 300ms of queueing", res.Latency.P50US, res.Latency.MaxUS)
	}
}

func TestCancelStopsClosedLoop(t *testing.T) {
	t.Parallel()
	testCancelStops(t, loadgen.Config{Workers: 2}, 2)
}

func TestCancelStopsOpenLoop(t *testing.T) {
	t.Parallel()
	testCancelStops(t, loadgen.Config{Mode: loadgen.Open, Rate: 1000, MaxOutstanding: 4}, 4)
}

func TestCancelStopsOpenLoopBehindSchedule(t *testing.T) {
	t.Parallel()
	f := &fake{}
	_, client := serve(t, f)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan *loadgen.Result, 1)
	go func() {
		// Far more than can be sent: the dispatcher never sleeps and never catches up.
		res, _ := loadgen.Run(ctx, client, loadgen.Config{Mode: loadgen.Open, Rate: 1e9, MaxOutstanding: 64, Duration: time.Hour})
		done <- res
	}()
	waitFor(t, "some requests", func() bool { return f.calls.Load() >= 20 })
	cancel()
	select {
	case res := <-done:
		if !res.Canceled || res.Counts.Issued != res.Counts.Completed+res.Counts.Interrupted {
			t.Errorf("canceled %v, counts %+v", res.Canceled, res.Counts)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run still running 10s after its context was canceled")
	}
}

// testCancelStops runs cfg against a target that never answers until `stuck` requests hang, then
// cancels Run's context: Run must return at once with those requests interrupted, none failed.
func testCancelStops(t *testing.T, cfg loadgen.Config, stuck int64) {
	f := &fake{}
	_, client := serve(t, f)
	cfg.Queries = []string{"hang"}
	cfg.Duration, cfg.Timeout = time.Hour, time.Hour
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type outcome struct {
		res *loadgen.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := loadgen.Run(ctx, client, cfg)
		done <- outcome{res, err}
	}()
	waitFor(t, "hanging requests", func() bool { return f.active.Load() == stuck })
	cancel()
	var o outcome
	select {
	case o = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run still running 10s after its context was canceled")
	}
	if o.err != nil {
		t.Fatal(o.err)
	}
	c := o.res.Counts
	if !o.res.Canceled || c.Issued != stuck || c.Interrupted != stuck || c.Completed != 0 {
		t.Errorf("canceled %v, counts %+v; want %d issued and interrupted", o.res.Canceled, c, stuck)
	}
	waitFor(t, "the target's calls to end", func() bool { return f.active.Load() == 0 })
}

func TestProgress(t *testing.T) {
	t.Parallel()
	_, client := serve(t, &fake{delay: time.Millisecond})
	var (
		mu    sync.Mutex
		snaps []loadgen.Progress
	)
	res, err := loadgen.Run(t.Context(), client, loadgen.Config{
		Workers: 2, Warmup: 60 * time.Millisecond, Duration: 200 * time.Millisecond,
		ProgressEvery: 20 * time.Millisecond,
		Progress: func(p loadgen.Progress) {
			mu.Lock()
			defer mu.Unlock()
			snaps = append(snaps, p)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(snaps) < 2 {
		t.Fatalf("%d progress calls in 260ms at 20ms intervals", len(snaps))
	}
	var prev loadgen.Progress
	for i, p := range snaps {
		switch {
		case p.String() == "":
			t.Errorf("snapshot %d prints as nothing", i)
		case p.Warmup && i > 0 && !prev.Warmup:
			t.Errorf("snapshot %d is in warmup after a measured one", i)
		case p.Warmup && p.Completed != 0:
			t.Errorf("snapshot %d counts %d completed during warmup", i, p.Completed)
		case !p.Warmup && p.Completed < prev.Completed:
			t.Errorf("snapshot %d: completed went from %d to %d", i, prev.Completed, p.Completed)
		case p.Completed > res.Counts.Completed:
			t.Errorf("snapshot %d: %d completed, more than the final %d", i, p.Completed, res.Counts.Completed)
		}
		prev = p
	}
}

func TestInvalidConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cfg  loadgen.Config
		want string
	}{
		{loadgen.Config{Mode: "fast", Requests: 1}, `mode "fast"`},
		{loadgen.Config{}, "no bound"},
		{loadgen.Config{Mode: loadgen.Open, Requests: 1}, "rate 0"},
		{loadgen.Config{Mode: loadgen.Open, Rate: -5, Requests: 1}, "rate -5"},
		{loadgen.Config{Mode: loadgen.Open, Rate: 1e-300, Requests: 1}, "at least 0.001"},
		{loadgen.Config{Workers: -1, Requests: 1}, "workers -1"},
		{loadgen.Config{Mode: loadgen.Open, Rate: 1, MaxOutstanding: -1, Requests: 1}, "max outstanding -1"},
		{loadgen.Config{Requests: -1}, "requests -1"},
		{loadgen.Config{Duration: -time.Second}, "duration -1s"},
		{loadgen.Config{Requests: 1, Warmup: -time.Second}, "warmup -1s"},
		{loadgen.Config{Requests: 1, Timeout: -time.Second}, "timeout -1s"},
		{loadgen.Config{Requests: 1, ShardTimeout: -time.Second}, "shard timeout -1s"},
		{loadgen.Config{Requests: 1, PartialPolicy: 99}, "partial policy 99"},
	}
	for _, tt := range tests {
		// A nil client: the config is refused before any request.
		_, err := loadgen.Run(t.Context(), nil, tt.cfg)
		if !errors.Is(err, loadgen.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Run(%+v) error = %v, want ErrInvalidConfig saying %q", tt.cfg, err, tt.want)
		}
	}
}

func TestResultJSONRoundTrip(t *testing.T) {
	t.Parallel()
	_, client := serve(t, &fake{})
	res, err := loadgen.Run(t.Context(), client, loadgen.Config{
		Workers: 2, Requests: 20, Warmup: 10 * time.Millisecond,
		Queries:       []string{"ok", "unavailable"},
		PartialPolicy: queryv1.PartialPolicy_PARTIAL_POLICY_REQUIRE_FULL,
		ShardTimeout:  50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back loadgen.Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Config, res.Config) || !reflect.DeepEqual(back.Counts, res.Counts) ||
		back.Latency != res.Latency || back.OKLatency != res.OKLatency || !back.Start.Equal(res.Start) {
		t.Errorf("round trip changed the result:\n got %+v\nwant %+v", back, *res)
	}
	b2, err := json.Marshal(&back)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) {
		t.Errorf("JSON changed on a round trip:\n%s\n%s", b, b2)
	}

	// The field names other tools rely on.
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	get := func(path ...string) any {
		var v any = m
		for _, k := range path {
			v = v.(map[string]any)[k]
		}
		return v
	}
	for _, tt := range []struct {
		path []string
		want any
	}{
		{[]string{"schema"}, loadgen.Schema},
		{[]string{"config", "mode"}, "closed"},
		{[]string{"config", "workers"}, 2.0},
		{[]string{"config", "requests"}, 20.0},
		{[]string{"config", "warmup_us"}, 10000.0},
		{[]string{"config", "timeout_us"}, 5e6},
		{[]string{"config", "shard_timeout_us"}, 50000.0},
		{[]string{"config", "partial_policy"}, "PARTIAL_POLICY_REQUIRE_FULL"},
		{[]string{"counts", "ok"}, 10.0},
		{[]string{"counts", "failed_by_code", "Unavailable"}, 10.0},
		{[]string{"latency", "count"}, 20.0},
		{[]string{"ok_latency", "count"}, 10.0},
	} {
		if got := get(tt.path...); got != tt.want {
			t.Errorf("%s = %v, want %v", strings.Join(tt.path, "."), got, tt.want)
		}
	}
	for _, k := range []string{"p50_us", "p90_us", "p99_us", "p99_9_us", "max_us", "mean_us", "hdr"} {
		if _, ok := get("latency").(map[string]any)[k]; !ok {
			t.Errorf("latency.%s missing", k)
		}
	}
	for _, k := range []string{"elapsed_us", "throughput_per_second", "start", "canceled", "overhead"} {
		if _, ok := m[k]; !ok {
			t.Errorf("%s missing", k)
		}
	}

	h, err := back.Latency.Histogram()
	if err != nil {
		t.Fatal(err)
	}
	if h.TotalCount() != 20 || h.ValueAtQuantile(99) != res.Latency.P99US {
		t.Errorf("decoded histogram: %d values, p99 %d; want 20 and %d", h.TotalCount(), h.ValueAtQuantile(99), res.Latency.P99US)
	}
}

func TestWriteText(t *testing.T) {
	t.Parallel()
	f := &fake{}
	addr, _ := serve(t, f)
	for _, tt := range []struct {
		cfg  loadgen.Config
		want []string
	}{
		{
			loadgen.Config{Workers: 2, Requests: 10, Queries: []string{"ok", "unavailable"}},
			[]string{"target " + addr, "closed loop: 2 workers, 10 requests", "10 issued, 10 completed: 5 ok",
				"5 failed (Unavailable 5)", "throughput: ", "p99.9"},
		},
		{
			loadgen.Config{Mode: loadgen.Open, Rate: 1000, Requests: 5},
			[]string{"open loop: 1000/s, at most 1000 outstanding, 5 requests", "wait for a free slot"},
		},
	} {
		res, err := loadgen.RunAddr(t.Context(), addr, tt.cfg)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		if err := res.WriteText(&b); err != nil {
			t.Fatal(err)
		}
		for _, w := range tt.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("text lacks %q:\n%s", w, b.String())
			}
		}
		if okRow := fmt.Sprintf(`\n\s*ok\s+%d\s`, res.OKLatency.Count); !regexp.MustCompile(okRow).MatchString(b.String()) {
			t.Errorf("text lacks the ok latency row:\n%s", b.String())
		}
	}
}
