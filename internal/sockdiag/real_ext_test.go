package sockdiag_test

import (
	"bytes"
	"net"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/gatherproxy/gather/internal/sockdiag"
)

// These tests read the test process's own sockets from the real /proc; they must not run in
// parallel with anything that opens sockets, and compare counts against a baseline.

// realReader returns a Reader of the real /proc, or skips the test where there is none.
func realReader(t *testing.T) *sockdiag.Reader {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("needs Linux procfs")
	}
	if _, err := os.Stat("/proc/self/net/tcp"); err != nil {
		t.Skipf("no procfs: %v", err)
	}
	return sockdiag.New("")
}

// waitFor reads r until ok accepts the snapshot, failing the test after a generous deadline.
// The kernel moves sockets between states asynchronously, even on loopback.
func waitFor(t *testing.T, r *sockdiag.Reader, what string, ok func(sockdiag.Snapshot) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		snap, err := r.Read()
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if ok(snap) {
			return
		}
		if time.Now().After(deadline) {
			var b bytes.Buffer
			_ = snap.WriteTable(&b)
			t.Fatalf("timed out waiting for %s; last snapshot:\n%s", what, b.String())
		}
		<-tick.C
	}
}

// loopbackCases are the listener/dialer combinations: plain IPv4, plain IPv6, and an IPv4
// client of a dual-stack listener, whose sockets are in tcp6 with IPv4-mapped addresses.
var loopbackCases = []struct {
	name                   string
	listenNet, listenAddr  string
	dialNet, dialHost      string
	skipUnlessIPv6Loopback bool
}{
	{name: "ipv4", listenNet: "tcp4", listenAddr: "127.0.0.1:0", dialNet: "tcp4", dialHost: "127.0.0.1"},
	{name: "ipv6", listenNet: "tcp6", listenAddr: "[::1]:0", dialNet: "tcp6", dialHost: "::1", skipUnlessIPv6Loopback: true},
	{name: "dual-stack", listenNet: "tcp", listenAddr: ":0", dialNet: "tcp4", dialHost: "127.0.0.1", skipUnlessIPv6Loopback: true},
}

// listen opens the case's listener, skipping the test if the host has no IPv6 loopback.
func listen(t *testing.T, listenNet, listenAddr string, needV6 bool) net.Listener {
	t.Helper()
	ln, err := net.Listen(listenNet, listenAddr)
	if err != nil && needV6 {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

func dialPort(t *testing.T, network, host string, ln net.Listener) net.Conn {
	t.Helper()
	port := ln.Addr().(*net.TCPAddr).Port
	c, err := net.Dial(network, net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestReadRealCloseWait reproduces the bug gather exists to catch: the peer closes, the server
// keeps its socket, and the socket sits in CLOSE_WAIT until the server closes it.
func TestReadRealCloseWait(t *testing.T) {
	r := realReader(t)
	for _, tc := range loopbackCases {
		t.Run(tc.name, func(t *testing.T) {
			ln := listen(t, tc.listenNet, tc.listenAddr, tc.skipUnlessIPv6Loopback)
			base, err := r.Read()
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if base.Sockets[sockdiag.Listen] < 1 {
				t.Errorf("LISTEN = %d, want our listener counted", base.Sockets[sockdiag.Listen])
			}
			client := dialPort(t, tc.dialNet, tc.dialHost, ln)
			server, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = server.Close() })
			// Both ends are ours while the connection is up.
			waitFor(t, r, "two more ESTABLISHED", func(s sockdiag.Snapshot) bool {
				return s.Sockets[sockdiag.Established] == base.Sockets[sockdiag.Established]+2
			})

			if err := client.Close(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, r, "the accepted socket in CLOSE_WAIT", func(s sockdiag.Snapshot) bool {
				return s.Sockets[sockdiag.CloseWait] == base.Sockets[sockdiag.CloseWait]+1 &&
					s.Sockets[sockdiag.Established] == base.Sockets[sockdiag.Established]
			})

			if err := server.Close(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, r, "CLOSE_WAIT back to the baseline", func(s sockdiag.Snapshot) bool {
				return s.Sockets[sockdiag.CloseWait] == base.Sockets[sockdiag.CloseWait]
			})
		})
	}
}

// TestReadRealAcceptQueue checks the attribution of ownerless sockets to our listeners: a
// connection the kernel completed but the server has not accepted has no inode, and shows in
// ListenerUnowned, as ESTABLISHED and then, once the client gives up, CLOSE_WAIT.
func TestReadRealAcceptQueue(t *testing.T) {
	r := realReader(t)
	for _, tc := range loopbackCases {
		t.Run(tc.name, func(t *testing.T) {
			ln := listen(t, tc.listenNet, tc.listenAddr, tc.skipUnlessIPv6Loopback)
			base, err := r.Read()
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			client := dialPort(t, tc.dialNet, tc.dialHost, ln)
			waitFor(t, r, "a connection waiting in the accept queue", func(s sockdiag.Snapshot) bool {
				return s.ListenerUnowned[sockdiag.Established] == base.ListenerUnowned[sockdiag.Established]+1
			})
			if err := client.Close(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, r, "the queued connection in CLOSE_WAIT", func(s sockdiag.Snapshot) bool {
				return s.ListenerUnowned[sockdiag.CloseWait] == base.ListenerUnowned[sockdiag.CloseWait]+1 &&
					s.ListenerUnowned[sockdiag.Established] == base.ListenerUnowned[sockdiag.Established]
			})
			// Closing the listener resets what is still queued.
			if err := ln.Close(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, r, "the queue gone with the listener", func(s sockdiag.Snapshot) bool {
				return s.ListenerUnowned[sockdiag.CloseWait] == base.ListenerUnowned[sockdiag.CloseWait]
			})
		})
	}
}

// BenchmarkReadReal measures one Read of the real /proc: the cost of a scrape. It grows with the
// process's fd count and with the number of TCP sockets in the network namespace.
func BenchmarkReadReal(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("needs Linux procfs")
	}
	var r sockdiag.Reader // the zero Reader is New("")
	for b.Loop() {
		if _, err := r.Read(); err != nil {
			b.Fatal(err)
		}
	}
}
