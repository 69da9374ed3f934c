package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/gatherproxy/gather/internal/fault"
)

// FaultPath is where FaultHandler is mounted on the demo's admin server.
const FaultPath = "/debug/fault"

// AllShards is the shard form value that applies a spec to every shard.
const AllShards = "all"

// ControlHeader must be on every request to the demo's control endpoints (FaultPath, GCPath),
// with any value: `curl -H 'X-Gather-Control: 1' ...`. A web page cannot send a custom header
// to another origin without a CORS preflight, which the demo never answers.
const ControlHeader = "X-Gather-Control"

// guardControl lets through only requests that no web page can make: a page on another site
// that POSTs to the demo's admin port (a form, fetch with no-cors) or reaches it through DNS
// rebinding must not break the shards. It refuses with 403 and a message saying what to fix:
//   - a cross-origin browser request, by Sec-Fetch-Site or by Origin against Host
//     (net/http's CrossOriginProtection);
//   - a request without ControlHeader, so that even a browser that sends neither header cannot
//     make a "simple" request that passes;
//   - a Host that is not an IP address or localhost: a page whose own name resolves to
//     127.0.0.1 (DNS rebinding) is same-origin to the browser, but its Host header is its name.
func guardControl(h http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := cop.Check(r); err != nil {
			http.Error(w, "refused: a cross-origin browser request ("+err.Error()+"); use curl or gather chaos", http.StatusForbidden)
			return
		}
		if r.Header.Get(ControlHeader) == "" {
			http.Error(w, fmt.Sprintf("refused: no %s header: send it with any value (curl -H '%s: 1'), which web pages cannot",
				ControlHeader, ControlHeader), http.StatusForbidden)
			return
		}
		host := r.Host
		if name, _, err := net.SplitHostPort(r.Host); err == nil {
			host = name
		}
		if host != "localhost" && net.ParseIP(strings.Trim(host, "[]")) == nil {
			http.Error(w, fmt.Sprintf("refused: Host %q is a name: address the demo by IP (127.0.0.1) or localhost", r.Host), http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// FaultHandler serves runtime fault control for in-process shards, by shard name and replica:
// a POST with the form values shard (a name, or "all"), replica (0-based; absent or empty: every
// replica of the named shards) and spec (fault.ParseSpec syntax; empty or "none" heals) sets the
// spec of the chosen injectors for the Search calls that start from then on. injectors holds
// each shard's replicas' injectors, in the order of the shard's configured replica list. It
// answers 200 with a JSON object of every replica's spec after the change, a list per shard in
// replica order ({"shard-0":["delay=5s","none"],"shard-1":["none","none"]}), or 400 with a
// plain-text message saying what to fix (a replica index out of range names the valid range);
// a refused request changes nothing.
//
// It is meant for `gather demo` only: anyone who can reach it can make the shards fail. It
// refuses what a web page could send (see ControlHeader). The caller mounts it for POST (the
// method is not checked here) and keeps injectors unchanged.
func FaultHandler(injectors map[string][]*fault.Injector) http.Handler {
	names := slices.Sorted(maps.Keys(injectors))
	return guardControl(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			http.Error(w, "fault: bad form: "+err.Error(), http.StatusBadRequest)
			return
		}
		shard := strings.TrimSpace(r.Form.Get("shard"))
		var targets []string
		switch {
		case shard == "":
			http.Error(w, fmt.Sprintf("fault: no shard given: want shard=NAME (one of %s) or shard=%s, optionally replica=I (0-based), and spec=SPEC (empty heals)",
				strings.Join(names, ", "), AllShards), http.StatusBadRequest)
			return
		case shard == AllShards:
			targets = names
		case injectors[shard] != nil:
			targets = []string{shard}
		default:
			http.Error(w, fmt.Sprintf("fault: unknown shard %q: want one of %s, or %s", shard, strings.Join(names, ", "), AllShards),
				http.StatusBadRequest)
			return
		}
		replica, err := parseReplica(r.Form.Get("replica"), targets, injectors)
		if err != nil {
			http.Error(w, "fault: "+err.Error(), http.StatusBadRequest)
			return
		}
		spec, err := fault.ParseSpec(r.Form.Get("spec"))
		if err != nil {
			http.Error(w, "fault: "+err.Error(), http.StatusBadRequest)
			return
		}
		for _, name := range targets {
			for i, in := range injectors[name] {
				if replica == allReplicas || i == replica {
					in.Set(spec)
				}
			}
		}
		now := make(map[string][]string, len(names))
		for _, name := range names {
			for _, in := range injectors[name] {
				now[name] = append(now[name], in.Spec().String())
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(now) // the client is gone if this fails; the spec is set either way
	}))
}

// allReplicas, as a replica index, stands for every replica of a shard.
const allReplicas = -1

// parseReplica reads the replica form value: allReplicas when it is empty, else a 0-based index
// that every target shard has.
func parseReplica(v string, targets []string, injectors map[string][]*fault.Injector) (int, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return allReplicas, nil
	}
	fewest, which := -1, ""
	for _, name := range targets {
		if n := len(injectors[name]); fewest < 0 || n < fewest {
			fewest, which = n, name
		}
	}
	i, err := strconv.Atoi(v)
	if err != nil || i < 0 {
		return 0, fmt.Errorf("replica %q: want a replica index, %s (0-based), or leave replica out to set every replica", v, replicaRange(fewest))
	}
	if i >= fewest {
		return 0, fmt.Errorf("replica %d: %s has %s: want replica %s (0-based), or leave replica out to set every replica",
			i, which, countReplicas(fewest), replicaRange(fewest))
	}
	return i, nil
}

// countReplicas says "1 replica" or "N replicas".
func countReplicas(n int) string {
	if n == 1 {
		return "1 replica"
	}
	return fmt.Sprintf("%d replicas", n)
}

// replicaRange names the valid indexes of n replicas.
func replicaRange(n int) string {
	if n <= 1 {
		return "0"
	}
	return fmt.Sprintf("0 to %d", n-1)
}

// ErrNoFaultControl is wrapped by SetFault's error when the admin server has no FaultPath.
var ErrNoFaultControl = errors.New("no fault control: run gather chaos against `gather demo`, the only server with " + FaultPath)

// setFault asks the demo whose admin server is at admin to apply spec to replica (0-based, or
// allReplicas) of shard (a name or AllShards), and returns every shard's replicas' specs
// afterwards, in replica order.
func setFault(ctx context.Context, client *http.Client, admin, shard string, replica int, spec string) (map[string][]string, error) {
	u := "http://" + admin + FaultPath
	form := url.Values{"shard": {shard}, "spec": {spec}}
	what := "shard=" + shard
	if replica != allReplicas {
		form.Set("replica", strconv.Itoa(replica))
		what += " replica=" + strconv.Itoa(replica)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(ControlHeader, "1")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", u, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", u, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return nil, fmt.Errorf("POST %s: %s: %w", u, resp.Status, ErrNoFaultControl)
	default:
		return nil, fmt.Errorf("POST %s %s spec=%q: %s: %s", u, what, spec, resp.Status, strings.TrimSpace(string(body)))
	}
	var specs map[string][]string
	if err := json.Unmarshal(body, &specs); err != nil {
		return nil, fmt.Errorf("POST %s: answer is not a JSON object of each shard's replicas' specs (a demo older than this chaos?): %w", u, err)
	}
	return specs, nil
}
