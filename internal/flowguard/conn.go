package flowguard

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Conn is one client connection as the guard sees it: the plaintext HTTP/2 byte streams grpc-go
// reads and writes (TLS is below it), the send windows the client has granted, and which of the
// streams the server has begun answering are waiting for the client to make room.
//
// grpc-go's reader goroutine calls Read, or ReadOnReady once the handshake is done, and its
// writer goroutine (the loopy writer) calls Write; the flow-control state they both update is
// guarded by mu.
type Conn struct {
	net.Conn
	raw net.Conn // the TCP connection under any TLS, for socket options
	g   *Guard
	key string

	in, out scanner   // each used by one goroutine only: Read's and Write's
	rr      readyRead // ReadOnReady's state, used by Read's goroutine only

	mu            sync.Mutex
	connWindow    int64 // the connection's send window
	initialWindow int64 // the client's SETTINGS_INITIAL_WINDOW_SIZE
	streams       map[uint32]*stream
	started       int       // streams the server has begun answering and not finished
	blocked       int       // ... of which with a stream window at or below 0
	connBlocked   time.Time // since when connWindow <= 0; zero while it is positive
	dataWritten   int64     // DATA payload bytes written so far, all streams
	waiters       []waiter
	suspect       bool  // on the guard's list of connections to check
	closeErr      error // why the connection was closed; nil while open
}

// stream is one HTTP/2 stream of a Conn.
type stream struct {
	window       int64     // the stream's send window
	started      bool      // the server has sent its response headers
	blockedSince time.Time // since when started with window <= 0; zero otherwise
}

type waiter struct {
	target int64
	done   chan struct{}
}

var (
	// ErrStalled is the close reason of a connection on which an answer made no progress for
	// the guard's send timeout, by flow control or by a socket write that did not complete.
	ErrStalled = errors.New("the client made no room for its answer")
	// ErrClosed is the close reason of a connection that ended for any other reason.
	ErrClosed = errors.New("connection closed")
)

func newConn(g *Guard, c, raw net.Conn) *Conn {
	conn := &Conn{
		Conn: c, raw: raw, g: g, key: c.RemoteAddr().String(),
		in:            scanner{preface: len(clientPreface)},
		connWindow:    defaultWindow,
		initialWindow: defaultWindow,
		streams:       make(map[uint32]*stream),
	}
	conn.rr.init(c)
	return conn
}

// Read reads from the connection and follows the client's flow-control frames.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.received(p[:n])
	}
	return n, err
}

// received follows the frames in p, bytes just read from the client.
func (c *Conn) received(p []byte) {
	now := time.Now()
	c.mu.Lock()
	c.in.scan(p, func(f frame) { c.incoming(f, now) })
	c.mu.Unlock()
}

// Write writes to the connection with a deadline of the guard's send timeout: a client whose
// socket takes nothing for that long (its receive buffer full, a process frozen, a cable pulled
// while data was in flight) makes the write fail, and grpc-go then closes the connection.
func (c *Conn) Write(p []byte) (int, error) {
	if c.g.cfg.SendTimeout > 0 {
		_ = c.SetWriteDeadline(time.Now().Add(c.g.cfg.SendTimeout))
	}
	n, err := c.Conn.Write(p)
	if n > 0 {
		now := time.Now()
		c.mu.Lock()
		c.out.scan(p[:n], func(f frame) { c.outgoing(f, now) })
		c.wake()
		c.mu.Unlock()
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.g.stalled(c, reasonWriteTimeout, c.g.cfg.SendTimeout, 0)
	}
	return n, err
}

// Close closes the connection and releases every waiter.
func (c *Conn) Close() error {
	c.finish(ErrClosed)
	return c.Conn.Close()
}

// SyscallConn gives socket-level access to the TCP connection under any TLS, as grpc-go's
// channelz and socket options expect of a connection.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.raw.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("flowguard: connection has no file descriptor")
}

// finish records why the connection ended (the first reason wins), wakes every waiter and
// leaves the guard's books.
func (c *Conn) finish(why error) {
	c.mu.Lock()
	first := c.closeErr == nil
	if first {
		c.closeErr = why
		for _, w := range c.waiters {
			close(w.done)
		}
		c.waiters = nil
	}
	c.mu.Unlock()
	if first {
		c.g.forget(c)
	}
}

// DataWritten returns how many bytes of DATA frame payload, on all streams, the connection has
// written to its socket so far. A gRPC message of n bytes is 5+n bytes of DATA payload.
func (c *Conn) DataWritten() int64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dataWritten
}

// AwaitWritten waits until the connection has written target bytes of DATA payload (see
// DataWritten), so that a message handed to grpc-go is known to have left the process. It
// returns nil then; ErrStalled when the guard closed the connection because the client made no
// room; ErrClosed when it closed for another reason; or ctx's error. A nil Conn returns at once.
//
// The count is over all streams, so with several answers in flight on one connection an answer
// may be taken as written a little early; a client that stops reading is still found, because
// then nothing is written at all.
func (c *Conn) AwaitWritten(ctx context.Context, target int64) error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	if c.dataWritten >= target {
		c.mu.Unlock()
		return nil
	}
	if err := c.closeErr; err != nil {
		c.mu.Unlock()
		return err
	}
	w := waiter{target: target, done: make(chan struct{})}
	c.waiters = append(c.waiters, w)
	c.mu.Unlock()
	c.g.waiting.Inc()
	defer c.g.waiting.Dec()
	select {
	case <-w.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.dataWritten >= target {
			return nil
		}
		return c.closeErr
	case <-ctx.Done():
		c.mu.Lock()
		if errors.Is(c.closeErr, ErrStalled) {
			// The guard closed the connection, and that ended ctx too: say why.
			c.mu.Unlock()
			return ErrStalled
		}
		for i := range c.waiters {
			if c.waiters[i].done == w.done {
				c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
				break
			}
		}
		c.mu.Unlock()
		return ctx.Err()
	}
}

