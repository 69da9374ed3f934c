// Package shardtest provides fake ShardService servers on real loopback gRPC, for testing the
// proxy against shards that answer, fail, stall or break the ordering contract.
package shardtest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/fault"
	"github.com/gatherproxy/gather/internal/liveness"
	"github.com/gatherproxy/gather/internal/shardsvc"
)

// Behavior says how a fake shard answers one call.
type Behavior struct {
	// Hits are sent in this order (Hits returns a correctly sorted list; tests that want a
	// violation reorder it), cut at the request's top_k unless IgnoreTopK.
	Hits []*shardv1.Hit
	// Batch is the number of hits per message; 0 means all in one message.
	Batch int
	// Paced makes the shard honour the request's first_batch_hits as gather's shards do
	// (shardsvc.Pace, with Batch as the per-message limit): the first message holds at most that
	// many hits, each later one twice as many as the one before. First, when positive, replaces
	// the request's hint.
	Paced bool
	First int
	// Delay is waited before the first message; BatchDelay between messages.
	Delay, BatchDelay time.Duration
	// HangAfter, when non-negative, makes the shard stop after sending that many messages and
	// wait until the call is cancelled. -1 (or Hang false) never hangs.
	Hang      bool
	HangAfter int
	// Err, when set, ends the stream with this error after the hits.
	Err error
	// IgnoreTopK sends every hit even past the request's top_k.
	IgnoreTopK bool
	// TotalMatches and Documents are sent on the first message (defaults: len(Hits) and 1000).
	TotalMatches, Documents uint64
	// Pull serves the Pull method (shardsvc.ServePull over Search); without it Pull answers
	// UNIMPLEMENTED, as a shard older than Pull does.
	Pull bool
	// Script, when set, replaces Hits, Batch, BatchDelay, IgnoreTopK and the counts: its messages
	// are sent exactly as given, each after its pause, so a test can send what no honest shard
	// would (oversized or empty messages, bad scores, repeated ids). Delay, Hang, HangAfter and
	// Err apply as usual.
	Script []Step
}

// Step is one message of a Behavior's Script, sent after Pause.
type Step struct {
	Pause time.Duration
	Msg   *shardv1.SearchResponse
}

// Drip returns a script that sends first, then n messages without hits, pause apart: a shard
// that keeps talking without making progress.
func Drip(first *shardv1.SearchResponse, n int, pause time.Duration) []Step {
	steps := []Step{{Msg: first}}
	for range n {
		steps = append(steps, Step{Pause: pause, Msg: &shardv1.SearchResponse{}})
	}
	return steps
}

// Shard is a fake ShardService listening on 127.0.0.1. Its counters let tests see what the proxy
// did to it.
type Shard struct {
	shardv1.UnimplementedShardServiceServer
	addr string
	srv  *grpc.Server
	lis  *fault.Listener
	inj  *fault.Injector

	mu       sync.Mutex
	behavior Behavior
	requests []*shardv1.SearchRequest

	pulls     atomic.Int64 // Pull calls, served or refused
	started   atomic.Int64 // calls begun
	active    atomic.Int64 // calls running now
	cancelled atomic.Int64 // calls that ended because the client cancelled
	sent      atomic.Int64 // messages sent
	lastEnd   atomic.Int64 // when the last call ended, in Unix nanoseconds
}

// Start runs a fake shard with behavior b on a loopback port until the test ends. Like a real
// gather shard it enforces gather's default keepalive policy (so the proxy's pings are welcome);
// opts come after it.
func Start(t testing.TB, b Behavior, opts ...grpc.ServerOption) *Shard {
	t.Helper()
	lis, err := fault.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("shardtest: listen: %v", err)
	}
	inj := fault.NewInjector(fault.Spec{}, lis)
	opts = append(append(liveness.Server{}.ServerOptions(), inj.ServerOption()), opts...)
	s := &Shard{addr: lis.Addr().String(), srv: grpc.NewServer(opts...), behavior: b, lis: lis, inj: inj}
	shardv1.RegisterShardServiceServer(s.srv, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.srv.Serve(lis)
	}()
	t.Cleanup(func() {
		s.srv.Stop()
		<-done
	})
	return s
}

// Addr is the shard's host:port.
func (s *Shard) Addr() string { return s.addr }

// Stop stops the server at once, closing every connection (as a crashed process would).
func (s *Shard) Stop() { s.srv.Stop() }

// Fault makes later calls misbehave as spec says (package fault); fault.Spec{} heals the shard.
func (s *Shard) Fault(spec fault.Spec) { s.inj.Set(spec) }

// ResetAll resets every connection of the shard with an RST, as the kernel of a host that lost
// the process's sockets would; the server itself keeps running.
func (s *Shard) ResetAll() int { return s.lis.ResetAll() }

// SetBehavior changes how later calls are answered.
func (s *Shard) SetBehavior(b Behavior) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.behavior = b
}

// Requests returns the requests received so far.
func (s *Shard) Requests() []*shardv1.SearchRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*shardv1.SearchRequest(nil), s.requests...)
}

// Pulls counts the Pull calls received, served (Behavior.Pull) or refused.
func (s *Shard) Pulls() int64 { return s.pulls.Load() }

