package fault_test

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gatherproxy/gather/internal/fault"
)

// TestListenerCut checks on raw TCP what a peer sees when the Listener cuts its connections:
// end of stream after CloseAll, a reset after ResetAll.
func TestListenerCut(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cut  func(*fault.Listener) int
		want error
	}{
		{"CloseAll", (*fault.Listener).CloseAll, io.EOF},
		{"ResetAll", (*fault.Listener).ResetAll, syscall.ECONNRESET},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lis := listen(t)
			// The server side accepts and holds connections, reading nothing, until they are cut.
			var wg sync.WaitGroup
			defer wg.Wait()
			defer func() { _ = lis.Close() }()
			wg.Go(func() {
				for {
					c, err := lis.Accept()
					if err != nil {
						return
					}
					wg.Go(func() {
						_, _ = io.Copy(io.Discard, c) // ends when the connection is cut
						_ = c.Close()
					})
				}
			})

			var clients []net.Conn
			for range 3 {
				c, err := net.Dial("tcp", lis.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = c.Close() }()
				clients = append(clients, c)
			}
			eventually(t, "3 connections tracked", func() bool { return lis.Conns() == 3 })
			if got := tt.cut(lis); got != 3 {
				t.Errorf("%s() = %d, want 3", tt.name, got)
			}
			if got := lis.Conns(); got != 0 {
				t.Errorf("Conns() = %d after %s, want 0", got, tt.name)
			}
			for i, c := range clients {
				_ = c.SetReadDeadline(time.Now().Add(long))
				if _, err := c.Read(make([]byte, 1)); !errors.Is(err, tt.want) {
					t.Errorf("client %d: Read after %s: %v, want %v", i, tt.name, err, tt.want)
				}
			}
		})
	}
}

func TestListenError(t *testing.T) {
	t.Parallel()
	if _, err := fault.Listen("tcp", "127.0.0.1:-1"); err == nil {
		t.Error("Listen on port -1 succeeded")
	}
}
