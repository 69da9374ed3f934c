package flowguard_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"

	"github.com/gatherproxy/gather/internal/flowguard"
)

// readyReader is grpc-go's readyreader.Reader (an internal package): a connection that has it is
// read without a buffer of its own.
type readyReader interface {
	ReadOnReady(bufSize int, pool mem.BufferPool) (*[]byte, int, error)
}

// watchedPool is a buffer pool that counts the buffers it has out.
type watchedPool struct{ out atomic.Int64 }

func (p *watchedPool) Get(n int) *[]byte {
	p.out.Add(1)
	b := make([]byte, n)
	return &b
}

func (p *watchedPool) Put(*[]byte) { p.out.Add(-1) }

// guardedPair returns the server side of a loopback TCP connection as the guard hands it to
// grpc-go, and the client side.
func guardedPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	g := flowguard.New(flowguard.Config{}, prometheus.NewRegistry())
	t.Cleanup(g.Close)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lis.Close() }()
	client, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	raw, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	conn, _, err := g.Credentials(insecure.NewCredentials()).ServerHandshake(raw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, client
}

// waitInIOWait polls the goroutine dump until a goroutine in IO wait has fn on its stack.
func waitInIOWait(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.Stack(buf, true)
		for g := range strings.SplitSeq(string(buf[:n]), "\n\n") {
			if strings.Contains(g, "[IO wait") && strings.Contains(g, fn) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine waits for the socket in %s after 10s", fn)
		}
		time.Sleep(time.Millisecond) // polling the goroutine dump; there is nothing to signal on
	}
}

// TestReadOnReadyTakesNoBufferWhileWaiting: a guarded plaintext connection waits for its
// client's bytes without holding a buffer from the pool, returns them in one, and hands every
// buffer back by the end of the stream.
func TestReadOnReadyTakesNoBufferWhileWaiting(t *testing.T) {
	conn, client := guardedPair(t)
	rr, ok := conn.(readyReader)
	if !ok {
		t.Fatalf("%T has no ReadOnReady: grpc-go would pin a read buffer for each connection", conn)
	}
	pool := &watchedPool{}
	type result struct {
		buf *[]byte
		n   int
		err error
	}
	got := make(chan result, 1)
	go func() {
		buf, n, err := rr.ReadOnReady(32<<10, pool)
		got <- result{buf, n, err}
	}()
	waitInIOWait(t, "flowguard.(*Conn).ReadOnReady")
	if n := pool.out.Load(); n != 0 {
		t.Errorf("%d buffers held while waiting for the client, want 0", n)
	}
	sent := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00") // preface, empty SETTINGS
	if _, err := client.Write(sent); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("ReadOnReady returned nothing within 30s")
	}
	if r.err != nil || r.n == 0 || !bytes.HasPrefix(sent, (*r.buf)[:r.n]) {
		t.Fatalf("ReadOnReady = %d bytes, %v; want a prefix of %q", r.n, r.err, sent)
	}
	pool.Put(r.buf)

	// Read the rest, then the end of the stream: every buffer goes back.
	_ = client.Close()
	for read := r.n; ; {
		buf, n, err := rr.ReadOnReady(32<<10, pool)
		if err != nil {
			if !errors.Is(err, io.EOF) || read != len(sent) {
				t.Fatalf("after %d of %d bytes: %v, want io.EOF after all of them", read, len(sent), err)
			}
			break
		}
		read += n
		pool.Put(buf)
	}
	if n := pool.out.Load(); n != 0 {
		t.Errorf("%d buffers not given back, want 0", n)
	}
}

// TestIdleConnectionsHoldNoReadBuffer: grpc-go reads a guarded connection through ReadOnReady,
// so an idle connection pins no read buffer (32 KiB each otherwise). Measured as the heap that
// idle connections keep, server and client sides together, with the client's buffers off.
func TestIdleConnectionsHoldNoReadBuffer(t *testing.T) {
	const n = 50
	s := startServer(t, time.Second)
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for range n {
		c, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithReadBufferSize(0), grpc.WithWriteBufferSize(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		c.Connect()
		for st := c.GetState(); st != connectivity.Ready; st = c.GetState() {
			if !c.WaitForStateChange(ctx, st) {
				t.Fatalf("connection still %v: %v", st, ctx.Err())
			}
		}
	}
	per := (float64(heap()) - float64(before)) / n
	t.Logf("heap per idle connection, both sides: %.0f bytes", per)
	// Both sides together keep 20-36 KiB without a pinned read buffer, over 60 KiB with one.
	if per >= 48<<10 {
		t.Errorf("idle connections keep %.0f bytes of heap each, want under 48 KiB: does the server pin a read buffer (32 KiB)?", per)
	}
}
