package fanout

import (
	"container/heap"
	"sync"
	"sync/atomic"
	"time"
)

// bar is the top_k best hits the shards of a call have given to the merge so far, kept so that
// a stream read without demand can tell when the answer can no longer take any more of it
// (shardCall.drained): once top_k given hits rank before the last hit a shard gave, the rest of
// its stream ranks after that one. The merge takes the hits given to it in order, each shard's
// before its later ones, and stops at top_k; it may stop sooner (the answer's size), never later.
//
// A stream that waits to be outranked registers with the bar and is woken by the give that
// outranks it, so a give costs a comparison per waiting stream, not a wake-up. Pull streams wait
// so from their first batch on (shardCall.ahead), the others past drainAt (shardCall.drained).
type bar struct {
	need int
	// last is when a shard last gave its first batch, in UnixNano: drained streams read on once
	// no shard has for a while (shardCall.drained).
	last atomic.Int64

	mu   sync.Mutex
	best ranked  // a heap whose root ranks last; a heap from the moment it holds need hits
	buf  [16]Hit // best's room for a top_k of 16 or less
	// waiting are the streams that wait to be outranked.
	waiting []waiter
}

type waiter struct {
	last Hit           // the last hit the shard gave
	wake chan struct{} // holds one wake-up
}

// ranked is a heap of hits whose root is the one that ranks last (container/heap).
type ranked []Hit

func (r ranked) Len() int           { return len(r) }
func (r ranked) Less(i, j int) bool { return Less(r[j], r[i]) }
func (r ranked) Swap(i, j int)      { r[i], r[j] = r[j], r[i] }
func (r *ranked) Push(x any)        { *r = append(*r, x.(Hit)) }
func (r *ranked) Pop() any {
	old := *r
	h := old[len(old)-1]
	*r = old[:len(old)-1]
	return h
}

// init readies b for a query of top_k need. best grows past buf only as the shards give hits.
func (b *bar) init(need int) {
	b.need, b.best = need, b.buf[:0]
}

// give records that shard gave batch, in rank order, to the merge (its first if first), and
// wakes the waiting streams it outranks.
func (b *bar) give(shard int, batch []ShardHit, first bool) {
	if first {
		b.last.Store(time.Now().UnixNano())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range batch {
		h := Hit{ShardHit: &batch[i], Shard: shard}
		if len(b.best) < b.need {
			b.best = append(b.best, h)
			if len(b.best) == b.need {
				heap.Init(&b.best)
			}
			continue
		}
		if !Less(h, b.best[0]) {
			break // the batch's later hits rank after this one
		}
		b.best[0] = h
		heap.Fix(&b.best, 0)
	}
	if len(b.best) < b.need {
		return
	}
	for i := 0; i < len(b.waiting); {
		if w := b.waiting[i]; b.outranksLocked(w.last) {
			select {
			case w.wake <- struct{}{}:
			default:
			}
			b.waiting[i] = b.waiting[len(b.waiting)-1]
			b.waiting = b.waiting[:len(b.waiting)-1]
			continue
		}
		i++
	}
}

// outranksLocked reports whether need given hits rank before h. Called with mu held.
func (b *bar) outranksLocked(h Hit) bool {
	return b.need <= 0 || len(b.best) == b.need && Less(b.best[0], h)
}

// outranks reports whether need given hits rank before w.last; if not and wait is true, w waits
// to be outranked (woken on w.wake) until it is, or until unwait.
func (b *bar) outranks(w waiter, wait bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if out := b.outranksLocked(w.last); out || !wait {
		return out
	}
	for _, o := range b.waiting {
		if o.wake == w.wake {
			return false
		}
	}
	b.waiting = append(b.waiting, w)
	return false
}

// unwait stops w's wait to be outranked.
func (b *bar) unwait(w waiter) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, o := range b.waiting {
		if o.wake == w.wake {
			b.waiting[i] = b.waiting[len(b.waiting)-1]
			b.waiting = b.waiting[:len(b.waiting)-1]
			return
		}
	}
}

// quietSince reports when a shard last gave its first batch.
func (b *bar) quietSince() time.Time { return time.Unix(0, b.last.Load()) }
