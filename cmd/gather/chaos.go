package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/gatherproxy/gather/internal/chaos"
)

// runChaos replays the old incident against a running `gather demo`, or with --cluster a
// replica's death against `gather cluster`, and prints the verdict; it fails unless the verdict
// is clean.
func runChaos(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("chaos", "[--addr ADDR] [--admin ADDR] [--duration D] [--timeout D] [--workers N] [--slow-shards NAMES] [--replicas R] [--slow D] [--stallers N] [--hog N] [--vanishers N] [--cluster ADDR [--replace-shard NAME] [--replace-replica ID]]", stderr)
	def := chaos.Config{}.Defaults()
	addr := fs.String("addr", def.Addr, "the demo's QueryService `address` (loopback only)")
	admin := fs.String("admin", def.Admin, "the demo's admin HTTP `address`, with /metrics and /debug/fault (loopback only)")
	duration := fs.Duration("duration", def.Duration, "length of the run before the recovery: a tenth (at most 5s) healthy, the rest the incident")
	timeout := fs.Duration("timeout", def.Timeout, "every client's deadline per query (the QS timeout of the incident)")
	workers := fs.Int("workers", def.Workers, "clients querying in a loop during the incident, each on its own connection; more than the proxy admits (the demo's --max-in-flight, default 256); with --cluster, default 32")
	slowShards := fs.String("slow-shards", strings.Join(def.SlowShards, ","), "comma-separated demo `shards` to slow during the incident")
	replicas := fs.Int("replicas", def.Replicas, fmt.Sprintf("replicas per shard of the demo (its --replicas, 1 to %d); with 2 or more only replica 0 of each slow shard is slowed, and every worker query must be answered in full", chaos.MaxReplicas))
	slow := fs.Duration("slow", def.Slow, "delay injected into every call of the slow shards; longer than --timeout")
	stallers := fs.Int("stallers", chaos.DefaultStallers, "clients that open a SearchStream for 1000 hits and never read it")
	stallHold := fs.Duration("stall-hold", def.StallHold, "how long a staller leaves its stream unread; longer than the proxy's time to its first hits plus its send watchdog (5s unless the demo's --send-timeout says otherwise)")
	hog := fs.Int("hog", chaos.DefaultHog, "SearchStreams the hog keeps open and unread on its one connection (0: no hog)")
	workerCaller := fs.String("worker-caller", chaos.DefaultWorkerCaller, "caller `name` the workers give the demo, so that admission control sees them as one service, as with one client certificate (empty: each worker connection is its own caller)")
	vanishers := fs.Int("vanishers", chaos.DefaultVanishers, "clients that go silent mid-query behind a relay, like a pulled cable")
	vanishWait := fs.Duration("vanish-wait", def.VanishWait, "how long the proxy may take to close a vanished connection; longer than its keepalive time plus timeout (10s + 5s unless the demo's --keepalive-* flags say otherwise)")
	clusterCtl := fs.String("cluster", "", "run the cluster scenario against `gather cluster`, whose control `address` this is: kill a replica process mid-run, start a new one, and require every worker query answered in full (--addr and --admin: one of its proxies; no shard is slowed)")
	replaceShard := fs.String("replace-shard", def.ReplaceShard, "with --cluster: the `shard` whose replica is replaced")
	replaceReplica := fs.String("replace-replica", "", "with --cluster: the replica `id` to replace (default: the shard's first)")
	recovery := fs.Duration("recovery-timeout", def.RecoveryTimeout, "give up waiting for the proxy to be clean after this long")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("chaos: unexpected arguments %q", fs.Args())
	}
	slowList := splitList(*slowShards)
	if *clusterCtl != "" && !flagSet(fs, "slow-shards") {
		slowList = []string{} // a cluster has no fault control
		if !flagSet(fs, "workers") {
			*workers = 0 // the cluster scenario's own default
		}
		// The scenario is a replica's death: the stalled and vanished clients of the demo's
		// incident are left out unless asked for (against --synthetic shards, whose small hits
		// fit in a stream's flow-control window, a stream never stalls).
		for name, n := range map[string]*int{"stallers": stallers, "hog": hog, "vanishers": vanishers} {
			if !flagSet(fs, name) {
				*n = 0
			}
		}
	}
	cfg := chaos.Config{
		Addr: *addr, Admin: *admin, Duration: *duration, Timeout: *timeout, Workers: *workers,
		SlowShards: slowList, Replicas: *replicas, Slow: *slow, Stallers: *stallers, StallHold: *stallHold,
		Hog: *hog, WorkerCaller: *workerCaller, Vanishers: *vanishers, VanishWait: *vanishWait, RecoveryTimeout: *recovery,
		Cluster: *clusterCtl, ReplaceShard: *replaceShard, ReplaceReplica: *replaceReplica,
		Progress: stderr,
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("chaos:\n%w", err)
	}
	rep, err := chaos.Run(ctx, cfg)
	if err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	if !rep.Clean() {
		return fmt.Errorf("chaos: verdict not clean: %s", strings.Join(rep.Failed(), "; "))
	}
	return nil
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// splitList splits a comma-separated flag value, dropping blanks; an empty value gives an empty,
// non-nil list, so that chaos.Config does not take its default.
func splitList(v string) []string {
	out := []string{}
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
