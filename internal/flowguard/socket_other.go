//go:build !linux

package flowguard

import (
	"net"
	"syscall"
)

// plainSocket gives nil outside Linux: ReadOnReady then reads as Read does (grpc-go reads from
// raw sockets only on Linux too).
func plainSocket(net.Conn) syscall.RawConn { return nil }
