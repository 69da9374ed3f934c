package traceview_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gatherproxy/gather/internal/traceview"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const hedgedID = "4bf92f3577b34da6a3ce929d0e0e4736"

// jaeger serves testdata files as Jaeger's query API does: GET /api/traces/{id} answers the file
// named for the trace, 404 with Jaeger's error body for any other.
func jaeger(t *testing.T, traces map[string]string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/traces/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		file, ok := traces[r.PathValue("id")]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"data":null,"total":0,"limit":0,"offset":0,"errors":[{"code":404,"msg":"trace not found"}]}`))
			return
		}
		b, err := os.ReadFile(filepath.Join("testdata", file))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write(b)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// TestDrawGolden fetches a recorded-shape trace (a degraded query: one shard call won by a hedge,
// one cut by its deadline after a hedge was denied, one retried) and compares its waterfall with
// testdata/hedged.golden (go test -update rewrites it).
func TestDrawGolden(t *testing.T) {
	t.Parallel()
	srv := jaeger(t, map[string]string{hedgedID: "hedged.json"})
	tr, err := traceview.Fetch(t.Context(), srv.Client(), srv.URL, hedgedID)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := traceview.Draw(&got, tr, traceview.Options{Width: 110}); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "hedged.golden")
	if *update {
		if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != string(want) {
		t.Errorf("waterfall differs from %s (go test -update rewrites it):\ngot:\n%s\nwant:\n%s", golden, got.String(), want)
	}
	// What the golden file must show, said once more so that a careless -update is caught.
	for _, want := range []string{
		"gather.query.v1.QueryService/Search", "DEGRADED",
		"shard-1", "hedge, 2 attempts", "<- slowest",
		"shard-2", "DEADLINE_EXCEEDED", "cut by deadline", "hedge denied: budget",
		"shard-3", "retry",
		"(1 more spans",
	} {
		if !strings.Contains(got.String(), want) {
			t.Errorf("waterfall lacks %q:\n%s", want, got.String())
		}
	}
	lines := strings.Split(got.String(), "\n")
	for _, l := range lines {
		if strings.Contains(l, "<- slowest") && !strings.Contains(l, "shard-1") {
			t.Errorf("the slowest shard call is shard-1 (10.8ms), the waterfall says: %s", l)
		}
		if strings.HasPrefix(l, "  shard-1 ") && (!strings.Contains(l, "H") || !strings.Contains(l, "x") || !strings.Contains(l, "#")) {
			t.Errorf("shard-1's bar lacks its hedge (H), cancelled attempt (x) or slowest bar (#): %s", l)
		}
		if strings.HasPrefix(l, "  shard-2 ") && !strings.Contains(l, "!") {
			t.Errorf("shard-2's bar lacks its deadline cut (!): %s", l)
		}
		if strings.HasPrefix(l, "  shard-3 ") && !strings.Contains(l, "R") {
			t.Errorf("shard-3's bar lacks its retry (R): %s", l)
		}
	}
	// The rows (from the fourth line to the first blank one): bars and durations fill the width,
	// durations right-aligned to it; notes may run past it.
	for _, l := range lines[3:] {
		if l == "" {
			break
		}
		r := []rune(l)
		if len(r) < 110 || r[109] == ' ' || (len(r) > 110 && r[110] != ' ') {
			t.Errorf("row's duration does not end at column 110: %s", l)
		}
	}
}

func TestFetchErrors(t *testing.T) {
	t.Parallel()
	srv := jaeger(t, nil)
	placeholder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<html><body>This is not the Jaeger UI you are looking for</body></html>"))
	}))
	t.Cleanup(placeholder.Close)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, base string
		is         error
		want       []string
	}{
		{"unknown trace", srv.URL, traceview.ErrTraceNotFound, []string{srv.URL, hedgedID, "trace not found", "OTEL_EXPORTER_OTLP_ENDPOINT"}},
		{"jaeger not running", closed, nil, []string{closed, "not reachable", "make jaeger", "docker run", "--jaeger"}},
		{"not the query API", placeholder.URL, nil, []string{placeholder.URL, "not the query API's JSON", "16686"}},
		{"no scheme", "127.0.0.1:16686", nil, []string{`"127.0.0.1:16686"`, "http://HOST:PORT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := traceview.Fetch(t.Context(), http.DefaultClient, tc.base, hedgedID)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
			if tc.is == nil && errors.Is(err, traceview.ErrTraceNotFound) {
				t.Errorf("error %q is ErrTraceNotFound: a caller would wait for a trace that cannot come", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestParseTraceID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{hedgedID, hedgedID, true},
		{" 4BF92F3577B34DA6A3CE929D0E0E4736\n", hedgedID, true},
		{"a3ce929d0e0e4736", "a3ce929d0e0e4736", true},
		{"00000000000000000000000000000000", "", false},
		{"4bf92f3577b34da6a3ce929d0e0e473", "", false},
		{"4bf92f3577b34da6a3ce929d0e0e473z", "", false},
		{"", "", false},
	} {
		got, err := traceview.ParseTraceID(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseTraceID(%q) = %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// TestWait: the trace is unknown at first, then has the query's span without every shard call,
// then all of it; Wait returns it whole. With a deadline before it is whole, Wait returns what
// there was; with nothing ever found, ErrTraceNotFound.
func TestWait(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		calls int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n <= 2 {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"data":null,"errors":[{"code":404,"msg":"trace not found"}]}`))
			return
		}
		b, err := os.ReadFile(filepath.Join("testdata", "hedged.json"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if n == 3 { // the query's span and shard-0's call only
			b = partial(t, b, 2)
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	tr, err := traceview.Wait(ctx, srv.Client(), srv.URL, hedgedID, 4, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if calls != 4 || len(tr.Spans) != 12 {
		t.Errorf("Wait returned %d spans after %d fetches; want 12 after 4", len(tr.Spans), calls)
	}
	mu.Unlock()
	// Asked for more shard calls than the trace has, Wait returns what it has when ctx ends.
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancelShort()
	if tr, err = traceview.Wait(short, srv.Client(), srv.URL, hedgedID, 5, time.Millisecond); err != nil || len(tr.Spans) != 12 {
		t.Errorf("Wait past its deadline = %v, %v; want the 12 spans it had", tr, err)
	}

	gone := jaeger(t, nil)
	short2, cancel2 := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel2()
	if _, err := traceview.Wait(short2, gone.Client(), gone.URL, hedgedID, 1, time.Millisecond); !errors.Is(err, traceview.ErrTraceNotFound) {
		t.Errorf("Wait for a trace never found = %v, want ErrTraceNotFound", err)
	}
}

// partial keeps the first n spans of a Jaeger answer.
func partial(t *testing.T, b []byte, n int) []byte {
	t.Helper()
	var doc struct {
		Data []traceview.Trace `json:"data"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Error(err)
		return b
	}
	doc.Data[0].Spans = doc.Data[0].Spans[:n]
	out, err := json.Marshal(doc)
	if err != nil {
		t.Error(err)
	}
	return out
}
