package flowguard_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gatherproxy/gather/internal/flowguard"
	"github.com/gatherproxy/gather/internal/flowguard/flowtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const answerMethod = "/flowguard.test.Answers/Answer"

// server is a gRPC server behind a guard. Its one method, Answer, takes a size n (a UInt64Value)
// and answers with n bytes (a BytesValue), or with n/chunk messages of chunk bytes when the
// request also names a chunk; it then waits with AwaitWritten and reports the outcome.
type server struct {
	guard    *flowguard.Guard
	reg      *prometheus.Registry
	addr     string
	waiting  chan struct{} // a handler has sent its answer and waits for it to be written
	outcomes chan error
}

func startServer(t *testing.T, sendTimeout time.Duration) *server {
	t.Helper()
	s := &server{reg: prometheus.NewRegistry(), waiting: make(chan struct{}, 100), outcomes: make(chan error, 100)}
	s.guard = flowguard.New(flowguard.Config{SendTimeout: sendTimeout}, s.reg)
	srv := grpc.NewServer(grpc.Creds(s.guard.Credentials(insecure.NewCredentials())),
		grpc.UnknownServiceHandler(s.answer))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = lis.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
		s.guard.Close()
	})
	return s
}

func (s *server) answer(_ any, stream grpc.ServerStream) error {
	req := &wrapperspb.BytesValue{}
	if err := stream.RecvMsg(req); err != nil {
		return err
	}
	size, chunk := binary.BigEndian.Uint64(req.Value[:8]), binary.BigEndian.Uint64(req.Value[8:])
	ctx := stream.Context()
	conn := s.guard.Conn(ctx)
	target := conn.DataWritten()
	for sent := uint64(0); sent < size; sent += chunk {
		msg := &wrapperspb.BytesValue{Value: make([]byte, min(chunk, size-sent))}
		target += int64(5 + proto.Size(msg))
		if err := stream.SendMsg(msg); err != nil {
			err = conn.SendError(err)
			s.outcomes <- err
			return err
		}
	}
	s.waiting <- struct{}{}
	err := conn.AwaitWritten(ctx, target)
	s.outcomes <- err
	return err
}

func request(size, chunk uint64) *wrapperspb.BytesValue {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, size)
	binary.BigEndian.PutUint64(b[8:], max(chunk, 1))
	if chunk == 0 {
		binary.BigEndian.PutUint64(b[8:], max(size, 1))
	}
	return &wrapperspb.BytesValue{Value: b}
}

// closed reads gather_qs_stalled_connections_closed_total{reason}.
func (s *server) closed(reason string) float64 {
	mfs, err := s.reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "gather_qs_stalled_connections_closed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func outcome(t *testing.T, s *server) error {
	t.Helper()
	select {
	case err := <-s.outcomes:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("no handler finished within 30s")
		return nil
	}
}

func TestAnswersToAReadingClientAreWritten(t *testing.T) {
	s := startServer(t, 2*time.Second)
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	for _, size := range []uint64{1, 100 << 10, 8 << 20} {
		st, err := conn.NewStream(t.Context(), &grpc.StreamDesc{ServerStreams: true}, answerMethod)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.SendMsg(request(size, 0)); err != nil {
			t.Fatal(err)
		}
		_ = st.CloseSend()
		got := &wrapperspb.BytesValue{}
		if err := st.RecvMsg(got); err != nil || uint64(len(got.Value)) != size {
			t.Fatalf("size %d: got %d bytes, %v", size, len(got.Value), err)
		}
		if err := st.RecvMsg(got); !errors.Is(err, io.EOF) {
			t.Fatalf("size %d: want the end of the stream, got %v", size, err)
		}
		if err := outcome(t, s); err != nil {
			t.Fatalf("size %d: AwaitWritten: %v", size, err)
		}
	}
	if n := s.closed("no_window") + s.closed("write_timeout"); n != 0 {
		t.Errorf("%v connections closed, want none", n)
	}
}

