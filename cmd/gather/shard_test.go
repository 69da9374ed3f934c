package main

import (
	"context"
	"errors"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
)

// TestShardPartitions serves three synthetic partitions from one in-process `gather shard`: each
// on its own port, each with its own seed (so its own hits), and all of them gone, with every
// goroutine, once the command's context ends. Not parallel: goleak looks at the whole process.
func TestShardPartitions(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var (
		mu             sync.Mutex
		stdout, stderr strings.Builder
	)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"shard", "--synthetic", "--partitions", "3", "--partition", "1/4", "--listen", "127.0.0.1:0",
			"--latency", "none"}, syncWriter{&mu, &stdout}, syncWriter{&mu, &stderr})
	}()
	re := regexp.MustCompile(`synthetic seed (\d+), .*ShardService on (\S+)`)
	var lines [][]string
	for deadline := time.Now().Add(30 * time.Second); len(lines) < 3; {
		mu.Lock()
		lines = re.FindAllStringSubmatch(stdout.String(), -1)
		mu.Unlock()
		select {
		case err := <-done:
			t.Fatalf("gather shard returned %v before serving; stderr:\n%s", err, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s, %d address lines, want 3; stdout:\n%s", len(lines), stdout.String())
		}
	}
	first := map[string]string{} // each partition's first hit, by address
	for i, l := range lines {
		if want := []string{"2", "3", "4"}[i]; l[1] != want { // partitions 1, 2, 3: seeds 2, 3, 4
			t.Errorf("partition %d: seed %s, want %s", i, l[1], want)
		}
		conn, err := grpc.NewClient(l[2], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		st, err := shardv1.NewShardServiceClient(conn).Search(ctx, &shardv1.SearchRequest{Query: "union", TopK: 3})
		if err != nil {
			t.Fatalf("%s: %v", l[2], err)
		}
		var hits []*shardv1.Hit
		for {
			resp, err := st.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", l[2], err)
			}
			hits = append(hits, resp.GetHits()...)
		}
		_ = conn.Close()
		if len(hits) != 3 {
			t.Fatalf("%s: %d hits, want 3", l[2], len(hits))
		}
		first[l[2]] = hits[0].GetDocId() + "/" + hits[0].GetText()
	}
	if len(first) != 3 {
		t.Errorf("%d distinct addresses, want 3: %v", len(first), first)
	}
	seen := map[string]bool{}
	for _, h := range first {
		seen[h] = true
	}
	if len(seen) != 3 {
		t.Errorf("the partitions answered the same hits: %v", first)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("gather shard: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("gather shard still running 30s after its context ended")
	}
	goleak.VerifyNone(t, ignore)
}
