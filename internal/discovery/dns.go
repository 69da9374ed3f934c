package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/replica"
)

// Defaults of a DNSSource.
const (
	// DefaultDNSInterval is how often every name is resolved again. Thanos re-resolves its dns+
	// endpoints every 30s; grpc-go's own resolver never polls (only on connection loss, at most
	// every 30s, grpc-go #6604), so a new replica behind a name stays unused until a connection
	// breaks. 10s lets a replica added to a headless Service take queries within about the time
	// Kubernetes takes to mark it ready, while costing a proxy one A and one AAAA query per
	// name every 10s, nothing to a cluster DNS server; polling much faster gains little, as
	// CoreDNS serves Kubernetes records with a 5s TTL (and a node-local cache holds them that
	// long). A replica that goes away is noticed sooner, through Refresh.
	DefaultDNSInterval = 10 * time.Second
	// DefaultDNSMinRefresh is the least time between two resolutions that Refresh asks for: a
	// connection that flaps cannot make a proxy ask the DNS server more than once a second.
	DefaultDNSMinRefresh = time.Second
	// DefaultDNSLookupTimeout bounds one lookup of one name (A and AAAA together).
	DefaultDNSLookupTimeout = 5 * time.Second
)

// dnsParallel bounds the lookups a resolution round has in flight at once.
const dnsParallel = 8

// Why a round of lookups ran (the trigger label of gather_discovery_dns_rounds_total).
const (
	triggerStart    = "start"
	triggerInterval = "interval"
	triggerRefresh  = "refresh"
)

// Results of one lookup (the result label of gather_discovery_dns_lookups_total).
const (
	resultOK       = "ok"
	resultNotFound = "not_found"
	resultError    = "error"
)

// DNSSource turns a topology whose replica entries may name DNS records (dns:///HOST:PORT,
// see ParseDNSName) into one of IP:PORT addresses, and follows the records as they change.
// Create it with NewDNSSource and run it with Run.
//
// Every dns entry stands for all the A and AAAA addresses of its name, each with the entry's
// port; a shard's replicas are those addresses and its literal entries, deduplicated and sorted
// (IP addresses in numeric order, IPv4 first, then the literal names). When a shard has more
// than replica.MaxReplicas, the literal entries are kept and the first of the resolved
// addresses in that order fill the rest; the cut is logged.
//
// Names are resolved at Run's start, every interval after the end of the last round, and on
// Refresh (at most once per min-refresh interval). What a lookup answers decides what happens
// to the name's addresses:
//
//   - addresses: they replace the last ones.
//   - an error (timeout, SERVFAIL, refused, server unreachable): the last addresses are kept,
//     however long the failure lasts, and the failure is logged once until the name resolves
//     again. A DNS server that is down says nothing about the replicas, which may well serve.
//   - no address (NXDOMAIN, or a name with neither A nor AAAA record): the name's addresses are
//     dropped at once. This is the DNS server's answer, not its failure: a headless Service
//     answers it when none of its pods is ready, and Kubernetes gives a gone pod's IP address
//     to the next pod it starts, which may serve another shard or something else entirely;
//     keeping the address would send the shard's queries there. A shard left with no replica
//     is published with none: the proxy reports it as unavailable in coverage and /readyz,
//     which is the truth.
//
// A shard whose names have not resolved yet (and that has no literal entry) is published with
// no replica. The topology is published, whole, when it differs from the last one published;
// the first round always publishes.
type DNSSource struct {
	shards   []dnsShard
	names    []*dnsLookup // every distinct (server, host), in order of first use
	onChange func([]fanout.ShardSpec)
	log      *slog.Logger
	m        *DNSMetrics

	interval, minRefresh, timeout time.Duration
	refresh                       chan struct{} // Refresh's signal, buffered: one pending is enough

	// The state below belongs to Run's goroutine.
	last      []fanout.ShardSpec
	published bool
	cut       map[string]int // shard -> addresses the cap left out, as last logged
}

// dnsShard is one configured shard: its literal entries and its dns entries.
type dnsShard struct {
	name     string
	literals []string
	entries  []dnsEntry
}

// dnsEntry is one dns entry of a shard: a name to resolve and the port of its addresses.
type dnsEntry struct {
	name *dnsLookup
	port uint16
}

// Streak states of a name: what its last lookup answered, for logging each streak once.
type lookupState int

const (
	stateNew lookupState = iota
	stateOK
	stateNotFound
	stateFailing
)

// dnsLookup is one name to resolve on one server, shared by every entry that names it.
type dnsLookup struct {
	label    string // as in log lines: dns://SERVER/HOST
	host     string
	resolver *net.Resolver
	addrs    []netip.Addr // sorted, unique; what the name stands for now
	state    lookupState
}

// DNSOption configures a DNSSource.
type DNSOption func(*DNSSource)

