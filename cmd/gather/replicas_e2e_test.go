package main

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/chaos"
)

var demoShard0R1 = regexp.MustCompile(`shard-0 r1\s+gather.shard.v1.ShardService\s+(\S+)`)

// postFault posts form to the demo's fault control with the control header and returns the
// status and the answer.
func postFault(t *testing.T, admin string, form url.Values) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+admin+chaos.FaultPath, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(chaos.ControlHeader, "1")
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// TestDemoReplicas runs `gather demo --replicas 2`, slows replica 0 of shard-0 past the queries'
// deadline through the demo's fault control, and checks that the proxy routes around it: every
// answer is complete, and shard-0 was answered by its other replica or by a hedge or retry. Not
// run in parallel with the other end-to-end tests: each query has a 1s deadline that the
// healthy replica must beat, which does not depend on how fast the machine is but on it not being
// starved by a dozen other gather processes.
func TestDemoReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("builds indexes and runs processes")
	}
	p := startGather(t, "demo", "--replicas", "2", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
		"--corpus", smallCorpus(t, 8), "--data-dir", t.TempDir())
	addr := p.await(t, demoProxy)
	admin := p.await(t, demoAdmin)
	r1 := p.await(t, demoShard0R1)
	if !strings.Contains(p.out(), "shard=NAME|all [replica=0..1, absent: every replica] spec=SPEC") {
		t.Errorf("the demo's faults line does not offer replica=:\n%s", p.out())
	}

	// A replica the demo lacks is refused with the valid range; nothing changes.
	if code, body := postFault(t, admin, url.Values{"shard": {"shard-0"}, "replica": {"2"}, "spec": {"delay=2s"}}); code != http.StatusBadRequest ||
		!strings.Contains(body, "want replica 0 to 1") {
		t.Errorf("replica=2: %d %q, want 400 naming the range 0 to 1", code, body)
	}
	code, body := postFault(t, admin, url.Values{"shard": {"shard-0"}, "replica": {"0"}, "spec": {"delay=2s"}})
	if want := `{"shard-0":["delay=2s","none"],"shard-1":["none","none"],"shard-2":["none","none"],"shard-3":["none","none"]}`; code != http.StatusOK || body != want {
		t.Fatalf("slowing shard-0 replica 0: %d %s, want 200 %s", code, body, want)
	}

	client := queryv1.NewQueryServiceClient(dial(t, addr))
	routed := 0 // shard-0 answers from replica 1, a hedge or a retry
	for i := range 20 {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		resp, err := client.Search(ctx, &queryv1.SearchRequest{Query: "union constitution war", TopK: 5})
		cancel()
		if err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		if cov := resp.GetCoverage(); cov.GetShardsSucceeded() != 4 || cov.GetDegraded() {
			t.Errorf("query %d: coverage %v, want 4 of 4: shards %v", i, cov, resp.GetShards())
		}
		for _, s := range resp.GetShards() {
			if s.GetShard() != "shard-0" {
				continue
			}
			if src := s.GetSource(); s.GetReplica() == r1 || src == queryv1.AttemptSource_ATTEMPT_SOURCE_HEDGE ||
				src == queryv1.AttemptSource_ATTEMPT_SOURCE_RETRY {
				routed++
			}
		}
	}
	if routed == 0 {
		t.Errorf("no shard-0 answer came from replica 1 (%s), a hedge or a retry", r1)
	}
	t.Logf("%d of 20 shard-0 answers from replica 1, a hedge or a retry", routed)
	p.stop(t)
}
