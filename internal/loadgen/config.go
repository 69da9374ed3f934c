package loadgen

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
)

// Mode is how a run paces its requests.
type Mode string

const (
	// Closed runs Workers goroutines, each sending its next request when the previous one ends.
	Closed Mode = "closed"
	// Open sends Rate requests per second on a fixed schedule, whatever the target does, and
	// measures latency from each request's intended start time.
	Open Mode = "open"
)

// Defaults of the Config fields.
const (
	DefaultWorkers        = 8
	DefaultMaxOutstanding = 1000
	DefaultTimeout        = 5 * time.Second
	DefaultTopK           = 10
	DefaultProgressEvery  = time.Second
)

// DefaultQueries are sent, in turn, when Config.Queries is empty: words and phrases that match
// the reference corpus (State of the Union addresses) a little or a lot.
var DefaultQueries = []string{
	"union", "constitution", "war", "peace treaty", "tariff", "slavery emancipation",
	"gold standard", "public debt", "foreign affairs", "education", "income tax", "army navy",
	"railroads", "immigration", "health care", "energy independence",
}

// minRate is the lowest open-loop rate, one request in about 17 minutes.
const minRate = 0.001

// ErrInvalidConfig is wrapped by the error of Run for a Config it cannot run.
var ErrInvalidConfig = errors.New("invalid load config")

// Config describes a run. The zero value of a field means its default; a run must be bounded by
// Duration, Requests or both.
type Config struct {
	// Mode is Closed (the default) or Open.
	Mode Mode
	// Workers is the number of concurrent requests of a closed loop. Default 8. Unused when open.
	Workers int
	// Rate is the number of requests per second of an open loop; required when open, at least
	// 0.001.
	Rate float64
	// MaxOutstanding bounds the requests in flight of an open loop, each of which holds a
	// goroutine (started when first needed). Default 1000. When the target is too slow for Rate
	// with this many in flight, due requests wait for a slot and the wait counts in their
	// latency; see the package documentation. Unused when closed.
	MaxOutstanding int

	// Duration is the length of the measured window, after Warmup; 0 means no time bound.
	Duration time.Duration
	// Requests bounds the number of measured requests; 0 means no count bound.
	Requests int64
	// Warmup is run before the measured window; its requests are sent but not counted.
	Warmup time.Duration
	// Timeout bounds each request (a DEADLINE_EXCEEDED counts as failed). Default 5s.
	Timeout time.Duration

	// Queries are sent in turn: request n (counting warmup requests) asks Queries[n mod
	// len(Queries)]. Default DefaultQueries.
	Queries []string
	// TopK is the top_k of every request. Default 10.
	TopK uint32
	// PartialPolicy is sent with every request; unset leaves the proxy's default (allow).
	PartialPolicy queryv1.PartialPolicy
	// ShardTimeout, if set, is sent as every request's shard_timeout.
	ShardTimeout time.Duration

	// Progress, if set, is called about every ProgressEvery (default 1s) from a goroutine of Run,
	// never concurrently with itself and never after Run returns. A slow Progress delays later
	// calls, not the load.
	Progress      func(Progress)
	ProgressEvery time.Duration
}

