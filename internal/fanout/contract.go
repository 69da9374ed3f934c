package fanout

import (
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
)

// limits are the per-hit caps of a Client (see Config).
type limits struct {
	docID, text, fields, fieldBytes int
}

// The heap cost model of a received hit (hitCost). It over-estimates what a hit decoded by
// protobuf-go holds on the heap (measured with Go 1.26: ~105 bytes for an empty hit, ~330 for a
// map of up to 8 entries, 70-90 per entry beyond; TestHitCostBoundsHeap checks it), so that a
// budget counted with it bounds memory.
const (
	// hitOverhead: the Hit struct (96 bytes with its size class), its pointer in the message's
	// slice (up to 16 with the slice's spare capacity) and its doc_id in the stream's duplicate
	// set (up to 64).
	hitOverhead = 176
	// smallMapCost: a fields map of at most 8 entries (header and one group of slots).
	smallMapCost = 352
	// entryCost: each entry of a larger map, with the spare slots of its tables.
	entryCost = 96
	// stringOverhead: a string's allocation rounds up to a size class (at most 1/8 over its
	// length up to 32 KiB, one 8 KiB page beyond); n/4 + stringOverhead covers both.
	stringOverhead = 32
)

func stringCost(n int) int64 { return int64(n + n/4 + stringOverhead) }

func mapCost(entries int) int64 {
	switch {
	case entries == 0:
		return 0
	case entries <= 8:
		return smallMapCost
	}
	return int64(entries)*entryCost + 128
}

// hitCost is the heap a decoded hit holds by the cost model above.
func hitCost(h *shardv1.Hit) int64 {
	c := hitOverhead + stringCost(len(h.GetDocId())) + stringCost(len(h.GetText())) + mapCost(len(h.GetFields()))
	for k, v := range h.GetFields() {
		c += stringCost(len(k)) + stringCost(len(v))
	}
	return c
}

// LargestHit returns the largest hit the caps of c let through: its encoded size in a shard
// message, and its cost against MaxQueryHitBytes. Configuration checks that one such hit fits
// in a message and in the budget.
func (c Config) LargestHit() (wireBytes int, cost int64) {
	c = c.withDefaults()
	// A field entry's key and value share MaxFieldBytes; the worst split adds both length prefixes.
	entry := 2 + 2*protowire.SizeVarint(uint64(c.MaxFieldBytes)) + c.MaxFieldBytes
	hit := 1 + protowire.SizeBytes(c.MaxDocIDBytes) + 1 + 8 + 1 + protowire.SizeBytes(c.MaxTextBytes) +
		c.MaxFields*(1+protowire.SizeBytes(entry))
	wireBytes = 1 + protowire.SizeBytes(hit)
	cost = hitOverhead + stringCost(c.MaxDocIDBytes) + stringCost(c.MaxTextBytes) + mapCost(c.MaxFields) +
		int64(c.MaxFields)*(stringCost(c.MaxFieldBytes)+stringCost(0))
	return wireBytes, cost
}

// contract is what one shard stream must keep: the ordering contract of ShardService.Search
// over the whole stream, and the per-hit caps. It is used by the stream's receiving goroutine only.
type contract struct {
	lim  *limits
	topK uint32
	sent uint32       // hits checked and found good so far
	prev *shardv1.Hit // the last of them
	// seen holds the doc_ids of the stream so far, to find one repeated at another score (at the
	// same score, the tie order catches it). Keys share the hits' strings: no copy, and no
	// allocation per hit once the map has grown.
	seen map[string]struct{}
}

