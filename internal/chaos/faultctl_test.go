package chaos

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gatherproxy/gather/internal/fault"
)

// newFaultServer serves FaultHandler the way the demo mounts it, for shard-0 of two replicas
// and shard-1 of one.
func newFaultServer(t *testing.T) (admin string, injectors map[string][]*fault.Injector) {
	t.Helper()
	injectors = map[string][]*fault.Injector{
		"shard-0": {fault.NewInjector(fault.Spec{}, nil), fault.NewInjector(fault.Spec{}, nil)},
		"shard-1": {fault.NewInjector(fault.Spec{}, nil)},
	}
	mux := http.NewServeMux()
	mux.Handle("POST "+FaultPath, FaultHandler(injectors))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), injectors
}

// specsOf returns every injector's spec, as FaultHandler answers them.
func specsOf(injectors map[string][]*fault.Injector) map[string][]string {
	out := map[string][]string{}
	for name, ins := range injectors {
		for _, in := range ins {
			out[name] = append(out[name], in.Spec().String())
		}
	}
	return out
}

func TestFaultHandler(t *testing.T) {
	t.Parallel()
	admin, inj := newFaultServer(t)
	client := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	ctx := t.Context()

	for _, tc := range []struct {
		name    string
		shard   string
		replica int
		spec    string
		want    map[string][]string // the answer, and the injectors' specs
	}{
		{"one shard, every replica", "shard-0", allReplicas, "delay=5s",
			map[string][]string{"shard-0": {"delay=5s", "delay=5s"}, "shard-1": {"none"}}},
		{"one replica heals", "shard-0", 1, "",
			map[string][]string{"shard-0": {"delay=5s", "none"}, "shard-1": {"none"}}},
		{"one replica of a shard of one", "shard-1", 0, "hang",
			map[string][]string{"shard-0": {"delay=5s", "none"}, "shard-1": {"hang"}}},
		{"replica 0 of every shard", AllShards, 0, "code=unavailable,every=2",
			map[string][]string{"shard-0": {"code=unavailable,every=2", "none"}, "shard-1": {"code=unavailable,every=2"}}},
		{"all", AllShards, allReplicas, "delay=1s",
			map[string][]string{"shard-0": {"delay=1s", "delay=1s"}, "shard-1": {"delay=1s"}}},
		{"heal all", AllShards, allReplicas, "",
			map[string][]string{"shard-0": {"none", "none"}, "shard-1": {"none"}}},
	} {
		got, err := setFault(ctx, client, admin, tc.shard, tc.replica, tc.spec)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: answer %v, want %v", tc.name, got, tc.want)
		}
		if now := specsOf(inj); !reflect.DeepEqual(now, tc.want) {
			t.Errorf("%s: injectors %v, want %v", tc.name, now, tc.want)
		}
	}

	// Bad input: 400 with a message saying what to fix; nothing changes.
	if _, err := setFault(ctx, client, admin, AllShards, allReplicas, "delay=3s"); err != nil {
		t.Fatal(err)
	}
	before := specsOf(inj)
	for _, tc := range []struct{ shard, replica, spec, want string }{
		{"", "", "delay=1s", "no shard given: want shard=NAME (one of shard-0, shard-1) or shard=all, optionally replica=I (0-based)"},
		{"shard-7", "", "delay=1s", `unknown shard "shard-7": want one of shard-0, shard-1, or all`},
		{"shard-0", "", "delay=soon", "bad fault spec: delay=soon"},
		{"shard-0", "", "frobnicate", `unknown key "frobnicate"`},
		{"shard-0", "2", "delay=1s", "replica 2: shard-0 has 2 replicas: want replica 0 to 1 (0-based), or leave replica out to set every replica"},
		{"shard-1", "1", "delay=1s", "replica 1: shard-1 has 1 replica: want replica 0 (0-based)"},
		{AllShards, "1", "delay=1s", "replica 1: shard-1 has 1 replica: want replica 0 (0-based)"},
		{"shard-0", "-1", "delay=1s", `replica "-1": want a replica index, 0 to 1 (0-based), or leave replica out`},
		{"shard-0", "one", "delay=1s", `replica "one": want a replica index, 0 to 1 (0-based)`},
		{"shard-0", "1", "delay=soon", "bad fault spec: delay=soon"},
	} {
		status, body := postFault(t, client, admin, url.Values{"shard": {tc.shard}, "replica": {tc.replica}, "spec": {tc.spec}})
		if status != http.StatusBadRequest || !strings.Contains(body, tc.want) {
			t.Errorf("shard=%q replica=%q spec=%q: %d %q, want a 400 saying %q", tc.shard, tc.replica, tc.spec, status, body, tc.want)
		}
	}
	if now := specsOf(inj); !reflect.DeepEqual(now, before) {
		t.Errorf("bad requests changed the specs from %v to %v", before, now)
	}
	// setFault's error carries the demo's message and names the replica.
	_, err := setFault(ctx, client, admin, "shard-1", 1, "delay=1s")
	if err == nil || !strings.Contains(err.Error(), "shard=shard-1 replica=1") || !strings.Contains(err.Error(), "has 1 replica") {
		t.Errorf("setFault of a replica the shard lacks: got %v", err)
	}
}

// postFault posts form to the FaultHandler at admin, with the control header, and returns the
// status and body.
func postFault(t *testing.T, client *http.Client, admin string, form url.Values) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+admin+FaultPath, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(ControlHeader, "1")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
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
	_, err := setFault(t.Context(), client, strings.TrimPrefix(srv.URL, "http://"), AllShards, allReplicas, "")
	if !errors.Is(err, ErrNoFaultControl) {
		t.Errorf("got %v, want ErrNoFaultControl", err)
	}
}

// TestControlRefusesWebPages: what a web page on another site can send to the demo's admin port
// (a form POST, fetch in no-cors mode, a DNS-rebound name) changes nothing; chaos's own
// requests (TestFaultHandler, TestCollectGarbageKeepsTheConnection) go through.
func TestControlRefusesWebPages(t *testing.T) {
	t.Parallel()
	injectors := map[string][]*fault.Injector{"shard-0": {fault.NewInjector(fault.Spec{}, nil)}}
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
	if spec := injectors["shard-0"][0].Spec(); !spec.IsZero() {
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
