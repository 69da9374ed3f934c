package discovery_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/gatherproxy/gather/internal/discovery"
	"github.com/gatherproxy/gather/internal/fanout"
)

// A shard given as dns:///localhost:7071 is every address localhost has, each on port 7071,
// looked up with the system's resolver (/etc/hosts here). A proxy passes the fan-out's Update as
// onChange, and calls Refresh when a replica's connection is lost.
func ExampleNewDNSSource() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	topology := []fanout.ShardSpec{{Name: "shard-0", Replicas: []string{"dns:///localhost:7071"}}}
	src, err := discovery.NewDNSSource(topology, func(t []fanout.ShardSpec) {
		// localhost may also be ::1: print what every machine agrees on.
		fmt.Println(t[0].Name, "has 127.0.0.1:7071:", slices.Contains(t[0].Replicas, "127.0.0.1:7071"))
		cancel()
	}, discovery.WithDNSLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("before the first lookup:", src.Static())
	_ = src.Run(ctx) // returns once cancel is called
	// Output:
	// before the first lookup: [{shard-0 []}]
	// shard-0 has 127.0.0.1:7071: true
}