// WithDNSInterval sets how often every name is resolved again. Default: DefaultDNSInterval.
func WithDNSInterval(d time.Duration) DNSOption {
	return func(s *DNSSource) {
		if d > 0 {
			s.interval = d
		}
	}
}

// WithDNSMinRefresh sets the least time between the end of a round and a round Refresh asks
// for. Default: DefaultDNSMinRefresh.
func WithDNSMinRefresh(d time.Duration) DNSOption {
	return func(s *DNSSource) {
		if d > 0 {
			s.minRefresh = d
		}
	}
}

// WithDNSLookupTimeout bounds each lookup. Default: DefaultDNSLookupTimeout.
func WithDNSLookupTimeout(d time.Duration) DNSOption {
	return func(s *DNSSource) {
		if d > 0 {
			s.timeout = d
		}
	}
}

// WithDNSLogger sets where changes and lookup failures are logged. Default: slog.Default().
func WithDNSLogger(log *slog.Logger) DNSOption { return func(s *DNSSource) { s.log = log } }

// WithDNSMetrics counts in m (NewDNSMetrics). Default: metrics on a registry of the source's
// own, which nothing reads.
func WithDNSMetrics(m *DNSMetrics) DNSOption { return func(s *DNSSource) { s.m = m } }

// HasDNSNames reports whether some replica entry of topology is a dns one, so that a
// DNSSource is needed.
func HasDNSNames(topology []fanout.ShardSpec) bool {
	for _, s := range topology {
		if slices.ContainsFunc(s.Replicas, IsDNSName) {
			return true
		}
	}
	return false
}

// NewDNSSource returns a source that resolves the dns entries of topology and calls onChange
// with each new resolved topology: the same shards in the same order, each with IP:PORT and
// literal replica entries only. onChange is called from Run's goroutine, one call at a time; it
// owns the slice it is given, and should return quickly (the next round waits for it). The error
// names the shard and the entry that is malformed.
func NewDNSSource(topology []fanout.ShardSpec, onChange func([]fanout.ShardSpec), opts ...DNSOption) (*DNSSource, error) {
	s := &DNSSource{onChange: onChange, log: slog.Default(), interval: DefaultDNSInterval, minRefresh: DefaultDNSMinRefresh,
		timeout: DefaultDNSLookupTimeout, refresh: make(chan struct{}, 1), cut: map[string]int{}}
	for _, o := range opts {
		o(s)
	}
	if s.m == nil {
		s.m = NewDNSMetrics(prometheus.NewRegistry())
	}
	byName := map[string]*dnsLookup{}
	resolvers := map[string]*net.Resolver{} // one per server: a resolver merges concurrent lookups of a name
	var errs []error
	for _, spec := range topology {
		sh := dnsShard{name: spec.Name}
		for _, r := range spec.Replicas {
			r = strings.TrimSpace(r)
			if !IsDNSName(r) {
				sh.literals = append(sh.literals, r)
				continue
			}
			n, err := ParseDNSName(r)
			if err != nil {
				errs = append(errs, fmt.Errorf("shard %s: %w", spec.Name, err))
				continue
			}
			key := n.Server + "/" + strings.ToLower(n.Host)
			l := byName[key]
			if l == nil {
				res := resolvers[n.Server]
				if res == nil {
					res = newResolver(n.Server)
					resolvers[n.Server] = res
				}
				l = &dnsLookup{label: DNSScheme + "://" + key, host: n.Host, resolver: res}
				byName[key] = l
				s.names = append(s.names, l)
			}
			sh.entries = append(sh.entries, dnsEntry{name: l, port: n.Port})
		}
		s.shards = append(s.shards, sh)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	names := make([]string, len(s.shards))
	for i, sh := range s.shards {
		names[i] = sh.name
	}
	s.m.forShards(names)
	return s, nil
}

// newResolver returns Go's resolver, sending every query to server (UDP, and TCP for an answer
// too big for UDP), or for "" to the servers of /etc/resolv.conf. Either way a name in
// /etc/hosts is answered from there first. The resolver's sockets are closed as soon as the
// lookup's context ends (see interruptible), so that no lookup outlives Run.
func newResolver(server string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, resolvConf string) (net.Conn, error) {
		addr := server
		if addr == "" {
			addr = resolvConf
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return interruptible(ctx, c), nil
	}}
}

// aLongTimeAgo is a deadline in the past: it ends every read and write at once.
var aLongTimeAgo = time.Unix(1, 0)

