package shard

import (
	"log/slog"
	"time"

	"github.com/gatherproxy/gather/internal/bounds"
	"github.com/gatherproxy/gather/internal/corpus"
	"github.com/gatherproxy/gather/internal/shardsvc"
)

// Defaults of the options.
const (
	// DefaultBuildBatchSize is the number of passages per bleve batch (and
	// so per segment file, before the final merge) while building.
	DefaultBuildBatchSize = 400
	// DefaultHitsPerMessage is the largest number of hits the Server sends
	// per SearchResponse (fewer when they would take more than
	// shardsvc.MaxMessageBytes).
	DefaultHitsPerMessage = 64
	// DefaultMaxTopK is the largest top_k the Server accepts, the proxy's
	// default maximum.
	DefaultMaxTopK = bounds.DefaultMaxTopK
	// DefaultMaxQueryBytes is the longest query the Server accepts, the
	// proxy's default maximum.
	DefaultMaxQueryBytes = bounds.DefaultMaxQueryBytes
)

// OpenOption configures [Open].
type OpenOption func(*openConfig)

type openConfig struct {
	logger    *slog.Logger
	progress  func(Progress)
	batchSize int
}

func newOpenConfig(opts []OpenOption) openConfig {
	cfg := openConfig{
		logger:    slog.New(slog.DiscardHandler),
		batchSize: DefaultBuildBatchSize,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	return cfg
}

// WithLogger makes Open log what it does: whether it reuses or builds an
// index and why, and the build's progress. By default Open logs nothing. A
// nil logger is ignored.
func WithLogger(l *slog.Logger) OpenOption {
	return func(c *openConfig) {
		if l != nil {
			c.logger = l
		}
	}
}

// WithProgress makes Open call fn while it builds an index: about every 10%
// of the passages and once more when all are indexed, from the goroutine
// that called Open. fn is not called when Open reuses an index.
func WithProgress(fn func(Progress)) OpenOption {
	return func(c *openConfig) { c.progress = fn }
}

// WithBuildBatchSize sets the number of passages per bleve batch while
// building. Values below 1 mean [DefaultBuildBatchSize].
func WithBuildBatchSize(n int) OpenOption {
	return func(c *openConfig) {
		if n >= 1 {
			c.batchSize = n
		}
	}
}

// Progress reports how far an index build has got.
type Progress struct {
	Partition corpus.Partition
	// Indexed passages so far, out of Total in the partition.
	Indexed, Total int
	// Elapsed since the build started, including a first pass over the
	// corpus to count the partition's passages.
	Elapsed time.Duration
}

// Option configures a [Server].
type Option func(*serverConfig)

type serverConfig struct {
	hitsPerMessage int
	limits         shardsvc.Limits
}

func newServerConfig(opts []Option) serverConfig {
	cfg := serverConfig{
		hitsPerMessage: DefaultHitsPerMessage,
		limits:         shardsvc.Limits{MaxTopK: DefaultMaxTopK, MaxQueryBytes: DefaultMaxQueryBytes},
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	return cfg
}

// WithHitsPerMessage sets the largest number of hits per SearchResponse;
// a message also ends before it would exceed shardsvc.MaxMessageBytes.
// Values below 1 mean [DefaultHitsPerMessage].
func WithHitsPerMessage(n int) Option {
	return func(c *serverConfig) {
		if n >= 1 {
			c.hitsPerMessage = n
		}
	}
}

// WithMaxTopK sets the largest top_k the server accepts; a request for more
// fails with InvalidArgument. Values below 1 mean [DefaultMaxTopK].
func WithMaxTopK(n int) Option {
	return func(c *serverConfig) {
		if n >= 1 {
			c.limits.MaxTopK = n
		}
	}
}

// WithMaxQueryBytes sets the longest query the server accepts, in bytes; a
// longer one fails with InvalidArgument before the index sees it. Values
// below 1 mean [DefaultMaxQueryBytes].
func WithMaxQueryBytes(n int) Option {
	return func(c *serverConfig) {
		if n >= 1 {
			c.limits.MaxQueryBytes = n
		}
	}
}
