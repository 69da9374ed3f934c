package benchsuite

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// BenchmarkIdleConns is the suite's idle-connection measurement on its own, without the
// scenarios before it: per iteration a fresh `gather proxy` over one synthetic shard, built from
// this tree (without -race), then GATHER_IDLE_CONNS (default 10,000) idle QS connections, each
// READY. It reports what a connection costs the proxy, after garbage collections: RSS, heap in
// use and goroutine stacks, in bytes per connection, and the RSS the connections added in all.
// The figures are measured, not judged; compare runs with benchstat:
//
//	go test -run '^$' -bench IdleConns -benchtime 1x -count 6 ./internal/benchsuite/
func BenchmarkIdleConns(b *testing.B) {
	n := 10_000
	if v := os.Getenv("GATHER_IDLE_CONNS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("GATHER_IDLE_CONNS=%q: want a positive number of connections", v)
		}
	}
	dir := b.TempDir()
	bin := filepath.Join(dir, "gather")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/gatherproxy/gather/cmd/gather").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	defer cancel()
	var rss, heap, stack, total float64
	b.ResetTimer()
	for i := range b.N {
		s := &suite{
			t:     timing{idleConns: n, idleTimeout: 2 * time.Minute},
			procs: &children{bin: bin, dir: dir},
		}
		shards, _, err := s.startShards(ctx, "shard-"+strconv.Itoa(i), 1, 1, "none")
		if err != nil {
			s.procs.stopAll()
			b.Fatal(err)
		}
		s.shards = shards
		r, err := s.idleConns(ctx)
		s.procs.stopAll()
		switch {
		case err != nil:
			b.Fatal(err)
		case r.Skipped != "":
			b.Skip(r.Skipped)
		case r.Note != "":
			b.Fatal(r.Note)
		}
		per := func(before, after uint64) float64 { return (float64(after) - float64(before)) / float64(r.Ready) }
		rss += r.RSSPerConn()
		heap += per(r.HeapBefore, r.HeapAfter)
		stack += per(r.StackBefore, r.StackAfter)
		total += float64(r.RSSAfter) - float64(r.RSSBefore)
	}
	b.StopTimer()
	runs := float64(b.N)
	b.ReportMetric(rss/runs, "rss-B/conn")
	b.ReportMetric(heap/runs, "heap-B/conn")
	b.ReportMetric(stack/runs, "stack-B/conn")
	b.ReportMetric(total/runs/(1<<20), "rss-MiB")
}
