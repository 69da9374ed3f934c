package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/gatherproxy/gather/internal/fault"
)

// FaultPath is where FaultHandler is mounted on the demo's admin server.
const FaultPath = "/debug/fault"

// AllShards is the shard form value that applies a spec to every shard.
const AllShards = "all"

// FaultHandler serves runtime fault control for in-process shards, by shard name: a POST with
// the form values shard (a name, or "all") and spec (fault.ParseSpec syntax; empty or "none"
// heals) sets the spec of the named shards' injectors for the Search calls that start from then
// on. It answers 200 with a JSON object of every shard's spec after the change
// ({"shard-0":"delay=5s","shard-1":"none"}), or 400 with a plain-text message saying what to fix.
//
// It is meant for `gather demo` only: anyone who can reach it can make the shards fail. The
// caller mounts it for POST (the method is not checked here) and keeps injectors unchanged.
func FaultHandler(injectors map[string]*fault.Injector) http.Handler {
	names := slices.Sorted(maps.Keys(injectors))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			http.Error(w, "fault: bad form: "+err.Error(), http.StatusBadRequest)
			return
		}
		shard := strings.TrimSpace(r.Form.Get("shard"))
		var targets []string
		switch {
		case shard == "":
			http.Error(w, fmt.Sprintf("fault: no shard given: want shard=NAME (one of %s) or shard=%s, and spec=SPEC (empty heals)",
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
		spec, err := fault.ParseSpec(r.Form.Get("spec"))
		if err != nil {
			http.Error(w, "fault: "+err.Error(), http.StatusBadRequest)
			return
		}
		for _, name := range targets {
			injectors[name].Set(spec)
		}
		now := make(map[string]string, len(names))
		for _, name := range names {
			now[name] = injectors[name].Spec().String()
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(now) // the client is gone if this fails; the spec is set either way
	})
}

// ErrNoFaultControl is wrapped by SetFault's error when the admin server has no FaultPath.
var ErrNoFaultControl = errors.New("no fault control: run gather chaos against `gather demo`, the only server with " + FaultPath)

// setFault asks the demo whose admin server is at admin to apply spec to shard (a name or
// AllShards), and returns every shard's spec afterwards.
func setFault(ctx context.Context, client *http.Client, admin, shard, spec string) (map[string]string, error) {
	u := "http://" + admin + FaultPath
	form := url.Values{"shard": {shard}, "spec": {spec}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
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
		return nil, fmt.Errorf("POST %s shard=%s spec=%q: %s: %s", u, shard, spec, resp.Status, strings.TrimSpace(string(body)))
	}
	var specs map[string]string
	if err := json.Unmarshal(body, &specs); err != nil {
		return nil, fmt.Errorf("POST %s: answer is not a JSON object of specs: %w", u, err)
	}
	return specs, nil
}
