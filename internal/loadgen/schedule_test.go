package loadgen

import (
	"testing"
	"time"
)

func TestScheduleCount(t *testing.T) {
	t.Parallel()
	for _, rate := range []float64{0.5, 1, 3, 7, 200, 333.3, 1000, 12345.6, 1e6} {
		s := schedule{interval: float64(time.Second) / rate}
		// Brute force over the first requests: count(t) is the number due strictly before t.
		for i := int64(0); i < 2000; i++ {
			off := s.offset(i)
			if got := s.count(off); got != i {
				t.Fatalf("rate %v: count(offset(%d) = %v) = %d, want %d", rate, i, off, got, i)
			}
			if got := s.count(off + 1); got < i+1 {
				t.Fatalf("rate %v: count(%v) = %d, want at least %d", rate, off+1, got, i+1)
			}
		}
	}
	if got := (schedule{interval: 1e6}).count(0); got != 0 {
		t.Errorf("count(0) = %d", got)
	}
}
