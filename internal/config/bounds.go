package config

import (
	"fmt"
	"math"
	"time"

	"github.com/gatherproxy/gather/internal/bounds"
	"github.com/gatherproxy/gather/internal/discovery"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/hedge"
	"github.com/gatherproxy/gather/internal/liveness"
	"github.com/gatherproxy/gather/internal/proxy"
)

// setting is one numeric key of Proxy in the bounds table.
type setting struct {
	key string
	// value returns the configured value: a count, a size in bytes, or a duration in
	// nanoseconds. 0 means the default.
	value func(Proxy) int64
	// def is the default that the package owning the key applies to 0 (see the package named
	// in the key's doc comment on Proxy); relations compare effective values.
	def int64
	// decimal reads a Decimal key as it is configured, to refuse NaN and infinities, which have
	// no place in a range.
	decimal func(Proxy) float64
	bounds.Range
}

// effective is the value the proxy runs with: the configured one, or the default.
func (s setting) effective(c Proxy) int64 {
	if v := s.value(c); v != 0 {
		return v
	}
	return s.def
}

// relation requires the effective value of key to be below that of limit (at most, with
// orEqual). It is checked only when key is set: a default that does not fit under an explicitly
// small limit is the owning package's business (a 1s default idle timeout under a 500ms shard
// timeout simply never fires), but an explicit value that contradicts another key is a mistake.
type relation struct {
	key, limit string
	orEqual    bool
	why        string
}

func durationSetting(key string, v func(Proxy) time.Duration, def, lo, hi time.Duration, why string) setting {
	return setting{key: key, value: func(c Proxy) int64 { return int64(v(c)) }, def: int64(def),
		Range: bounds.Range{Min: int64(lo), Max: int64(hi), Unit: bounds.Duration, Why: why}}
}

func sizeSetting(key string, v func(Proxy) int64, def, lo, hi int64, why string) setting {
	return setting{key: key, value: v, def: def, Range: bounds.Range{Min: lo, Max: hi, Unit: bounds.Bytes, Why: why}}
}

func decimalSetting(key string, v func(Proxy) float64, def, lo, hi float64, why string) setting {
	return setting{key: key, value: func(c Proxy) int64 { return bounds.Millionths(v(c)) }, def: bounds.Millionths(def), decimal: v,
		Range: bounds.Range{Min: bounds.Millionths(lo), Max: bounds.Millionths(hi), Unit: bounds.Decimal, Why: why}}
}

func countSetting(key string, v func(Proxy) int64, def, hi int64, unit bounds.Unit, why string) setting {
	return setting{key: key, value: v, def: def, Range: bounds.Range{Min: 1, Max: hi, Unit: unit, Why: why}}
}

