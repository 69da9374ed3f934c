package cluster

import "syscall"

// childAttr puts a child in a process group of its own and has the kernel send it SIGTERM when
// the thread that started it exits: Go exits no thread of a running process except one locked
// to a goroutine that ends, which this package never does, so in practice when the parent dies,
// however it dies. SIGTERM rather than SIGKILL: the shards then revoke their leases.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
