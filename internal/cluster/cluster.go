package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gatherproxy/gather/internal/chaos"
	"github.com/gatherproxy/gather/internal/discovery/etcdrun"
)

// Spec says what to run. Start checks it.
type Spec struct {
	// Gather is the gather binary the children run (os.Executable() for `gather cluster`).
	Gather string
	// Dir holds etcd's data and every child's log (Dir/logs/NAME.log). Required.
	Dir string
	// Shards is the number of partitions, Replicas the replicas of each, Proxies the proxies.
	Shards, Replicas, Proxies int
	// BasePort, if not 0, fixes the ports: etcd's client port BasePort and peer port +1, proxy i
	// QueryService +10+i and admin +20+i, replica r of shard s +100+10*s+r. 0: free ports.
	// A replacement replica always gets a free port.
	BasePort int
	// Prefix is the etcd key prefix ("gather").
	Prefix string
	// RegisterTTL is every shard's lease TTL (gather shard --register-ttl).
	RegisterTTL time.Duration
	// ShardArgs and ProxyArgs are added to every shard's and proxy's command line
	// (--synthetic, --corpus FILE --data-dir DIR, --log-level ...).
	ShardArgs, ProxyArgs []string
	// Progress receives a line for each process started and stopped. Nil: none.
	Progress io.Writer
	// StartTimeout bounds the wait for each child to be serving (default 60s: a shard may open
	// an index).
	StartTimeout time.Duration
}

func (s Spec) check() error {
	var errs []error
	if s.Gather == "" || s.Dir == "" || s.Prefix == "" {
		errs = append(errs, errors.New("cluster: Gather, Dir and Prefix are required"))
	}
	if s.Shards < 1 || s.Shards > 10 {
		errs = append(errs, fmt.Errorf("shards %d: give 1 to 10", s.Shards))
	}
	if s.Replicas < 1 || s.Replicas > 10 {
		errs = append(errs, fmt.Errorf("replicas %d: give 1 to 10", s.Replicas))
	}
	if s.Proxies < 1 || s.Proxies > 10 {
		errs = append(errs, fmt.Errorf("proxies %d: give 1 to 10", s.Proxies))
	}
	if s.BasePort != 0 && (s.BasePort < 1024 || s.BasePort+200 > 65535) {
		errs = append(errs, fmt.Errorf("base-port %d: give 0 (free ports) or 1024 to %d (the cluster uses 200 ports from it)", s.BasePort, 65535-200))
	}
	return errors.Join(errs...)
}

// The lines the children print once they serve (cmd/gather's runShard and runProxy).
var (
	shardReady = regexp.MustCompile(`serving gather\.shard\.v1\.ShardService on (\S+)$`)
	proxyReady = regexp.MustCompile(`QueryService on (\S+), admin on (https?)://([^\s,]+)`)
)

// Cluster is a running cluster. Its methods are safe for concurrent use.
type Cluster struct {
	spec Spec
	etcd *etcdrun.Server
	logs string

	mu       sync.Mutex // guards what follows
	shards   []*member  // in start order; a replaced replica leaves the list
	proxies  []*member
	nextID   map[string]int // the next replica id number of each shard
	stopping bool
	exits    chan string // a line for each child that exited unexpectedly
	watchers sync.WaitGroup
}

// member is a child with what the cluster knows about it.
type member struct {
	*child
	process  chaos.Process
	replaced bool          // set under Cluster.mu when Replace picks it
	killing  chan struct{} // closed when Replace is about to kill it: its exit is expected
}

