package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/bounds"
	"github.com/gatherproxy/gather/internal/flowguard"
	"github.com/gatherproxy/gather/internal/wirecodec"
)

// Config holds the service's tunables. The zero value of a field means its default.
type Config struct {
	// MaxTopK is the largest top_k accepted. Default bounds.DefaultMaxTopK (1000), as on the
	// shards.
	MaxTopK uint32
	// MaxQueryBytes is the longest query accepted, in bytes. Default bounds.DefaultMaxQueryBytes
	// (1024), as on the shards.
	MaxQueryBytes int
	// SendTimeout is how long an answer (a Search answer, a SearchStream message) may wait for the
	// client to make room for it (HTTP/2 flow control) before the call ends with
	// RESOURCE_EXHAUSTED, so a client that stops reading holds a query's resources for at most
	// this long; with Flow set, the client's connection is closed too, which is what releases
	// the bytes grpc-go had queued for it. Default 5s.
	SendTimeout time.Duration
	// Flow, when set, is the flow guard of the server's client connections (its Credentials
	// wrap the server's): answers are held until written, and a client that makes no room for
	// one within SendTimeout loses its connection (see Register and package flowguard).
	Flow *flowguard.Guard
	// MaxAnswerBytes bounds what a query sends back: the encoded SearchResponse, or the hits of a
	// whole SearchStream plus its summary. The merge stops before the hit that would take the
	// answer over it, and the answer says so (truncated, truncation_reason); a top_k that could
	// never fit is refused (INVALID_ARGUMENT). ServerOptions sets the server's send limit to it.
	// Default 4 MiB, the default receive limit of gRPC clients.
	MaxAnswerBytes int
	// HideReplicas puts a replica's ordinal in its shard's list ("replica 1") in place of its
	// address, in answers and error details: ShardResult.replica, and its address in the shard's
	// error text (IP literals in it are masked too). Logs and spans keep the address.
	HideReplicas bool
	// Metrics, when set, records the service's own metrics (NewMetrics).
	Metrics *Metrics
	// Logger, when set, gets one access-log line per query: method, trace id, a hash of the
	// query (its text only with LogQueryText), top_k, hits, coverage, outcome and latency.
	Logger       *slog.Logger
	LogQueryText bool
}

func (c Config) withDefaults() Config {
	if c.MaxTopK == 0 {
		c.MaxTopK = bounds.DefaultMaxTopK
	}
	if c.MaxQueryBytes <= 0 {
		c.MaxQueryBytes = bounds.DefaultMaxQueryBytes
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = 5 * time.Second
	}
	if c.MaxAnswerBytes <= 0 {
		c.MaxAnswerBytes = DefaultMaxAnswerBytes
	}
	return c
}

// DefaultMaxAnswerBytes is the default of Config.MaxAnswerBytes: grpc-go's, and most gRPC
// clients', default receive limit.
const DefaultMaxAnswerBytes = 4 << 20

// ErrInvalid is wrapped by every validation error; the service answers it with INVALID_ARGUMENT.
var ErrInvalid = errors.New("invalid request")

// FieldError is a validation error naming the request field at fault. It wraps ErrInvalid.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return fmt.Sprintf("%v: %s", ErrInvalid, e.Msg) }

// Unwrap returns ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func invalid(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// query is a validated request, the same for Search and SearchStream.
type query struct {
	text         string
	topK         uint32
	requireFull  bool
	shardTimeout time.Duration // 0: no cap from the request
}

// parse validates the fields common to SearchRequest and SearchStreamRequest. Its error messages
// name the field and say what to fix.
func parse(text string, topK uint32, policy queryv1.PartialPolicy, timeout *durationpb.Duration, lim Config) (query, error) {
	q := query{text: strings.TrimSpace(text), topK: topK}
	switch {
	case q.text == "":
		return q, invalid("query", "query is empty: give one or more words to search for")
	case len(text) > lim.MaxQueryBytes:
		return q, invalid("query", "query is %d bytes, over the limit of %d: shorten it", len(text), lim.MaxQueryBytes)
	case !utf8.ValidString(text): // decoded despite that by wirecodec, for this answer
		return q, invalid("query", "query is not valid UTF-8 (bad byte at offset %d): send the text encoded as UTF-8",
			wirecodec.InvalidUTF8At(text))
	case topK == 0:
		return q, invalid("top_k", "top_k is 0: ask for at least 1 hit")
	case topK > lim.MaxTopK:
		return q, invalid("top_k", "top_k is %d, over the limit of %d: ask for fewer hits", topK, lim.MaxTopK)
	}
	switch policy {
	case queryv1.PartialPolicy_PARTIAL_POLICY_UNSPECIFIED, queryv1.PartialPolicy_PARTIAL_POLICY_ALLOW:
	case queryv1.PartialPolicy_PARTIAL_POLICY_REQUIRE_FULL:
		q.requireFull = true
	default:
		return q, invalid("partial_policy", "partial_policy %d is not a known PartialPolicy", policy)
	}
	if timeout != nil {
		if err := timeout.CheckValid(); err != nil {
			return q, invalid("shard_timeout", "shard_timeout: %v", err)
		}
		d := timeout.AsDuration()
		if d < 0 {
			return q, invalid("shard_timeout", "shard_timeout is negative (%s): give a positive cap or leave it unset", d)
		}
		q.shardTimeout = d
	}
	return q, nil
}