// resolve returns c with its defaults filled in and the fields its mode does not use cleared, or
// an error wrapping ErrInvalidConfig that says what to fix.
func (c Config) resolve() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch c.Mode {
	case "", Closed:
		c.Mode = Closed
		if c.Workers < 0 {
			return bad("workers %d: want at least 1", c.Workers)
		}
		if c.Workers == 0 {
			c.Workers = DefaultWorkers
		}
		c.Rate, c.MaxOutstanding = 0, 0
	case Open:
		if !(c.Rate >= minRate) || math.IsInf(c.Rate, 1) {
			return bad("rate %v: an open loop needs a finite rate of at least %v requests per second", c.Rate, minRate)
		}
		if c.MaxOutstanding < 0 {
			return bad("max outstanding %d: want at least 1", c.MaxOutstanding)
		}
		if c.MaxOutstanding == 0 {
			c.MaxOutstanding = DefaultMaxOutstanding
		}
		c.Workers = 0
	default:
		return bad("mode %q: want %q or %q", c.Mode, Closed, Open)
	}
	switch {
	case c.Duration < 0:
		return bad("duration %v is negative", c.Duration)
	case c.Requests < 0:
		return bad("requests %d is negative", c.Requests)
	case c.Duration == 0 && c.Requests == 0:
		return bad("no bound: set a duration, a number of requests, or both")
	case c.Warmup < 0:
		return bad("warmup %v is negative", c.Warmup)
	case c.Timeout < 0:
		return bad("timeout %v is negative", c.Timeout)
	case c.ShardTimeout < 0:
		return bad("shard timeout %v is negative", c.ShardTimeout)
	case c.ProgressEvery < 0:
		return bad("progress interval %v is negative", c.ProgressEvery)
	}
	if _, ok := queryv1.PartialPolicy_name[int32(c.PartialPolicy)]; !ok {
		return bad("partial policy %d is not a PartialPolicy", c.PartialPolicy)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.TopK == 0 {
		c.TopK = DefaultTopK
	}
	if len(c.Queries) == 0 {
		c.Queries = DefaultQueries
	}
	c.Queries = append([]string(nil), c.Queries...) // the caller may reuse its slice
	if c.ProgressEvery == 0 {
		c.ProgressEvery = DefaultProgressEvery
	}
	return c, nil
}

// configJSON is the JSON form of a Config: durations in whole microseconds, the partial policy by
// name. Progress and ProgressEvery are left out.
type configJSON struct {
	Mode           Mode     `json:"mode"`
	Workers        int      `json:"workers,omitempty"`
	Rate           float64  `json:"rate,omitempty"`
	MaxOutstanding int      `json:"max_outstanding,omitempty"`
	DurationUS     int64    `json:"duration_us"`
	Requests       int64    `json:"requests"`
	WarmupUS       int64    `json:"warmup_us"`
	TimeoutUS      int64    `json:"timeout_us"`
	Queries        []string `json:"queries"`
	TopK           uint32   `json:"top_k"`
	PartialPolicy  string   `json:"partial_policy"`
	ShardTimeoutUS int64    `json:"shard_timeout_us"`
}

// MarshalJSON encodes c with durations as whole microseconds (fields named *_us) and the partial
// policy by its enum name. Progress and ProgressEvery are not encoded.
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(configJSON{
		Mode:           c.Mode,
		Workers:        c.Workers,
		Rate:           c.Rate,
		MaxOutstanding: c.MaxOutstanding,
		DurationUS:     c.Duration.Microseconds(),
		Requests:       c.Requests,
		WarmupUS:       c.Warmup.Microseconds(),
		TimeoutUS:      c.Timeout.Microseconds(),
		Queries:        c.Queries,
		TopK:           c.TopK,
		PartialPolicy:  c.PartialPolicy.String(),
		ShardTimeoutUS: c.ShardTimeout.Microseconds(),
	})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (c *Config) UnmarshalJSON(b []byte) error {
	var j configJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	policy := queryv1.PartialPolicy_PARTIAL_POLICY_UNSPECIFIED
	if j.PartialPolicy != "" {
		v, ok := queryv1.PartialPolicy_value[j.PartialPolicy]
		if !ok {
			return fmt.Errorf("loadgen config: unknown partial_policy %q", j.PartialPolicy)
		}
		policy = queryv1.PartialPolicy(v)
	}
	*c = Config{
		Mode:           j.Mode,
		Workers:        j.Workers,
		Rate:           j.Rate,
		MaxOutstanding: j.MaxOutstanding,
		Duration:       time.Duration(j.DurationUS) * time.Microsecond,
		Requests:       j.Requests,
		Warmup:         time.Duration(j.WarmupUS) * time.Microsecond,
		Timeout:        time.Duration(j.TimeoutUS) * time.Microsecond,
		Queries:        j.Queries,
		TopK:           j.TopK,
		PartialPolicy:  policy,
		ShardTimeout:   time.Duration(j.ShardTimeoutUS) * time.Microsecond,
	}
	return nil
}
