package proxy

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
)

func TestDurationPartsMatchesDurationpb(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{0, 1, 999_999_999, time.Second, 1500 * time.Millisecond,
		-1, -1500 * time.Millisecond, time.Duration(1<<63 - 1), time.Duration(-1 << 63)} {
		want := durationpb.New(d)
		if s, n := durationParts(d); s != want.GetSeconds() || n != want.GetNanos() {
			t.Errorf("durationParts(%v) = %d, %d; want %d, %d", d, s, n, want.GetSeconds(), want.GetNanos())
		}
	}
}
