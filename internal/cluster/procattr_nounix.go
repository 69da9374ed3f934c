//go:build !unix

package cluster

import "syscall"

// childAttr sets nothing: without process groups a terminal's Ctrl-C reaches the children too.
func childAttr() *syscall.SysProcAttr { return nil }
