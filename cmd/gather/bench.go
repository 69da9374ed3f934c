package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gatherproxy/gather/internal/loadgen"
)

// runBench drives load at a QueryService and prints what it measured.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", "[--addr ADDR[,ADDR...]] [--mode closed|open] [--workers N | --rate R] [--duration D] [--json FILE]", stderr)
	addr := fs.String("addr", "127.0.0.1:7070", "QueryService `address`, gRPC target (dns:///HOST:PORT), or ADDR,ADDR,... for several proxies; round_robin over all of them")
	mode := fs.String("mode", "closed", "closed (N workers, each waits for its answer) or open (a fixed arrival rate)")
	workers := fs.Int("workers", loadgen.DefaultWorkers, "concurrent requests of a closed loop")
	rate := fs.Float64("rate", 0, "requests per second of an open loop")
	maxOut := fs.Int("max-outstanding", 0, "requests in flight at most in an open loop (default 1000)")
	duration := fs.Duration("duration", 10*time.Second, "length of the measured window")
	requests := fs.Int64("requests", 0, "stop after this many measured requests (0: only --duration bounds the run)")
	warmup := fs.Duration("warmup", 2*time.Second, "load before the measured window, not counted")
	timeout := fs.Duration("timeout", 5*time.Second, "deadline of each request")
	topK := fs.Uint("top-k", 10, "top_k of every request")
	queries := fs.String("queries", "", "comma-separated queries to cycle through (default: a built-in list)")
	jsonOut := fs.String("json", "", "also write the result as JSON to this `file` ('-' for stdout)")
	quiet := fs.Bool("quiet", false, "no live progress line")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	cfg := loadgen.Config{
		Mode: loadgen.Mode(*mode), Workers: *workers, Rate: *rate, MaxOutstanding: *maxOut,
		Duration: *duration, Requests: *requests, Warmup: *warmup, Timeout: *timeout, TopK: uint32(*topK),
	}
	if *queries != "" {
		cfg.Queries = strings.Split(*queries, ",")
	}
	if !*quiet {
		cfg.Progress = func(p loadgen.Progress) { fmt.Fprintf(stderr, "\r%s   ", p) }
	}
	res, err := loadgen.RunAddr(ctx, *addr, cfg)
	if !*quiet {
		fmt.Fprintln(stderr)
	}
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := res.WriteText(stdout); err != nil {
		return err
	}
	if *jsonOut != "" {
		if err := writeJSON(*jsonOut, stdout, res); err != nil {
			return err
		}
	}
	if res.Counts.Completed == 0 {
		return fmt.Errorf("bench: no request completed against %s", *addr)
	}
	return nil
}

func writeJSON(path string, stdout io.Writer, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if path == "-" {
		_, err = stdout.Write(data)
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
