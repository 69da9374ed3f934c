package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// grpcurlBin builds the grpcurl pinned in tools/go.mod, once per test binary.
func grpcurlBin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(filepath.Dir(gatherBin), "grpcurl")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-modfile="+filepath.Join(root, "tools", "go.mod"), "-o", bin,
		"github.com/fullstorydev/grpcurl/cmd/grpcurl")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building grpcurl: %v\n%s", err, out)
	}
	return bin
}

// TestGrpcurl is what an operator does first: list, describe, query, check health and look at
// the proxy's shard connections, with the real grpcurl against `gather demo`.
func TestGrpcurl(t *testing.T) {
	if testing.Short() {
		t.Skip("builds grpcurl and runs processes")
	}
	t.Parallel()
	grpcurl := grpcurlBin(t)
	p := startGather(t, "demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--corpus", smallCorpus(t, 8), "--data-dir", t.TempDir())
	addr := p.await(t, demoProxy)
	admin := p.await(t, demoAdmin)
	// callAt runs grpcurl -plaintext [-d data] at what...
	callAt := func(at, data string, what ...string) string {
		t.Helper()
		args := []string{"-plaintext"}
		if data != "" {
			args = append(args, "-d", data)
		}
		out, err := exec.Command(grpcurl, append(append(args, at), what...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl %s %v: %v\n%s", at, what, err, out)
		}
		return string(out)
	}
	call := func(data string, what ...string) string {
		t.Helper()
		return callAt(addr, data, what...)
	}

	list := call("", "list")
	for _, svc := range []string{"gather.query.v1.QueryService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !strings.Contains(list, svc) {
			t.Errorf("grpcurl list lacks %s:\n%s", svc, list)
		}
	}
	// Channelz shows every connection of the process: it is on the admin port only.
	if strings.Contains(list, "grpc.channelz.v1.Channelz") {
		t.Errorf("the query port serves channelz:\n%s", list)
	}
	if adminList := callAt(admin, "", "list"); !strings.Contains(adminList, "grpc.channelz.v1.Channelz") {
		t.Errorf("the admin port does not serve channelz:\n%s", adminList)
	}
	if d := call("", "describe", "gather.query.v1.QueryService"); !strings.Contains(d, "front door") || !strings.Contains(d, "rpc SearchStream") {
		t.Errorf("describe does not explain the service:\n%s", d)
	}
	if d := call("", "describe", "gather.query.v1.Coverage"); !strings.Contains(d, "shards_succeeded") {
		t.Errorf("describe Coverage:\n%s", d)
	}
	// The protovalidate rules are part of the described contract.
	if d := call("", "describe", "gather.query.v1.SearchRequest"); !strings.Contains(d, "(.buf.validate.field)") || !strings.Contains(d, "query is empty") {
		t.Errorf("describe SearchRequest does not show its rules:\n%s", d)
	}

	var resp struct {
		Hits []struct {
			DocID string  `json:"docId"`
			Score float64 `json:"score"`
			Shard string  `json:"shard"`
		} `json:"hits"`
		Coverage struct {
			ShardsTotal     int `json:"shardsTotal"`
			ShardsSucceeded int `json:"shardsSucceeded"`
		} `json:"coverage"`
	}
	out := call(`{"query":"union constitution war","top_k":10}`, "gather.query.v1.QueryService/Search")
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("Search output is not JSON: %v\n%s", err, out)
	}
	if len(resp.Hits) != 10 || resp.Coverage.ShardsSucceeded != 4 || resp.Coverage.ShardsTotal != 4 {
		t.Errorf("Search: %d hits, coverage %+v; want 10 hits from 4 of 4", len(resp.Hits), resp.Coverage)
	}
	for i := 1; i < len(resp.Hits); i++ {
		if resp.Hits[i].Score > resp.Hits[i-1].Score {
			t.Errorf("hits out of order at %d", i)
		}
	}

	if h := call("", "grpc.health.v1.Health/Check"); !strings.Contains(h, "SERVING") {
		t.Errorf("health: %s", h)
	}
	if h := call(`{"service":"gather.query.v1.QueryService"}`, "grpc.health.v1.Health/Check"); !strings.Contains(h, "SERVING") {
		t.Errorf("health of the QueryService: %s", h)
	}

	ch := callAt(admin, "", "grpc.channelz.v1.Channelz/GetTopChannels")
	if strings.Count(ch, `"target"`) < 4 || !strings.Contains(ch, "READY") {
		t.Errorf("channelz does not show the 4 shard connections READY:\n%s", ch)
	}

	// A bad request is explained, with the field at fault in the details.
	bad, err := exec.Command(grpcurl, "-plaintext", "-format-error", "-d", `{"query":"","top_k":10}`, addr, "gather.query.v1.QueryService/Search").CombinedOutput()
	if err == nil || !strings.Contains(string(bad), `"code": 3`) || // INVALID_ARGUMENT
		!strings.Contains(string(bad), "query is empty") || !strings.Contains(string(bad), "google.rpc.BadRequest") ||
		!strings.Contains(string(bad), "buf.validate.Violations") || !strings.Contains(string(bad), "query.not_blank") {
		t.Errorf("empty query: %v\n%s", err, bad)
	}
	p.stop(t)
}