// check returns how many of hits, the next batch of the stream, keep the contract, their cost
// by the heap cost model, and the violation that stops the rest, if any. It wraps ErrTooMany,
// ErrOrder or ErrOverLimit; its text names the rule or the limit and its value, and quotes at
// most a short prefix of a doc_id.
func (c *contract) check(hits []*shardv1.Hit) (int, int64, error) {
	var cost int64
	for i, h := range hits {
		if c.sent >= c.topK {
			return i, cost, fmt.Errorf("%w (%d)", ErrTooMany, c.topK)
		}
		id, score := h.GetDocId(), h.GetScore()
		if score-score != 0 { // NaN or ±Inf
			return i, cost, fmt.Errorf("%w: doc %s has score %g, not a finite number", ErrOrder, quoteID(id), score)
		}
		hc, err := c.lim.hit(h)
		if err != nil {
			return i, cost, err
		}
		if p := c.prev; p != nil {
			switch {
			case score > p.GetScore():
				return i, cost, fmt.Errorf("%w: doc %s (score %g) after doc %s (score %g)",
					ErrOrder, quoteID(id), score, quoteID(p.GetDocId()), p.GetScore())
			case score == p.GetScore() && id <= p.GetDocId():
				return i, cost, fmt.Errorf("%w: doc %s after doc %s at equal score %g",
					ErrOrder, quoteID(id), quoteID(p.GetDocId()), score)
			}
		}
		if _, dup := c.seen[id]; dup {
			return i, cost, fmt.Errorf("%w: doc_id %s repeated (now at score %g)", ErrOrder, quoteID(id), score)
		}
		c.seen[id] = struct{}{}
		c.prev, c.sent, cost = h, c.sent+1, cost+hc
	}
	return len(hits), cost, nil
}

// hit checks one hit against the caps and returns its cost.
func (l *limits) hit(h *shardv1.Hit) (int64, error) {
	id, text, fields := h.GetDocId(), h.GetText(), h.GetFields()
	switch {
	case len(id) > l.docID:
		return 0, fmt.Errorf("%w: doc_id of %d bytes, over max_hit_doc_id_bytes (%d): %s",
			ErrOverLimit, len(id), l.docID, quoteID(id))
	case len(text) > l.text:
		return 0, fmt.Errorf("%w: doc %s: text of %d bytes, over max_hit_text_bytes (%d)",
			ErrOverLimit, quoteID(id), len(text), l.text)
	case len(fields) > l.fields:
		return 0, fmt.Errorf("%w: doc %s: %d fields, over max_hit_fields (%d)",
			ErrOverLimit, quoteID(id), len(fields), l.fields)
	}
	c := hitOverhead + stringCost(len(id)) + stringCost(len(text)) + mapCost(len(fields))
	for k, v := range fields {
		if len(k)+len(v) > l.fieldBytes {
			return 0, fmt.Errorf("%w: doc %s: field %s of %d bytes (key and value), over max_hit_field_bytes (%d)",
				ErrOverLimit, quoteID(id), quoteID(k), len(k)+len(v), l.fieldBytes)
		}
		c += stringCost(len(k)) + stringCost(len(v))
	}
	return c, nil
}

// quoteID quotes a doc_id or field name from a shard for an error message, cut to 24 bytes (96
// once quoted, at worst).
func quoteID(id string) string {
	const most = 24
	if len(id) > most {
		cut := most
		for cut > 0 && id[cut]&0xC0 == 0x80 { // back to a rune boundary
			cut--
		}
		return strconv.Quote(id[:cut]) + "..."
	}
	return strconv.Quote(id)
}

// reserve takes cost from the query's hit budget, if that much is left.
func (call *Call) reserve(cost int64) error {
	for {
		left := call.budget.Load()
		if cost > left {
			return errQueryBudget
		}
		if call.budget.CompareAndSwap(left, left-cost) {
			break
		}
	}
	c := call.client
	if c.held.Add(cost) > c.cfg.MaxHitBytesInFlight {
		c.held.Add(-cost)
		call.budget.Add(cost)
		return errProxyBudget
	}
	return nil
}

// The budgets reserve can run out of.
var (
	errQueryBudget = errors.New("max_query_hit_bytes")
	errProxyBudget = errors.New("max_hit_bytes_in_flight")
)

// take reserves the cost of hits, a checked batch whose total cost is cost, from the query's
// budget and the Client's: all of them if they fit, else the longest prefix that does. It returns
// how many hits it took, what they cost, and which budget refused the rest (nil if none did).
func (call *Call) take(hits []*shardv1.Hit, cost int64) (int, int64, error) {
	err := call.reserve(cost)
	if err == nil {
		return len(hits), cost, nil
	}
	var taken int64
	for i, h := range hits {
		c := hitCost(h)
		if err := call.reserve(c); err != nil {
			return i, taken, err
		}
		taken += c
	}
	return len(hits), taken, nil
}
