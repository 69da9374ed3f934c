package proxy

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
)

// FuzzParse checks parse against the rules written out plainly: it accepts exactly the requests
// the reference accepts, and every rejection wraps ErrInvalid.
func FuzzParse(f *testing.F) {
	f.Add("union constitution", uint32(10), int32(0), int64(0))
	f.Add("", uint32(10), int32(1), int64(-1))
	f.Add("  ", uint32(0), int32(2), int64(5e9))
	f.Add(strings.Repeat("x", 1025), uint32(1001), int32(3), int64(1))
	f.Add("union \xff war", uint32(10), int32(0), int64(0))
	lim := Config{}.withDefaults()
	f.Fuzz(func(t *testing.T, text string, topK uint32, policy int32, timeoutNanos int64) {
		// Invalid UTF-8 reaches the service: wirecodec decodes it so that parse can refuse it.
		q, err := parse(text, topK, queryv1.PartialPolicy(policy), durationpb.New(time.Duration(timeoutNanos)), lim)
		want := strings.TrimSpace(text) != "" && len(text) <= lim.MaxQueryBytes && utf8.ValidString(text) && topK >= 1 && topK <= lim.MaxTopK &&
			policy >= 0 && policy <= 2 && timeoutNanos >= 0
		if (err == nil) != want {
			t.Fatalf("parse(%q, %d, %d, %d) = %v, want accepted=%v", text, topK, policy, timeoutNanos, err, want)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %v does not wrap ErrInvalid", err)
		}
		if err == nil && (q.topK != topK || q.requireFull != (policy == 2) || q.shardTimeout != time.Duration(timeoutNanos)) {
			t.Fatalf("parsed %+v from (%d, %d, %d)", q, topK, policy, timeoutNanos)
		}
	})
}
