package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ClusterPath (GET: the processes) and ReplacePath (POST: replace a shard replica) are where
// ClusterHandler and ReplaceHandler are mounted on `gather cluster`'s control port.
const (
	ClusterPath = "/cluster"
	ReplacePath = "/cluster/replace"
)

// Process is one process of a `gather cluster`, as its control port reports it.
type Process struct {
	// Name is unique in the cluster: "etcd", "proxy-0", "shard-1/r0".
	Name string `json:"name"`
	// Role is "etcd", "proxy" or "shard".
	Role string `json:"role"`
	// Shard and ReplicaID are a shard replica's registration (empty for the others); a replica's
	// Name is SHARD/rN and its ReplicaID SHARD-rN, as replica ids are unique under the prefix.
	Shard     string `json:"shard,omitempty"`
	ReplicaID string `json:"replica_id,omitempty"`
	// Addr is what the process serves: etcd's client endpoint, a proxy's QueryService, a shard's
	// ShardService. Admin is a proxy's admin HTTP address.
	Addr  string `json:"addr"`
	Admin string `json:"admin,omitempty"`
	Pid   int    `json:"pid"`
}

// Replacement is what ReplacePath did: the replica it killed with SIGKILL and the one it
// started in its place, under a new replica id on a new port.
type Replacement struct {
	Killed  Process `json:"killed"`
	Started Process `json:"started"`
	// KilledAt is when the kill was sent; Registered is how long after it the new replica was
	// serving and registered in etcd.
	KilledAt   time.Time     `json:"killed_at"`
	Registered time.Duration `json:"registered_ns"`
}

// Replacer is a cluster whose shard replicas can be replaced.
type Replacer interface {
	// Processes returns the cluster's running processes.
	Processes() []Process
	// Replace kills a replica of shard with SIGKILL, without deregistering it (its lease
	// expires after its TTL), and starts a new one under a new replica id on a new port. An
	// empty replica means the shard's first.
	Replace(ctx context.Context, shard, replica string) (Replacement, error)
}

// ErrUnknownReplica is wrapped by a Replacer's error for a shard or replica it does not have;
// ReplaceHandler answers it with 400.
var ErrUnknownReplica = errors.New("no such shard replica")

// ClusterHandler answers GET with the cluster's processes as a JSON array.
func ClusterHandler(c Replacer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(c.Processes()) // the client is gone if this fails
	})
}

// ReplaceHandler serves POST with the form values shard (a name) and replica (rN, or the
// replica id SHARD-rN; absent: the shard's first): it replaces that replica (Replacer.Replace) and answers 200 with
// the Replacement as JSON, 400 with what to fix for an unknown shard or replica, 500 if the new
// replica did not start. Like FaultHandler it refuses what a web page could send (see
// ControlHeader): anyone who can reach it can kill the cluster's shards.
func ReplaceHandler(c Replacer) http.Handler {
	return guardControl(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			http.Error(w, "replace: bad form: "+err.Error(), http.StatusBadRequest)
			return
		}
		shard := strings.TrimSpace(r.Form.Get("shard"))
		if shard == "" {
			http.Error(w, "replace: no shard given: want shard=NAME and optionally replica=ID (see GET "+ClusterPath+")", http.StatusBadRequest)
			return
		}
		rep, err := c.Replace(r.Context(), shard, strings.TrimSpace(r.Form.Get("replica")))
		switch {
		case errors.Is(err, ErrUnknownReplica):
			http.Error(w, "replace: "+err.Error(), http.StatusBadRequest)
			return
		case err != nil:
			http.Error(w, "replace: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rep)
	}))
}

// ErrNoClusterControl is wrapped by the error of a request to an address that does not serve
// ClusterPath.
var ErrNoClusterControl = errors.New("no cluster control: give --cluster the control address `gather cluster` prints")

// clusterProcesses asks the cluster whose control port is at control for its processes.
func clusterProcesses(ctx context.Context, client *http.Client, control string) ([]Process, error) {
	var ps []Process
	return ps, clusterCall(ctx, client, http.MethodGet, control, ClusterPath, nil, &ps)
}

// replaceReplica asks the cluster whose control port is at control to replace a replica of
// shard (replica "" for its first).
func replaceReplica(ctx context.Context, client *http.Client, control, shard, replica string) (Replacement, error) {
	var rep Replacement
	form := url.Values{"shard": {shard}}
	if replica != "" {
		form.Set("replica", replica)
	}
	return rep, clusterCall(ctx, client, http.MethodPost, control, ReplacePath, form, &rep)
}

func clusterCall(ctx context.Context, client *http.Client, method, control, path string, form url.Values, out any) error {
	u := "http://" + control + path
	var body io.Reader = http.NoBody
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set(ControlHeader, "1")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return fmt.Errorf("%s %s: %s: %w", method, u, resp.Status, ErrNoClusterControl)
	default:
		return fmt.Errorf("%s %s %s: %s: %s", method, u, form.Encode(), resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: answer is not JSON: %w", method, u, err)
	}
	return nil
}
