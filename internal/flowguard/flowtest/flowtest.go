// Package flowtest is a test double for package flowguard's users: an HTTP/2 client written by
// hand, which can do what no well-behaved gRPC client does: withhold flow-control window, or
// stop reading its socket, while its calls' answers are on their way.
package flowtest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

// Options say how much the client lets the server send.
type Options struct {
	// StreamWindow is the client's SETTINGS_INITIAL_WINDOW_SIZE: how many bytes of each answer
	// the server may send. The client never grants more.
	StreamWindow uint32
	// ConnWindow is added to the connection's initial window of 65535 bytes, once.
	ConnWindow uint32
	// Deaf makes the client never read its socket (with a 4 KiB receive buffer), so the
	// server's writes block once the kernel's buffers are full. Otherwise it reads and discards
	// everything, acknowledging SETTINGS, so only flow control holds the server back.
	Deaf bool
}

// Client is a connection made by Dial.
type Client struct {
	conn   net.Conn
	fr     *http2.Framer
	mu     sync.Mutex // guards writes
	closed chan struct{}
	next   uint32 // the next stream id
}

// Dial connects to addr and sends the preface and settings. The connection is closed when the
// test ends.
func Dial(t testing.TB, addr string, o Options) *Client {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		if !o.Deaf {
			return nil
		}
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	conn, err := d.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{conn: conn, fr: http2.NewFramer(conn, conn), closed: make(chan struct{}), next: 1}
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: o.StreamWindow}); err != nil {
		t.Fatal(err)
	}
	if o.ConnWindow > 0 {
		if err := c.fr.WriteWindowUpdate(0, o.ConnWindow); err != nil {
			t.Fatal(err)
		}
	}
	if o.Deaf {
		close(c.closed) // nothing reads; Closed cannot tell
	} else {
		go c.readLoop()
	}
	t.Cleanup(func() {
		_ = conn.Close()
		<-c.closed
	})
	return c
}

func (c *Client) readLoop() {
	defer close(c.closed)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			_ = c.conn.Close() // as any client does when its server hangs up: no CLOSE_WAIT left
			return
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			c.mu.Lock()
			_ = c.fr.WriteSettingsAck()
			c.mu.Unlock()
		}
	}
}

// Call starts a unary or server-streaming call of method with msg on a new stream, and returns
// the stream's id. Nothing reads the answer.
func (c *Client) Call(t testing.TB, method string, msg proto.Message) uint32 {
	t.Helper()
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for _, hf := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", method},
		{":authority", "gather"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: hf[0], Value: hf[1]})
	}
	body, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	data := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(body)))
	data = append(data, body...)
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.next
	c.next += 2
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteData(id, true, data); err != nil {
		t.Fatal(err)
	}
	return id
}

// Reset cancels the call on stream id, as a client whose deadline passed does.
func (c *Client) Reset(t testing.TB, id uint32) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
}

// Closed is closed when the server has closed the connection (never for a Deaf client).
func (c *Client) Closed() <-chan struct{} { return c.closed }

// WaitClosed fails the test unless the server closes the connection within timeout.
func (c *Client) WaitClosed(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-c.closed:
	case <-time.After(timeout):
		t.Fatalf("the server did not close the connection within %s", timeout)
	}
}
