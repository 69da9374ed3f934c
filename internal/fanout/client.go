// Package fanout is gather's streaming client for the shard tier: it sends one query to every
// shard at once, one server-streaming ShardService.Search call each, and hands the caller one
// sorted Cursor per shard to merge.
//
// Every shard call runs under its own context, derived from the caller's, with its own deadline
// and an idle timeout between frames; the call is cancelled on every exit path and its receiving
// goroutine is always joined by Call.Close. A shard that fails, stalls or breaks the ordering
// contract ends its own cursor early and is reported in its Result; it never blocks the others
// beyond its deadline.
package fanout

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/liveness"
)

// ShardSpec names one shard and the addresses of its replicas, in order of preference.
type ShardSpec struct {
	Name     string
	Replicas []string
}

// Config holds the fan-out's tunables. The zero value of a field means its default.
type Config struct {
	// ShardTimeout bounds each shard call. Default 2s.
	ShardTimeout time.Duration
	// IdleTimeout bounds the silence between two frames of a shard's stream, from the first frame
	// on (the wait for the first frame is the shard's search, bounded by ShardTimeout). Default 1s.
	IdleTimeout time.Duration
	// MergeReserve is kept back from the caller's deadline for merging and answering, so shard
	// calls end before the caller gives up: at least this, and at least 5% of the caller's
	// remaining time. Default 20ms.
	MergeReserve time.Duration
	// Buffer is how many received batches each shard may have waiting for the merge. Default 4.
	Buffer int
	// Keepalive is applied to every shard connection. Default: liveness.Client{}.Params(), a ping
	// after 10s without activity, given up 3s later, also without active calls, which gather's
	// shards permit.
	Keepalive keepalive.ClientParameters
	// DialOptions are appended to the options of every shard connection (the wiring adds
	// interceptors and stats handlers here).
	DialOptions []grpc.DialOption
	// Tracer makes one span per shard call, a child of the caller's span, with the shard, the
	// replica, the hits, the status and why the call was cut. Default: no spans.
	Tracer trace.Tracer
}

func (c Config) withDefaults() Config {
	if c.ShardTimeout <= 0 {
		c.ShardTimeout = 2 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = time.Second
	}
	if c.MergeReserve <= 0 {
		c.MergeReserve = 20 * time.Millisecond
	}
	if c.Buffer <= 0 {
		c.Buffer = 4
	}
	if c.Tracer == nil {
		c.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if c.Keepalive == (keepalive.ClientParameters{}) {
		c.Keepalive = liveness.Client{}.Params()
	}
	return c
}

// reconnect bounds how long a shard that came back waits for the proxy to notice: grpc-go's
// default backoff grows to 120s between attempts, far too long for an index shard that restarted.
var reconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
	MinConnectTimeout: 2 * time.Second,
}

// Client fans queries out to a fixed topology of shards. It is safe for concurrent use; Close
// releases its connections.
type Client struct {
	cfg    Config
	shards []*shard // sorted by name, so a shard's index orders it the way merged ties are broken
}

type shard struct {
	name     string
	replicas []*replica
	// spanName and spanOpts start the span of each call to the shard; made once, they cost a
	// query nothing (building them per call took four allocations per shard).
	spanName string
	spanOpts []trace.SpanStartOption
}

type replica struct {
	addr   string
	conn   *grpc.ClientConn
	client shardv1.ShardServiceClient
}

// New validates the topology and creates a connection to every replica. Connections are made
// lazily by grpc-go and re-established on failure; New itself does no network I/O.
func New(topology []ShardSpec, cfg Config) (*Client, error) {
	if len(topology) == 0 {
		return nil, errors.New("no shards configured")
	}
	cfg = cfg.withDefaults()
	c := &Client{cfg: cfg}
	fail := func(err error) (*Client, error) {
		_ = c.Close()
		return nil, err
	}
	seen := map[string]bool{}
	for _, spec := range topology {
		if spec.Name == "" {
			return fail(errors.New("a shard has no name"))
		}
		if seen[spec.Name] {
			return fail(fmt.Errorf("shard %s: configured twice", spec.Name))
		}
		seen[spec.Name] = true
		if len(spec.Replicas) == 0 {
			return fail(fmt.Errorf("shard %s: no replica address", spec.Name))
		}
		s := &shard{name: spec.Name, spanName: "shard " + spec.Name, spanOpts: []trace.SpanStartOption{
			trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithAttributes(attribute.String("gather.shard", spec.Name)),
		}}
		for _, addr := range spec.Replicas {
			addr = strings.TrimSpace(addr)
			opts := append([]grpc.DialOption{
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithKeepaliveParams(cfg.Keepalive),
				grpc.WithConnectParams(reconnect),
			}, cfg.DialOptions...)
			conn, err := grpc.NewClient(addr, opts...)
			if err != nil {
				return fail(fmt.Errorf("shard %s: replica %q: %w", spec.Name, addr, err))
			}
			conn.Connect()
			s.replicas = append(s.replicas, &replica{addr: addr, conn: conn, client: shardv1.NewShardServiceClient(conn)})
		}
		c.shards = append(c.shards, s)
	}
	slices.SortFunc(c.shards, func(a, b *shard) int { return strings.Compare(a.name, b.name) })
	return c, nil
}

// Shards returns the shard names in merge order (ascending).
func (c *Client) Shards() []string {
	names := make([]string, len(c.shards))
	for i, s := range c.shards {
		names[i] = s.name
	}
	return names
}

// ReplicaStates returns the connectivity state of every replica connection, by shard name and
// replica address.
func (c *Client) ReplicaStates() map[string]map[string]connectivity.State {
	out := make(map[string]map[string]connectivity.State, len(c.shards))
	for _, s := range c.shards {
		out[s.name] = make(map[string]connectivity.State, len(s.replicas))
		for _, r := range s.replicas {
			out[s.name][r.addr] = r.conn.GetState()
		}
	}
	return out
}

// Close closes every replica connection. Calls still running fail with UNAVAILABLE.
func (c *Client) Close() error {
	var errs []error
	for _, s := range c.shards {
		for _, r := range s.replicas {
			if err := r.conn.Close(); err != nil {
				errs = append(errs, fmt.Errorf("shard %s: replica %s: %w", s.name, r.addr, err))
			}
		}
	}
	return errors.Join(errs...)
}

// order returns the replicas to try for one call: healthy ones (not in TRANSIENT_FAILURE) first,
// each group in configured order.
func (s *shard) order() []*replica {
	if len(s.replicas) == 1 {
		return s.replicas
	}
	out := make([]*replica, 0, len(s.replicas))
	for _, r := range s.replicas {
		if r.conn.GetState() != connectivity.TransientFailure {
			out = append(out, r)
		}
	}
	for _, r := range s.replicas {
		if r.conn.GetState() == connectivity.TransientFailure {
			out = append(out, r)
		}
	}
	return out
}
