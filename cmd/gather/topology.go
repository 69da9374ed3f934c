package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatherproxy/gather/internal/config"
	"github.com/gatherproxy/gather/internal/discovery"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/watchfile"
)

// configPoll is how often the proxy looks at its config file for a change (one stat).
const configPoll = time.Second

// follower keeps a proxy's topology current from wherever it comes: etcd (discover), the DNS
// names among the shards' replicas (resolved again every 10s and when a replica's connection is
// lost), and the config file, read again when it changes and on SIGHUP. Make it with
// newFollower, give its initial topology and replicaDown to the fan-out, then start it.
type follower struct {
	cfg     config.Proxy
	log     *slog.Logger
	reg     prometheus.Registerer
	file    *watchfile.Set[config.Proxy] // nil without a config file
	initial []fanout.ShardSpec

	fan    *fanout.Client
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	close  []func()
	once   sync.Once

	// The DNS source of the shards in force, if they have DNS names; replaced on reload.
	dnsMetrics *discovery.DNSMetrics
	dnsMu      sync.Mutex
	dns        *discovery.DNSSource
	dnsStop    func() // cancels dns.Run and waits for it
}

// newFollower prepares what keeps the topology of cfg current; resolve turns the contents of
// path (the config file, if any) into a configuration as at start. Nothing runs until start.
func newFollower(cfg config.Proxy, path string, resolve func(config.Proxy) (config.Proxy, error),
	log *slog.Logger, reg prometheus.Registerer) (*follower, error) {
	f := &follower{cfg: cfg, log: log, reg: reg}
	switch topo := cfg.Topology(); {
	case cfg.Discover != "":
		// Empty until the watcher's first topology: /readyz says so.
	case discovery.HasDNSNames(topo):
		src, err := f.newDNS(topo)
		if err != nil {
			return nil, err
		}
		f.dns, f.initial = src, src.Static()
	default:
		f.initial = topo
	}
	if path != "" {
		var err error
		f.file, err = watchfile.New("config", []string{path}, func(b [][]byte) (config.Proxy, error) {
			c, err := config.Parse(b[0], path)
			if err != nil {
				return c, err
			}
			return resolve(c)
		}, watchfile.WithLogger[config.Proxy](log))
		if err != nil {
			return nil, err
		}
	}
	return f, nil
}

// Initial is the topology to start the fan-out with: the configured shards, with only the
// literal addresses of those given by DNS name (the names are resolved once started), or none
// with discovery.
func (f *follower) Initial() []fanout.ShardSpec { return f.initial }

// replicaDown is the fan-out's OnReplicaDown: a replica that refused or dropped a call may have
// moved, so DNS names are resolved again (the source limits how often).
func (f *follower) replicaDown(string, string) {
	f.dnsMu.Lock()
	if f.dns != nil {
		f.dns.Refresh()
	}
	f.dnsMu.Unlock()
}