// Started, Active and Cancelled count calls begun, calls still running, and calls that ended
// because the client cancelled them.
func (s *Shard) Started() int64   { return s.started.Load() }
func (s *Shard) Active() int64    { return s.active.Load() }
func (s *Shard) Cancelled() int64 { return s.cancelled.Load() }

// Sent counts the messages sent, in all calls: those that grpc-go took for sending, which it
// does only while the client's flow-control window has room.
func (s *Shard) Sent() int64 { return s.sent.Load() }

// LastEnd is when the last call ended (the zero time before any did).
func (s *Shard) LastEnd() time.Time {
	if n := s.lastEnd.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// WaitIdle waits until no call is running, failing the test after timeout.
func (s *Shard) WaitIdle(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for s.Active() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("shardtest: shard %s still has %d calls running after %s", s.addr, s.Active(), timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// Pull implements shardv1.ShardServiceServer: Search's messages, each after the first sent when
// asked for, if the behavior serves Pull; UNIMPLEMENTED if not. Search counts the call.
func (s *Shard) Pull(stream shardv1.ShardService_PullServer) error {
	s.pulls.Add(1)
	s.mu.Lock()
	pull := s.behavior.Pull
	s.mu.Unlock()
	if !pull {
		return status.Error(codes.Unimplemented, "method Pull not implemented")
	}
	return shardsvc.ServePull(stream, s.Search)
}

// Search implements shardv1.ShardServiceServer.
func (s *Shard) Search(req *shardv1.SearchRequest, stream shardv1.ShardService_SearchServer) (err error) {
	ctx := stream.Context()
	s.started.Add(1)
	s.active.Add(1)
	defer func() {
		if ctx.Err() != nil {
			s.cancelled.Add(1)
		}
		s.lastEnd.Store(time.Now().UnixNano())
		s.active.Add(-1)
	}()
	s.mu.Lock()
	b := s.behavior
	s.requests = append(s.requests, req)
	s.mu.Unlock()

	hits := b.Hits
	if !b.IgnoreTopK && uint32(len(hits)) > req.GetTopK() {
		hits = hits[:req.GetTopK()]
	}
	batch := b.Batch
	if batch <= 0 {
		batch = max(len(hits), 1)
	}
	total, docs := b.TotalMatches, b.Documents
	if total == 0 {
		total = uint64(len(b.Hits))
	}
	if docs == 0 {
		docs = 1000
	}
	if err := shardsvc.Wait(ctx, b.Delay); err != nil {
		return err
	}
	if b.Script != nil {
		return b.play(ctx, stream, &s.sent)
	}
	pace := shardsvc.NewPace(req, batch)
	if b.First > 0 {
		pace = shardsvc.NewPace(&shardv1.SearchRequest{FirstBatchHits: uint32(b.First)}, batch)
	}
	sent := 0
	for first := true; first || len(hits) > 0; first = false {
		if b.Hang && sent == b.HangAfter {
			<-ctx.Done()
			return status.FromContextError(ctx.Err()).Err()
		}
		if !first {
			if err := shardsvc.Wait(ctx, b.BatchDelay); err != nil {
				return err
			}
		}
		n := min(batch, len(hits))
		if b.Paced {
			n = min(pace.Next(), len(hits))
		}
		msg := &shardv1.SearchResponse{Hits: hits[:n]}
		if first {
			msg.TotalMatches, msg.Documents = total, docs
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
		s.sent.Add(1)
		sent++
		hits = hits[n:]
	}
	if b.Hang && sent == b.HangAfter {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	return b.Err
}

// play sends b.Script.
func (b Behavior) play(ctx context.Context, stream shardv1.ShardService_SearchServer, sent *atomic.Int64) error {
	for i, step := range b.Script {
		if b.Hang && i == b.HangAfter {
			<-ctx.Done()
			return status.FromContextError(ctx.Err()).Err()
		}
		if err := shardsvc.Wait(ctx, step.Pause); err != nil {
			return err
		}
		if err := stream.Send(step.Msg); err != nil {
			return err
		}
		sent.Add(1)
	}
	if b.Hang && len(b.Script) == b.HangAfter {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	return b.Err
}

// Hits returns n hits of a shard named prefix, correctly ordered: scores fall from about 100 in
// uneven steps with some ties, broken by ascending doc_id. seed varies the scores between shards.
func Hits(prefix string, n int, seed uint64) []*shardv1.Hit {
	out := make([]*shardv1.Hit, n)
	score := 100.0 - float64(seed%7)
	for i := range out {
		out[i] = &shardv1.Hit{
			DocId:  fmt.Sprintf("%s-%04d", prefix, i),
			Score:  score,
			Text:   fmt.Sprintf("passage %d of %s", i, prefix),
			Fields: map[string]string{"n": fmt.Sprint(i)},
		}
		if (uint64(i)*2654435761+seed)%3 != 0 { // every third step is a tie
			score -= float64((uint64(i)*40503+seed)%5+1) / 4
		}
	}
	return out
}

// Unavailable is a ready-made shard error.
var Unavailable = status.Error(codes.Unavailable, "shardtest: index offline")
