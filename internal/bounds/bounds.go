// Package bounds holds the ranges gather accepts for its numeric settings, and the query limits
// that the proxy and the shards share. A value out of range is an error that says what is
// allowed and why, so the configuration table of package config and the flags of the gather
// command reject the same values with the same explanation.
package bounds

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Query limits. The proxy (gather.query.v1.QueryService) and every shard
// (gather.shard.v1.ShardService) start from the same defaults, so a query the proxy accepts is one
// its shards accept, and neither can be configured past the same ceilings.
const (
	// DefaultMaxQueryBytes is the longest query text accepted by default.
	DefaultMaxQueryBytes = 1024
	// QueryBytesCeiling is the largest query-size limit that may be configured. A search query
	// is words; 64 KiB is tens of thousands of them, and every query is analysed by every shard
	// (a 272 KB query kept the reference shard busy for 60 s of CPU).
	QueryBytesCeiling = 64 << 10
	// DefaultMaxTopK is the largest top_k accepted by default.
	DefaultMaxTopK = 1000
	// TopKCeiling is the largest top_k limit that may be configured: 10,000 hits of about 1 KB
	// are a 10 MB answer, which no caller of a search reads, and each shard must rank as many.
	TopKCeiling = 10000
)

// Unit says how the values of a [Range] read.
type Unit int

// The units.
const (
	// Count: a plain number.
	Count Unit = iota
	// Bytes: a size, printed as bytes and in KiB or MiB.
	Bytes
	// Duration: a [time.Duration] in nanoseconds, printed as one.
	Duration
	// Decimal: a number with a fraction, in millionths (see [Millionths]), printed as a decimal.
	Decimal
)

// Millionths is v in millionths, the int64 form of a [Decimal] setting, rounded to the nearest;
// a positive v too small for one millionth is 1, so that it is never taken for 0 (the default).
// NaN and infinities are the caller's to refuse.
func Millionths(v float64) int64 {
	m := int64(math.Round(math.Max(math.Min(v, 1e12), -1e12) * 1e6))
	if m == 0 && v > 0 {
		return 1
	}
	return m
}

// Range is what a setting accepts: 0, or a value from Min to Max. Zero is in every range
// because gather's settings take 0 to mean their default (or, where documented, "none").
type Range struct {
	Min, Max int64
	Unit     Unit
	// Why explains the bounds; it ends the error for a value outside them.
	Why string
}

// Check returns nil if v is in r, and otherwise an error that gives v, the bound it crossed and
// r.Why. The error does not name the setting: callers prefix the key
// or flag.
func (r Range) Check(v int64) error {
	var err error
	switch {
	case v < 0:
		err = fmt.Errorf("%s is negative", r.Format(v))
	case v == 0:
		return nil
	case v < r.Min:
		err = fmt.Errorf("%s is below the minimum of %s", r.Format(v), r.Format(r.Min))
	case v > r.Max:
		err = fmt.Errorf("%s is above the maximum of %s", r.Format(v), r.Format(r.Max))
	default:
		return nil
	}
	if r.Why != "" {
		err = fmt.Errorf("%w: %s", err, r.Why)
	}
	return err
}

// Format prints v in r's unit.
func (r Range) Format(v int64) string {
	switch r.Unit {
	case Duration:
		return time.Duration(v).String()
	case Decimal:
		return strconv.FormatFloat(float64(v)/1e6, 'g', -1, 64)
	case Bytes:
		switch {
		case v >= 1<<20 && v%(1<<20) == 0:
			return fmt.Sprintf("%d bytes (%d MiB)", v, v>>20)
		case v >= 1<<10 && v%(1<<10) == 0:
			return fmt.Sprintf("%d bytes (%d KiB)", v, v>>10)
		}
		return fmt.Sprintf("%d bytes", v)
	}
	return strconv.FormatInt(v, 10)
}

// IntVar defines an int flag on fs that only takes values in r: a value out of range is a
// parse error naming the flag, as for a malformed one. The default is not checked.
func (r Range) IntVar(fs *flag.FlagSet, p *int, name string, value int, usage string) {
	*p = value
	fs.Var(intValue{p: p, r: r}, name, usage)
}

// DurationVar is IntVar for a duration flag; r's unit should be [Duration].
func (r Range) DurationVar(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var(durationValue{p: p, r: r}, name, usage)
}

type intValue struct {
	p *int
	r Range
}

func (v intValue) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.Itoa(*v.p)
}

func (v intValue) Set(s string) error {
	n, err := strconv.ParseInt(s, 0, strconv.IntSize)
	if err != nil {
		return errors.New("not an integer")
	}
	if err := v.r.Check(n); err != nil {
		return err
	}
	*v.p = int(n)
	return nil
}

type durationValue struct {
	p *time.Duration
	r Range
}

func (v durationValue) String() string {
	if v.p == nil {
		return "0s"
	}
	return v.p.String()
}

func (v durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("not a duration (such as 300ms or 2s)")
	}
	if err := v.r.Check(int64(d)); err != nil {
		return err
	}
	*v.p = d
	return nil
}