// Start starts etcd, then every shard replica (registered in etcd once serving), then the
// proxies, and returns once all serve. On error it stops what it started.
func Start(ctx context.Context, spec Spec) (_ *Cluster, err error) {
	if err := spec.check(); err != nil {
		return nil, err
	}
	if spec.StartTimeout == 0 {
		spec.StartTimeout = 60 * time.Second
	}
	c := &Cluster{spec: spec, logs: filepath.Join(spec.Dir, "logs"), nextID: map[string]int{}, exits: make(chan string, 64)}
	if err := os.MkdirAll(c.logs, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	start := time.Now()
	port := func(off int) int {
		if spec.BasePort == 0 {
			return 0
		}
		return spec.BasePort + off
	}
	c.etcd, err = etcdrun.Start(ctx, etcdrun.Options{Dir: filepath.Join(spec.Dir, "etcd"), ClientPort: port(0), PeerPort: port(1), SysProcAttr: childAttr()})
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	c.progress("etcd        %s  pid %d  ready in %s", c.etcd.Endpoint(), c.etcd.Pid(), time.Since(start).Round(time.Millisecond))

	// Every replica at once: they open their indexes in parallel.
	type started struct {
		m   *member
		err error
	}
	results := make(chan started)
	n := 0
	for s := range spec.Shards {
		for r := range spec.Replicas {
			shard := fmt.Sprintf("shard-%d", s)
			id := c.newID(shard)
			listen := "127.0.0.1:" + strconv.Itoa(port(100+10*s+r))
			n++
			go func() { // joined: Start receives every result
				m, err := c.startShard(ctx, shard, s, id, listen)
				results <- started{m, err}
			}()
		}
	}
	var errs []error
	for range n {
		r := <-results
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		c.mu.Lock()
		c.shards = append(c.shards, r.m)
		c.mu.Unlock()
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	c.mu.Lock()
	slices.SortFunc(c.shards, func(a, b *member) int { return cmpName(a.process.Name, b.process.Name) })
	c.mu.Unlock()
	for i := range spec.Proxies {
		m, err := c.startProxy(ctx, i, port(10+i), port(20+i))
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.proxies = append(c.proxies, m)
		c.mu.Unlock()
	}
	return c, nil
}

// cmpName orders "shard-1/r0" before "shard-1/r1" before "shard-10/r0".
func cmpName(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	if a < b {
		return -1
	}
	if a > b {
		return 1
	}
	return 0
}

// URL returns the registry URL, etcd://ENDPOINT/PREFIX.
func (c *Cluster) URL() string { return c.etcd.URL(c.spec.Prefix) }

// Logs returns the directory of the children's logs.
func (c *Cluster) Logs() string { return c.logs }

// Exits delivers a line for each child that exits while it should be running.
func (c *Cluster) Exits() <-chan string { return c.exits }

// newID returns the shard's next replica: r0, r1, ... Its id in etcd is SHARD-rN, as replica
// ids are unique under the prefix, across shards.
func (c *Cluster) newID(shard string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := "r" + strconv.Itoa(c.nextID[shard])
	c.nextID[shard]++
	return id
}

func (c *Cluster) startShard(ctx context.Context, shard string, index int, replica, listen string) (*member, error) {
	name, id := shard+"/"+replica, shard+"-"+replica
	args := append([]string{"shard", "--listen", listen, "--partition", fmt.Sprintf("%d/%d", index, c.spec.Shards),
		"--register", c.URL(), "--replica-id", id, "--register-ttl", c.spec.RegisterTTL.String()}, c.spec.ShardArgs...)
	mem, err := c.start(ctx, name, id, shardReady, args, func(m []string, pid int) chaos.Process {
		return chaos.Process{Name: name, Role: "shard", Shard: shard, ReplicaID: id, Addr: m[1], Pid: pid}
	})
	if err != nil {
		return nil, err
	}
	c.progress("%-11s %s  pid %d  registered as %s/%s/%s", name, mem.process.Addr, mem.process.Pid, c.spec.Prefix, shard, id)
	return mem, nil
}

func (c *Cluster) startProxy(ctx context.Context, i, qsPort, adminPort int) (*member, error) {
	name := fmt.Sprintf("proxy-%d", i)
	args := append([]string{"proxy", "--discover", c.URL(),
		"--listen", "127.0.0.1:" + strconv.Itoa(qsPort), "--admin", "127.0.0.1:" + strconv.Itoa(adminPort)}, c.spec.ProxyArgs...)
	var scheme string
	mem, err := c.start(ctx, name, name, proxyReady, args, func(m []string, pid int) chaos.Process {
		scheme = m[2]
		return chaos.Process{Name: name, Role: "proxy", Addr: m[1], Admin: m[3], Pid: pid}
	})
	if err != nil {
		return nil, err
	}
	if scheme == "http" { // an admin port with TLS is the operator's to check
		if err := awaitServing(ctx, "http://"+mem.process.Admin+"/readyz", c.spec.StartTimeout); err != nil {
			mem.kill()
			return nil, fmt.Errorf("%s: %w (see %s)", name, err, mem.logPath)
		}
	}
	c.progress("%-11s %s  admin %s  pid %d", name, mem.process.Addr, mem.process.Admin, mem.process.Pid)
	return mem, nil
}

// awaitServing waits, at most timeout, until url (a proxy's /readyz) answers 200. A proxy prints
// its serving line once it listens, before discovery has given it a topology: a query then
// would find no shard.
func awaitServing(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err != nil {
			last = err.Error()
		} else {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready within %s: %s", timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// start runs gather with args as the child name, logging to LOGS/logName.log, waits for the
// line ready matches and watches it; process describes it from that line's submatches and its
// pid.
func (c *Cluster) start(ctx context.Context, name, logName string, ready *regexp.Regexp, args []string,
	process func(m []string, pid int) chaos.Process) (*member, error) {
	ch, err := startChild(name, c.spec.Gather, filepath.Join(c.logs, logName+".log"), ready, args...)
	if err != nil {
		return nil, err
	}
	m, err := ch.awaitReady(ctx, c.spec.StartTimeout)
	if err != nil {
		ch.kill()
		return nil, err
	}
	mem := &member{child: ch, killing: make(chan struct{}), process: process(m, ch.pid())}
	c.watch(mem)
	return mem, nil
}

// watch reports m's exit on Exits unless the cluster is stopping or m was replaced.
func (c *Cluster) watch(m *member) {
	c.watchers.Go(func() {
		select {
		case <-m.exited:
		case <-m.killing:
			return
		}
		c.mu.Lock()
		expected := c.stopping || m.replaced
		c.mu.Unlock()
		if !expected {
			select {
			case c.exits <- fmt.Sprintf("%s (pid %d) exited: %s: see %s", m.process.Name, m.process.Pid, exitText(m.err), m.logPath):
			default:
			}
		}
	})
}

// Processes returns every running process: etcd, the proxies, the shard replicas.
func (c *Cluster) Processes() []chaos.Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []chaos.Process{{Name: "etcd", Role: "etcd", Addr: c.etcd.Endpoint(), Pid: c.etcd.Pid()}}
	for _, m := range c.proxies {
		out = append(out, m.process)
	}
	for _, m := range c.shards {
		out = append(out, m.process)
	}
	return out
}

// Replace kills a replica of shard (replica "" for the shard's first; rN or its id SHARD-rN)
// with SIGKILL, so that its
// registration stays in etcd until its lease expires, and starts a new one under the next
// replica id on a free port; it returns once the new replica is serving and registered.
func (c *Cluster) Replace(ctx context.Context, shard, replica string) (chaos.Replacement, error) {
	c.mu.Lock()
	var (
		victim *member
		have   []string
		index  = -1
	)
	for _, m := range c.shards {
		if m.process.Shard != shard {
			continue
		}
		have = append(have, m.process.Name[len(shard)+1:])
		if victim == nil && !m.replaced && (replica == "" || m.process.ReplicaID == replica || m.process.Name == shard+"/"+replica) {
			victim = m
		}
	}
	if victim != nil {
		victim.replaced = true
		_, _ = fmt.Sscanf(shard, "shard-%d", &index)
	}
	stopping := c.stopping
	c.mu.Unlock()
	switch {
	case stopping:
		return chaos.Replacement{}, errors.New("the cluster is stopping")
	case victim == nil && len(have) == 0:
		return chaos.Replacement{}, fmt.Errorf("%w: no shard %q: give shard-0 to shard-%d", chaos.ErrUnknownReplica, shard, c.spec.Shards-1)
	case victim == nil:
		return chaos.Replacement{}, fmt.Errorf("%w: %s has no replica %q: it has %v", chaos.ErrUnknownReplica, shard, replica, have)
	}
	close(victim.killing)
	killedAt := time.Now()
	victim.kill()
	c.mu.Lock()
	c.shards = slices.DeleteFunc(c.shards, func(m *member) bool { return m == victim })
	c.mu.Unlock()
	c.progress("%-11s %s  pid %d  killed (SIGKILL): its registration stays until its %s lease expires", victim.process.Name, victim.process.Addr, victim.process.Pid, c.spec.RegisterTTL)
	m, err := c.startShard(ctx, shard, index, c.newID(shard), "127.0.0.1:0")
	if err != nil {
		return chaos.Replacement{}, err
	}
	c.mu.Lock()
	if c.stopping { // Stop began while the new replica started: Stop has not seen it
		c.mu.Unlock()
		m.stop(10 * time.Second)
		return chaos.Replacement{}, errors.New("the cluster is stopping")
	}
	c.shards = append(c.shards, m)
	slices.SortFunc(c.shards, func(a, b *member) int { return cmpName(a.process.Name, b.process.Name) })
	c.mu.Unlock()
	return chaos.Replacement{Killed: victim.process, Started: m.process, KilledAt: killedAt, Registered: time.Since(killedAt)}, nil
}

// Stop stops every child in order, each group at once: the proxies (SIGTERM; they drain), then
// the shards (SIGTERM; they revoke their leases), then etcd, each after at most 15 s with
// SIGKILL, and prints a line for each. It returns once every child has exited.
func (c *Cluster) Stop() {
	c.mu.Lock()
	c.stopping = true
	proxies, shards := slices.Clone(c.proxies), slices.Clone(c.shards)
	c.mu.Unlock()
	for _, group := range [][]*member{proxies, shards} {
		var wg sync.WaitGroup
		for _, m := range group {
			wg.Go(func() {
				start := time.Now()
				how := m.stop(15 * time.Second)
				c.progress("%-11s stopped in %s: %s", m.process.Name, time.Since(start).Round(time.Millisecond), how)
			})
		}
		wg.Wait()
	}
	if c.etcd != nil && c.etcd.Pid() != 0 {
		start := time.Now()
		c.etcd.Stop()
		c.progress("%-11s stopped in %s", "etcd", time.Since(start).Round(time.Millisecond))
	}
	c.watchers.Wait()
}

func (c *Cluster) progress(format string, args ...any) {
	if c.spec.Progress != nil {
		fmt.Fprintf(c.spec.Progress, format+"\n", args...)
	}
}
