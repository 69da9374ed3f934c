package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatherproxy/gather/internal/discovery"
)

// runDiscover prints the topology registered under an etcd prefix, validated as a proxy
// validates it, then each change (until interrupted, or at once with --once).
func runDiscover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("discover", "[--once] [--expect NAME,...] etcd://HOST:PORT[,HOST:PORT...]/PREFIX", stderr)
	once := fs.Bool("once", false, "print the current topology and exit")
	expect := fs.String("expect", "", "comma-separated shard `names` the topology must have (default: shard-0 to shard-(N-1) of the N partitions registered)")
	lf := addLogFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("discover: give one registry URL, etcd://HOST:PORT/PREFIX")
	}
	target, err := discovery.ParseTarget(fs.Arg(0))
	if err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	var opts []discovery.WatchOption
	if *expect != "" {
		opts = append(opts, discovery.WithExpected(strings.Split(*expect, ",")))
	}
	cli, err := target.Client()
	if err != nil {
		return err
	}
	defer func() { _ = cli.Close() }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var werr error
	w := discovery.NewWatcher(cli, target, func(t discovery.Topology) {
		if _, err := io.WriteString(stdout, formatTopology(t)); err != nil {
			werr = err
			cancel()
		}
		if *once {
			cancel()
		}
	}, append(opts, discovery.WithWatchLogger(log), discovery.WithWatchMetrics(discovery.NewMetrics(prometheus.NewRegistry())))...)
	if err := w.Run(ctx); werr != nil {
		return werr
	} else if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// formatTopology prints a topology as a block of lines ending with a blank one.
func formatTopology(t discovery.Topology) string {
	var b strings.Builder
	fmt.Fprintf(&b, "revision %d: %d shards, %d replicas, %d missing, %d rejected\n", t.Revision, len(t.Shards), t.Replicas(), len(t.Missing), len(t.Rejected))
	for _, s := range t.Shards {
		for _, r := range s.Replicas {
			part := ""
			if s.Partition.Count != 0 {
				part = " (" + s.Partition.String() + ")"
			}
			fmt.Fprintf(&b, "  %s%s  %s  %s  %s\n", s.Name, part, r.ID, r.Address, r.Version)
		}
	}
	for _, m := range t.Missing {
		fmt.Fprintf(&b, "  %s  missing: no replica registered\n", m)
	}
	for _, r := range t.Rejected {
		fmt.Fprintf(&b, "  rejected %s: %s\n", r.Key, r.Reason)
	}
	b.WriteString("\n")
	return b.String()
}