// start follows the topology into fan until ctx ends or Stop. A proxy with no source of change
// still answers SIGHUP with a log line rather than dying of it.
func (f *follower) start(ctx context.Context, fan *fanout.Client) error {
	f.fan = fan
	f.ctx, f.cancel = context.WithCancel(ctx)
	if f.cfg.Discover != "" {
		if err := f.discover(); err != nil {
			f.Stop()
			return err
		}
	}
	if f.dns != nil {
		f.runDNS(f.dns)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	f.wg.Go(func() {
		defer signal.Stop(hup)
		tick := time.NewTicker(configPoll)
		defer tick.Stop()
		last := f.cfg
		for {
			select {
			case <-f.ctx.Done():
				return
			case <-hup:
				if f.file == nil {
					f.log.Info("SIGHUP: no config file to reload (--config)")
					continue
				}
				// Read through the file's Set, so that the next poll compares with what was read.
				last = f.reloaded(last, f.file.Reload(), "SIGHUP")
			case <-tick.C:
				if f.file != nil {
					last = f.reloaded(last, f.file.Get(), "file changed")
				}
			}
		}
	})
	return nil
}

// reloaded applies what changed between last, the configuration read before, and c: the
// shards, live; other settings take a restart, and the log says which, once per change. It
// returns c, to compare the next read with.
func (f *follower) reloaded(last, c config.Proxy, why string) config.Proxy {
	var later []string
	shards := false
	for _, k := range config.ChangedKeys(last, c) {
		if k == "shards" {
			shards = true
		} else {
			later = append(later, k)
		}
	}
	if len(later) > 0 {
		f.log.Warn("config reload: these settings changed but take effect only on restart", "why", why, "keys", strings.Join(later, ","))
	}
	if shards && f.cfg.Discover == "" {
		f.reloadShards(c.Topology(), "config reload ("+why+")")
	}
	return c
}

// reloadShards makes topo the shards followed: through a new DNS source if it has DNS names
// (its first resolution publishes), else at once.
func (f *follower) reloadShards(topo []fanout.ShardSpec, source string) {
	var src *discovery.DNSSource
	if discovery.HasDNSNames(topo) {
		var err error
		if src, err = f.newDNS(topo); err != nil {
			f.log.Error("topology refused; keeping the current one", "source", source, "err", err)
			return
		}
	}
	f.swapDNS(src)
	if src == nil {
		f.apply(topo, source)
	}
}

// newDNS returns a DNS source for topology that publishes into the fan-out.
func (f *follower) newDNS(topo []fanout.ShardSpec) (*discovery.DNSSource, error) {
	if f.dnsMetrics == nil {
		f.dnsMetrics = discovery.NewDNSMetrics(f.reg)
	}
	opts := []discovery.DNSOption{discovery.WithDNSLogger(f.log), discovery.WithDNSMetrics(f.dnsMetrics)}
	if f.cfg.DNSRefresh > 0 {
		opts = append(opts, discovery.WithDNSInterval(f.cfg.DNSRefresh))
	}
	return discovery.NewDNSSource(topo, func(t []fanout.ShardSpec) { f.apply(t, "dns") }, opts...)
}

// runDNS runs src until swapDNS replaces it or the follower stops.
func (f *follower) runDNS(src *discovery.DNSSource) {
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan struct{})
	f.wg.Go(func() {
		defer close(done)
		_ = src.Run(ctx) // returns ctx's error only
	})
	f.dnsMu.Lock()
	f.dns, f.dnsStop = src, func() { cancel(); <-done }
	f.dnsMu.Unlock()
}

// swapDNS stops the DNS source in use, if any, and runs src instead (nil: none).
func (f *follower) swapDNS(src *discovery.DNSSource) {
	f.dnsMu.Lock()
	stop := f.dnsStop
	f.dns, f.dnsStop = nil, nil
	f.dnsMu.Unlock()
	if stop != nil {
		stop() // outside the lock: replicaDown, on the queries' path, takes it
	}
	if src != nil {
		f.runDNS(src)
	}
}

// discover follows the topology registered in etcd under cfg.Discover.
func (f *follower) discover() error {
	target, err := discovery.ParseTarget(f.cfg.Discover)
	if err != nil {
		return fmt.Errorf("discover: %w", err)
	}
	cli, err := target.Client()
	if err != nil {
		return fmt.Errorf("discover: %w", err)
	}
	f.close = append(f.close, func() { _ = cli.Close() })
	opts := []discovery.WatchOption{discovery.WithWatchLogger(f.log), discovery.WithWatchMetrics(discovery.NewMetrics(f.reg))}
	if len(f.cfg.DiscoverExpect) > 0 {
		opts = append(opts, discovery.WithExpected(f.cfg.DiscoverExpect))
	}
	w := discovery.NewWatcher(cli, target, func(t discovery.Topology) {
		f.apply(discoveredSpecs(t), fmt.Sprintf("etcd revision %d", t.Revision))
	}, opts...)
	f.wg.Go(func() {
		if err := w.Run(f.ctx); err != nil && !errors.Is(err, context.Canceled) {
			f.log.Error("discovery stopped; the topology stays as it is", "err", err)
		}
	})
	return nil
}

// discoveredSpecs is a discovered topology as the fan-out takes it: the missing shards are in
// it without replicas, so that answers report them in coverage and /readyz names them.
func discoveredSpecs(t discovery.Topology) []fanout.ShardSpec {
	specs := t.Specs()
	for _, m := range t.Missing {
		specs = append(specs, fanout.ShardSpec{Name: m})
	}
	return specs
}

// apply makes specs the fan-out's topology and logs what changed.
func (f *follower) apply(specs []fanout.ShardSpec, source string) {
	ch, err := f.fan.Update(specs)
	switch {
	case err != nil:
		f.log.Error("topology refused; keeping the current one", "source", source, "err", err)
	case !ch.Empty():
		f.log.Info("topology changed", "source", source, "version", ch.Version, "change", ch.String())
	}
}

// Stop ends the watcher, the DNS source and the reloads, and waits for them. Later calls do
// nothing.
func (f *follower) Stop() {
	f.once.Do(func() {
		if f.cancel != nil {
			f.cancel()
		}
		f.wg.Wait()
		for _, c := range f.close {
			c()
		}
	})
}
