package chaos

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// Relay is a TCP relay on loopback between its clients and one target address, which can go
// silent the way a host whose cable is pulled does: Blackhole stops relaying in both directions
// while every socket stays open, so neither side gets a FIN or an RST, and only a keepalive can
// tell that the peer is gone.
//
// After Blackhole the relay keeps reading both sides and drops what it reads, so that it sees
// when the target closes its end (TargetClosed) and never blocks a sender with a full window. To
// the target's HTTP/2 keepalive this is the same silence as a pulled cable: its pings are never
// answered. The difference is below, in TCP: the target's segments are acknowledged, so only a
// keepalive, and no TCP retransmission timeout, can end the connection.
type Relay struct {
	lis    net.Listener
	target string

	holeOnce sync.Once
	hole     chan struct{} // closed by Blackhole

	goneOnce sync.Once
	gone     chan struct{} // closed when the target closes a connection before Close

	mu      sync.Mutex
	conns   []net.Conn
	closing bool

	wg sync.WaitGroup
}

// NewRelay listens on 127.0.0.1 (an ephemeral port) and relays every connection to target.
func NewRelay(target string) (*Relay, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	r := &Relay{lis: lis, target: target, hole: make(chan struct{}), gone: make(chan struct{})}
	r.wg.Go(r.accept)
	return r, nil
}

// Addr is the address clients dial.
func (r *Relay) Addr() string { return r.lis.Addr().String() }

// Blackhole stops relaying, in both directions, on every connection, present and future. It is
// safe to call more than once.
func (r *Relay) Blackhole() { r.holeOnce.Do(func() { close(r.hole) }) }

// TargetClosed is closed when the target ends one of the relayed connections (FIN or RST) before
// Close: after Blackhole, that is the target noticing its peer is gone.
func (r *Relay) TargetClosed() <-chan struct{} { return r.gone }

// Close stops accepting, closes every socket (the client sides see EOF or an error) and waits
// for the relay's goroutines.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.closing = true
	conns := r.conns
	r.conns = nil
	r.mu.Unlock()
	err := r.lis.Close()
	for _, c := range conns {
		_ = c.Close() // closing is all we can do; an error means it was closed already
	}
	r.wg.Wait()
	return err
}

func (r *Relay) accept() {
	for {
		c, err := r.lis.Accept()
		if err != nil {
			return // closed
		}
		up, err := net.DialTimeout("tcp", r.target, 5*time.Second)
		if err != nil {
			_ = c.Close() // the client sees the refusal as a closed connection
			continue
		}
		r.mu.Lock()
		if r.closing {
			r.mu.Unlock()
			_ = c.Close()
			_ = up.Close()
			return
		}
		r.conns = append(r.conns, c, up)
		r.mu.Unlock()
		r.wg.Go(func() { r.pipe(c, up, true) })
		r.wg.Go(func() { r.pipe(up, c, false) })
	}
}

// pipe copies src to dst until src fails, dropping everything once the relay is blackholed or
// dst has failed. fromTarget says src is the target's side.
func (r *Relay) pipe(dst, src net.Conn, fromTarget bool) {
	buf := make([]byte, 32<<10)
	dstDead := false
	for {
		n, err := src.Read(buf)
		if n > 0 && !dstDead && !r.holed() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				dstDead = true // keep draining src, so that its end is still seen
			}
		}
		if err == nil {
			continue
		}
		if fromTarget && !r.isClosing() {
			r.goneOnce.Do(func() { close(r.gone) })
		}
		if tc, ok := dst.(*net.TCPConn); ok && !dstDead && !r.holed() {
			_ = tc.CloseWrite() // pass the FIN on; fails only if dst is closed already
		}
		return
	}
}

func (r *Relay) holed() bool {
	select {
	case <-r.hole:
		return true
	default:
		return false
	}
}

func (r *Relay) isClosing() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closing
}
