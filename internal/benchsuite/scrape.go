package benchsuite

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gatherproxy/gather/internal/chaos"
)

// Metrics the suite reads from an admin /metrics page (the Go and process collectors, and the
// proxy's own).
const (
	mCPU        = "process_cpu_seconds_total"
	mRSS        = "process_resident_memory_bytes"
	mFDs        = "process_open_fds"
	mAllocBytes = "go_memstats_alloc_bytes_total"
	mMallocs    = "go_memstats_mallocs_total"
	mHeapInuse  = "go_memstats_heap_inuse_bytes"
	mStackInuse = "go_memstats_stack_inuse_bytes"
	mGoroutines = "go_goroutines"
	mInFlight   = "gather_admission_in_flight_queries"
	mStarted    = "grpc_client_started_total"
	// The hits the proxy parsed out of its shards' messages, and those whose payload (text,
	// fields) it decoded in full; absent from a proxy that does not count them.
	mHitsReceived = "gather_shard_hits_received_total"
	mHitsDecoded  = "gather_shard_hits_decoded_total"
)

// admin is the admin HTTP endpoint of a gather process: /metrics and /debug/pprof/.
type admin struct {
	addr   string
	client *http.Client
}

func newAdmin(addr string) admin {
	return admin{addr: addr, client: &http.Client{Timeout: 30 * time.Second}}
}

// get fetches path and hands its body to read; the body is always read to the end and closed,
// so the connection is reused.
func (a admin) get(ctx context.Context, path string, read func(io.Reader) error) error {
	u := "http://" + a.addr + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, http.NoBody)
	if err != nil {
		return err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if err := read(resp.Body); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}

// metrics scrapes /metrics.
func (a admin) metrics(ctx context.Context) (metrics, error) {
	var page *chaos.Page
	err := a.get(ctx, "/metrics", func(r io.Reader) (err error) {
		page, err = chaos.ParsePage(r)
		return err
	})
	return metrics{page}, err
}

// gc makes the process collect garbage: the heap profile handler runs a GC first when asked
// with gc=1, and answers once it is done.
func (a admin) gc(ctx context.Context) error {
	return a.get(ctx, "/debug/pprof/heap?gc=1", func(io.Reader) error { return nil })
}

// metricsAfterGC is two garbage collections, then metrics: the heap it reports is live data.
// It takes two because what sync.Pools held before the first survives it (in their victim
// caches), and would be counted as live.
func (a admin) metricsAfterGC(ctx context.Context) (metrics, error) {
	for range 2 {
		if err := a.gc(ctx); err != nil {
			return metrics{}, err
		}
	}
	return a.metrics(ctx)
}

// cpuProfile saves a CPU profile of the next d (whole seconds, at least 1) to path.
func (a admin) cpuProfile(ctx context.Context, d time.Duration, path string) error {
	secs := max(int(d/time.Second), 1)
	return a.get(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), func(r io.Reader) error {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, r); err != nil {
			_ = f.Close()
			return err
		}
		return f.Close()
	})
}

// metrics is one scrape.
type metrics struct{ page *chaos.Page }

// get returns the sum of the samples of name matching the label pairs, 0 if none.
func (m metrics) get(name string, match ...string) float64 {
	if m.page == nil {
		return 0
	}
	v, _ := m.page.Sum(name, match...)
	return v
}

// lookup returns the sum of the samples of name matching the label pairs, and whether the page
// has any sample of name.
func (m metrics) lookup(name string, match ...string) (float64, bool) {
	if m.page == nil {
		return 0, false
	}
	return m.page.Sum(name, match...)
}

// cpuTimes is the machine's CPU time so far, from the first line of /proc/stat, in clock ticks.
type cpuTimes struct {
	busy, total uint64
	ok          bool
}

func readCPUTimes() cpuTimes {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return cpuTimes{}
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 5 || fields[0] != "cpu" {
		return cpuTimes{}
	}
	var t cpuTimes
	// user nice system idle iowait irq softirq steal; guest time is already in user and nice.
	for i, s := range fields[1:min(len(fields), 9)] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return cpuTimes{}
		}
		t.total += v
		if i != 3 && i != 4 { // idle and iowait
			t.busy += v
		}
	}
	t.ok = true
	return t
}

// busyCores is the machine's average number of busy cores between a and b.
func busyCores(a, b cpuTimes, cores int) float64 {
	if !a.ok || !b.ok || b.total <= a.total {
		return 0
	}
	return float64(b.busy-a.busy) / float64(b.total-a.total) * float64(cores)
}

// processTicks returns the CPU time (user and system, in clock ticks) the processes pids have
// used so far, from /proc/PID/stat; processes it cannot read count 0.
func processTicks(pids []int) uint64 {
	var sum uint64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		// The command name, in parentheses, may hold spaces: fields count from after it.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			continue
		}
		utime, err1 := strconv.ParseUint(f[11], 10, 64) // field 14 of proc(5)
		stime, err2 := strconv.ParseUint(f[12], 10, 64) // field 15
		if err1 == nil && err2 == nil {
			sum += utime + stime
		}
	}
	return sum
}

// load is a snapshot of the machine's CPU time and of the suite's own processes'.
type load struct {
	machine cpuTimes
	ours    uint64
}

// sampleLoad takes a snapshot for the processes pids.
func sampleLoad(pids []int) load { return load{machine: readCPUTimes(), ours: processTicks(pids)} }

// coresBetween returns the machine's average busy cores between a and b, and how many of them
// were busy with something other than pids' processes: other load, which makes the numbers
// noisy. Both are 0 when /proc cannot be read.
func coresBetween(a, b load, cores int) (busy, others float64) {
	busy = busyCores(a.machine, b.machine, cores)
	if busy == 0 || b.ours < a.ours {
		return busy, 0
	}
	wall := float64(b.machine.total-a.machine.total) / float64(cores) // ticks of one core
	return busy, max(busy-float64(b.ours-a.ours)/wall, 0)
}
