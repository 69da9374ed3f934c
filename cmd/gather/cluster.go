package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gatherproxy/gather/internal/bounds"
	"github.com/gatherproxy/gather/internal/chaos"
	"github.com/gatherproxy/gather/internal/cluster"
	"github.com/gatherproxy/gather/internal/corpus"
	"github.com/gatherproxy/gather/internal/discovery"
	"github.com/gatherproxy/gather/internal/discovery/etcdrun"
)

// clusterTTL is the shards' default lease TTL in the cluster: short, so that a killed replica
// leaves the proxies' topology within seconds (the shard's own default is 10 s).
const clusterTTL = 3 * time.Second

// runCluster runs etcd, the shard replicas and the proxies as processes of their own on
// 127.0.0.1 (internal/cluster), prints their addresses, serves the cluster control (GET
// /cluster, POST /cluster/replace) and stops them all, in order, when interrupted.
func runCluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("cluster", "[--shards N] [--replicas R] [--proxies P] [--base-port PORT] [--control ADDR] [--synthetic | --corpus FILE --data-dir DIR]", stderr)
	shards := fs.Int("shards", 4, "number of shards (partitions of the corpus), each a set of replica processes")
	replicas := fs.Int("replicas", 2, "replica processes per shard")
	proxies := fs.Int("proxies", 2, "proxy processes, each discovering the shards in etcd")
	basePort := fs.Int("base-port", 0, "fix the ports from `PORT`: etcd PORT (client) and PORT+1 (peer), control PORT+2, proxy i PORT+10+i (QueryService) and PORT+20+i (admin), shard s replica r PORT+100+10s+r; 0: free ports")
	control := fs.String("control", "", "cluster control HTTP `address` (GET /cluster, POST /cluster/replace) (default: PORT+2 with --base-port, else a free port)")
	var ttl time.Duration
	bounds.Range{Min: int64(discovery.MinTTL), Max: int64(discovery.MaxTTL), Unit: bounds.Duration,
		Why: "etcd leases are whole seconds, and a killed replica stays in the proxies' topology for up to its TTL"}.
		DurationVar(fs, &ttl, "register-ttl", clusterTTL, "every shard's etcd lease `TTL`: how long a killed replica stays registered")
	synth := fs.Bool("synthetic", false, "shards serve deterministic synthetic hits with no index (fast to start), instead of the corpus")
	corpusFile := fs.String("corpus", "", "JSON Lines corpus `file` (default: the bundled State of the Union corpus)")
	dataDir := fs.String("data-dir", "", "`directory` for the built indexes (default: gather/index under the user cache directory)")
	dir := fs.String("dir", "", "`directory` for etcd's data and every process's log (default: a temporary directory, removed on exit)")
	cf := addCorpusFlags(fs)
	lf := addLogFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("cluster: unexpected arguments %q", fs.Args())
	}
	if *shards < 1 || *shards > 10 || *replicas < 1 || *replicas > 10 || *proxies < 1 || *proxies > 10 {
		return fmt.Errorf("--shards %d, --replicas %d, --proxies %d: give 1 to 10 of each", *shards, *replicas, *proxies)
	}
	if *synth && (*corpusFile != "" || *dataDir != "") {
		return errors.New("--synthetic serves no corpus: drop --corpus and --data-dir, or --synthetic")
	}
	if etcdrun.Binary() == "" {
		return fmt.Errorf("%w (make demo-cluster installs it when run as root)", etcdrun.ErrNoBinary)
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cluster: the gather binary to run: %w", err)
	}
	if *control == "" {
		*control = "127.0.0.1:0"
		if *basePort != 0 {
			*control = "127.0.0.1:" + strconv.Itoa(*basePort+2)
		}
	}
	lis, err := net.Listen("tcp", *control)
	if err != nil {
		return fmt.Errorf("--control %s: %w", *control, err)
	}
	defer func() { _ = lis.Close() }()
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "gather-cluster-"); err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(*dir) }()
	}

	spec := cluster.Spec{Gather: bin, Dir: *dir, Shards: *shards, Replicas: *replicas, Proxies: *proxies,
		BasePort: *basePort, Prefix: "gather", RegisterTTL: ttl, Progress: stdout}
	start := time.Now()
	what := "synthetic hits"
	if *synth {
		spec.ShardArgs = append(spec.ShardArgs, "--synthetic")
	} else {
		src := cf.source(*corpusFile)
		what = src.Name()
		if *corpusFile != "" {
			spec.ShardArgs = append(spec.ShardArgs, "--corpus", *corpusFile)
		}
		if *dataDir != "" {
			spec.ShardArgs = append(spec.ShardArgs, "--data-dir", *dataDir)
		}
		// Build the indexes here, once, before the replicas open them read-only: two replicas
		// building one index at once would fight over its lock.
		fmt.Fprintf(stdout, "opening the %d partitions' indexes of %s\n", *shards, what)
		g, gctx := errgroup.WithContext(ctx)
		for i := range *shards {
			g.Go(func() error {
				part := corpus.Partition{Index: i, Count: *shards}
				d, err := indexDir(*dataDir, src, part)
				if err != nil {
					return err
				}
				ix, err := openIndex(gctx, d, src, part, log)
				if err != nil {
					return err
				}
				return ix.Close()
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}

	cl, err := cluster.Start(ctx, spec)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	defer func() {
		fmt.Fprintln(stdout, "\nstopping: the proxies drain, the shards deregister, then etcd")
		cl.Stop()
		fmt.Fprintln(stdout, "stopped: no process left")
	}()
	mux := http.NewServeMux()
	mux.Handle("GET "+chaos.ClusterPath, chaos.ClusterHandler(cl))
	mux.Handle("POST "+chaos.ReplacePath, chaos.ReplaceHandler(cl))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }() // joined below
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			log.Warn("cluster control", "err", err)
		}
	}()

	printCluster(stdout, cl, lis.Addr().String(), what, *replicas, time.Since(start))
	for {
		select {
		case <-ctx.Done():
			return nil
		case line := <-cl.Exits():
			fmt.Fprintln(stdout, "warning:", line)
		case err := <-served:
			served <- err // for the deferred Shutdown, which logs it
			return errors.New("cluster control stopped serving: stopping the cluster")
		}
	}
}

