package synthetic

import (
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/bounds"
	"github.com/gatherproxy/gather/internal/shardsvc"
)

// Defaults of the options.
const (
	// DefaultHitsPerMessage is the largest number of hits per SearchResponse, as for the
	// reference shard (fewer when they would take more than shardsvc.MaxMessageBytes).
	DefaultHitsPerMessage = 64
	// DefaultTextBytes is the length of each hit's text, about that of a reference passage.
	DefaultTextBytes = 200
	// MaxTextBytes is the longest text a hit may have: 64 KiB, far above any passage, and small
	// enough that a hit always fits in a shard message.
	MaxTextBytes = 64 << 10
	// DefaultMaxTopK is the largest top_k the server accepts, as for the reference shard and
	// the proxy.
	DefaultMaxTopK = bounds.DefaultMaxTopK
	// DefaultMaxQueryBytes is the longest query the server accepts, as for the reference shard
	// and the proxy.
	DefaultMaxQueryBytes = bounds.DefaultMaxQueryBytes
	// DefaultDocuments is the document count the server reports.
	DefaultDocuments = 1_000_000
	// DefaultCacheHits bounds the hits kept in the response cache (a few MB at the default text
	// length, since texts are shared).
	DefaultCacheHits = 1 << 16
)

// Option configures a [Server].
type Option func(*config)

type config struct {
	hitsPerMessage int
	textBytes      int
	limits         shardsvc.Limits
	documents      uint64
	cacheHits      int
	latency        Latency
}

// WithHitsPerMessage sets the largest number of hits per SearchResponse; a message also ends
// before it would exceed shardsvc.MaxMessageBytes. Values below 1 mean [DefaultHitsPerMessage].
func WithHitsPerMessage(n int) Option {
	return func(c *config) {
		if n >= 1 {
			c.hitsPerMessage = n
		}
	}
}

// WithTextBytes sets the length in bytes of each hit's text; 0 sends hits without text. Negative
// values mean [DefaultTextBytes], and values above [MaxTextBytes] are taken as MaxTextBytes.
func WithTextBytes(n int) Option {
	return func(c *config) {
		if n >= 0 {
			c.textBytes = min(n, MaxTextBytes)
		}
	}
}

// WithMaxTopK sets the largest top_k the server accepts; a request for more fails with
// InvalidArgument. Values below 1 mean [DefaultMaxTopK].
func WithMaxTopK(n int) Option {
	return func(c *config) {
		if n >= 1 {
			c.limits.MaxTopK = n
		}
	}
}

// WithMaxQueryBytes sets the longest query the server accepts, in bytes; a longer one fails with
// InvalidArgument. Values below 1 mean [DefaultMaxQueryBytes].
func WithMaxQueryBytes(n int) Option {
	return func(c *config) {
		if n >= 1 {
			c.limits.MaxQueryBytes = n
		}
	}
}

// WithDocuments sets the document count reported on the first message of every answer. 0 means
// [DefaultDocuments].
func WithDocuments(n uint64) Option {
	return func(c *config) {
		if n > 0 {
			c.documents = n
		}
	}
}

// WithCacheHits bounds the number of hits kept in the response cache; when a new answer does not
// fit, older ones are evicted. 0 turns the cache off (every call builds its answer). Negative
// values mean [DefaultCacheHits].
func WithCacheHits(n int) Option {
	return func(c *config) {
		if n >= 0 {
			c.cacheHits = n
		}
	}
}

// WithLatency sets the delay model. nil (the default) means no delay.
func WithLatency(l Latency) Option {
	return func(c *config) { c.latency = l }
}

// Server is a synthetic gather.shard.v1.ShardService. Create it with [New]; it is safe for
// concurrent use and holds no resources beyond memory, so it needs no closing.
type Server struct {
	shardv1.UnimplementedShardServiceServer

	cfg   config
	gen   *generator
	cache cache
}

var _ shardv1.ShardServiceServer = (*Server)(nil)

