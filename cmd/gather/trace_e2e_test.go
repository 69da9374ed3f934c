package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// fixtureTraceID is the trace of internal/traceview/testdata/hedged.json: a degraded query with
// a hedge, a deadline cut and a retry.
const fixtureTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"

// fakeJaeger serves Jaeger's GET /api/traces/{id}: the fixture for every ID that serve accepts
// (rewritten to carry that ID), Jaeger's 404 for the others. It records the IDs asked for.
type fakeJaeger struct {
	*httptest.Server
	mu    sync.Mutex
	asked []string
}

func newFakeJaeger(t *testing.T, serve func(id string) bool) *fakeJaeger {
	t.Helper()
	fixture, err := os.ReadFile(filepath.Join("..", "..", "internal", "traceview", "testdata", "hedged.json"))
	if err != nil {
		t.Fatal(err)
	}
	j := &fakeJaeger{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/traces/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		j.mu.Lock()
		j.asked = append(j.asked, id)
		j.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if !serve(id) {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"data":null,"total":0,"limit":0,"offset":0,"errors":[{"code":404,"msg":"trace not found"}]}`))
			return
		}
		_, _ = w.Write(bytes.ReplaceAll(fixture, []byte(fixtureTraceID), []byte(id)))
	})
	j.Server = httptest.NewServer(mux)
	t.Cleanup(j.Close)
	return j
}

func (j *fakeJaeger) askedFor() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.asked...)
}

// TestTraceCommand runs `gather trace` against a fake Jaeger: the waterfall of a known trace, and
// errors that say what to do for an unknown trace, a Jaeger that is not running and a bad ID.
func TestTraceCommand(t *testing.T) {
	t.Parallel()
	jaeger := newFakeJaeger(t, func(id string) bool { return id == fixtureTraceID })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		exit    int
		stdout  []string
		stderrs []string
	}{
		{"known trace", []string{"--jaeger", jaeger.URL, fixtureTraceID}, 0,
			[]string{"trace " + fixtureTraceID, "shard-1", "<- slowest", "cut by deadline", "H hedge started"}, nil},
		{"unknown trace", []string{"--jaeger", jaeger.URL, "0af7651916cd43dd8448eb211c80319c"}, 1,
			nil, []string{"trace not found", jaeger.URL}},
		{"jaeger not running", []string{"--jaeger", closed, fixtureTraceID}, 1,
			nil, []string{closed, "not reachable", "make jaeger"}},
		{"bad trace ID", []string{"--jaeger", jaeger.URL, "xyz"}, 1, nil, []string{`trace ID "xyz"`}},
		{"no trace ID", []string{"--jaeger", jaeger.URL}, 1, nil, []string{"give one trace ID"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(t.Context(), gatherBin, append([]string{"trace"}, tc.args...)...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != tc.exit {
				t.Fatalf("exit %d (%v), want %d\nstdout:\n%s\nstderr:\n%s", code, err, tc.exit, stdout.String(), stderr.String())
			}
			for _, w := range tc.stdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			for _, w := range tc.stderrs {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

// TestQueryTrace runs `gather query --trace` against a demo that traces (exporting nowhere) and a
// fake Jaeger: the query prints the ID of the trace it started, the proxy's span joined that
// trace (its access-log line carries the ID), and the waterfall fetched for that ID is drawn.
func TestQueryTrace(t *testing.T) {
	if testing.Short() {
		t.Skip("builds indexes and runs processes")
	}
	t.Parallel()
	jaeger := newFakeJaeger(t, func(string) bool { return true })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	demo := &process{cmd: exec.Command(gatherBin, "demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
		"--corpus", smallCorpus(t, 8), "--data-dir", t.TempDir())}
	demo.cmd.Env = append(os.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+nowhere, "OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_EXPORTER_OTLP_TIMEOUT=500")
	startProcess(t, demo)
	addr := demo.await(t, demoProxy)

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), gatherBin, "query", "--addr", addr, "--trace", "--jaeger", jaeger.URL,
		"--trace-wait", "20s", "union", "war")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gather query --trace: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	m := regexp.MustCompile(`(?m)^trace ([0-9a-f]{32}): waiting`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("gather query --trace printed no trace ID:\n%s", stdout.String())
	}
	id := m[1]
	if asked := jaeger.askedFor(); len(asked) == 0 || asked[len(asked)-1] != id {
		t.Errorf("Jaeger was asked for %q, want %s", asked, id)
	}
	if !strings.Contains(stdout.String(), "trace "+id+"  gather-proxy") || !strings.Contains(stdout.String(), "<- slowest") {
		t.Errorf("no waterfall for trace %s:\n%s", id, stdout.String())
	}
	// The access-log line is written as the query ends, before the answer reaches the client.
	if !strings.Contains(demo.errOut(), `trace_id=`+id) {
		t.Errorf("the proxy's span did not join trace %s: no access-log line carries it\n%s", id, demo.errOut())
	}
	demo.stop(t)
}
