package fanout

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// TestStaleHedgeFire: when the hedge delay fires just as an attempt wins (the timer's function is
// waiting for the lock the winner holds), that late function does nothing: the timer is the idle
// timer by then, and the winner must not be cancelled as idle for it. The next firing is the
// idle timeout's, and cancels.
func TestStaleHedgeFire(t *testing.T) {
	t.Parallel()
	fired := make(chan struct{})
	sc := &shardCall{idle: time.Hour, phase: phaseHedge, span: trace.SpanFromContext(context.Background())}
	// The real function only signals, so that the test plays the fan-out's own one (onTimer)
	// at the moment it wants.
	sc.timer = time.AfterFunc(0, func() { close(fired) })
	<-fired // the hedge delay has passed; its function would now wait for the lock
	defer sc.timer.Stop()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	a := &attempt{ctx: ctx, cancel: cancel, source: SourcePrimary}
	if !sc.win(a) {
		t.Fatal("the only attempt did not win")
	}
	sc.onTimer() // the hedge delay's late function
	if ctx.Err() != nil {
		t.Fatalf("the winner was cancelled by the hedge delay's late function: %v", context.Cause(ctx))
	}
	sc.onTimer() // the idle timeout
	if !errors.Is(context.Cause(ctx), ErrIdle) {
		t.Fatalf("the idle timeout's function: cause %v, want ErrIdle", context.Cause(ctx))
	}
}