// interruptible returns c with its reads and writes ended when ctx ends. Go's resolver gives up
// waiting when the context of a lookup ends, but its goroutines stay in a read of the DNS
// server's socket until the resolv.conf timeout passes (5s by default): a silent server would
// leave them behind Run. The result is a net.PacketConn when c is one, as the resolver frames
// its queries by that.
func interruptible(ctx context.Context, c net.Conn) net.Conn {
	ic := interruptConn{Conn: c, done: ctx.Done()}
	ic.stop = context.AfterFunc(ctx, func() { _ = c.SetDeadline(aLongTimeAgo) })
	if pc, ok := c.(net.PacketConn); ok {
		return interruptPacketConn{interruptConn: ic, pc: pc}
	}
	return ic
}

type interruptConn struct {
	net.Conn
	done <-chan struct{} // the lookup context's
	stop func() bool
}

// SetDeadline keeps the deadline in the past once the context has ended: the resolver sets its
// own right after dialling, which could otherwise undo the interruption.
func (c interruptConn) SetDeadline(t time.Time) error {
	err := c.Conn.SetDeadline(t)
	select {
	case <-c.done:
		err = c.Conn.SetDeadline(aLongTimeAgo)
	default:
	}
	return err
}

func (c interruptConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

type interruptPacketConn struct {
	interruptConn
	pc net.PacketConn
}

func (c interruptPacketConn) ReadFrom(p []byte) (int, net.Addr, error)  { return c.pc.ReadFrom(p) }
func (c interruptPacketConn) WriteTo(p []byte, a net.Addr) (int, error) { return c.pc.WriteTo(p, a) }

// Static returns the topology before any name has resolved: every shard with its literal
// entries only (none, for a shard of dns entries alone). Give it to the fan-out until Run
// publishes.
func (s *DNSSource) Static() []fanout.ShardSpec {
	out := make([]fanout.ShardSpec, len(s.shards))
	for i, sh := range s.shards {
		out[i] = fanout.ShardSpec{Name: sh.name, Replicas: slices.Clone(sh.literals)}
	}
	return out
}

// Refresh asks for a round of lookups now, as when a replica's connection is lost: the address
// may have moved. It does not wait for the round, and never blocks. Rounds it asks for are at
// least the min-refresh interval apart (counted from the end of the last round, whatever ran
// it); requests in between are merged into one. It does nothing while Run is not running.
func (s *DNSSource) Refresh() {
	select {
	case s.refresh <- struct{}{}:
	default:
	}
}

// Run resolves every name, publishes the topology, and keeps resolving and publishing changes
// until ctx is done. It returns ctx's error, once every lookup it started has returned; a round
// cut short by ctx publishes nothing.
func (s *DNSSource) Run(ctx context.Context) error {
	trigger := triggerStart
	for {
		s.m.rounds.WithLabelValues(trigger).Inc()
		if !s.resolve(ctx) {
			return ctx.Err()
		}
		s.publish()
		var ok bool
		if trigger, ok = s.wait(ctx, time.Now()); !ok {
			return ctx.Err()
		}
	}
}

// wait returns when the next round is due: the interval after end, or the min-refresh interval
// after end once Refresh has asked. ok is false if ctx ended first.
func (s *DNSSource) wait(ctx context.Context, end time.Time) (trigger string, ok bool) {
	timer := time.NewTimer(s.interval)
	defer timer.Stop()
	trigger = triggerInterval
	for {
		select {
		case <-ctx.Done():
			return "", false
		case <-timer.C:
			return trigger, true
		case <-s.refresh:
			trigger = triggerRefresh
			due := min(time.Until(end.Add(s.minRefresh)), time.Until(end.Add(s.interval)))
			if due <= 0 {
				return trigger, true
			}
			timer.Reset(due)
		}
	}
}

// lookupResult is what one lookup answered.
type lookupResult struct {
	addrs  []netip.Addr
	result string
	err    error
}

// resolve looks every name up, at most dnsParallel at once, and applies the answers. It reports
// false, having applied nothing, if ctx ended meanwhile.
func (s *DNSSource) resolve(ctx context.Context) bool {
	results := make([]lookupResult, len(s.names))
	var g errgroup.Group
	g.SetLimit(dnsParallel)
	for i, n := range s.names {
		g.Go(func() error {
			results[i] = s.lookup(ctx, n)
			return nil
		})
	}
	_ = g.Wait() // the functions return nil
	if ctx.Err() != nil {
		return false
	}
	for i, n := range s.names {
		s.apply(n, results[i])
	}
	return true
}

// lookup resolves one name to its addresses, sorted and unique.
func (s *DNSSource) lookup(ctx context.Context, n *dnsLookup) lookupResult {
	lctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	addrs, err := n.resolver.LookupNetIP(lctx, "ip", n.host)
	var dnsErr *net.DNSError
	switch {
	case err == nil && len(addrs) > 0:
		for i, a := range addrs {
			addrs[i] = a.Unmap() // Go returns an A record's address as IPv4-mapped IPv6
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		return lookupResult{addrs: slices.Compact(addrs), result: resultOK}
	case err == nil, errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return lookupResult{result: resultNotFound, err: err}
	}
	return lookupResult{result: resultError, err: err}
}

// apply records one lookup's answer for a name and logs the start and end of each streak of
// failures or of answers without an address.
func (s *DNSSource) apply(n *dnsLookup, r lookupResult) {
	s.m.lookups.WithLabelValues(r.result).Inc()
	prev := n.state
	switch r.result {
	case resultOK:
		n.addrs, n.state = r.addrs, stateOK
		if prev == stateFailing || prev == stateNotFound {
			s.log.Info("dns name resolves again", "name", n.label, "addresses", len(n.addrs))
		}
	case resultNotFound:
		if prev != stateNotFound {
			s.log.Warn("dns name has no address (NXDOMAIN or no A/AAAA record): its replicas are dropped",
				"name", n.label, "dropped", len(n.addrs), "err", r.err)
		}
		n.addrs, n.state = nil, stateNotFound
	default:
		n.state = stateFailing
		if prev != stateFailing {
			s.log.Warn("dns lookup failed: keeping the name's last addresses until it resolves again",
				"name", n.label, "kept", len(n.addrs), "err", r.err)
		}
	}
}

// build returns the topology the names' current addresses give.
func (s *DNSSource) build() []fanout.ShardSpec {
	out := make([]fanout.ShardSpec, len(s.shards))
	for i, sh := range s.shards {
		literal := map[string]bool{}
		var lits, resolved []string
		for _, l := range sh.literals {
			if !literal[l] {
				literal[l] = true
				lits = append(lits, l)
			}
		}
		seen := map[string]bool{}
		for _, e := range sh.entries {
			for _, a := range e.name.addrs {
				ap := netip.AddrPortFrom(a, e.port).String()
				if !literal[ap] && !seen[ap] {
					seen[ap] = true
					resolved = append(resolved, ap)
				}
			}
		}
		slices.SortFunc(resolved, compareReplicas)
		cut := 0
		if room := max(replica.MaxReplicas-len(lits), 0); len(resolved) > room {
			cut = len(resolved) - room
			resolved = resolved[:room]
		}
		if cut != s.cut[sh.name] {
			if cut > 0 {
				s.log.Warn("dns: shard has more addresses than a shard may have replicas: the last in address order are left out",
					"shard", sh.name, "left_out", cut, "max", replica.MaxReplicas)
			}
			s.cut[sh.name] = cut
		}
		replicas := slices.Concat(lits, resolved)
		slices.SortFunc(replicas, compareReplicas)
		out[i] = fanout.ShardSpec{Name: sh.name, Replicas: replicas}
	}
	return out
}

// compareReplicas orders IP:PORT addresses by address (IPv4 first) then port, before the other
// entries (host names), which are in string order.
func compareReplicas(a, b string) int {
	pa, errA := netip.ParseAddrPort(a)
	pb, errB := netip.ParseAddrPort(b)
	switch {
	case errA == nil && errB == nil:
		return pa.Compare(pb)
	case errA == nil:
		return -1
	case errB == nil:
		return 1
	}
	return strings.Compare(a, b)
}

// publish delivers the current topology if it differs from the last one delivered, or if none
// was, and logs what changed, shard by shard.
func (s *DNSSource) publish() {
	t := s.build()
	if s.published && slices.EqualFunc(t, s.last, func(a, b fanout.ShardSpec) bool {
		return a.Name == b.Name && slices.Equal(a.Replicas, b.Replicas)
	}) {
		return
	}
	for i, sh := range t {
		var before []string
		if s.published {
			before = s.last[i].Replicas
		}
		added, removed := diff(before, sh.Replicas)
		if !s.published || len(added)+len(removed) > 0 {
			s.log.Info("dns topology change", "shard", sh.Name, "replicas", len(sh.Replicas), "added", added, "removed", removed)
		}
		s.m.replicas.WithLabelValues(sh.Name).Set(float64(len(sh.Replicas)))
	}
	s.m.changes.Inc()
	s.last, s.published = t, true
	out := make([]fanout.ShardSpec, len(t))
	for i, sh := range t {
		out[i] = fanout.ShardSpec{Name: sh.Name, Replicas: slices.Clone(sh.Replicas)}
	}
	s.onChange(out)
}

// diff returns the entries of after not in before, and those of before not in after.
func diff(before, after []string) (added, removed []string) {
	in := func(list []string) map[string]bool {
		m := make(map[string]bool, len(list))
		for _, e := range list {
			m[e] = true
		}
		return m
	}
	b, a := in(before), in(after)
	for _, e := range after {
		if !b[e] {
			added = append(added, e)
		}
	}
	for _, e := range before {
		if !a[e] {
			removed = append(removed, e)
		}
	}
	return added, removed
}