// New returns a Server whose hits are derived from seed. Building it generates the text pool
// (about 1024 × the text length), so build one per shard, not per call.
func New(seed uint64, opts ...Option) *Server {
	cfg := config{
		hitsPerMessage: DefaultHitsPerMessage,
		textBytes:      DefaultTextBytes,
		limits:         shardsvc.Limits{MaxTopK: DefaultMaxTopK, MaxQueryBytes: DefaultMaxQueryBytes},
		documents:      DefaultDocuments,
		cacheHits:      DefaultCacheHits,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	return &Server{
		cfg:   cfg,
		gen:   newGenerator(seed, cfg.textBytes),
		cache: cache{limit: cfg.cacheHits, m: make(map[cacheKey]*answer)},
	}
}

// Search implements the ShardService Search RPC.
//
// It validates the request like the reference shard (InvalidArgument for a query that is blank,
// not UTF-8 or too long, and for a top_k of 0 or above the maximum), waits for the delay of the
// latency model, then streams exactly top_k hits in the contract's order, at most the configured
// hits per message and at most shardsvc.MaxMessageBytes per message, honouring the request's
// first_batch_hits (shardsvc.Pace); the first message carries
// total_matches and documents. If the call's context ends during the delay or between
// messages, Search returns Canceled or DeadlineExceeded at once.
func (s *Server) Search(req *shardv1.SearchRequest, stream grpc.ServerStreamingServer[shardv1.SearchResponse]) error {
	if err := shardsvc.Validate(req, s.cfg.limits); err != nil {
		return err
	}
	ctx := stream.Context()
	ans, err := s.answer(req.GetQuery(), req.GetTopK(), req.GetFirstBatchHits())
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if s.cfg.latency != nil {
		if err := shardsvc.Wait(ctx, s.cfg.latency.Next()); err != nil {
			return err
		}
	}
	for i, msg := range ans.msgs {
		if i > 0 && ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		if err := stream.Send(msg); err != nil {
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return err
		}
	}
	return nil
}

// Pull implements the ShardService Pull RPC: Search's messages, each after the first sent when
// the caller asks for it (shardsvc.ServePull).
func (s *Server) Pull(stream grpc.BidiStreamingServer[shardv1.PullRequest, shardv1.SearchResponse]) error {
	return shardsvc.ServePull(stream, s.Search)
}

// Hits returns the hits Search sends for query and topK, in order. The hits are shared with the
// server's cache and must not be modified. Unlike Search it does not validate: a topK below 1
// returns none, and one above the maximum top_k is taken as the maximum.
func (s *Server) Hits(query string, topK int) []*shardv1.Hit {
	if topK < 1 {
		return nil
	}
	ans, err := s.answer(query, uint32(min(topK, s.cfg.limits.MaxTopK)), 0)
	if err != nil {
		return nil
	}
	return append([]*shardv1.Hit(nil), ans.hits...)
}

// answer returns the messages for (query, topK), their first holding at most firstBatch hits
// when it is not 0 (shardsvc.Pace), from the cache or built and cached. It fails only for a hit
// too large for any message, which MaxTextBytes rules out.
func (s *Server) answer(query string, topK, firstBatch uint32) (*answer, error) {
	key := cacheKey{query: query, topK: topK, firstBatch: firstBatch}
	if a := s.cache.get(key); a != nil {
		return a, nil
	}
	hits := s.gen.hits(query, int(topK))
	a := &answer{hits: hits}
	per := s.cfg.hitsPerMessage
	pace := shardsvc.NewPace(&shardv1.SearchRequest{FirstBatchHits: firstBatch}, per)
	a.msgs = make([]*shardv1.SearchResponse, 0, (len(hits)+per-1)/per+1)
	for rest := hits; len(rest) > 0 || len(a.msgs) == 0; {
		n, err := shardsvc.NextBatch(rest, pace.Next())
		if err != nil {
			return nil, err
		}
		a.msgs = append(a.msgs, &shardv1.SearchResponse{Hits: rest[:n:n]})
		rest = rest[n:]
	}
	a.msgs[0].TotalMatches = s.gen.totalMatches(query, len(hits))
	a.msgs[0].Documents = s.cfg.documents
	s.cache.put(key, a)
	return a, nil
}

// answer is the read-only response to one (query, top_k).
type answer struct {
	hits []*shardv1.Hit
	msgs []*shardv1.SearchResponse
}

type cacheKey struct {
	query      string
	topK       uint32
	firstBatch uint32
}

// cache holds answers up to limit hits in all, evicting arbitrary entries to make room.
type cache struct {
	limit int

	mu   sync.RWMutex
	m    map[cacheKey]*answer
	hits int
}

func (c *cache) get(k cacheKey) *answer {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.m[k]
}

func (c *cache) put(k cacheKey, a *answer) {
	n := len(a.hits)
	if n > c.limit {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; ok {
		return // a concurrent call built the same answer first
	}
	for old, oa := range c.m {
		if c.hits+n <= c.limit {
			break
		}
		delete(c.m, old)
		c.hits -= len(oa.hits)
	}
	c.m[k] = a
	c.hits += n
}
