package flowguard

import (
	"net"
	"syscall"
)

// plainSocket returns the raw socket of conn when conn is itself a TCP or Unix socket, as it is
// without TLS, so that ReadOnReady can wait for it to become readable before taking a buffer.
// Any other connection (TLS above the socket, a pipe) gives nil: its bytes are not the
// socket's. As in grpc-go, only on Linux.
func plainSocket(conn net.Conn) syscall.RawConn {
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return nil
	}
	raw, err := conn.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}
