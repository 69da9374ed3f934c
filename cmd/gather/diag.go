package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/gatherproxy/gather/internal/sockdiag"
)

// runDiag prints a running proxy's own TCP sockets by state and the kernel's listen-queue
// counters, read from its admin /metrics: the `netstat | awk` of the old incident, built in.
func runDiag(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("diag", "[--admin ADDR]", stderr)
	admin := fs.String("admin", "127.0.0.1:9090", "the proxy's admin HTTP `address`")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	url := "http://" + *admin + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("diag: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("diag: GET %s: %s", url, resp.Status)
	}
	snap, err := sockdiag.ParseMetrics(resp.Body)
	if err != nil {
		return fmt.Errorf("diag: %s: %w", url, err)
	}
	snap.Time = time.Now()
	fmt.Fprintf(stdout, "gather diag: sockets of the process serving http://%s\n\n", *admin)
	return snap.WriteTable(stdout)
}
