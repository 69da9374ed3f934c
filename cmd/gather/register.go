package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatherproxy/gather/internal/bounds"
	"github.com/gatherproxy/gather/internal/corpus"
	"github.com/gatherproxy/gather/internal/discovery"
)

// registerFlags are a shard's flags for registering in etcd.
type registerFlags struct {
	url, replicaID, advertise string
	ttl                       time.Duration
	target                    discovery.Target
}

func addRegisterFlags(fs *flag.FlagSet) *registerFlags {
	rf := &registerFlags{}
	fs.StringVar(&rf.url, "register", "", "register this shard in the etcd at `URL` (etcd://HOST:PORT[,HOST:PORT...]/PREFIX): PREFIX/shard-I/REPLICA-ID, under a lease kept alive while the shard runs and revoked when it stops")
	bounds.Range{Min: int64(discovery.MinTTL), Max: int64(discovery.MaxTTL), Unit: bounds.Duration,
		Why: "etcd leases are whole seconds, and a registration outlives a killed shard by up to its TTL"}.
		DurationVar(fs, &rf.ttl, "register-ttl", discovery.DefaultTTL, "with --register: the lease `TTL`, how long the registration outlives a shard that dies without stopping")
	fs.StringVar(&rf.replicaID, "replica-id", "", "with --register: this replica's `id`, unique under the prefix (default: the advertised address)")
	fs.StringVar(&rf.advertise, "advertise", "", "with --register: the `address` proxies dial (default: the listen address, which must then not be a wildcard such as 0.0.0.0)")
	return rf
}

// check validates the flags before the shard starts (an index build can take minutes): listen is
// the --listen value.
func (rf *registerFlags) check(listen string) error {
	if rf.url == "" {
		for name, set := range map[string]bool{"--replica-id": rf.replicaID != "", "--advertise": rf.advertise != ""} {
			if set {
				return fmt.Errorf("%s needs --register", name)
			}
		}
		return nil
	}
	var err error
	if rf.target, err = discovery.ParseTarget(rf.url); err != nil {
		return fmt.Errorf("--register: %w", err)
	}
	if rf.ttl == 0 {
		rf.ttl = discovery.DefaultTTL
	}
	if _, err := discovery.Advertised(listen, rf.advertise); err != nil {
		return fmt.Errorf("--register: %w", err)
	}
	if rf.replicaID != "" {
		if err := (discovery.Registration{Shard: "s", ReplicaID: rf.replicaID, Address: "127.0.0.1:1"}).Validate(); err != nil {
			return fmt.Errorf("--replica-id: %w", err)
		}
	}
	return nil
}

// registerShard registers the shard serving part at bound (its listener's address) and returns
// the function that deregisters it and closes the etcd client; without --register it does
// nothing. The first registration must succeed within 10 s.
func (rf *registerFlags) registerShard(ctx context.Context, part corpus.Partition, bound string, reg prometheus.Registerer, log *slog.Logger) (func(context.Context), error) {
	if rf.url == "" {
		return func(context.Context) {}, nil
	}
	addr, err := discovery.Advertised(bound, rf.advertise)
	if err != nil {
		return nil, fmt.Errorf("--register: %w", err)
	}
	id := rf.replicaID
	if id == "" {
		id = addr
	}
	cli, err := rf.target.Client()
	if err != nil {
		return nil, fmt.Errorf("--register: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := discovery.Register(rctx, cli, rf.target,
		discovery.Registration{Shard: discovery.ShardName(part), Partition: part.String(), ReplicaID: id, Address: addr, Version: version},
		discovery.WithTTL(rf.ttl), discovery.WithRegisterLogger(log), discovery.WithRegisterMetrics(discovery.NewMetrics(reg)))
	if err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("--register: %w (is etcd serving at %s?)", err, rf.url)
	}
	return func(ctx context.Context) {
		if err := r.Close(ctx); err != nil {
			log.Warn("deregistering", "err", err)
		}
		_ = cli.Close()
	}, nil
}
