//go:build unix && !linux

package cluster

import "syscall"

// childAttr puts a child in a process group of its own. Without Linux's Pdeathsig, children
// outlive a parent that is killed with SIGKILL.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