// settings is the bounds table: every numeric key with its default, its range and why. A new
// numeric key gets a row here; Validate checks every row, and relations name rows by key.
func settings() []setting {
	const (
		ms = time.Millisecond
		s  = time.Second
		m  = time.Minute
		h  = time.Hour
	)
	return []setting{
		// Request path (fanout.Config, proxy.Config, admission.Config).
		durationSetting("shard_timeout", func(c Proxy) time.Duration { return c.ShardTimeout }, 2*s, ms, 5*m,
			"a shard call holds a goroutine, a connection stream and buffered hits for that long, and no QS waits minutes for a search"),
		durationSetting("idle_timeout", func(c Proxy) time.Duration { return c.IdleTimeout }, s, ms, 5*m,
			"a silent shard stream is a stalled shard; the shard_timeout ceiling applies"),
		durationSetting("merge_reserve", func(c Proxy) time.Duration { return c.MergeReserve }, 20*ms, 0, 5*s,
			"merging and answering takes milliseconds; a longer reserve only cuts the shards' time"),
		durationSetting("send_timeout", func(c Proxy) time.Duration { return c.SendTimeout }, 5*s, ms, m,
			"a client that stops reading holds its query's memory and shard calls for this long"),
		durationSetting("admission_wait", func(c Proxy) time.Duration { return c.AdmissionWait }, 50*ms, 0, 10*s,
			"a query queued longer than its caller waits is work for nobody; overload must be refused fast"),
		durationSetting("admission_sched_target", func(c Proxy) time.Duration { return c.AdmissionSchedTarget }, 0, ms, s,
			"goroutines of a healthy process wait microseconds for a CPU; past a second queries miss their deadlines long before the bound moves (0 keeps the bound fixed)"),
		durationSetting("dns_refresh", func(c Proxy) time.Duration { return c.DNSRefresh }, discovery.DefaultDNSInterval, s, h,
			"each round is two DNS queries per name; below a second a DNS server is polled for nothing (Kubernetes DNS answers with a 5s TTL)"),
		durationSetting("retry_after", func(c Proxy) time.Duration { return c.RetryAfter }, 100*ms, 0, m,
			"it is a hint for retrying a shed query; past a minute the caller has given up"),
		countSetting("pull_fan_out", func(c Proxy) int64 { return int64(c.PullFanOut) }, fanout.DefaultPullFanOut,
			1<<20, bounds.Count,
			"queries at this fan-out or more call the shards' Pull; a value above every topology's fan-out keeps Search only"),
		countSetting("max_top_k", func(c Proxy) int64 { return int64(c.MaxTopK) }, bounds.DefaultMaxTopK,
			bounds.TopKCeiling, bounds.Count,
			"every shard ranks that many hits per query and the answer carries them all (gather shard --max-top-k has the same ceiling)"),
		countSetting("max_query_bytes", func(c Proxy) int64 { return int64(c.MaxQueryBytes) }, bounds.DefaultMaxQueryBytes,
			bounds.QueryBytesCeiling, bounds.Bytes,
			"every shard analyses the whole query; a search query is words, not documents"),
		countSetting("max_in_flight", func(c Proxy) int64 { return int64(c.MaxInFlight) }, 256, 10000, bounds.Count,
			"each query in flight holds about 150 KiB of heap and goroutine stacks at fan-out 8 (BENCHMARKS.md), 1.4 GiB at 10000"),
		countSetting("max_concurrent_streams", func(c Proxy) int64 { return int64(c.MaxConcurrentStreams) }, 1000, 10000,
			bounds.Count, "each stream holds a goroutine, and beyond the max_in_flight ceiling streams can only wait to be shed"),

		// Size limits of the shard hop and of the answer (fanout.Config, proxy.Config); checked
		// together by validateSizeLimits.
		sizeSetting("max_shard_message_bytes", func(c Proxy) int64 { return int64(c.MaxShardMessageBytes) },
			fanout.DefaultMaxMessageBytes, minShardMessageBytes, 64<<20,
			"the reference shard sends messages of up to 256 KiB, and each shard may have four messages buffered per query"),
		sizeSetting("max_hit_doc_id_bytes", func(c Proxy) int64 { return int64(c.MaxHitDocIDBytes) },
			fanout.DefaultMaxDocIDBytes, 16, 64<<10, "a doc_id is an identifier, compared on every merge step"),
		sizeSetting("max_hit_text_bytes", func(c Proxy) int64 { return int64(c.MaxHitTextBytes) },
			fanout.DefaultMaxTextBytes, 256, 4<<20, "up to top_k texts are held per shard and per answer"),
		countSetting("max_hit_fields", func(c Proxy) int64 { return int64(c.MaxHitFields) },
			fanout.DefaultMaxFields, 1024, bounds.Count, "a field map costs several times its wire size in heap"),
		sizeSetting("max_hit_field_bytes", func(c Proxy) int64 { return int64(c.MaxHitFieldBytes) },
			fanout.DefaultMaxFieldBytes, 16, 64<<10, "a field map costs several times its wire size in heap"),
		sizeSetting("max_query_hit_bytes", func(c Proxy) int64 { return c.MaxQueryHitBytes },
			fanout.DefaultMaxQueryHitBytes, 1<<20, 4<<30, "it is the heap one query may hold in shard hits; max_in_flight queries may hold it at once"),
		sizeSetting("max_hit_bytes_in_flight", func(c Proxy) int64 { return c.MaxHitBytesInFlight },
			fanout.DefaultMaxHitBytesInFlight, 8<<20, 64<<30, "it is the heap all queries in flight may hold in shard hits together"),
		sizeSetting("max_answer_bytes", func(c Proxy) int64 { return int64(c.MaxAnswerBytes) },
			proxy.DefaultMaxAnswerBytes, 64<<10, 64<<20,
			"health, reflection and channelz answers must fit under it too, and gRPC clients refuse over 4 MiB unless told otherwise"),
		decimalSetting("hedge_percentile", func(c Proxy) float64 { return c.HedgePercentile }, hedge.DefaultPercentile, 50, 99.9,
			"at a lower percentile most shard calls would be hedged, and above 99.9 a 30s window holds too few times to place it"),
		decimalSetting("hedge_budget", func(c Proxy) float64 {
			if c.HedgeBudget == nil {
				return 0
			}
			return *c.HedgeBudget
		}, hedge.DefaultBudget, 0.0001, 1,
			"hedges and retries add at most this fraction of extra shard calls; at 1 they could double the shards' load (0 turns them off)"),
		durationSetting("authz.refresh", func(c Proxy) time.Duration { return c.Access.Refresh }, 5*s, 10*ms, h,
			"the token and policy files are stat'ed this often; a removed token stays valid until the next check"),

		// QS connections (liveness.Server; grpc-go's floor for Time is 1s).
		durationSetting("keepalive.time", func(c Proxy) time.Duration { return c.Keepalive.Time },
			liveness.DefaultServerTime, s, 2*h, "grpc-go pings no faster than every 1s, and a vanished QS must be found in hours at worst"),
		durationSetting("keepalive.timeout", func(c Proxy) time.Duration { return c.Keepalive.Timeout },
			liveness.DefaultServerTimeout, ms, m, "an answer to a ping takes one round trip; a dead QS connection is held this long"),
		durationSetting("keepalive.max_connection_idle", func(c Proxy) time.Duration { return c.Keepalive.MaxConnectionIdle },
			liveness.DefaultMaxConnectionIdle, s, 24*h, "idle QS connections are closed at least daily"),
		durationSetting("keepalive.max_connection_age", func(c Proxy) time.Duration { return c.Keepalive.MaxConnectionAge },
			liveness.DefaultMaxConnectionAge, s, 24*h, "QS connections are rebalanced at least daily"),
		durationSetting("keepalive.max_connection_age_grace", func(c Proxy) time.Duration { return c.Keepalive.MaxConnectionAgeGrace },
			liveness.DefaultMaxConnectionAgeGrace, ms, 10*m, "a query never needs more than the shard_timeout ceiling to finish"),
		durationSetting("keepalive.min_time", func(c Proxy) time.Duration { return c.Keepalive.MinTime },
			liveness.DefaultMinTime, ms, 5*m, "QS clients that ping more often than this get GOAWAY too_many_pings"),

		// Shard connections (liveness.Client; grpc-go's client floor is 10s, above the shards' 5s min_time).
		durationSetting("shard_keepalive.time", func(c Proxy) time.Duration { return c.ShardKeepalive.Time },
			liveness.DefaultClientTime, liveness.DefaultClientTime, 2*h,
			"grpc-go clients ping no faster than every 10s, and a dead shard connection must be found in hours at worst"),
		durationSetting("shard_keepalive.timeout", func(c Proxy) time.Duration { return c.ShardKeepalive.Timeout },
			liveness.DefaultClientTimeout, ms, m, "an answer to a ping takes one round trip; a dead shard connection is held this long"),
	}
}

