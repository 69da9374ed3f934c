package chaos

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestRelayBlackhole: through the relay bytes flow both ways; after Blackhole none do, in either
// direction, and neither side sees its peer go (no FIN, no RST); when the target closes its end,
// TargetClosed says so.
func TestRelayBlackhole(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lis.Close() }()
	relay, err := NewRelay(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = relay.Close() }()
	client, err := net.Dial("tcp", relay.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Close() }()
	target, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = target.Close() }()

	send(t, client, target, "query")
	send(t, target, client, "answer")

	relay.Blackhole()
	for _, dir := range []struct {
		from, to net.Conn
		name     string
	}{{client, target, "client to target"}, {target, client, "target to client"}} {
		if _, err := dir.from.Write([]byte("lost")); err != nil {
			t.Fatalf("%s: write after blackhole: %v", dir.name, err)
		}
		// Nothing arrives and the connection stays open: the read times out, it does not end.
		if err := dir.to.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		n, err := dir.to.Read(make([]byte, 16))
		if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s after blackhole: read %d bytes, %v; want nothing until the deadline", dir.name, n, err)
		}
	}
	select {
	case <-relay.TargetClosed():
		t.Fatal("TargetClosed before the target closed")
	default:
	}

	_ = target.Close() // the proxy's keepalive giving up
	select {
	case <-relay.TargetClosed():
	case <-time.After(10 * time.Second):
		t.Fatal("TargetClosed not closed 10s after the target closed its end")
	}
	if err := client.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("client after the target closed behind the blackhole: %v, want no news (deadline)", err)
	}

	if err := relay.Close(); err != nil {
		t.Fatal(err)
	}
	if err := client.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Read(make([]byte, 16)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client after relay.Close: %v, want EOF or a reset", err)
	}
}

// TestRelayPassesFIN: without a blackhole the relay is transparent, a close included.
func TestRelayPassesFIN(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lis.Close() }()
	relay, err := NewRelay(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = relay.Close() }()
	client, err := net.Dial("tcp", relay.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Close() }()
	target, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	send(t, client, target, "hello")
	_ = target.Close()
	if err := client.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, err := client.Read(make([]byte, 16)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("client after the target closed: %d bytes, %v; want EOF", n, err)
	}
}

// send writes msg on from and reads it whole on to.
func send(t *testing.T, from, to net.Conn, msg string) {
	t.Helper()
	if _, err := from.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := to.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(to, buf); err != nil || string(buf) != msg {
		t.Fatalf("sent %q, received %q (%v)", msg, buf, err)
	}
}