// SendError returns ErrStalled when the guard closed the connection because the client made no
// room, and err otherwise: a handler whose SendMsg failed learns why.
func (c *Conn) SendError(err error) error {
	if errors.Is(c.Err(), ErrStalled) {
		return ErrStalled
	}
	return err
}

// Err returns why the connection was closed, nil while it is open.
func (c *Conn) Err() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// wake releases the waiters whose target has been written. c.mu is held.
func (c *Conn) wake() {
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if c.dataWritten >= w.target {
			close(w.done)
		} else {
			kept = append(kept, w)
		}
	}
	clear(c.waiters[len(kept):])
	c.waiters = kept
}

// incoming follows a frame from the client. c.mu is held.
func (c *Conn) incoming(f frame, now time.Time) {
	switch f.typ {
	case frameHeaders:
		if _, ok := c.streams[f.stream]; !ok && f.stream%2 == 1 {
			c.streams[f.stream] = &stream{window: c.initialWindow}
		}
	case frameWindowUpdate:
		if len(f.payload) < 4 {
			return
		}
		inc := int64(binary.BigEndian.Uint32(f.payload) & 0x7fffffff)
		if f.stream == 0 {
			c.connWindow += inc
			c.updateConnBlocked(now)
			return
		}
		if st, ok := c.streams[f.stream]; ok {
			st.window += inc
			c.updateBlocked(st, now)
		}
	case frameSettings:
		if f.flags&flagAck != 0 {
			return
		}
		for p := f.payload; len(p) >= 6; p = p[6:] {
			if binary.BigEndian.Uint16(p) != settingInitialWindowSize {
				continue
			}
			v := int64(binary.BigEndian.Uint32(p[2:]))
			delta := v - c.initialWindow
			c.initialWindow = v
			for _, st := range c.streams {
				st.window += delta
				c.updateBlocked(st, now)
			}
		}
	case frameRSTStream:
		c.endStream(f.stream)
	}
	c.checkSuspect()
}

// outgoing follows a frame the server wrote. c.mu is held.
func (c *Conn) outgoing(f frame, now time.Time) {
	switch f.typ {
	case frameData:
		c.dataWritten += int64(f.length)
		c.connWindow -= int64(f.length)
		c.updateConnBlocked(now)
		if st, ok := c.streams[f.stream]; ok {
			st.window -= int64(f.length)
			c.updateBlocked(st, now)
		}
		if f.flags&flagEndStream != 0 {
			c.endStream(f.stream)
		}
	case frameHeaders:
		if f.flags&flagEndStream != 0 {
			c.endStream(f.stream)
			break
		}
		if st, ok := c.streams[f.stream]; ok && !st.started {
			st.started = true
			c.started++
			c.updateBlocked(st, now)
		}
	case frameRSTStream:
		c.endStream(f.stream)
	}
	c.checkSuspect()
}

// updateBlocked keeps st.blockedSince and c.blocked in step with st's window. c.mu is held.
func (c *Conn) updateBlocked(st *stream, now time.Time) {
	blocked := st.started && st.window <= 0
	switch {
	case blocked && st.blockedSince.IsZero():
		st.blockedSince = now
		c.blocked++
	case !blocked && !st.blockedSince.IsZero():
		st.blockedSince = time.Time{}
		c.blocked--
	}
}

func (c *Conn) updateConnBlocked(now time.Time) {
	switch {
	case c.connWindow <= 0 && c.connBlocked.IsZero():
		c.connBlocked = now
	case c.connWindow > 0:
		c.connBlocked = time.Time{}
	}
}

// endStream forgets a stream that is over for the server: answered, or reset by either side.
func (c *Conn) endStream(id uint32) {
	st, ok := c.streams[id]
	if !ok {
		return
	}
	if !st.blockedSince.IsZero() {
		c.blocked--
	}
	if st.started {
		c.started--
	}
	delete(c.streams, id)
}

// checkSuspect puts the connection on the guard's list when some answer waits for room.
// c.mu is held.
func (c *Conn) checkSuspect() {
	if !c.suspect && c.waitingForRoom() {
		c.suspect = true
		c.g.watch(c)
	}
}

// waitingForRoom reports whether some stream the server has begun answering cannot send: its
// own window or the connection's is used up. c.mu is held.
func (c *Conn) waitingForRoom() bool {
	return c.blocked > 0 || (c.started > 0 && c.connWindow <= 0)
}

// blockedFor returns for how long the longest-waiting answer has had no room at now, and its
// stream (0 when it is the connection's window that is used up). c.mu is held.
func (c *Conn) blockedFor(now time.Time) (time.Duration, uint32) {
	var (
		longest time.Duration
		id      uint32
	)
	if c.started > 0 && !c.connBlocked.IsZero() {
		longest = now.Sub(c.connBlocked)
	}
	if c.blocked > 0 {
		for sid, st := range c.streams {
			if !st.blockedSince.IsZero() && now.Sub(st.blockedSince) > longest {
				longest, id = now.Sub(st.blockedSince), sid
			}
		}
	}
	return longest, id
}