// relations are the cross-checks between keys of the bounds table.
func relations() []relation {
	return []relation{
		{key: "idle_timeout", limit: "shard_timeout", orEqual: true,
			why: "an idle timeout longer than the shard timeout never fires: the shard timeout ends the call first"},
		{key: "max_query_hit_bytes", limit: "max_hit_bytes_in_flight", orEqual: true,
			why: "one query's hits count against the bound of all queries'; a query budget above it could never be used"},
		{key: "merge_reserve", limit: "shard_timeout",
			why: "the reserve is kept back from the caller's deadline for merging; as long as the shard timeout, it leaves a caller with that deadline no time for the shards"},
	}
}

// checkSettings checks every row of the bounds table and every relation, and returns one error
// per bad key.
func (c Proxy) checkSettings() []error {
	var errs []error
	rows := map[string]setting{}
	for _, s := range settings() {
		rows[s.key] = s
		if s.decimal != nil {
			if v := s.decimal(c); math.IsNaN(v) || math.IsInf(v, 0) {
				errs = append(errs, fmt.Errorf("%s: %v is not a number: %s", s.key, v, s.Why))
				continue
			}
		}
		if err := s.Check(s.value(c)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.key, err))
		}
	}
	for _, r := range relations() {
		key, limit := rows[r.key], rows[r.limit]
		v, l := key.value(c), limit.effective(c)
		if v == 0 || v < l || (r.orEqual && v == l) {
			continue
		}
		what := "at least"
		if r.orEqual {
			what = "above"
		}
		def := ""
		if limit.value(c) == 0 {
			def = " (its default)"
		}
		errs = append(errs, fmt.Errorf("%s: %s is %s %s %s%s: %s", r.key, key.Format(v), what, r.limit, limit.Format(l), def, r.why))
	}
	return errs
}
