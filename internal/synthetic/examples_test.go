package synthetic_test

import (
	"fmt"
	"time"

	"google.golang.org/grpc"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/synthetic"
)

func ExampleParseLatency() {
	for _, flag := range []string{"2ms", "lognormal:2ms,0.5", "slow:2ms,1in100,x10", "slow:2ms,100,10"} {
		l, err := synthetic.ParseLatency(flag, 0)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(l)
	}
	// Output:
	// fixed:2ms
	// lognormal:2ms,0.5
	// slow:2ms,1in100,x10
	// bad latency "slow:2ms,100,10": "100" is not 1inN with a whole N of at least 1, e.g. 1in100
}

func ExampleSlowOneIn() {
	l := synthetic.SlowOneIn(4, 10, time.Millisecond, 0)
	for range 8 {
		fmt.Print(l.Next(), " ")
	}
	fmt.Println()
	// Output:
	// 1ms 1ms 1ms 10ms 1ms 1ms 1ms 10ms
}

func ExampleNew() {
	// Shard i of a synthetic deployment: its own seed for its hits and for its latency draws.
	const shard = 3
	lat, err := synthetic.ParseLatency("lognormal:2ms,0.5", shard)
	if err != nil {
		panic(err)
	}
	srv := synthetic.New(shard, synthetic.WithLatency(lat), synthetic.WithTextBytes(16))
	gs := grpc.NewServer()
	shardv1.RegisterShardServiceServer(gs, srv)
	// ... gs.Serve(listener)

	for _, h := range srv.Hits("union", 4) {
		fmt.Printf("%s %.4f %q %s\n", h.GetDocId(), h.GetScore(), h.GetText(), h.GetFields()["source_id"])
	}
	// Output:
	// syn3-ad05c518 75.9400 "in army citizens" synthetic-3
	// syn3-7ca88c95 75.3705 "by with war year" synthetic-3
	// syn3-4c4b5412 74.8429 "security public " synthetic-3
	// syn3-1bee1b8f 74.8054 "great labor pres" synthetic-3
}
