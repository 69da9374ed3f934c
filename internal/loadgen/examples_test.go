package loadgen_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/gatherproxy/gather/internal/loadgen"
)

func ExampleRunAddr() {
	ctx := context.Background()
	res, err := loadgen.RunAddr(ctx, "127.0.0.1:7070", loadgen.Config{
		Mode:     loadgen.Open,
		Rate:     2000,
		Warmup:   2 * time.Second,
		Duration: 10 * time.Second,
		Progress: func(p loadgen.Progress) { fmt.Fprintf(os.Stderr, "\r%s", p) },
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	_ = res.WriteText(os.Stdout)
	_ = json.NewEncoder(os.Stdout).Encode(res) // for comparing runs
}

func ExampleResult_WriteText() {
	res := &loadgen.Result{
		Target: "127.0.0.1:7070",
		Config: loadgen.Config{
			Mode: loadgen.Open, Rate: 2000, MaxOutstanding: 1000, Duration: 10 * time.Second,
			Warmup: 2 * time.Second, Timeout: 5 * time.Second, TopK: 10, Queries: loadgen.DefaultQueries,
		},
		ElapsedUS:  10_001_200,
		Throughput: 1999.8,
		Counts: loadgen.Counts{
			Issued: 20000, Completed: 20000, OK: 19990, Degraded: 4, Shed: 3, Failed: 3,
			FailedByCode: map[string]int64{"DeadlineExceeded": 1, "Unavailable": 2},
		},
		Latency: loadgen.Summary{
			Count: 20000, MeanUS: 612, P50US: 540, P90US: 801, P99US: 1_420, P999US: 9_870, MaxUS: 31_200,
		},
		OKLatency: loadgen.Summary{
			Count: 19990, MeanUS: 611, P50US: 540, P90US: 801, P99US: 1_415, P999US: 9_810, MaxUS: 31_200,
		},
		Overhead: loadgen.Summary{
			Count: 19994, MeanUS: 98, P50US: 84, P90US: 131, P99US: 402, P999US: 1_210, MaxUS: 20_100,
		},
	}
	_ = res.WriteText(os.Stdout)
	// Output:
	// target 127.0.0.1:7070
	// open loop: 2000/s, at most 1000 outstanding, 10s after 2s warmup; top_k 10, timeout 5s, 16 queries
	// requests: 20000 issued, 20000 completed: 19990 ok, 4 degraded, 3 shed, 3 failed (DeadlineExceeded 1, Unavailable 2); 0 dropped, 0 interrupted
	// throughput: 1999.8/s over 10.001s
	// latency includes each request's wait for a free slot; overhead does not
	//    latency  count   mean    p50    p90     p99   p99.9     max
	//        all  20000  612µs  540µs  801µs  1.42ms  9.87ms  31.2ms
	//         ok  19990  611µs  540µs  801µs  1.42ms  9.81ms  31.2ms
	//   overhead  19994   98µs   84µs  131µs   402µs  1.21ms  20.1ms
}
