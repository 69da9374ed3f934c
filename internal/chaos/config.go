package chaos

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// The command's defaults for the settings whose zero means none.
const (
	DefaultStallers  = 2
	DefaultVanishers = 2
	DefaultHog       = 256
	// DefaultWorkerCaller is the name the workers give the demo as their caller (CallerHeader).
	DefaultWorkerCaller = "chaos-qs"
	// MaxReplicas bounds Config.Replicas; `gather demo --replicas` has the same bound.
	MaxReplicas = 8
)

// Config sets up a run. The zero value of a field means its default; Validate reports what
// cannot work.
type Config struct {
	// Addr is the proxy's QueryService. Default 127.0.0.1:7070. Must be a loopback address.
	Addr string
	// Admin is the demo's admin HTTP server (/metrics and /debug/fault). Default 127.0.0.1:9090.
	// Must be a loopback address.
	Admin string
	// Duration is how long the before and incident phases last together; the recovery comes on
	// top, at most RecoveryTimeout. Default 60s, at least 5s. The before phase takes 10% of it, at
	// most 5s.
	Duration time.Duration
	// Timeout is every client's deadline per query, the QS timeout of the incident. Default 3s.
	Timeout time.Duration
	// Workers is how many clients query in a loop during the incident, each on a connection of its
	// own. Default 320: more than the demo's 256 queries in flight, so that the proxy must shed.
	Workers int
	// SlowShards are the demo shards slowed during the incident. Default shard-0 and shard-1.
	SlowShards []string
	// Replicas is how many replicas each slow shard of the demo has (`gather demo --replicas`).
	// Default 1: the slow shards are slowed whole, the incident as it was. With 2 or more, only
	// replica 0 of each slow shard is slowed, Run refuses a demo whose slow shards have fewer
	// replicas, and the verdict requires every worker query answered in full: the proxy's
	// replica choice, hedges, retries and outlier ejection must route around the slow replica.
	// At most MaxReplicas.
	Replicas int
	// Slow is the delay injected into every Search call of the slow shards; it must exceed
	// Timeout. Default 5s.
	Slow time.Duration
	// Stallers is how many clients open SearchStreams for 1000 hits on a connection with a small
	// fixed flow-control window and do not read them. 0 means none (DefaultStallers is the
	// command's default).
	Stallers int
	// StallHold is how long a staller leaves its stream unread before reading it to its end to
	// learn its status. It must exceed the proxy's time to its first hits plus its send
	// watchdog (default 5s). Default 8s.
	StallHold time.Duration
	// Vanishers is how many clients go silent mid-query behind a Relay. 0 means none
	// (DefaultVanishers is the command's default).
	Vanishers int
	// Hog is how many SearchStreams the hog keeps open, unread, on its one connection (with the
	// stallers' small window) while the incident lasts: each is left unread for StallHold, then
	// read to its end and replaced. At most 5000; 0 means no hog (DefaultHog is the command's
	// default).
	Hog int
	// WorkerCaller is the caller name the workers send in CallerHeader, which the demo takes for
	// their identity, so that admission control sees them as one service, the way the connections
	// of a QS fleet with one client certificate are; the probe and the hog are callers of their
	// own. Empty: no header, each worker connection is a caller (DefaultWorkerCaller is the
	// command's default).
	WorkerCaller string
	// VanishWait is how long a vanished connection may stay open before chaos counts it as not
	// dropped by the proxy and closes it itself. It must exceed the proxy's keepalive time plus
	// timeout (10s + 5s by default). Default 20s.
	VanishWait time.Duration
	// RecoveryTimeout bounds the wait for the proxy to be clean after the incident. Default 30s.
	RecoveryTimeout time.Duration
	// GoroutineSlack is how many goroutines above the baseline still count as back to it.
	// Default 5: a scrape of the demo can land while a probe query runs, or while a connection's
	// goroutines finish; those come and go, a leak stays and grows with the load.
	GoroutineSlack int
	// HeapSlack is how many bytes of heap in use above the baseline still count as back to it,
	// both read just after a GC. Default 16 MiB, as in the fault tests: pools and caches keep some
	// memory across a GC; what a leak holds grows with the load.
	HeapSlack uint64
	// ProbeEvery is how often the probe starts a query. Default 100ms.
	ProbeEvery time.Duration
	// MaxProbeGap is the longest the probe may go without an answer: in every stretch of this
	// length, some query the probe started must be answered. Default 1s.
	MaxProbeGap time.Duration
	// ReconnectEvery is how many queries a worker sends on one connection before it closes it
	// and dials a new one, so that connections are closed throughout the incident. A worker also
	// closes its connection after a query hit its timeout, as the incident's QS did. Default 20.
	ReconnectEvery int
	// Cluster, if not empty, is the control address of a `gather cluster` (ClusterPath,
	// ReplacePath), and the run is the cluster's scenario rather than the demo's incident: no
	// shard is slowed (a cluster has no fault control; SlowShards must be empty), and a third of
	// the way into the incident one replica of ReplaceShard is killed with SIGKILL and a new one
	// started on a new port. Addr and Admin are then one of the cluster's proxies. The verdict
	// requires every worker query answered in full: the proxy must retry around the killed
	// replica while etcd still lists it, and follow the topology when its lease expires.
	// Must be a loopback address.
	Cluster string
	// ReplaceShard is the shard whose replica the cluster scenario replaces (default shard-1);
	// ReplaceReplica the replica id (default: the shard's first).
	ReplaceShard, ReplaceReplica string
	// Progress, if not nil, receives a progress line at most every ProgressEvery (default 1s).
	Progress      io.Writer
	ProgressEvery time.Duration
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Addr == "" {
		c.Addr = "127.0.0.1:7070"
	}
	if c.Admin == "" {
		c.Admin = "127.0.0.1:9090"
	}
	def(&c.Duration, 60*time.Second)
	def(&c.Timeout, 3*time.Second)
	def(&c.Slow, 5*time.Second)
	def(&c.StallHold, 8*time.Second)
	def(&c.VanishWait, 20*time.Second)
	def(&c.RecoveryTimeout, 30*time.Second)
	def(&c.ProbeEvery, 100*time.Millisecond)
	def(&c.MaxProbeGap, time.Second)
	def(&c.ProgressEvery, time.Second)
	if c.Workers == 0 {
		c.Workers = 320
		if c.Cluster != "" {
			// Fewer than a proxy admits (256): the scenario is a replica's death, not overload.
			c.Workers = 32
		}
	}
	if c.SlowShards == nil && c.Cluster == "" {
		c.SlowShards = []string{"shard-0", "shard-1"}
	}
	if c.ReplaceShard == "" {
		c.ReplaceShard = "shard-1"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.GoroutineSlack == 0 {
		c.GoroutineSlack = 5
	}
	if c.HeapSlack == 0 {
		c.HeapSlack = 16 << 20
	}
	if c.ReconnectEvery == 0 {
		c.ReconnectEvery = 20
	}
	return c
}

// Defaults returns c with every zero field set to its default.
func (c Config) Defaults() Config { return c.withDefaults() }

// Validate checks c after defaults and names every problem.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	addrs := []struct{ name, addr string }{{"addr", c.Addr}, {"admin", c.Admin}}
	if c.Cluster != "" {
		addrs = append(addrs, struct{ name, addr string }{"cluster", c.Cluster})
	}
	for _, a := range addrs {
		if err := checkLoopback(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.name, err))
		}
	}
	if c.Duration < 5*time.Second {
		errs = append(errs, fmt.Errorf("duration %s: give at least 5s", c.Duration))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"timeout", c.Timeout}, {"slow", c.Slow}, {"stall-hold", c.StallHold}, {"vanish-wait", c.VanishWait},
		{"recovery-timeout", c.RecoveryTimeout}, {"probe-every", c.ProbeEvery}, {"max-probe-gap", c.MaxProbeGap},
		{"progress-every", c.ProgressEvery}} {
		if d.d < 0 {
			errs = append(errs, fmt.Errorf("%s %s: negative", d.name, d.d))
		}
	}
	if c.Slow <= c.Timeout {
		errs = append(errs, fmt.Errorf("slow %s: the incident needs shards slower than the QS timeout (%s)", c.Slow, c.Timeout))
	}
	if c.ProbeEvery >= c.MaxProbeGap {
		errs = append(errs, fmt.Errorf("probe-every %s: must be shorter than the longest allowed gap (%s)", c.ProbeEvery, c.MaxProbeGap))
	}
	for _, n := range []struct {
		name string
		n    int
	}{{"workers", c.Workers}, {"stallers", c.Stallers}, {"vanishers", c.Vanishers}, {"hog", c.Hog},
		{"goroutine-slack", c.GoroutineSlack}, {"reconnect-every", c.ReconnectEvery}} {
		if n.n < 0 {
			errs = append(errs, fmt.Errorf("%s %d: negative", n.name, n.n))
		}
	}
	if c.Workers > 5000 || c.Stallers > 100 || c.Vanishers > 100 || c.Hog > 5000 {
		errs = append(errs, fmt.Errorf("%d workers, %d stallers, %d vanishers, %d hog streams: at most 5000, 100, 100 and 5000",
			c.Workers, c.Stallers, c.Vanishers, c.Hog))
	}
	if c.Replicas < 1 || c.Replicas > MaxReplicas {
		errs = append(errs, fmt.Errorf("replicas %d: give 1 to %d, the demo's --replicas", c.Replicas, MaxReplicas))
	}
	switch {
	case c.Cluster != "" && len(c.SlowShards) > 0:
		errs = append(errs, errors.New("slow-shards: a cluster has no fault control: name no shard to slow with --cluster"))
	case c.Cluster == "" && len(c.SlowShards) == 0:
		errs = append(errs, errors.New("slow-shards: name at least one shard to slow"))
	}
	return errors.Join(errs...)
}

// checkLoopback accepts HOST:PORT where HOST is localhost or a loopback IP: chaos only ever
// loads a proxy on the same host.
func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("%q is not HOST:PORT", addr)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address: chaos only runs against a proxy on this host", addr)
	}
	return nil
}
