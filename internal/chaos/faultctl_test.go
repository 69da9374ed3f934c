package chaos

import (
	"errors"
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
