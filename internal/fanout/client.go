// Package fanout is gather's streaming client for the shard tier: it sends one query to every
// shard at once, one server-streaming ShardService.Search call each, and hands the caller one
// sorted Cursor per shard to merge.
//
// Every shard call runs under its own context, derived from the caller's, with its own deadline
// and an idle timeout between frames; the call is cancelled on every exit path and its receiving
// goroutine is always joined by Call.Close.
//
// Fetch less: each shard is asked for a short first message (SearchRequest.first_batch_hits,
// FirstBatch) and decodes its later messages only when the merge needs more of its hits, so that at
// a large fan-out the shards whose hits never reach the answer cost one small message each. From
// fan-out Config.PullFanOut on, the shards are called with Pull, which sends those later messages
// only when asked: the shards then do not encode, nor the network carry, the hits the answer
// cannot take, and a Pull stream outranked by top_k hits given to the merge is half-closed at
// once, so that its shard ends it OK. No stream the answer may need is cut: what the merge does not ask for waits, undecoded, in the
// call's flow-control window, so the answer is the full fetch's by construction. While a call waits
// for the merge its idle timer is off (the proxy is not reading; the shard's silence says nothing).
// A quarter of the way to its deadline the merge is held up by a slow shard, which the deadline may
// cut: a call not needed any more (top_k hits given by the shards rank before its last) is then
// stopped early, and the others read the rest as it comes once the shards the merge waits for have
// gone quiet, so that they are not cut at the deadline with hits unread (see shardCall.drained). A
// shard that fails, stalls, breaks the contract or sends more than the size limits allow ends its
// own cursor early and is reported in its Result; it never blocks the others beyond its deadline,
// and what it can make a query hold is bounded by Config (see its doc comment for the bound).
//
// Replicas: a shard call is one or more attempts, each a stream on one replica in a goroutine of
// its own. The first attempt goes to the replica package replica picks for it (the power of two
// choices over a load score, with outlier ejection); when it has sent no message after the hedge
// delay (package hedge: a percentile of the shard's recent times to first frame), a hedge starts
// on another replica, if the hedge budget, the per-shard deadline and the other replicas allow;
// when it fails with UNAVAILABLE or RESOURCE_EXHAUSTED before its first message, a retry does, on
// the same budget. The first attempt to deliver a message (or to end cleanly) answers for the
// shard: the others are cancelled at once, with ErrHedgeLost as the cause, and joined before
// Call.Close returns. Only the answering attempt's hits reach the cursor, the contract check and
// the query's hit budget.
package fanout

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/keepalive"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/hedge"
	"github.com/gatherproxy/gather/internal/liveness"
	"github.com/gatherproxy/gather/internal/replica"
)

// ShardSpec names one shard and the addresses of its replicas (at most replica.MaxReplicas). The
// order names them in answers that hide addresses ("replica 1"); it is no preference: every
// replica serves.
type ShardSpec struct {
	Name     string
	Replicas []string
}

// Defaults of the size limits of Config. Each is far above what the bundled corpus needs: its
// largest passage is 1163 bytes of text, its longest doc_id 31 bytes, and every passage has 5
// fields of at most 36 bytes (key and value), 1274 bytes in all.
const (
	// DefaultMaxMessageBytes is a quarter of grpc-go's default receive limit (4 MiB) and four
	// times the 256 KiB by which the reference shard packs its messages.
	DefaultMaxMessageBytes = 1 << 20
	// DefaultMaxDocIDBytes is 16 times the corpus's longest doc_id, room for a URL as an id.
	DefaultMaxDocIDBytes = 512
	// DefaultMaxTextBytes is 14 times the corpus's longest passage.
	DefaultMaxTextBytes = 16 << 10
	// DefaultMaxFields is 6 times the corpus's 5 fields.
	DefaultMaxFields = 32
	// DefaultMaxFieldBytes is 28 times the corpus's longest field.
	DefaultMaxFieldBytes = 1 << 10
	// DefaultMaxQueryHitBytes holds top_k 1000 from each of 17 shards of corpus passages (~1.9
	// KiB each by the cost model), or about 530 of the largest hits the other defaults let
	// through (~61 KiB each): 8 times the default answer limit (proxy.Config.MaxAnswerBytes).
	DefaultMaxQueryHitBytes = 32 << 20
	// DefaultMaxHitBytesInFlight is 32 queries at MaxQueryHitBytes, or some 10,000 queries of
	// top_k 10 over 4 shards of corpus passages: what max_in_flight (256) queries at the per-query
	// budget could hold is 8 GiB, beyond most machines.
	DefaultMaxHitBytesInFlight = 1 << 30
	// DefaultPullFanOut is where Pull started to pay in the benchmarks (BENCHMARKS.md): at fan-out
	// 64 it doubled the queries per second of top_k 100, and at fan-out 16 it cost more than it
	// saved.
	DefaultPullFanOut = 32
)

