// Package shardsvc holds what every gather.shard.v1.ShardService implementation shares: request
// validation with the same limits and answers everywhere, the packing of hits into messages of a
// bounded size, and a context-aware wait for the ones that delay their answer on purpose (the
// synthetic shard, fault injection, test doubles).
package shardsvc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/bounds"
	"github.com/gatherproxy/gather/internal/wirecodec"
)

// Limits are the requests a shard accepts. Zero fields take the defaults, which equal the
// proxy's (bounds.DefaultMaxQueryBytes, bounds.DefaultMaxTopK): a query the proxy accepts by
// default, its shards accept by default.
type Limits struct {
	// MaxQueryBytes is the longest query, in bytes. Every query is analysed in full by the
	// index: an unbounded one is unbounded CPU (a 272 KB query once took 60 s).
	MaxQueryBytes int
	// MaxTopK is the largest top_k: the shard ranks that many hits and sends them all.
	MaxTopK int
}

// WithDefaults fills in the zero fields.
func (l Limits) WithDefaults() Limits {
	if l.MaxQueryBytes <= 0 {
		l.MaxQueryBytes = bounds.DefaultMaxQueryBytes
	}
	if l.MaxTopK <= 0 {
		l.MaxTopK = bounds.DefaultMaxTopK
	}
	return l
}

// Validate returns an INVALID_ARGUMENT status error for a request a shard with limits lim cannot
// serve, saying what to change; nil otherwise.
func Validate(req *shardv1.SearchRequest, lim Limits) error {
	lim = lim.WithDefaults()
	q := req.GetQuery()
	switch {
	case len(q) > lim.MaxQueryBytes:
		return status.Errorf(codes.InvalidArgument, "query is %d bytes, above this shard's maximum of %d: send at most %d bytes",
			len(q), lim.MaxQueryBytes, lim.MaxQueryBytes)
	case !utf8.ValidString(q): // decoded despite that by wirecodec, for this answer
		return status.Errorf(codes.InvalidArgument, "query is not valid UTF-8 (bad byte at offset %d): send the text encoded as UTF-8",
			wirecodec.InvalidUTF8At(q))
	case strings.TrimSpace(q) == "":
		return status.Error(codes.InvalidArgument, "query is blank: send at least one word to search for")
	case req.GetTopK() == 0:
		return status.Error(codes.InvalidArgument, "top_k is 0: ask for at least 1 hit")
	case uint64(req.GetTopK()) > uint64(lim.MaxTopK):
		return status.Errorf(codes.InvalidArgument, "top_k %d is above this shard's maximum of %d: ask for at most %d hits",
			req.GetTopK(), lim.MaxTopK, lim.MaxTopK)
	}
	return nil
}

// MaxMessageBytes is the largest SearchResponse a gather shard sends, encoded. The proxy accepts
// shard messages of up to 1 MiB; a quarter of that keeps every message far from the limit and
// lets the proxy merge the first hits while later ones are still on the wire.
const MaxMessageBytes = 256 << 10

// headerBytes bounds what a SearchResponse holds besides its hits: total_matches and documents,
// two varint fields of at most 1 + 10 bytes each.
const headerBytes = 2 * (1 + binary.MaxVarintLen64)

// MaxHitBytes is the largest [HitBytes] of a hit that fits in a message on its own.
const MaxHitBytes = MaxMessageBytes - headerBytes

// ErrHitTooLarge is wrapped by the error of [NextBatch] for a hit that does not fit in a message
// on its own.
var ErrHitTooLarge = errors.New("hit larger than a shard message may be")

// HitBytes is what h adds to the encoded size of a SearchResponse.
func HitBytes(h *shardv1.Hit) int {
	return protowire.SizeTag(1) + protowire.SizeBytes(proto.Size(h))
}

// NextBatch returns how many of the leading hits go into the next SearchResponse: at most
// maxHits (values below 1 mean no count limit), and no more than fit in [MaxMessageBytes] along
// with the first message's counts. It returns at least 1 for a non-empty hits, 0 for an empty
// one, and an error wrapping [ErrHitTooLarge], naming the doc_id, when the first hit alone does
// not fit: no message may carry it, so the call must fail rather than send what the proxy would
// refuse.
func NextBatch(hits []*shardv1.Hit, maxHits int) (int, error) {
	if maxHits < 1 {
		maxHits = len(hits)
	}
	size, n := headerBytes, 0
	for n < min(len(hits), maxHits) {
		b := HitBytes(hits[n])
		if size+b > MaxMessageBytes {
			break
		}
		size += b
		n++
	}
	if n == 0 && len(hits) > 0 {
		return 0, fmt.Errorf("%w: %s is %d bytes encoded, above the %d a message may carry",
			ErrHitTooLarge, hits[0].GetDocId(), HitBytes(hits[0]), MaxHitBytes)
	}
	return n, nil
}

// Pace gives the hit count limit of each message of one stream, as a shard honours the
// request's first_batch_hits: at most the hint in the first message, twice as many in each later
// one as in the one before, up to the shard's own per-message limit. Without a hint every
// message may hold that limit. The proxy decodes later messages only as its merge needs them, so
// a short first message saves it work when the shard's hits do not reach the answer, and the
// doubling keeps a long stream to a few messages.
type Pace struct {
	next int // the next message's limit; 0: limit
	// limit is the shard's per-message limit; below 1, none.
	limit int
}

// NewPace returns the pace of a stream answering req from a shard that puts at most maxHits in
// a message (below 1: no count limit, as for [NextBatch]).
func NewPace(req *shardv1.SearchRequest, maxHits int) Pace {
	p := Pace{next: int(min(req.GetFirstBatchHits(), 1<<30)), limit: maxHits}
	if p.limit >= 1 && p.next >= p.limit {
		p.next = 0
	}
	return p
}

// Next returns the hit limit of the next message, to pass to [NextBatch], and moves on.
func (p *Pace) Next() int {
	n := p.next
	if n == 0 {
		return p.limit
	}
	p.next *= 2
	if p.next >= 1<<30 || (p.limit >= 1 && p.next >= p.limit) {
		p.next = 0
	}
	return n
}

// Wait waits for d, or until ctx ends, in which case it returns ctx's error as a CANCELED or
// DEADLINE_EXCEEDED status error. A d of zero or less returns at once.
func Wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}
