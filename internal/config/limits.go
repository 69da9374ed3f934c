package config

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/proxy"
)

// The bounds of the size limits (validateSizeLimits). Zero means the default.
const (
	// minShardMessageBytes is the size to which the reference shard packs its messages.
	minShardMessageBytes = 256 << 10
	maxShardMessageBytes = 64 << 20
	minAnswerBytes       = 64 << 10
	maxAnswerBytes       = 64 << 20
	minQueryHitBytes     = 1 << 20
	maxQueryHitBytes     = 4 << 30
)

// validateSizeLimits checks the size limits of the shard hop and of the answer: each within its
// bounds, and together consistent: the largest hit the caps let through must fit in a shard
// message, in the query's hit budget and in an answer.
func (c Proxy) validateSizeLimits() []error {
	var errs []error
	bound := func(key string, v, lo, hi int64, why string) {
		switch {
		case v < 0:
			errs = append(errs, fmt.Errorf("%s: negative (%d)", key, v))
		case v > 0 && v < lo:
			errs = append(errs, fmt.Errorf("%s: %d is below %d%s", key, v, lo, why))
		case v > hi:
			errs = append(errs, fmt.Errorf("%s: %d is over %d: memory per query grows with it", key, v, hi))
		}
	}
	bound("max_shard_message_bytes", int64(c.MaxShardMessageBytes), minShardMessageBytes, maxShardMessageBytes,
		": the reference shard sends messages of up to 256 KiB")
	bound("max_hit_doc_id_bytes", int64(c.MaxHitDocIDBytes), 16, 64<<10, "")
	bound("max_hit_text_bytes", int64(c.MaxHitTextBytes), 256, 4<<20, "")
	bound("max_hit_fields", int64(c.MaxHitFields), 1, 1024, "")
	bound("max_hit_field_bytes", int64(c.MaxHitFieldBytes), 16, 64<<10, "")
	bound("max_query_hit_bytes", c.MaxQueryHitBytes, minQueryHitBytes, maxQueryHitBytes, "")
	bound("max_answer_bytes", int64(c.MaxAnswerBytes), minAnswerBytes, maxAnswerBytes,
		": health, reflection and channelz answers must fit too")
	if len(errs) > 0 {
		return errs // the cross-checks below would only repeat them
	}
	wire, cost := c.Fanout().LargestHit()
	message := or(c.MaxShardMessageBytes, fanout.DefaultMaxMessageBytes)
	budget := c.MaxQueryHitBytes
	if budget == 0 {
		budget = fanout.DefaultMaxQueryHitBytes
	}
	const caps = "max_hit_doc_id_bytes, max_hit_text_bytes, max_hit_fields, max_hit_field_bytes"
	// A message with one hit carries the counts as well: two varints at their longest.
	if msg := wire + 2*(1+protowire.SizeVarint(^uint64(0))); msg > message {
		errs = append(errs, fmt.Errorf("max_shard_message_bytes: %d cannot hold one hit at the caps (%s), %d bytes encoded: raise it or lower the caps",
			message, caps, msg))
	}
	if cost > budget {
		errs = append(errs, fmt.Errorf("max_query_hit_bytes: %d cannot hold one hit at the caps (%s), %d bytes by the cost model: raise it or lower the caps",
			budget, caps, cost))
	}
	longest := 0
	for _, s := range c.Shards {
		longest = max(longest, len(s.Name))
	}
	if room, hit := c.Service().Room(c.Topology()), wire+1+protowire.SizeBytes(longest); hit > room {
		errs = append(errs, fmt.Errorf("max_answer_bytes: %d leaves %d bytes for hits next to the summary of %d shards, "+
			"less than one hit at the caps (%s), %d bytes: raise it or lower the caps",
			or(c.MaxAnswerBytes, proxy.DefaultMaxAnswerBytes), room, len(c.Shards), caps, hit))
	}
	return errs
}

func or(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}
