//go:build !linux

package benchsuite

import (
	"fmt"
	"runtime"
	"syscall"
)

func childAttr() *syscall.SysProcAttr { return nil }

func raiseFileLimit(uint64) error {
	return fmt.Errorf("%w: not implemented on %s", errNoFileLimit, runtime.GOOS)
}
