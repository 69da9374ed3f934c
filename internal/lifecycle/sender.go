package lifecycle

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// StalledError is the error of a call ended by a send watchdog. It wraps ErrSendStalled and
// carries the gRPC status RESOURCE_EXHAUSTED.
type StalledError struct {
	// After is how long the send had been blocked.
	After time.Duration
}

func (e *StalledError) Error() string {
	return fmt.Sprintf("%v: no progress sending for %s", ErrSendStalled, e.After)
}

// Unwrap returns ErrSendStalled.
func (e *StalledError) Unwrap() error { return ErrSendStalled }

// GRPCStatus makes the error a RESOURCE_EXHAUSTED status at the service boundary.
func (e *StalledError) GRPCStatus() *status.Status {
	return status.New(codes.ResourceExhausted, e.Error())
}

// Sender sends messages on a server stream with a progress watchdog. grpc-go's SendMsg has no
// timeout: when the client stops reading, HTTP/2 flow control blocks it until the stream ends.
// Sender runs SendMsg on a goroutine of its own, so a handler can give up on a stalled client,
// return, and thereby end the stream; the blocked SendMsg then fails and the goroutine exits.
//
// A Sender is used by one goroutine (the handler). Close must be called when the handler is done
// with it; after a stall the goroutine outlives Close only until the stream ends, which happens
// as soon as the handler returns.
type Sender struct {
	stream  grpc.ServerStream
	timeout time.Duration
	msgs    chan any
	errs    chan error
	stalled bool
}

// NewSender starts a Sender on stream; a SendMsg that makes no progress for timeout ends the
// call with a StalledError.
func NewSender(stream grpc.ServerStream, timeout time.Duration) *Sender {
	s := &Sender{stream: stream, timeout: timeout, msgs: make(chan any), errs: make(chan error, 1)}
	go s.loop()
	return s
}

func (s *Sender) loop() {
	for m := range s.msgs {
		s.errs <- s.stream.SendMsg(m)
	}
}

// Send sends m, waiting at most the watchdog timeout for it to be handed to the transport. It
// returns the stream's error, ctx's error, or a *StalledError; after an error the Sender is
// unusable.
func (s *Sender) Send(ctx context.Context, m any) error {
	if s.stalled {
		return &StalledError{After: s.timeout}
	}
	s.msgs <- m // the loop is idle between sends, so this never waits long
	t := time.NewTimer(s.timeout)
	defer t.Stop()
	select {
	case err := <-s.errs:
		return err
	case <-t.C:
		s.stalled = true
		return &StalledError{After: s.timeout}
	case <-ctx.Done():
		s.stalled = true // the send is still pending; the stream's end releases it
		return ctx.Err()
	}
}

// Close stops the send goroutine once its pending send, if any, returns.
func (s *Sender) Close() { close(s.msgs) }