// Config holds the fan-out's tunables. The zero value of a field means its default.
//
// Memory: whatever the shards send, what one query's shard calls hold is bounded by the size
// limits here, with S shards, K = top_k, F = MaxFields and M = MaxMessageBytes, and A the
// attempts a shard call has at once: 1, or 2 for a shard of several replicas while a hedge races
// the attempt it hedges (the loser's first message is decoded, then dropped):
//
// All calls together hold at most MaxHitBytesInFlight of accepted hits; the other terms are
// per call.
//
//	MaxQueryHitBytes                  hits accepted from all shards (counted with the cost model
//	                                  in hit.go, an over-estimate of their heap); only the
//	                                  answering attempt's hits count and are kept
//	+ S × A × 3 × M                   per attempt, one message on its way in: unread in the
//	                                  connection's flow-control window (at most M, set by the
//	                                  client), materialised for reading (M), and its hits'
//	                                  strings, kept encoded (at most M, see the next term)
//	+ S × A × K × (160 + 6 × F)       ... and that message's hits (ShardHit and the codec's
//	                                  scratch), and the bytes the canonical encoding can add to
//	                                  an entry; at most K and K × F, counted before reading
//	+ S × A × MaxHeaderBytes          its headers and trailers
//
// With the defaults, K = 10, S = 4 and A = 1 that is 32 MiB + 12 MiB + 14 KiB + 64 KiB (A = 2:
// 32 MiB + 24 MiB + 28 KiB + 128 KiB); the budget term is the one that grows with the answers'
// real size, as the others are transient. The answer the proxy builds is bounded separately
// (proxy.Config.MaxAnswerBytes).
type Config struct {
	// ShardTimeout bounds each shard call, from when its query arrived (Request.Arrived: a wait
	// for an admission slot counts, up to half of it). Default 2s.
	ShardTimeout time.Duration
	// IdleTimeout bounds the silence between two frames of a shard's stream, from the first frame
	// on (the wait for the first frame is the shard's search, bounded by ShardTimeout). Default 1s.
	IdleTimeout time.Duration
	// MergeReserve is kept back from the caller's deadline for merging and answering, so shard
	// calls end before the caller gives up: at least this, at least 5% of the caller's
	// remaining time, and at least 1.5 times how late answers recently were after their shard
	// deadline (Client.Answered; at most half the remaining time). Default 20ms.
	MergeReserve time.Duration
	// Buffer is how many decoded batches each shard may have waiting for the merge. A shard's
	// messages after its first are decoded one at a time as the merge asks for them (see
	// Cursor), so more than one waits only once its call has drained, a quarter of the way to
	// its deadline. Default 4.
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

	// MaxMessageBytes is the largest shard message read (grpc.MaxCallRecvMsgSize of every shard
	// call, and the flow-control window of each call, so a shard cannot park more than this
	// unread either). A larger message ends the shard's call as a protocol violation without
	// being read. Default DefaultMaxMessageBytes.
	MaxMessageBytes int
	// MaxDocIDBytes, MaxTextBytes, MaxFields and MaxFieldBytes cap each hit: its doc_id, its
	// text, the entries of its fields map and each entry's key plus value, in bytes. A hit over
	// a cap is a protocol violation: it and everything after it is dropped. Defaults
	// DefaultMaxDocIDBytes, DefaultMaxTextBytes, DefaultMaxFields, DefaultMaxFieldBytes.
	MaxDocIDBytes, MaxTextBytes, MaxFields, MaxFieldBytes int
	// MaxQueryHitBytes is the budget of one query for the hits of all its shards, counted as
	// hits are accepted, with the cost model in hit.go (a hit's heap: its text and fields as
	// received, a little more than their encoding, and its share of the bookkeeping). The shard whose batch would cross it ends
	// with StatusResourceExhausted and an error that says so; the hits that fit, of that batch
	// and before, are kept, and so the answer is degraded. Every other shard that still sends
	// ends the same way. Default DefaultMaxQueryHitBytes.
	MaxQueryHitBytes int64
	// MaxHitBytesInFlight bounds the hits all calls of the Client hold at once, counted like
	// MaxQueryHitBytes; a call gives back what it took when it is closed. A shard whose batch
	// would cross it ends like one that crosses MaxQueryHitBytes, with an error naming this
	// bound. At least MaxQueryHitBytes. Default DefaultMaxHitBytesInFlight.
	MaxHitBytesInFlight int64

	// PullFanOut: the shard calls of a query at a fan-out of at least this many shards use the
	// shards' Pull method, which sends a shard's batches after its first only as the merge asks
	// for them, rather than Search, which sends them all at once for the proxy to read or not.
	// Pull spares the shards and the network the hits that cannot reach the answer, most of
	// them at a large fan-out, and costs a round trip for each batch asked for; below this
	// fan-out the saving is too small to pay for it. A shard replica that answers Pull with
	// UNIMPLEMENTED or PERMISSION_DENIED is called with Search from then on. Default DefaultPullFanOut; below 0,
	// Pull is never used.
	PullFanOut int

	// Hedge configures hedging and the budget of hedges and retries (hedge.Config: the delay's
	// percentile, default p95; the budget, default 5% extra shard calls, hedge.Off for none).
	Hedge hedge.Config
	// Replica configures the choice of replica and outlier ejection in each shard of more than
	// one replica (replica.Config; its Health and OnEject are the fan-out's own).
	Replica replica.Config
	// OnReplicaDown, if set, is called when an attempt on a replica fails UNAVAILABLE before its
	// first message (connection refused or lost, the replica shutting down), with the shard's
	// name and the replica's address: how DNS discovery learns to resolve again at once. It is
	// called on the query's goroutine and must not block.
	OnReplicaDown func(shard, addr string)
	// Registerer gets the fan-out's metrics: replica scores, selections and ejections, hedges,
	// retries, the hedge delays and the budget's tokens. Default: none exported.
	Registerer prometheus.Registerer
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
	if c.PullFanOut == 0 {
		c.PullFanOut = DefaultPullFanOut
	}
	if c.Tracer == nil {
		c.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if c.Keepalive == (keepalive.ClientParameters{}) {
		c.Keepalive = liveness.Client{}.Params()
	}
	for _, d := range []struct {
		v   *int
		def int
	}{{&c.MaxMessageBytes, DefaultMaxMessageBytes}, {&c.MaxDocIDBytes, DefaultMaxDocIDBytes},
		{&c.MaxTextBytes, DefaultMaxTextBytes}, {&c.MaxFields, DefaultMaxFields}, {&c.MaxFieldBytes, DefaultMaxFieldBytes}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if c.MaxQueryHitBytes <= 0 {
		c.MaxQueryHitBytes = DefaultMaxQueryHitBytes
	}
	if c.MaxHitBytesInFlight <= 0 {
		c.MaxHitBytesInFlight = DefaultMaxHitBytesInFlight
	}
	c.MaxHitBytesInFlight = max(c.MaxHitBytesInFlight, c.MaxQueryHitBytes)
	c.Hedge = c.Hedge.WithDefaults()
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	return c
}

// dialOptions are the options that enforce the size limits on every shard connection.
func (c Config) dialOptions() []grpc.DialOption {
	// A fixed window also turns off grpc-go's BDP estimation, which would let a stream's window
	// grow to 16 MiB whether or not the proxy reads. The connection's window is refilled as data
	// arrives, not as it is read, so it only paces the connection.
	window := int32(max(c.MaxMessageBytes, 64<<10))
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(c.MaxMessageBytes)),
		grpc.WithMaxHeaderListSize(MaxHeaderBytes),
		grpc.WithInitialWindowSize(window),
		grpc.WithInitialConnWindowSize(max(window, 16<<20)),
	}
}

