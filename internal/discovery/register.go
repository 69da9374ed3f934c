package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultTTL is the default lease TTL of a registration: how long a registrant that died stays
// in the registry.
const DefaultTTL = 10 * time.Second

// Bounds of a registration's TTL. etcd leases have whole seconds, and etcd lengthens a TTL below
// its minimum (1.5 s with its default election timeout).
const (
	MinTTL = 2 * time.Second
	MaxTTL = time.Hour
)

// ErrReplicaTaken is returned by Register when another live registrant holds the key with
// another address.
var ErrReplicaTaken = errors.New("replica id already registered")

// Registrar keeps one registration in etcd until Close: the key under a lease it keeps alive,
// written again under a new lease whenever the lease is lost (etcd restarted without its data,
// or was unreachable for longer than the TTL).
type Registrar struct {
	cli    *clientv3.Client
	reg    Registration
	key    string
	value  string
	ttl    time.Duration
	log    *slog.Logger
	m      *Metrics
	cancel context.CancelFunc
	done   chan struct{}
	// lease is the current lease: written by run while it runs, read by Close after it ends.
	lease clientv3.LeaseID
}

// RegisterOption configures Register.
type RegisterOption func(*Registrar)

// WithTTL sets the lease TTL, rounded up to whole seconds; Register rejects one outside
// [MinTTL, MaxTTL]. Default: DefaultTTL.
func WithTTL(ttl time.Duration) RegisterOption { return func(r *Registrar) { r.ttl = ttl } }

// WithRegisterLogger sets where registration and lease loss are logged. Default: slog.Default().
func WithRegisterLogger(log *slog.Logger) RegisterOption { return func(r *Registrar) { r.log = log } }

// WithRegisterMetrics counts registrations in m. Default: no metrics.
func WithRegisterMetrics(m *Metrics) RegisterOption { return func(r *Registrar) { r.m = m } }

// Register writes reg under t's prefix with a lease and returns once it is there, with a
// Registrar that keeps the lease alive until Close. ctx bounds this first registration only.
//
// If the key exists under another lease with the same address (this replica restarted before its
// old lease expired), Register takes it over; with another address it fails with
// ErrReplicaTaken. cli stays the caller's, and must outlive the Registrar.
func Register(ctx context.Context, cli *clientv3.Client, t Target, reg Registration, opts ...RegisterOption) (*Registrar, error) {
	if err := reg.Validate(); err != nil {
		return nil, fmt.Errorf("registration: %w", err)
	}
	r := &Registrar{cli: cli, reg: reg, key: reg.Key(t.Prefix), value: reg.encode(), ttl: DefaultTTL, log: slog.Default(), done: make(chan struct{})}
	for _, o := range opts {
		o(r)
	}
	if r.m == nil {
		r.m = NewMetrics(prometheus.NewRegistry())
	}
	if r.ttl < MinTTL || r.ttl > MaxTTL {
		return nil, fmt.Errorf("registration TTL %v: want %v to %v", r.ttl, MinTTL, MaxTTL)
	}
	lease, err := r.register(ctx)
	if err != nil {
		return nil, err
	}
	r.lease = lease
	r.log.Info("registered", "key", r.key, "address", reg.Address, "ttl", r.ttl, "lease", fmt.Sprintf("%x", int64(lease)))
	runCtx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.run(runCtx)
	return r, nil
}

// Key returns the registration's key.
func (r *Registrar) Key() string { return r.key }

// ttlSeconds is the TTL in whole seconds, rounded up.
func (r *Registrar) ttlSeconds() int64 { return int64(math.Ceil(r.ttl.Seconds())) }

// register grants a lease and writes the key under it, unless a live registration with another
// address holds the key.
func (r *Registrar) register(ctx context.Context) (clientv3.LeaseID, error) {
	where := fmt.Sprintf("etcd %v: register %s", r.cli.Endpoints(), r.key)
	g, err := r.cli.Grant(ctx, r.ttlSeconds())
	if err != nil {
		r.m.registrations.WithLabelValues("error").Inc()
		return 0, fmt.Errorf("%s: lease: %w", where, err)
	}
	put := clientv3.OpPut(r.key, r.value, clientv3.WithLease(g.ID))
	txn, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(r.key), "=", 0)).
		Then(put).Else(clientv3.OpGet(r.key)).Commit()
	if err == nil && !txn.Succeeded {
		kvs := txn.Responses[0].GetResponseRange().GetKvs()
		if len(kvs) == 0 { // deleted in between: the next attempt writes it
			err = errors.New("key deleted while registering; try again")
		} else if old, derr := decodeRegistration(kvs[0].Value); derr != nil || old.Address != r.reg.Address {
			err = fmt.Errorf("%w: %s holds %q (lease %x); give this replica another --replica-id, or wait for that lease to expire",
				ErrReplicaTaken, r.key, kvs[0].Value, kvs[0].Lease)
		} else { // this replica's earlier registration: take it over, unless it changed meanwhile
			var t2 *clientv3.TxnResponse
			t2, err = r.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(r.key), "=", kvs[0].ModRevision)).Then(put).Commit()
			if err == nil && !t2.Succeeded {
				err = errors.New("key changed while registering; try again")
			}
		}
	}
	if err != nil {
		r.m.registrations.WithLabelValues("error").Inc()
		// The lease would expire on its own; revoking it spares etcd the wait.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_, _ = r.cli.Revoke(rctx, g.ID)
		cancel()
		return 0, fmt.Errorf("%s: %w", where, err)
	}
	r.m.registrations.WithLabelValues("ok").Inc()
	return g.ID, nil
}

// run keeps the lease alive and registers again when it is lost, until ctx is cancelled.
func (r *Registrar) run(ctx context.Context) {
	defer close(r.done)
	for {
		if ch, err := r.cli.KeepAlive(ctx, r.lease); err == nil {
			for range ch { // the client renews at a third of the TTL; the channel closes when the lease is lost
			}
		}
		if ctx.Err() != nil {
			return
		}
		r.m.registrations.WithLabelValues("lost").Inc()
		r.log.Warn("registration lease lost; registering again", "key", r.key, "lease", fmt.Sprintf("%x", int64(r.lease)))
		backoff := 100 * time.Millisecond
		for {
			actx, cancel := context.WithTimeout(ctx, max(r.ttl, 2*time.Second))
			lease, err := r.register(actx)
			cancel()
			if err == nil {
				r.lease = lease
				r.log.Info("registered again", "key", r.key, "lease", fmt.Sprintf("%x", int64(lease)))
				break
			}
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("registering again failed; retrying", "key", r.key, "in", backoff, "err", err)
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, r.ttl/2)
		}
	}
}

// Close stops keeping the registration alive and revokes its lease, which deletes the key. It
// waits for the Registrar's goroutine; ctx bounds the revocation. Call it once. If the revocation fails the
// key stays until its lease expires, within the TTL, and the error says so.
func (r *Registrar) Close(ctx context.Context) error {
	r.cancel()
	<-r.done
	if _, err := r.cli.Revoke(ctx, r.lease); err != nil {
		return fmt.Errorf("etcd %v: deregister %s: %w (the key expires within %v)", r.cli.Endpoints(), r.key, err, r.ttl)
	}
	r.log.Info("deregistered", "key", r.key)
	return nil
}

// sleep waits d or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