// TestSlowReaderKeepsItsConnection: a client that reads every few milliseconds, far inside the
// send timeout, is never taken for a stalled one, although its window runs out again and again.
func TestSlowReaderKeepsItsConnection(t *testing.T) {
	s := startServer(t, time.Second)
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10)) // no BDP growth
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	st, err := conn.NewStream(t.Context(), &grpc.StreamDesc{ServerStreams: true}, answerMethod)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SendMsg(request(2<<20, 32<<10)); err != nil {
		t.Fatal(err)
	}
	_ = st.CloseSend()
	got := &wrapperspb.BytesValue{}
	n := 0
	for {
		err := st.RecvMsg(got)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("after %d messages: %v", n, err)
		}
		n++
		time.Sleep(5 * time.Millisecond) // the slow reader under test, not a wait for a condition
	}
	if n != 64 {
		t.Errorf("got %d messages, want 64", n)
	}
	if err := outcome(t, s); err != nil {
		t.Fatalf("AwaitWritten: %v", err)
	}
	if c := s.closed("no_window"); c != 0 {
		t.Errorf("%v connections closed, want none", c)
	}
}

func TestNoStreamWindowClosesConnection(t *testing.T) {
	s := startServer(t, 300*time.Millisecond)
	c := flowtest.Dial(t, s.addr, flowtest.Options{StreamWindow: 1024}) // 1 KiB per stream, never more
	for range 3 {
		c.Call(t, answerMethod, request(1<<20, 0))
	}
	for range 3 {
		if err := outcome(t, s); !errors.Is(err, flowguard.ErrStalled) {
			t.Fatalf("AwaitWritten: %v, want ErrStalled", err)
		}
	}
	c.WaitClosed(t, 30*time.Second)
	if got := s.closed("no_window"); got != 1 {
		t.Errorf("no_window closes = %v, want 1", got)
	}
}

func TestNoConnectionWindowClosesConnection(t *testing.T) {
	s := startServer(t, 300*time.Millisecond)
	c := flowtest.Dial(t, s.addr, flowtest.Options{StreamWindow: 4 << 20}) // big stream windows, the connection's stays at 64 KiB
	c.Call(t, answerMethod, request(1<<20, 0))
	if err := outcome(t, s); !errors.Is(err, flowguard.ErrStalled) {
		t.Fatalf("AwaitWritten: %v, want ErrStalled", err)
	}
	c.WaitClosed(t, 30*time.Second)
	if got := s.closed("no_window"); got != 1 {
		t.Errorf("no_window closes = %v, want 1", got)
	}
}

// TestUnreadSocketClosesConnection: a client that grants every window but never reads its
// socket fills the kernel's buffers; the server's write then blocks, and the write deadline
// ends it.
func TestUnreadSocketClosesConnection(t *testing.T) {
	s := startServer(t, 300*time.Millisecond)
	c := flowtest.Dial(t, s.addr, flowtest.Options{StreamWindow: 1 << 30, ConnWindow: 1 << 30, Deaf: true})
	c.Call(t, answerMethod, request(64<<20, 1<<20))
	if err := outcome(t, s); !errors.Is(err, flowguard.ErrStalled) {
		t.Fatalf("handler: %v, want ErrStalled", err)
	}
	if got := s.closed("write_timeout"); got != 1 {
		t.Errorf("write_timeout closes = %v, want 1", got)
	}
}

func TestAwaitWrittenReturnsWhenCallerGoes(t *testing.T) {
	s := startServer(t, time.Minute)
	c := flowtest.Dial(t, s.addr, flowtest.Options{}) // no window at all: nothing is ever written
	id := c.Call(t, answerMethod, request(10, 0))
	<-s.waiting
	c.Reset(t, id) // the client gives up on the call
	if err := outcome(t, s); !errors.Is(err, context.Canceled) {
		t.Fatalf("AwaitWritten: %v, want context.Canceled", err)
	}
}
