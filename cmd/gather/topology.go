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

// follower keeps a proxy's topology current: from etcd (discover), and from its config file,
// re-read when it changes and on SIGHUP. Stop ends it.
type follower struct {
	fan    *fanout.Client
	log    *slog.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup
	close  []func()
	once   sync.Once
}

// followTopology starts what keeps fan's topology current for cfg: an etcd watcher when
// cfg.Discover is set, and the reload of path (if any), whose new contents resolve turns into a
// configuration. A proxy with neither has nothing to follow, but still answers SIGHUP with a log
// line rather than dying of it.
func followTopology(ctx context.Context, fan *fanout.Client, cfg config.Proxy, path string,
	resolve func(config.Proxy) (config.Proxy, error), log *slog.Logger, reg prometheus.Registerer) (*follower, error) {
	ctx, cancel := context.WithCancel(ctx)
	f := &follower{fan: fan, log: log, cancel: cancel}
	if cfg.Discover != "" {
		if err := f.discover(ctx, cfg, reg); err != nil {
			cancel()
			return nil, err
		}
	}
	var file *watchfile.Set[config.Proxy]
	if path != "" {
		var err error
		file, err = watchfile.New("config", []string{path}, func(b [][]byte) (config.Proxy, error) {
			c, err := config.Parse(b[0], path)
			if err != nil {
				return c, err
			}
			return resolve(c)
		}, watchfile.WithLogger[config.Proxy](log))
		if err != nil {
			f.Stop()
			return nil, err
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	f.wg.Go(func() {
		defer signal.Stop(hup)
		tick := time.NewTicker(configPoll)
		defer tick.Stop()
		applied := cfg
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if file == nil {
					log.Info("SIGHUP: no config file to reload (--config)")
					continue
				}
				c, err := config.Load(path)
				if err == nil {
					c, err = resolve(c)
				}
				if err != nil {
					log.Warn("SIGHUP: config refused; keeping the loaded version", "file", path, "err", err)
					continue
				}
				applied = f.reloaded(applied, c, "SIGHUP")
			case <-tick.C:
				if file != nil {
					applied = f.reloaded(applied, file.Get(), "file changed")
				}
			}
		}
	})
	return f, nil
}

// reloaded applies what a reload changed: the shards, live; other settings take a restart, and
// the log says which. It returns the configuration now in force.
func (f *follower) reloaded(applied, c config.Proxy, why string) config.Proxy {
	keys := config.ChangedKeys(applied, c)
	if len(keys) == 0 {
		return applied
	}
	var later []string
	for _, k := range keys {
		if k != "shards" {
			later = append(later, k)
		}
	}
	if len(later) > 0 {
		f.log.Warn("config reload: these settings changed but take effect only on restart", "why", why, "keys", strings.Join(later, ","))
	}
	if applied.Discover == "" && len(later) < len(keys) {
		f.apply(c.Topology(), "config reload ("+why+")")
	}
	applied.Shards = c.Shards
	return applied
}

// discover follows the topology registered in etcd under cfg.Discover.
func (f *follower) discover(ctx context.Context, cfg config.Proxy, reg prometheus.Registerer) error {
	target, err := discovery.ParseTarget(cfg.Discover)
	if err != nil {
		return fmt.Errorf("discover: %w", err)
	}
	cli, err := target.Client()
	if err != nil {
		return fmt.Errorf("discover: %w", err)
	}
	f.close = append(f.close, func() { _ = cli.Close() })
	opts := []discovery.WatchOption{discovery.WithWatchLogger(f.log), discovery.WithWatchMetrics(discovery.NewMetrics(reg))}
	if len(cfg.DiscoverExpect) > 0 {
		opts = append(opts, discovery.WithExpected(cfg.DiscoverExpect))
	}
	w := discovery.NewWatcher(cli, target, func(t discovery.Topology) {
		f.apply(discoveredSpecs(t), fmt.Sprintf("etcd revision %d", t.Revision))
	}, opts...)
	f.wg.Go(func() {
		if err := w.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
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

// Stop ends the watcher and the reloads, and waits for them. Later calls do nothing.
func (f *follower) Stop() {
	f.once.Do(func() {
		f.cancel()
		f.wg.Wait()
		for _, c := range f.close {
			c()
		}
	})
}