// reconnect bounds how long a shard that came back waits for the proxy to notice: grpc-go's
// default backoff grows to 120s between attempts, far too long for an index shard that restarted.
var reconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
	MinConnectTimeout: 2 * time.Second,
}

// Client fans queries out to the shards of its topology, which Update replaces while queries
// run. It is safe for concurrent use; Close releases its connections.
type Client struct {
	cfg     Config
	limits  limits
	budget  *hedge.Budget // nil: no hedges, no budgeted retries
	held    atomic.Int64  // hit bytes taken by calls not yet closed, at most MaxHitBytesInFlight
	lag     answerLag     // recent lag of answers past their shard deadline (see reserve)
	metrics *metrics
	codec   encoding.CodecV2 // grpc-go's proto codec, which the calls' codecs wrap
	// topo is the current topology; each call holds the one it started with (see topology.go).
	topo atomic.Pointer[Topology]
	// mu serialises Update and Close, and guards what the topologies share: the connections
	// and the shards' metric series, each counted by the topologies that hold it.
	mu        sync.Mutex
	endpoints map[endpointKey]*endpoint
	names     map[string]int // shard name -> topologies that have it
	version   uint64         // of the current topology
	closed    bool
	closers   sync.WaitGroup // the goroutines that close a retired topology's connections
	// work runs the shard calls (see workers).
	work *workers
	// tracing is false with a no-op Config.Tracer: the shard calls then start no span, which
	// would cost a context and an allocation each for nothing.
	tracing bool
	// sets recycles the calls' duplicate sets (map[string]struct{}), emptied, so that a call
	// does not grow a new one.
	sets sync.Pool
}

