//go:build unix

package proxy_test

import (
	"syscall"
	"testing"
	"time"
)

// reportCPU starts measuring the process's CPU time (user and system, every goroutine: client,
// proxy and shards); the function it returns reports it per op as cpu-ns/op. On a shared
// machine this moves far less than ns/op, which counts the time the benchmark waited for a core.
func reportCPU(b *testing.B) func() {
	start := processCPU()
	return func() { b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op") }
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
