package fault

import (
	"context"
	"net"
	"sync"
)

// Listener is a net.Listener that keeps track of the TCP connections it has accepted and not yet
// seen closed, by remote address, so that a fault can cut the connection a call arrived on and a
// test can cut all of them at once.
//
// Accept returns each *net.TCPConn wrapped in a tracking net.Conn (so a server that type-asserts
// *net.TCPConn will not find one; gRPC does not need to). Connections of any other type are
// returned as they are and not tracked: Close and Reset faults cannot cut them.
type Listener struct {
	net.Listener

	mu    sync.Mutex
	conns map[string]*conn // by RemoteAddr().String()
}

// Listen listens on network and address as net.Listen does, and tracks the connections.
func Listen(network, address string) (*Listener, error) {
	l, err := net.Listen(network, address)
	if err != nil {
		return nil, err // net.OpError names the address
	}
	return WrapListener(l), nil
}

// WrapListener tracks the connections l accepts from now on. The returned Listener owns l:
// closing it closes l. Closing the listener does not close the connections it accepted.
func WrapListener(l net.Listener) *Listener {
	return &Listener{Listener: l, conns: make(map[string]*conn)}
}

// Accept waits for and returns the next connection, tracked until it is closed.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err // unwrapped: servers look for net.ErrClosed and temporary errors
	}
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	tc := &conn{
		Conn:     tcp,
		tcp:      tcp,
		lis:      l,
		key:      tcp.RemoteAddr().String(),
		done:     make(chan struct{}),
		progress: make(chan struct{}),
	}
	l.mu.Lock()
	l.conns[tc.key] = tc
	l.mu.Unlock()
	return tc, nil
}

// Conns returns the number of accepted connections not yet closed (by the server, a fault,
// CloseAll or ResetAll). A connection the peer closed counts until the server notices and closes
// its end.
func (l *Listener) Conns() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// CloseAll closes every tracked connection, as the kernel does when the serving process is
// killed, and returns how many it closed. Calls on them fail; the server's handlers see their
// contexts end once the transport notices.
func (l *Listener) CloseAll() int { return l.cutAll(false) }

// ResetAll is CloseAll with SO_LINGER 0: every peer gets an RST.
func (l *Listener) ResetAll() int { return l.cutAll(true) }

func (l *Listener) cutAll(reset bool) int {
	l.mu.Lock()
	all := make([]*conn, 0, len(l.conns))
	for _, c := range l.conns {
		all = append(all, c)
	}
	l.mu.Unlock()
	for _, c := range all {
		c.cut(reset)
	}
	return len(all)
}

// conn returns the tracked connection from remote address addr, or nil. A nil Listener tracks
// nothing.
func (l *Listener) conn(addr string) *conn {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns[addr]
}

// forget stops tracking c, unless its address has since been taken by a newer connection.
func (l *Listener) forget(c *conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[c.key] == c {
		delete(l.conns, c.key)
	}
}

// conn is an accepted TCP connection that removes itself from its Listener when closed and
// counts the DATA bytes the server has written to it, so a fault can wait for the messages sent
// before it to reach the kernel.
type conn struct {
	net.Conn // the *net.TCPConn itself; embedded as an interface so only net.Conn's methods show
	tcp      *net.TCPConn
	lis      *Listener
	key      string

	closeOnce sync.Once
	closeErr  error
	done      chan struct{} // closed by Close

	mu       sync.Mutex
	frames   frameCounter
	data     int64         // DATA frame payload bytes written
	progress chan struct{} // closed and replaced whenever data grows
}

// Write writes p and counts the DATA payload bytes in what was written.
func (c *conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.mu.Lock()
		if d := c.frames.count(p[:n]); d > 0 {
			c.data += int64(d)
			close(c.progress)
			c.progress = make(chan struct{})
		}
		c.mu.Unlock()
	}
	return n, err
}

// Close stops tracking c and closes it. It is safe to call more than once and concurrently.
func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.lis.forget(c)
		close(c.done)
		c.closeErr = c.Conn.Close()
	})
	return c.closeErr
}

// cut closes c, first setting SO_LINGER 0 if reset so the peer gets an RST.
func (c *conn) cut(reset bool) {
	if reset {
		_ = c.tcp.SetLinger(0) // fails only if c is already closed, when there is nothing to reset
	}
	_ = c.Close() // the error would be about c being closed already: it is closed either way
}

// dataWritten returns the DATA payload bytes written to c so far.
func (c *conn) dataWritten() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.data
}

// waitData waits until at least n DATA payload bytes have been written to c, c is closed, or ctx
// ends.
func (c *conn) waitData(ctx context.Context, n int64) {
	for {
		c.mu.Lock()
		got, progress := c.data, c.progress
		c.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-progress:
		case <-c.done:
			return
		case <-ctx.Done():
			return
		}
	}
}

// frameCounter follows the HTTP/2 frames of a server's byte stream, written in pieces of any
// size, and counts the payload bytes of its DATA frames. A server's stream is frames from its
// first byte: unlike a client, it sends no preface string.
type frameCounter struct {
	hdr  [9]byte // the frame header being read
	nhdr int     // bytes of hdr read so far
	left int     // payload bytes of the current frame not yet seen
	data bool    // the current frame is a DATA frame
}

// count consumes p and returns how many of its bytes were DATA payload.
func (f *frameCounter) count(p []byte) int {
	n := 0
	for len(p) > 0 {
		if f.left > 0 {
			k := min(f.left, len(p))
			if f.data {
				n += k
			}
			f.left -= k
			p = p[k:]
			continue
		}
		k := copy(f.hdr[f.nhdr:], p)
		f.nhdr += k
		p = p[k:]
		if f.nhdr == len(f.hdr) {
			f.nhdr = 0
			f.left = int(f.hdr[0])<<16 | int(f.hdr[1])<<8 | int(f.hdr[2])
			f.data = f.hdr[3] == 0x0 // frame type DATA
		}
	}
	return n
}
