//go:build linux

package benchsuite

import (
	"fmt"
	"syscall"
)

// childAttr makes the kernel kill a child when this process dies, so that not even a SIGKILL of
// the suite leaves shards and proxies behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// raiseFileLimit raises this process's RLIMIT_NOFILE to at least n (the hard limit too, which
// needs privileges). Children started afterwards inherit it: once a Go program has called
// Setrlimit itself, os/exec no longer restores the limit the program started with.
func raiseFileLimit(n uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("%w: %w", errNoFileLimit, err)
	}
	want := lim
	want.Cur = max(lim.Cur, n)
	want.Max = max(lim.Max, n)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return fmt.Errorf("%w to %d (now soft %d, hard %d): %w", errNoFileLimit, n, lim.Cur, lim.Max, err)
	}
	return nil
}
