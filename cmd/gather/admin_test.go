package main

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"testing"
)

// TestWarnBeyondLoopback: an admin port on a wildcard or a public address is worth a warning;
// one on loopback is not.
func TestWarnBeyondLoopback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ip   net.IP
		warn bool
	}{
		{net.IPv4(127, 0, 0, 1), false},
		{net.IPv4(127, 0, 0, 2), false},
		{net.IPv6loopback, false},
		{net.IPv4zero, true},        // --admin :9090, 0.0.0.0:9090
		{net.IPv6unspecified, true}, // [::]:9090
		{net.IPv4(192, 0, 2, 7), true},
	} {
		var buf bytes.Buffer
		warnBeyondLoopback(slog.New(slog.NewTextHandler(&buf, nil)), &net.TCPAddr{IP: tc.ip, Port: 9090}, adminOptions{pprof: true})
		if got := strings.Contains(buf.String(), "level=WARN") && strings.Contains(buf.String(), "admin port reachable beyond loopback") &&
			strings.Contains(buf.String(), "pprof=true"); got != tc.warn {
			t.Errorf("%s: warned %v, want %v:\n%s", tc.ip, got, tc.warn, buf.String())
		}
	}
}
