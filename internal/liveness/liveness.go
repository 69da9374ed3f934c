// Package liveness holds gather's keepalive settings for both hops (QS -> proxy, proxy -> shard),
// with defaults that agree with each other, so that dead peers are found on every connection
// and no gather server ever turns a gather client away for pinging too often.
package liveness

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Keepalive defaults. They agree with each other: a client of a gather server pings at most every
// DefaultClientTime, which is above the DefaultMinTime the server enforces, so a gather server never
// answers a gather client with GOAWAY too_many_pings. A peer whose packets silently vanish is found
// within Time + Timeout on either side: 15s for a QS connection, 13s for a shard connection; on the
// server also when it vanishes before its connection's handshake is done.
const (
	DefaultServerTime            = 10 * time.Second
	DefaultServerTimeout         = 5 * time.Second
	DefaultMaxConnectionIdle     = 5 * time.Minute
	DefaultMaxConnectionAge      = 30 * time.Minute
	DefaultMaxConnectionAgeGrace = 30 * time.Second
	DefaultMinTime               = 5 * time.Second
	DefaultClientTime            = 10 * time.Second // grpc-go's own floor for clients
	DefaultClientTimeout         = 3 * time.Second
)

// Server is a gRPC server's keepalive and its policy for clients' pings. Zero fields take
// the defaults above; PermitWithoutStream defaults to true. The range of each field (grpc-go's
// floors, gather's ceilings) is checked by package config's bounds table.
type Server struct {
	// Time: ping a client after this long without activity (grpc-go's floor: 1s).
	Time time.Duration `yaml:"time"`
	// Timeout: close the connection when a ping is not answered within this.
	Timeout time.Duration `yaml:"timeout"`
	// MaxConnectionIdle: close a connection without calls after this long (GOAWAY).
	MaxConnectionIdle time.Duration `yaml:"max_connection_idle"`
	// MaxConnectionAge and MaxConnectionAgeGrace: ask clients to reconnect after this long, so
	// load spreads again; calls in flight get the grace period to finish.
	MaxConnectionAge      time.Duration `yaml:"max_connection_age"`
	MaxConnectionAgeGrace time.Duration `yaml:"max_connection_age_grace"`
	// MinTime: the shortest ping interval a client may use; faster pingers get GOAWAY.
	MinTime time.Duration `yaml:"min_time"`
	// PermitWithoutStream: allow pings on connections without calls (default true).
	PermitWithoutStream *bool `yaml:"permit_without_stream"`
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Params returns the grpc-go keepalive parameters of k, defaults filled in.
func (k Server) Params() keepalive.ServerParameters {
	return keepalive.ServerParameters{
		Time:                  or(k.Time, DefaultServerTime),
		Timeout:               or(k.Timeout, DefaultServerTimeout),
		MaxConnectionIdle:     or(k.MaxConnectionIdle, DefaultMaxConnectionIdle),
		MaxConnectionAge:      or(k.MaxConnectionAge, DefaultMaxConnectionAge),
		MaxConnectionAgeGrace: or(k.MaxConnectionAgeGrace, DefaultMaxConnectionAgeGrace),
	}
}

// ServerOptions returns the grpc.ServerOptions for k. Besides keepalive and the ping policy they
// bound a new connection's handshake (TLS, if any, and the HTTP/2 preface) to Time + Timeout:
// keepalive starts only once the handshake is done, and until then grpc-go's default would hold
// a peer that vanished after its TCP handshake for 120s, a socket and a goroutine each.
func (k Server) ServerOptions() []grpc.ServerOption {
	permit := true
	if k.PermitWithoutStream != nil {
		permit = *k.PermitWithoutStream
	}
	return []grpc.ServerOption{
		grpc.ConnectionTimeout(or(k.Time, DefaultServerTime) + or(k.Timeout, DefaultServerTimeout)),
		grpc.KeepaliveParams(k.Params()),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             or(k.MinTime, DefaultMinTime),
			PermitWithoutStream: permit,
		}),
	}
}

// Client is the keepalive of a client connection. Zero fields take the defaults above; package
// config's bounds table checks the range of each field.
type Client struct {
	// Time: ping the server after this long without activity. At least 10s (grpc-go's floor) and
	// at least the server's min_time (gather's shards enforce 5s).
	Time time.Duration `yaml:"time"`
	// Timeout: close the connection when a ping is not answered within this.
	Timeout time.Duration `yaml:"timeout"`
}

// Params returns the grpc-go parameters; pings are sent also without active calls, so a dead
// shard is found before the next query needs it.
func (k Client) Params() keepalive.ClientParameters {
	return keepalive.ClientParameters{
		Time:                or(k.Time, DefaultClientTime),
		Timeout:             or(k.Timeout, DefaultClientTimeout),
		PermitWithoutStream: true,
	}
}
