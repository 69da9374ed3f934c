package flowguard

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Config sets the guard's tunables. The zero value of a field means its default.
type Config struct {
	// SendTimeout is how long an answer may wait for the client to make room (HTTP/2 flow
	// control), and how long one socket write may block, before the connection is closed.
	// Default 5s.
	SendTimeout time.Duration
	// UserTimeout, when positive, is set as TCP_USER_TIMEOUT on every TCP connection (Linux):
	// the kernel gives up on a connection whose sent data stays unacknowledged this long.
	// grpc-go sets it to the keepalive timeout on connections it sees as TCP; a guarded
	// connection is wrapped, so the guard sets it instead.
	UserTimeout time.Duration
	// Logger gets one line per connection the guard closes. Default: slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.SendTimeout <= 0 {
		c.SendTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// The reasons the guard closes a connection, the values of the reason label.
const (
	reasonNoWindow     = "no_window"     // an answer had no flow-control window for SendTimeout
	reasonWriteTimeout = "write_timeout" // a socket write blocked for SendTimeout
)

// Guard watches the connections of one gRPC server. Create it with New, pass Credentials to the
// server, and Close it after the server has stopped. It is safe for concurrent use.
type Guard struct {
	cfg   Config
	conns sync.Map // remote address -> *Conn

	mu       sync.Mutex
	suspects map[*Conn]struct{}

	open    prometheus.Gauge
	waiting prometheus.Gauge
	closed  *prometheus.CounterVec

	stop chan struct{}
	done chan struct{}
}

// New starts a guard whose metrics are registered with reg.
func New(cfg Config, reg prometheus.Registerer) *Guard {
	f := promauto.With(reg)
	g := &Guard{
		cfg:      cfg.withDefaults(),
		suspects: make(map[*Conn]struct{}),
		open: f.NewGauge(prometheus.GaugeOpts{
			Name: "gather_qs_connections",
			Help: "Client (QS) connections open on the QueryService.",
		}),
		waiting: f.NewGauge(prometheus.GaugeOpts{
			Name: "gather_qs_answers_unwritten",
			Help: "Answers handed to a client connection and waiting for their bytes to be written (AwaitWritten).",
		}),
		closed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "gather_qs_stalled_connections_closed_total",
			Help: "Client connections closed because an answer made no progress for send_timeout: no_window (the client granted no HTTP/2 flow-control window) or write_timeout (a socket write blocked).",
		}, []string{"reason"}),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for _, r := range []string{reasonNoWindow, reasonWriteTimeout} {
		g.closed.WithLabelValues(r)
	}
	go g.sweep()
	return g
}

// Close stops the guard's sweeper. Connections stay open; the server closes them.
func (g *Guard) Close() {
	close(g.stop)
	<-g.done
}

// Credentials wraps a server's transport credentials (insecure.NewCredentials() for plaintext)
// so that every connection the server accepts is guarded. The handshake is inner's; the guard
// sees the bytes above it.
func (g *Guard) Credentials(inner credentials.TransportCredentials) credentials.TransportCredentials {
	return &guardedCreds{TransportCredentials: inner, g: g}
}

type guardedCreds struct {
	credentials.TransportCredentials
	g *Guard
}

func (c *guardedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	return c.g.track(conn, raw), info, nil
}

func (c *guardedCreds) Clone() credentials.TransportCredentials {
	return &guardedCreds{TransportCredentials: c.TransportCredentials.Clone(), g: c.g}
}

func (g *Guard) track(conn, raw net.Conn) *Conn {
	if g.cfg.UserTimeout > 0 {
		setUserTimeout(raw, g.cfg.UserTimeout)
	}
	c := newConn(g, conn, raw)
	g.conns.Store(c.key, c)
	g.open.Inc()
	return c
}

// forget drops a closed connection from the guard's books.
func (g *Guard) forget(c *Conn) {
	if g.conns.CompareAndDelete(c.key, c) {
		g.open.Dec()
	}
	g.mu.Lock()
	delete(g.suspects, c)
	g.mu.Unlock()
}

// Conn returns the guarded connection that the RPC of the server context ctx came on, or nil
// when it did not come through this guard (every method of a nil *Conn is a no-op).
func (g *Guard) Conn(ctx context.Context) *Conn {
	if g == nil {
		return nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return nil
	}
	c, _ := g.conns.Load(p.Addr.String())
	conn, _ := c.(*Conn)
	return conn
}

// watch puts c on the list the sweeper checks. c.mu is held by the caller, so g.mu is taken
// after it, never before: the sweeper takes g.mu, copies the list and lets go before it locks
// any connection.
func (g *Guard) watch(c *Conn) {
	g.mu.Lock()
	g.suspects[c] = struct{}{}
	g.mu.Unlock()
}

// sweepEvery is how often the sweeper looks at the connections that wait for room: a tenth of
// the send timeout, so a stalled connection is closed within 10% of it.
func (g *Guard) sweepEvery() time.Duration {
	return min(max(g.cfg.SendTimeout/10, 5*time.Millisecond), 500*time.Millisecond)
}

func (g *Guard) sweep() {
	defer close(g.done)
	t := time.NewTicker(g.sweepEvery())
	defer t.Stop()
	var list []*Conn
	for {
		select {
		case <-g.stop:
			return
		case now := <-t.C:
			list = list[:0]
			g.mu.Lock()
			for c := range g.suspects {
				list = append(list, c)
			}
			g.mu.Unlock()
			for _, c := range list {
				g.check(c, now)
			}
		}
	}
}

// check closes c if an answer on it has waited for room for the send timeout, and takes it off
// the list once nothing waits.
func (g *Guard) check(c *Conn, now time.Time) {
	c.mu.Lock()
	if !c.waitingForRoom() {
		// Under c.mu, in the same lock order as watch, so that a connection that starts
		// waiting again right now is not lost from the list.
		c.suspect = false
		g.mu.Lock()
		delete(g.suspects, c)
		g.mu.Unlock()
		c.mu.Unlock()
		return
	}
	d, id := c.blockedFor(now)
	c.mu.Unlock()
	if d >= g.cfg.SendTimeout {
		g.stalled(c, reasonNoWindow, d, id)
	}
}

// stalled closes c because an answer on it made no progress for d.
func (g *Guard) stalled(c *Conn, reason string, d time.Duration, stream uint32) {
	if c.Err() != nil {
		return
	}
	g.closed.WithLabelValues(reason).Inc()
	g.cfg.Logger.Warn("closing a client connection that made no room for its answer",
		"remote", c.key, "reason", reason, "stalled_for", d.Round(time.Millisecond), "stream", stream)
	c.finish(ErrStalled)
	_ = c.Conn.Close()
}
