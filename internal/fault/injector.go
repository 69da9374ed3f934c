package fault

import (
	"context"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/shardsvc"
)

// Injector applies a Spec, which may be changed at any time, to the ShardService.Search and Pull
// calls of the gRPC server it is installed in (see ServerOption), counted together as "Search
// calls" below: they stream the same messages. Other methods pass through untouched.
// Each call reads the spec once, when it starts: Set changes later calls, not running ones.
//
// Close and Reset cut the connection the call arrived on, which only works when the server serves
// the Injector's Listener. Before cutting, the fault waits until the messages the handler sent
// have been written to the socket (gRPC sends asynchronously, so without the wait the last ones
// could be lost and the peer could not count on receiving exactly CloseAfter messages). The wait
// counts the connection's DATA bytes, so it is exact when the call is the only one streaming on
// its connection; with others streaming alongside, the cut may come a little early, as a real
// crash would. It is skipped under TLS or compression, where the bytes cannot be predicted, and
// ends early if the call's context ends or the connection is closed.
type Injector struct {
	lis *Listener

	mu   sync.Mutex
	spec Spec
	n    int // Search calls since spec was set

	calls   atomic.Int64
	faulted atomic.Int64
}

// NewInjector returns an Injector applying spec. lis is the listener the server serves; it may be
// nil if no spec will Close or Reset: a call that would then fails with Internal.
func NewInjector(spec Spec, lis *Listener) *Injector {
	return &Injector{lis: lis, spec: spec}
}

// StreamServerInterceptor returns an interceptor applying a fixed spec; see Injector.
func StreamServerInterceptor(spec Spec, lis *Listener) grpc.StreamServerInterceptor {
	return NewInjector(spec, lis).StreamServerInterceptor()
}

// Set replaces the spec for calls starting from now, and restarts the count of calls Every
// refers to.
func (in *Injector) Set(spec Spec) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.spec, in.n = spec, 0
}

// Spec returns the current spec.
func (in *Injector) Spec() Spec {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.spec
}

// Calls returns the number of Search calls seen; Faulted, how many of them had a fault applied.
func (in *Injector) Calls() int64   { return in.calls.Load() }
func (in *Injector) Faulted() int64 { return in.faulted.Load() }

// ServerOption installs the injector's interceptor with grpc.ChainStreamInterceptor, so it
// composes with other interceptors; it runs after the ones installed before it.
func (in *Injector) ServerOption() grpc.ServerOption {
	return grpc.ChainStreamInterceptor(in.StreamServerInterceptor())
}

// StreamServerInterceptor returns the interceptor applying the injector's spec.
func (in *Injector) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return in.intercept
}

func (in *Injector) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod != shardv1.ShardService_Search_FullMethodName && info.FullMethod != shardv1.ShardService_Pull_FullMethodName {
		return handler(srv, ss)
	}
	spec, ok := in.next()
	if !ok {
		return handler(srv, ss)
	}
	ctx := ss.Context()
	s := &stream{ServerStream: ss, spec: spec, exact: true}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		s.peer = p.Addr.String()
		s.conn = in.lis.conn(s.peer)
		s.exact = p.AuthInfo == nil // no TLS
	}
	if s.conn != nil {
		s.base = s.conn.dataWritten()
	}
	if err := shardsvc.Wait(ctx, spec.Delay); err != nil {
		return err
	}
	err := handler(srv, s)
	if s.err != nil {
		return s.err
	}
	if ctx.Err() == nil {
		if ferr := s.fire(true); ferr != nil {
			return ferr
		}
	}
	return err
}

// next counts a Search call and returns the spec to apply to it, if any.
func (in *Injector) next() (Spec, bool) {
	in.calls.Add(1)
	in.mu.Lock()
	spec := in.spec
	in.n++
	n := in.n
	in.mu.Unlock()
	if spec.IsZero() || (spec.Every > 1 && n%spec.Every != 0) {
		return Spec{}, false
	}
	in.faulted.Add(1)
	return spec, true
}

// ending is one of the ways a Spec ends a call, in order of precedence.
type ending int

const (
	noEnding ending = iota
	resetEnding
	closeEnding
	hangEnding
	codeEnding
)

// stream is a faulted call's server stream.
type stream struct {
	grpc.ServerStream
	spec Spec
	peer string // remote address
	conn *conn  // the connection the call arrived on, if tracked

	sent  int   // messages sent
	base  int64 // conn's DATA bytes when the call started
	bytes int64 // DATA bytes of the messages sent
	exact bool  // bytes is the exact DATA length of the messages sent
	err   error // the fault that ended the call, once it has
}

// SendMsg applies the spec's endings and BatchDelay, then sends m.
func (s *stream) SendMsg(m any) error {
	if s.err != nil {
		return s.err
	}
	if err := s.fire(false); err != nil {
		return err
	}
	if err := shardsvc.Wait(s.Context(), s.spec.BatchDelay); err != nil {
		return err
	}
	if err := s.ServerStream.SendMsg(m); err != nil {
		return err
	}
	s.sent++
	if pm, ok := m.(proto.Message); ok {
		s.bytes += 5 + int64(proto.Size(pm)) // gRPC's message prefix, then the message
	} else {
		s.exact = false
	}
	return nil
}

// fire applies the ending due after s.sent messages, or if atEnd the first ending still to
// come, and returns its error (nil if none is due). The call is over once it has fired.
func (s *stream) fire(atEnd bool) error {
	due, dueAfter := noEnding, 0
	consider := func(e ending, on bool, after int) {
		if on && after >= s.sent && (after == s.sent || atEnd) && (due == noEnding || after < dueAfter) {
			due, dueAfter = e, after
		}
	}
	consider(resetEnding, s.spec.Reset, s.spec.ResetAfter)
	consider(closeEnding, s.spec.Close, s.spec.CloseAfter)
	consider(hangEnding, s.spec.Hang, s.spec.HangAfter)
	consider(codeEnding, s.spec.Code != codes.OK, s.spec.CodeAfter)

	ctx := s.Context()
	switch due {
	case noEnding:
		return nil
	case resetEnding, closeEnding:
		s.err = s.cut(ctx, due == resetEnding)
	case hangEnding:
		<-ctx.Done()
		s.err = status.FromContextError(ctx.Err()).Err()
	case codeEnding:
		msg := s.spec.Message
		if msg == "" {
			msg = "fault: injected " + codeName(s.spec.Code)
		}
		s.err = status.Error(s.spec.Code, msg)
	}
	return s.err
}

// cut waits for the messages sent so far to be written, closes or resets the call's connection,
// and returns the error the handler gets from then on. The client never sees it: its
// connection is gone.
func (s *stream) cut(ctx context.Context, reset bool) error {
	verb := "closed"
	if reset {
		verb = "reset"
	}
	if s.conn == nil {
		return status.Errorf(codes.Internal, "fault: cannot cut the connection from %s: it was not accepted by the injector's fault.Listener", s.peer)
	}
	if s.exact && !compressed(ctx) {
		s.conn.waitData(ctx, s.base+s.bytes)
	}
	s.conn.cut(reset)
	return status.Errorf(codes.Unavailable, "fault: connection %s after %d messages", verb, s.sent)
}

// compressed reports whether the call's messages are compressed, which makes their length on the
// wire unpredictable.
func compressed(ctx context.Context) bool {
	sc, ok := grpc.ServerTransportStreamFromContext(ctx).(interface{ SendCompress() string })
	if !ok {
		return false
	}
	c := sc.SendCompress()
	return c != "" && c != "identity"
}
