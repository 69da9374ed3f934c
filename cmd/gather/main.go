// Command gather is a gRPC scatter-gather query proxy for sharded search, and the reference
// index shard it fans out to.
//
//	gather demo                      4 shards + the proxy on 127.0.0.1, ready for grpcurl
//	gather cluster [--shards N] [--replicas R] [--proxies P]   etcd, shards and proxies as processes
//	gather shard --listen ADDR --partition I/N [--corpus FILE] [--data-dir DIR]
//	gather proxy --listen ADDR --shard NAME=ADDR[,ADDR...] ... | --config FILE
//	gather query [--addr ADDR] [--top-k N] [--trace] TEXT
//	gather trace [--jaeger URL] TRACE_ID   a query's trace as a waterfall, from Jaeger's query API
//	gather diag [--admin ADDR]
//	gather bench [--addr ADDR[,ADDR...]] [--mode closed|open] [--workers N | --rate R] [--duration D]
//	gather chaos [--addr ADDR] [--admin ADDR] [--duration D] ...   replay the old incident against gather demo
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"demo", "run 4 index shards and the proxy on 127.0.0.1", runDemo},
	{"shard", "serve one partition of a corpus as a ShardService", runShard},
	{"proxy", "serve the QueryService in front of a set of shards", runProxy},
	{"cluster", "run etcd, 4 shards x 2 replicas and 2 proxies as processes on 127.0.0.1", runCluster},
	{"query", "ask a QueryService and print the hits as a table (--trace: and the query's trace)", runQuery},
	{"trace", "draw a query's trace from Jaeger as a waterfall: the proxy, each shard call, hedges and cuts", runTrace},
	{"bench", "drive load at a QueryService and report latency percentiles and throughput", runBench},
	{"discover", "print the topology registered in etcd (gather shard --register) and follow its changes", runDiscover},
	{"diag", "print a proxy's TCP sockets by state and the kernel's listen-queue drops", runDiag},
	{"benchsuite", "measure gather against a raw gRPC hop and a naive fan-out (make bench), and judge the targets", runBenchsuite},
	{"chaos", "replay the old incident against gather demo and judge how the proxy came through", runChaos},
	{"version", "print the version", func(_ context.Context, _ []string, stdout, _ io.Writer) error {
		_, err := fmt.Fprintln(stdout, "gather", version)
		return err
	}},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var usageErr *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp): // -h: the usage, on stdout
	case errors.As(err, &usageErr):
		if !usageErr.printed {
			fmt.Fprintln(os.Stderr, "gather:", err)
		}
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "gather:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return &usageError{err: errors.New("no command")}
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help" {
		usage(stdout)
		return flag.ErrHelp
	}
	if args[0] == "--version" || args[0] == "-version" {
		args = []string{"version"}
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	usage(stderr)
	return &usageError{err: fmt.Errorf("unknown command %q", args[0])}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: gather COMMAND [flags]   (gather COMMAND -h for its flags)")
	fmt.Fprintln(w)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
}

// newFlags returns a flag set that reports errors instead of exiting; parse it with parseFlags.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: gather %s %s\n\nflags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// usageError is a command line gather cannot run: the process exits 2. printed: the flag
// package has printed the error already.
type usageError struct {
	err     error
	printed bool
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// parseFlags parses args into fs. For -h it prints the usage on stdout and returns
// flag.ErrHelp (the process exits 0); a bad flag has its line and the usage printed on fs's
// output (stderr) and returns a *usageError (exit 2).
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	var buf bytes.Buffer
	out := fs.Output()
	fs.SetOutput(&buf)
	err := fs.Parse(args)
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		_, _ = buf.WriteTo(stdout)
		return err
	case err != nil:
		_, _ = buf.WriteTo(out)
		return &usageError{err: err, printed: true}
	}
	return nil
}
