package chaos

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gatherproxy/gather/internal/fault"
)

// newFaultServer serves FaultHandler the way the demo mounts it, for two injectors.
func newFaultServer(t *testing.T) (admin string, injectors map[string]*fault.Injector) {
	t.Helper()
	injectors = map[string]*fault.Injector{
		"shard-0": fault.NewInjector(fault.Spec{}, nil),
		"shard-1": fault.NewInjector(fault.Spec{}, nil),
	}
	mux := http.NewServeMux()
	mux.Handle("POST "+FaultPath, FaultHandler(injectors))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), injectors
}

func TestFaultHandler(t *testing.T) {
	t.Parallel()
	admin, inj := newFaultServer(t)
	client := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	ctx := t.Context()

	specs, err := setFault(ctx, client, admin, "shard-1", "delay=5s")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"shard-0": "none", "shard-1": "delay=5s"}; !equal(specs, want) {
		t.Errorf("answer %v, want %v", specs, want)
	}
	if got := inj["shard-1"].Spec(); got.Delay != 5*time.Second {
		t.Errorf("shard-1 spec %v, want delay=5s", got)
	}
	if _, err := setFault(ctx, client, admin, AllShards, "code=unavailable,every=2"); err != nil {
		t.Fatal(err)
	}
	for name, in := range inj {
		if got := in.Spec().String(); got != "code=unavailable,every=2" {
			t.Errorf("%s: spec %q after shard=all", name, got)
		}
	}
	specs, err = setFault(ctx, client, admin, AllShards, "") // heal
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"shard-0": "none", "shard-1": "none"}; !equal(specs, want) {
		t.Errorf("after healing: %v, want %v", specs, want)
	}

	// Bad input: 400 with a message saying what to fix; nothing changes.
	for _, tc := range []struct{ shard, spec, want string }{
		{"", "delay=1s", "no shard given: want shard=NAME (one of shard-0, shard-1) or shard=all"},
		{"shard-7", "delay=1s", `unknown shard "shard-7": want one of shard-0, shard-1, or all`},
		{"shard-0", "delay=soon", "bad fault spec: delay=soon"},
		{"shard-0", "frobnicate", `unknown key "frobnicate"`},
	} {
		_, err := setFault(ctx, client, admin, tc.shard, tc.spec)
		if err == nil || !strings.Contains(err.Error(), "400 Bad Request") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("shard=%q spec=%q: got %v, want a 400 saying %q", tc.shard, tc.spec, err, tc.want)
		}
	}
	for name, in := range inj {
		if !in.Spec().IsZero() {
			t.Errorf("%s: bad requests changed the spec to %v", name, in.Spec())
		}
	}
}

// TestNoFaultControl: a proxy's admin server has no /debug/fault; chaos says to use the demo.
func TestNoFaultControl(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(http.ResponseWriter, *http.Request) {})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	_, err := setFault(t.Context(), client, strings.TrimPrefix(srv.URL, "http://"), AllShards, "")
	if !errors.Is(err, ErrNoFaultControl) {
		t.Errorf("got %v, want ErrNoFaultControl", err)
	}
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestControlRefusesWebPages: what a web page on another site can send to the demo's admin port
// (a form POST, fetch in no-cors mode, a DNS-rebound name) changes nothing; chaos's own
// requests (TestFaultHandler, TestCollectGarbageKeepsTheConnection) go through.
func TestControlRefusesWebPages(t *testing.T) {
	t.Parallel()
	injectors := map[string]*fault.Injector{"shard-0": fault.NewInjector(fault.Spec{}, nil)}
	mux := http.NewServeMux()
	mux.Handle("POST "+FaultPath, FaultHandler(injectors))
	mux.Handle("POST "+GCPath, GCHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	form := "application/x-www-form-urlencoded"
	for _, tc := range []struct {
		name, path string
		header     map[string]string
		want       string
	}{
		{"a form on another site", FaultPath, map[string]string{"Content-Type": form, "Origin": "https://evil.example",
			"Sec-Fetch-Site": "cross-site", ControlHeader: "1"}, "cross-origin browser request"},
		{"an old browser's form: Origin only", FaultPath, map[string]string{"Content-Type": form, "Origin": "https://evil.example"},
			"cross-origin browser request"},
		{"a simple request with neither header", FaultPath, map[string]string{"Content-Type": form}, "no X-Gather-Control header"},
		{"DNS rebinding: same-origin to the browser", FaultPath, map[string]string{"Content-Type": form, "Sec-Fetch-Site": "same-origin",
			ControlHeader: "1", "Host": "rebound.evil.example:9090"}, `Host "rebound.evil.example:9090" is a name`},
		{"garbage collection from another site", GCPath, map[string]string{"Sec-Fetch-Site": "cross-site", ControlHeader: "1"},
			"cross-origin browser request"},
		{"garbage collection without the header", GCPath, nil, "no X-Gather-Control header"},
	} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+tc.path, strings.NewReader("shard=all&spec=hang"))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range tc.header {
			if k == "Host" {
				req.Host = v
				continue
			}
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s: %s %q, want 403 saying %q", tc.name, resp.Status, body, tc.want)
		}
	}
	if spec := injectors["shard-0"].Spec(); !spec.IsZero() {
		t.Errorf("a refused request set the fault %v", spec)
	}
	// localhost and IPv6 literals are fine.
	for _, host := range []string{"localhost:9090", "[::1]:9090", "127.0.0.1"} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+GCPath, http.NoBody)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		req.Header.Set(ControlHeader, "1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("Host %s: %s, want 200", host, resp.Status)
		}
	}
}
