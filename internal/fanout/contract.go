package fanout

import (
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// limits are the per-hit caps of a Client (see Config).
type limits struct {
	docID, text, fields, fieldBytes int
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
	// Its payload (ShardHit) is the text and the entries, each entry at most that size too.
	payload := textSize(c.MaxTextBytes) + c.MaxFields*(1+protowire.SizeBytes(entry))
	cost = hitOverhead + stringCost(c.MaxDocIDBytes+payload)
	return wireBytes, cost
}

// contract is what one shard stream must keep: the ordering contract of ShardService.Search
// over the whole stream, and the per-hit caps. It is used by the stream's receiving goroutine only.
type contract struct {
	lim  *limits
	topK uint32
	sent uint32    // hits checked and found good so far
	prev *ShardHit // the last of them
	// few and then seen hold the doc_ids of the stream so far, to find one repeated at another
	// score (at the same score, the tie order catches it): the first len(few) in few, scanned;
	// past them all of them in seen, a set taken from sets (Client.seenSet) only then, since most
	// streams send a few hits (fetch less) and a query in flight should not hold a set per shard.
	// Both share the hits' strings: no copy, and no allocation per hit once the set has grown.
	few  [8]string
	seen map[string]struct{}
	sets *Client
}

// repeated reports whether id is the doc_id of a hit checked before, and remembers it.
func (c *contract) repeated(id string) bool {
	if c.seen != nil {
		if _, dup := c.seen[id]; dup {
			return true
		}
		c.seen[id] = struct{}{}
		return false
	}
	n := int(c.sent)
	for _, s := range c.few[:min(n, len(c.few))] {
		if s == id {
			return true
		}
	}
	if n < len(c.few) {
		c.few[n] = id
		return false
	}
	c.seen = c.sets.seenSet()
	for _, s := range c.few {
		c.seen[s] = struct{}{}
	}
	c.seen[id] = struct{}{}
	return false
}

// release gives the set back to the client's pool, if one was taken.
func (c *contract) release() {
	if c.seen != nil {
		c.sets.releaseSet(c.seen)
		c.seen = nil
	}
}

// check returns how many of hits, the next batch of the stream, keep the contract, their cost
// by the heap cost model, and the violation that stops the rest, if any. It wraps ErrTooMany,
// ErrOrder or ErrOverLimit; its text names the rule or the limit and its value, and quotes at
// most a short prefix of a doc_id.
func (c *contract) check(hits []ShardHit) (int, int64, error) {
	var cost int64
	for i := range hits {
		h := &hits[i]
		if c.sent >= c.topK {
			return i, cost, fmt.Errorf("%w (%d)", ErrTooMany, c.topK)
		}
		id, score := h.DocID, h.Score
		if score-score != 0 { // NaN or ±Inf
			return i, cost, fmt.Errorf("%w: doc %s has score %g, not a finite number", ErrOrder, quoteID(id), score)
		}
		hc, err := c.lim.hit(h)
		if err != nil {
			return i, cost, err
		}
		if p := c.prev; p != nil {
			switch {
			case score > p.Score:
				return i, cost, fmt.Errorf("%w: doc %s (score %g) after doc %s (score %g)",
					ErrOrder, quoteID(id), score, quoteID(p.DocID), p.Score)
			case score == p.Score && id <= p.DocID:
				return i, cost, fmt.Errorf("%w: doc %s after doc %s at equal score %g",
					ErrOrder, quoteID(id), quoteID(p.DocID), score)
			}
		}
		if c.repeated(id) {
			return i, cost, fmt.Errorf("%w: doc_id %s repeated (now at score %g)", ErrOrder, quoteID(id), score)
		}
		c.prev, c.sent, cost = h, c.sent+1, cost+hc
	}
	return len(hits), cost, nil
}

// hit checks one hit against the caps and returns its cost.
func (l *limits) hit(h *ShardHit) (int64, error) {
	id := h.DocID
	switch {
	case len(id) > l.docID:
		return 0, fmt.Errorf("%w: doc_id of %d bytes, over max_hit_doc_id_bytes (%d): %s",
			ErrOverLimit, len(id), l.docID, quoteID(id))
	case int(h.text) > l.text:
		return 0, fmt.Errorf("%w: doc %s: text of %d bytes, over max_hit_text_bytes (%d)",
			ErrOverLimit, quoteID(id), h.text, l.text)
	case int(h.fields) > l.fields:
		return 0, fmt.Errorf("%w: doc %s: %d fields, over max_hit_fields (%d)",
			ErrOverLimit, quoteID(id), h.fields, l.fields)
	case int(h.widest) > l.fieldBytes:
		key, size := h.widestField()
		return 0, fmt.Errorf("%w: doc %s: field %s of %d bytes (key and value), over max_hit_field_bytes (%d)",
			ErrOverLimit, quoteID(id), quoteID(key), size, l.fieldBytes)
	}
	return h.cost(), nil
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
func (call *Call) take(hits []ShardHit, cost int64) (int, int64, error) {
	err := call.reserve(cost)
	if err == nil {
		return len(hits), cost, nil
	}
	var taken int64
	for i := range hits {
		c := hits[i].cost()
		if err := call.reserve(c); err != nil {
			return i, taken, err
		}
		taken += c
	}
	return len(hits), taken, nil
}
