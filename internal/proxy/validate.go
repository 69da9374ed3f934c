package proxy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
)

// Limits bound what a request may ask for. The zero value of a field means its default.
type Limits struct {
	// MaxTopK is the largest top_k accepted. Default 1000.
	MaxTopK uint32
	// MaxQueryBytes is the longest query accepted, in bytes. Default 1024.
	MaxQueryBytes int
}

func (l Limits) withDefaults() Limits {
	if l.MaxTopK == 0 {
		l.MaxTopK = 1000
	}
	if l.MaxQueryBytes <= 0 {
		l.MaxQueryBytes = 1024
	}
	return l
}

// ErrInvalid is wrapped by every validation error; the service answers it with INVALID_ARGUMENT.
var ErrInvalid = errors.New("invalid request")

// query is a validated request, the same for Search and SearchStream.
type query struct {
	text         string
	topK         uint32
	requireFull  bool
	shardTimeout time.Duration // 0: no cap from the request
}

// parse validates the fields common to SearchRequest and SearchStreamRequest. Its error messages
// name the field and say what to fix.
func parse(text string, topK uint32, policy queryv1.PartialPolicy, timeout *durationpb.Duration, lim Limits) (query, error) {
	q := query{text: strings.TrimSpace(text), topK: topK}
	switch {
	case q.text == "":
		return q, fmt.Errorf("%w: query is empty: give one or more words to search for", ErrInvalid)
	case len(text) > lim.MaxQueryBytes:
		return q, fmt.Errorf("%w: query is %d bytes, over the limit of %d: shorten it", ErrInvalid, len(text), lim.MaxQueryBytes)
	case topK == 0:
		return q, fmt.Errorf("%w: top_k is 0: ask for at least 1 hit", ErrInvalid)
	case topK > lim.MaxTopK:
		return q, fmt.Errorf("%w: top_k is %d, over the limit of %d: ask for fewer hits", ErrInvalid, topK, lim.MaxTopK)
	}
	switch policy {
	case queryv1.PartialPolicy_PARTIAL_POLICY_UNSPECIFIED, queryv1.PartialPolicy_PARTIAL_POLICY_ALLOW:
	case queryv1.PartialPolicy_PARTIAL_POLICY_REQUIRE_FULL:
		q.requireFull = true
	default:
		return q, fmt.Errorf("%w: partial_policy %d is not a known PartialPolicy", ErrInvalid, policy)
	}
	if timeout != nil {
		if err := timeout.CheckValid(); err != nil {
			return q, fmt.Errorf("%w: shard_timeout: %w", ErrInvalid, err)
		}
		d := timeout.AsDuration()
		if d < 0 {
			return q, fmt.Errorf("%w: shard_timeout is negative (%s): give a positive cap or leave it unset", ErrInvalid, d)
		}
		q.shardTimeout = d
	}
	return q, nil
}
