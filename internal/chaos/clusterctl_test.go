package chaos

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeCluster is a Replacer with two replicas of shard-0 and one of shard-1 that records what it
// was asked to replace.
type fakeCluster struct {
	mu       sync.Mutex
	ps       []Process
	replaced []string
}

func newFakeCluster() *fakeCluster {
	return &fakeCluster{ps: []Process{
		{Name: "etcd", Role: "etcd", Addr: "127.0.0.1:2379", Pid: 10},
		{Name: "shard-0/r0", Role: "shard", Shard: "shard-0", ReplicaID: "shard-0-r0", Addr: "127.0.0.1:7100", Pid: 11},
		{Name: "shard-0/r1", Role: "shard", Shard: "shard-0", ReplicaID: "shard-0-r1", Addr: "127.0.0.1:7101", Pid: 12},
		{Name: "shard-1/r0", Role: "shard", Shard: "shard-1", ReplicaID: "shard-1-r0", Addr: "127.0.0.1:7110", Pid: 13},
	}}
}

func (f *fakeCluster) Processes() []Process {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Process(nil), f.ps...)
}

func (f *fakeCluster) Replace(_ context.Context, shard, replica string) (Replacement, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, p := range f.ps {
		if p.Shard == shard && (replica == "" || p.Name == shard+"/"+replica) {
			f.replaced = append(f.replaced, p.Name)
			n := p
			n.ReplicaID, n.Name, n.Addr, n.Pid = shard+"-r9", shard+"/r9", "127.0.0.1:7199", 99
			f.ps[i] = n
			return Replacement{Killed: p, Started: n, KilledAt: time.Unix(1, 0), Registered: 150 * time.Millisecond}, nil
		}
	}
	return Replacement{}, fmt.Errorf("%w: %s %q", ErrUnknownReplica, shard, replica)
}

func newClusterServer(t *testing.T, c Replacer) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("GET "+ClusterPath, ClusterHandler(c))
	mux.Handle("POST "+ReplacePath, ReplaceHandler(c))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestClusterControl: the client's requests reach the handlers and come back decoded; an unknown
// replica is a 400 that says so; a request without the control header changes nothing.
func TestClusterControl(t *testing.T) {
	t.Parallel()
	fc := newFakeCluster()
	addr := newClusterServer(t, fc)
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)

	ps, err := clusterProcesses(t.Context(), client, addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 4 || ps[2].Name != "shard-0/r1" || ps[2].Pid != 12 {
		t.Errorf("processes: got %+v", ps)
	}
	rp, err := replaceReplica(t.Context(), client, addr, "shard-0", "r1")
	if err != nil {
		t.Fatal(err)
	}
	if rp.Killed.Name != "shard-0/r1" || rp.Started.Name != "shard-0/r9" || rp.Registered != 150*time.Millisecond {
		t.Errorf("replacement: got %+v", rp)
	}
	if _, err := replaceReplica(t.Context(), client, addr, "shard-0", "r7"); err == nil || !strings.Contains(err.Error(), "400 Bad Request") ||
		!strings.Contains(err.Error(), ErrUnknownReplica.Error()) {
		t.Errorf("an unknown replica: got %v, want a 400 naming it", err)
	}
	// Without the header (a web page's form post) nothing is replaced.
	resp, err := client.Post("http://"+addr+ReplacePath, "application/x-www-form-urlencoded", strings.NewReader("shard=shard-0"))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a replace without %s: %s, want 403", ControlHeader, resp.Status)
	}
	if got := strings.Join(fc.replaced, ","); got != "shard-0/r1" {
		t.Errorf("replaced %s, want shard-0/r1 alone", got)
	}
	// Against an admin server that is no cluster's, the error says what to give.
	if _, err := clusterProcesses(t.Context(), client, mustNoCluster(t)); !errors.Is(err, ErrNoClusterControl) {
		t.Errorf("against a server without %s: got %v, want ErrNoClusterControl", ClusterPath, err)
	}
}

// mustNoCluster returns the address of an HTTP server that serves no cluster control.
func mustNoCluster(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestCheckReplace: the cluster scenario refuses, before it starts, a replica that does not
// exist or a shard with no other replica to answer for it.
func TestCheckReplace(t *testing.T) {
	t.Parallel()
	ps := newFakeCluster().Processes()
	for _, tc := range []struct {
		shard, replica, want string
	}{
		{"shard-0", "", ""},
		{"shard-0", "r1", ""},
		{"shard-0", "shard-0-r1", ""},
		{"shard-0", "r5", "the cluster's shard-0 has no replica r5 (it has r0, r1)"},
		{"shard-1", "", "has 1 replica: start the cluster with --replicas 2"},
		{"shard-7", "", "the cluster has no shard shard-7"},
	} {
		err := checkReplace(Config{ReplaceShard: tc.shard, ReplaceReplica: tc.replica}, ps)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s %q: got %v, want %q", tc.shard, tc.replica, err, tc.want)
		}
	}
}
