package flowguard

import (
	"errors"
	"io"
	"net"
	"syscall"

	"google.golang.org/grpc/mem"
)

// ReadOnReady is Read for grpc-go's transport, which prefers it to a buffered Read when a
// connection has it (grpc-go's internal readyreader.Reader): it waits until the socket has bytes
// to read, only then takes a buffer of bufSize from pool, reads into it and returns it with the
// count. The caller puts the buffer back once it has used the bytes, so a connection waiting
// for its client's next frame holds no read buffer. grpc-go reads that way by itself only from a
// bare *net.TCPConn; a guarded connection without this method gets a buffered reader instead,
// which pins its read buffer (32 KiB by default) for as long as the connection is open.
//
// The bytes read are followed like Read's. On a connection with TLS (or one that is not a
// socket) it is Read into a buffer from pool, which is then held while it waits. An error with
// no bytes comes back with no buffer; io.EOF when the client has closed its side.
func (c *Conn) ReadOnReady(bufSize int, pool mem.BufferPool) (*[]byte, int, error) {
	r := &c.rr
	if r.raw == nil {
		buf := pool.Get(bufSize)
		n, err := c.Read(*buf)
		if n == 0 {
			pool.Put(buf)
			return nil, 0, err
		}
		return buf, n, err
	}
	r.bufSize, r.pool = bufSize, pool
	err := r.raw.Read(r.readFn) // calls readFn, and again each time the socket becomes readable
	buf, n, readErr := r.buf, r.n, r.err
	r.buf, r.pool, r.err = nil, nil, nil
	switch {
	case err != nil: // the wait itself failed: the connection was closed, or a deadline passed
		if buf != nil {
			pool.Put(buf)
		}
		return nil, 0, err
	case readErr != nil: // readFn has put the buffer back
		return nil, 0, readErr
	case n == 0:
		pool.Put(buf)
		return nil, 0, io.EOF
	}
	c.received((*buf)[:n])
	return buf, n, nil
}

// readyRead is the state of ReadOnReady, kept in the Conn so that a read allocates nothing.
type readyRead struct {
	raw    syscall.RawConn // the plaintext socket; nil when there is none to read from directly
	readFn func(fd uintptr) bool

	// One read's request and outcome.
	bufSize int
	pool    mem.BufferPool
	buf     *[]byte
	n       int
	err     error
}

// init readies r to read from conn, directly from its socket if it is a plaintext one.
func (r *readyRead) init(conn net.Conn) {
	if r.raw = plainSocket(conn); r.raw != nil {
		r.readFn = r.read
	}
}

// read is the raw connection's read callback: one read(2) into a buffer from the pool. On
// EAGAIN it puts the buffer back and returns false, and the raw connection waits for the
// socket to become readable before it calls read again.
func (r *readyRead) read(fd uintptr) bool {
	r.buf = r.pool.Get(r.bufSize)
	for {
		r.n, r.err = syscall.Read(int(fd), *r.buf)
		if !errors.Is(r.err, syscall.EINTR) {
			break
		}
	}
	if r.err == nil {
		return true
	}
	r.pool.Put(r.buf)
	r.buf, r.n = nil, 0
	if errors.Is(r.err, syscall.EAGAIN) {
		r.err = nil
		return false
	}
	return true
}
