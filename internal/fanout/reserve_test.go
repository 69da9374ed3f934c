package fanout

import (
	"context"
	"testing"
	"time"
)

// TestReserveLearnsAnswerLag: answers ready after their shard deadline make later calls keep
// more of their caller's time back, at most half of it, for as long as the lag is in the window.
func TestReserveLearnsAnswerLag(t *testing.T) {
	c, err := New([]ShardSpec{{Name: "s0", Replicas: []string{"127.0.0.1:1"}}}, Config{ShardTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	now := time.Now()
	if got, want := c.reserve(3*time.Second, now), 150*time.Millisecond; got != want {
		t.Fatalf("reserve of a 3s caller before any lag: %s, want 5%% (%s)", got, want)
	}
	c.Answered(now, now.Add(-time.Millisecond)) // in time: nothing to learn
	c.Answered(now, now.Add(400*time.Millisecond))
	at := now.Add(400 * time.Millisecond)
	if got, want := c.reserve(3*time.Second, at), 600*time.Millisecond; got != want {
		t.Errorf("reserve after a 400ms lag: %s, want 1.5 times it (%s)", got, want)
	}
	if got, want := c.reserve(time.Second, at), 500*time.Millisecond; got != want {
		t.Errorf("reserve of a 1s caller after a 400ms lag: %s, want half its time (%s)", got, want)
	}
	c.Answered(at, at.Add(100*time.Millisecond)) // a smaller lag does not lower the maximum
	if got := c.reserve(3*time.Second, at.Add(100*time.Millisecond)); got < 590*time.Millisecond {
		t.Errorf("reserve after a smaller lag: %s, want about 600ms still", got)
	}
	if got, want := c.reserve(3*time.Second, at.Add(lagWindow-lagSlice)), 600*time.Millisecond; got != want {
		t.Errorf("reserve %s a slice before the window ends: want %s still", got, want)
	}
	c.Answered(at.Add(lagWindow-lagSlice), at.Add(lagWindow-lagSlice+200*time.Millisecond))
	if got, want := c.reserve(3*time.Second, at.Add(lagWindow+lagSlice)), 300*time.Millisecond; got != want {
		t.Errorf("reserve %s once the 400ms lag left the window: want 1.5 times the 200ms one since (%s)", got, want)
	}
	if got, want := c.reserve(3*time.Second, at.Add(3*lagWindow)), 150*time.Millisecond; got != want {
		t.Errorf("reserve long after the lags: %s, want back at 5%% (%s)", got, want)
	}

	// A call's per-shard deadline follows the reserve.
	c2, err := New([]ShardSpec{{Name: "s0", Replicas: []string{"127.0.0.1:1"}}}, Config{ShardTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c2.Close() }()
	c2.Answered(time.Now(), time.Now().Add(400*time.Millisecond))
	ctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(3*time.Second))
	defer cancel()
	d, _ := ctx.Deadline()
	if got := c2.deadline(ctx, Request{}, time.Now()); d.Sub(got) < 550*time.Millisecond {
		t.Errorf("per-shard deadline %s before the caller's, want at least about 600ms", d.Sub(got))
	}
}

// TestShardTimeoutCountsFromArrival: the wait for an admission slot counts against the shard
// timeout, up to half of it.
func TestShardTimeoutCountsFromArrival(t *testing.T) {
	c, err := New([]ShardSpec{{Name: "s0", Replicas: []string{"127.0.0.1:1"}}}, Config{ShardTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	now := time.Now()
	for _, tc := range []struct {
		waited, want time.Duration // since arrival; the deadline from now
	}{
		{0, 2 * time.Second},
		{500 * time.Millisecond, 1500 * time.Millisecond},
		{1500 * time.Millisecond, time.Second}, // half the timeout left, however long the wait
	} {
		req := Request{Arrived: now.Add(-tc.waited)}
		if got := c.deadline(t.Context(), req, now).Sub(now); got != tc.want {
			t.Errorf("after a wait of %s: shard deadline in %s, want %s", tc.waited, got, tc.want)
		}
	}
	if got := c.deadline(t.Context(), Request{}, now).Sub(now); got != 2*time.Second {
		t.Errorf("without an arrival: shard deadline in %s, want 2s", got)
	}
}
