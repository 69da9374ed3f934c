package chaos

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestStallMeter: the meter keeps the longest delay past its tick, and when it ended.
func TestStallMeter(t *testing.T) {
	t.Parallel()
	var m stallMeter
	now := time.Unix(1_700_000_000, 0)
	m.observe(time.Millisecond, now)
	m.observe(300*time.Millisecond, now.Add(time.Second))
	m.observe(2*time.Millisecond, now.Add(2*time.Second))
	if d, at := m.worst(); d != 300*time.Millisecond || !at.Equal(now.Add(time.Second)) {
		t.Errorf("worst %s at %s, want 300ms at +1s", d, at.Sub(now))
	}

	// Run for real: it wakes, and stops with its context.
	var live stallMeter
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	live.run(ctx)
	if _, at := live.worst(); at.IsZero() {
		t.Error("the meter never woke in 100ms")
	}
}

// TestQSTimeoutDetail: a run whose workers hit their timeout says when, and how long chaos itself
// could not run, so that a stall of the whole machine is told from a stuck proxy.
func TestQSTimeoutDetail(t *testing.T) {
	t.Parallel()
	r := cleanReport()
	r.Workers.QSTimeout = 5
	r.Workers.FirstQSTimeout = r.Start.Add(36*time.Second + 900*time.Millisecond)
	r.Workers.LastQSTimeout = r.Start.Add(37*time.Second + 700*time.Millisecond)
	r.SelfStall, r.SelfStallAt = 1600*time.Millisecond, r.Start.Add(37*time.Second+700*time.Millisecond)
	var buf bytes.Buffer
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"answered before the QS timeout FAIL 5 worker queries hit their 3s timeout, ending from +36.9s to +37.7s; chaos's own longest stall: 1.6s, ending at +37.7s",
		"chaos's own longest stall 1.6s at +37.7s",
	} {
		if !strings.Contains(squeeze(buf.String()), squeeze(want)) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
}
