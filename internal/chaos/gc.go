package chaos

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
)

// GCPath is where GCHandler is mounted on the demo's admin server.
const GCPath = "/debug/gc"

// GCHandler runs two garbage collections and answers 200 once they are done, so that the heap
// in use that /metrics reports next is live data, not garbage waiting for the next cycle: without
// them, a proxy that has just served a burst shows tens of MiB that are no leak at all. Two,
// because the first only moves what sync.Pools hold (grpc-go keeps its message buffers in them)
// to their victim caches, and the second frees it: after a run with large answers that is
// MiBs. Like FaultHandler it is for `gather demo` only and refuses what a web page could send
// (see ControlHeader); the caller mounts it for POST.
func GCHandler() http.Handler {
	return guardControl(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		runtime.GC()
		fmt.Fprintln(w, "ok")
	}))
}

// collectGarbage asks the demo at admin for a garbage collection and reports whether it ran;
// an admin server without GCPath is not an error: the heap is then read as it is.
func collectGarbage(ctx context.Context, client *http.Client, admin string) (bool, error) {
	u := "http://" + admin + GCPath
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, http.NoBody)
	if err != nil {
		return false, err
	}
	req.Header.Set(ControlHeader, "1")
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Errorf("POST %s: %w", u, err)
	}
	// Read to the end so that the connection is reused: a body closed unread makes the client
	// close the connection, and the scrape that follows would catch the demo's side of it in
	// CLOSE_WAIT, chaos's own doing.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return false, nil
	}
	return false, fmt.Errorf("POST %s: %s", u, resp.Status)
}
