package config

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/proxy"
)

// minShardMessageBytes is the size to which the reference shard packs its messages.
const minShardMessageBytes = 256 << 10

// validateSizeLimits checks that the size limits of the shard hop and of the answer (each in
// range by the bounds table) fit together: the largest hit the caps let through must fit in a
// shard message, in the query's hit budget and in an answer.
func (c Proxy) validateSizeLimits() []error {
	var errs []error
	for _, s := range settings() {
		if strings.HasPrefix(s.key, "max_hit_") || s.key == "max_shard_message_bytes" ||
			s.key == "max_query_hit_bytes" || s.key == "max_answer_bytes" {
			if s.Check(s.value(c)) != nil {
				return nil // reported by the bounds table; the cross-checks would only repeat it
			}
		}
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