type shard struct {
	name     string
	replicas []*endpoint // may be empty: a discovered shard that has lost every replica
	// set chooses among the replicas and ejects outliers; delay is the hedge delay. Both are nil
	// for a shard of one replica, whose calls have nowhere else to go; delay is nil with hedging
	// off too.
	set   *replica.Set
	delay *hedge.Delay
	m     shardMetrics
	// spanName and spanOpts start the span of each call to the shard; made once, they cost a
	// query nothing (building them per call took four allocations per shard).
	spanName string
	spanOpts []trace.SpanStartOption
}

// endpoint is one replica of a shard: its connection, shared by every topology that has the
// shard with that address.
type endpoint struct {
	addr   string
	conn   *grpc.ClientConn
	client shardv1.ShardServiceClient
	refs   int // topologies that hold it; guarded by Client.mu
	// noPull: the replica refused Pull (see pullAttempt); it is called with Search.
	noPull atomic.Bool
}

type endpointKey struct{ shard, addr string }

// health is the replica.Health of an endpoint's connection.
func (e *endpoint) health() replica.Health {
	switch e.conn.GetState() {
	case connectivity.Ready, connectivity.Idle:
		return replica.Ready
	case connectivity.TransientFailure, connectivity.Shutdown:
		return replica.Down
	}
	return replica.Connecting
}

// New validates the topology, creates a connection to every replica and registers the fan-out's
// metrics with cfg.Registerer. Connections are made lazily by grpc-go and re-established on
// failure; New itself does no network I/O. The topology may be empty, or have shards without a
// replica, when Update is to fill it in (discovery): calls to such a shard end UNAVAILABLE.
func New(topology []ShardSpec, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	c := &Client{cfg: cfg, codec: encoding.GetCodecV2(grpcproto.Name), budget: hedge.NewBudget(cfg.Hedge),
		limits:    limits{docID: cfg.MaxDocIDBytes, text: cfg.MaxTextBytes, fields: cfg.MaxFields, fieldBytes: cfg.MaxFieldBytes},
		endpoints: map[endpointKey]*endpoint{}, names: map[string]int{}, work: newWorkers()}
	_, isNoop := cfg.Tracer.(noop.Tracer)
	c.tracing = !isNoop
	c.metrics = newMetrics()
	if _, err := c.Update(topology); err != nil {
		_ = c.Close()
		return nil, err
	}
	if err := cfg.Registerer.Register(c.metrics.collector(c)); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("fan-out metrics: %w", err)
	}
	return c, nil
}

// dial makes the connection of a new endpoint.
func (c *Client) dial(shard, addr string) (*endpoint, error) {
	opts := append(append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(c.cfg.Keepalive),
		grpc.WithConnectParams(reconnect),
	}, c.cfg.dialOptions()...), c.cfg.DialOptions...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("shard %s: replica %q: %w", shard, addr, err)
	}
	conn.Connect()
	return &endpoint{addr: addr, conn: conn, client: shardv1.NewShardServiceClient(conn)}, nil
}

// ReplicaStates returns the connectivity state of every replica connection of the current
// topology, by shard name and replica address; a shard without replicas has an empty map.
func (c *Client) ReplicaStates() map[string]map[string]connectivity.State {
	t := c.topo.Load()
	out := make(map[string]map[string]connectivity.State, len(t.shards))
	for _, s := range t.shards {
		out[s.name] = make(map[string]connectivity.State, len(s.replicas))
		for _, r := range s.replicas {
			out[s.name][r.addr] = r.conn.GetState()
		}
	}
	return out
}

// Close closes every replica connection, and returns once the goroutines that ran shard calls
// have exited. Calls still running fail with UNAVAILABLE, and Close waits for their goroutines
// too: one that holds hits its caller has not taken ends when the caller closes the call (Call
// Close), as it must. Update fails from now on.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	var errs []error
	for k, e := range c.endpoints {
		if err := e.conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("shard %s: replica %s: %w", k.shard, k.addr, err))
		}
	}
	clear(c.endpoints)
	c.mu.Unlock()
	c.closers.Wait()
	c.work.Close()
	return errors.Join(errs...)
}

// seenSet returns an empty duplicate set for a call; releaseSet takes it back.
func (c *Client) seenSet() map[string]struct{} {
	if m, ok := c.sets.Get().(map[string]struct{}); ok {
		return m
	}
	return make(map[string]struct{}, 64)
}

// releaseSet empties m and keeps it for a later call, unless it grew past what a common query
// needs (a cleared map keeps its size, and clearing costs as much).
func (c *Client) releaseSet(m map[string]struct{}) {
	if len(m) > 1024 {
		return
	}
	clear(m)
	c.sets.Put(m)
}