// printCluster prints what runs where and how to use it.
func printCluster(w io.Writer, cl *cluster.Cluster, control, what string, replicas int, took time.Duration) {
	ps := cl.Processes()
	var qs, admin string
	shards := 0
	for _, p := range ps {
		if p.Role == "proxy" && qs == "" {
			qs, admin = p.Addr, p.Admin
		}
		if p.Role == "shard" {
			shards++
		}
	}
	fmt.Fprintf(w, "\ngather cluster ready in %s: %d shard replicas (%d each) over %s, registered in %s\n\n",
		took.Round(time.Millisecond), shards, replicas, what, cl.URL())
	for _, p := range ps {
		switch p.Role {
		case "etcd":
			fmt.Fprintf(w, "  %-11s %-29s %-21s pid %d\n", p.Name, "etcd client endpoint", p.Addr, p.Pid)
		case "proxy":
			fmt.Fprintf(w, "  %-11s %-29s %-21s pid %d  admin http://%s/metrics\n", p.Name, "gather.query.v1.QueryService", p.Addr, p.Pid, p.Admin)
		case "shard":
			fmt.Fprintf(w, "  %-11s %-29s %-21s pid %d\n", p.Name, "gather.shard.v1.ShardService", p.Addr, p.Pid)
		}
	}
	fmt.Fprintf(w, "  %-11s http://%s%s  (POST %s shard=NAME [replica=ID] kills a replica and starts a new one; header %s: 1)\n",
		"control", control, chaos.ClusterPath, chaos.ReplacePath, chaos.ControlHeader)
	fmt.Fprintf(w, "  %-11s %s\n", "logs", cl.Logs())
	fmt.Fprintf(w, "\nTry:\n  grpcurl -plaintext -d '{\"query\":\"union constitution war\",\"top_k\":10}' \\\n    %s gather.query.v1.QueryService/Search\n", qs)
	fmt.Fprintf(w, "  gather discover %s\n", cl.URL())
	fmt.Fprintf(w, "  curl -H '%s: 1' -d shard=shard-1 http://%s%s\n", chaos.ControlHeader, control, chaos.ReplacePath)
	fmt.Fprintf(w, "  gather chaos --cluster %s --addr %s --admin %s --duration 30s\n", control, qs, admin)
	fmt.Fprint(w, "\nCtrl-C stops everything.\n")
}
