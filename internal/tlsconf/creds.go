package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/gatherproxy/gather/internal/peerid"
	"github.com/gatherproxy/gather/internal/watchfile"
)

// ServerConfig returns a tls.Config for a server configured by s: before each handshake it
// takes the certificate and client CA as they are on disk now (see the package comment).
// nextProtos are the ALPN protocols to offer ("h2" for gRPC, which credentials.NewTLS adds
// anyway; "h2" and "http/1.1" for an HTTP server). s must be enabled; section names its keys in
// errors, as in Validate. log gets reloads and refused files.
func (s Server) ServerConfig(section string, log *slog.Logger, nextProtos ...string) (*tls.Config, error) {
	key := yamlKeys(section)
	if !s.Enabled() {
		return nil, fmt.Errorf("%s: TLS is not configured", section)
	}
	if err := s.validate(key); err != nil {
		return nil, err
	}
	pair, err := watchPair(key, s.CertFile, s.KeyFile, log)
	if err != nil {
		return nil, err
	}
	var pool *watchfile.Set[*x509.CertPool]
	if s.ClientCAFile != "" {
		if pool, err = watchPool(key("client_ca_file"), s.ClientCAFile, log); err != nil {
			return nil, err
		}
	}
	mode := tls.NoClientCert
	switch s.Mode() {
	case ClientAuthOptional:
		mode = tls.VerifyClientCertIfGiven
	case ClientAuthRequire:
		mode = tls.RequireAndVerifyClientCert
	}
	forClient := func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert := pair.Get()
		cfg := &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			ClientAuth:   mode,
			NextProtos:   nextProtos,
		}
		if pool != nil {
			cfg.ClientCAs = pool.Get()
		}
		return cfg, nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: nextProtos, GetConfigForClient: forClient}, nil
}

// ServerCredentials returns gRPC server credentials for s (grpc.Creds), reloading as
// ServerConfig does. s must be enabled.
func (s Server) ServerCredentials(section string, log *slog.Logger) (credentials.TransportCredentials, error) {
	cfg, err := s.ServerConfig(section, log)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(cfg), nil
}

// Credentials returns gRPC client credentials for c (grpc.WithTransportCredentials): each new
// connection verifies the server against the CA file and presents the client certificate as
// they are on disk at that moment. c must be enabled; section names its keys in errors. log
// gets reloads and refused files.
func (c Client) Credentials(section string, log *slog.Logger) (credentials.TransportCredentials, error) {
	key := yamlKeys(section)
	if !c.Enabled() {
		return nil, fmt.Errorf("%s: TLS is not configured", section)
	}
	if err := c.validate(key); err != nil {
		return nil, err
	}
	cc := &clientCreds{serverName: c.ServerName}
	var err error
	if c.CertFile != "" {
		if cc.pair, err = watchPair(key, c.CertFile, c.KeyFile, log); err != nil {
			return nil, err
		}
	}
	if c.CAFile != "" {
		if cc.roots, err = watchPool(key("ca_file"), c.CAFile, log); err != nil {
			return nil, err
		}
	}
	return cc, nil
}

// clientCreds makes a fresh crypto/tls configuration from the current files for every
// handshake and lets grpc-go's own TLS credentials do the handshake with it.
type clientCreds struct {
	pair       *watchfile.Set[tls.Certificate] // nil: no client certificate
	roots      *watchfile.Set[*x509.CertPool]  // nil: the system's roots
	serverName string
}

func (c *clientCreds) config() *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.pair != nil {
		cfg.Certificates = []tls.Certificate{c.pair.Get()}
	}
	if c.roots != nil {
		cfg.RootCAs = c.roots.Get()
	}
	return cfg
}

// ClientHandshake verifies the server for serverName when it is set, else for the host of the
// connection's authority (grpc-go's TLS credentials take the name from the authority).
func (c *clientCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if c.serverName != "" {
		authority = c.serverName
	}
	return credentials.NewTLS(c.config()).ClientHandshake(ctx, authority, conn)
}

func (c *clientCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("tlsconf: client credentials used by a server")
}

func (c *clientCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (c *clientCreds) Clone() credentials.TransportCredentials {
	clone := *c
	return &clone
}

// OverrideServerName is deprecated in grpc-go but still part of the interface.
func (c *clientCreds) OverrideServerName(name string) error {
	c.serverName = name
	return nil
}

func watchPair(key namer, certFile, keyFile string, log *slog.Logger) (*watchfile.Set[tls.Certificate], error) {
	return watchfile.New(key("cert_file")+"/"+key("key_file"), []string{certFile, keyFile},
		func(b [][]byte) (tls.Certificate, error) {
			return parsePair(key, certFile, keyFile, b[0], b[1], time.Now())
		},
		watchfile.WithLogger[tls.Certificate](log),
		watchfile.WithDescribe(func(c tls.Certificate) []any { return describe(c.Leaf) }))
}

func watchPool(name, file string, log *slog.Logger) (*watchfile.Set[*x509.CertPool], error) {
	return watchfile.New(name, []string{file},
		func(b [][]byte) (*x509.CertPool, error) { return parsePool(name, file, b[0]) },
		watchfile.WithLogger[*x509.CertPool](log))
}

// describe is what the log says about a newly loaded certificate: who it names, its serial
// number and when it expires.
func describe(leaf *x509.Certificate) []any {
	if leaf == nil {
		return nil
	}
	return []any{"identity", peerid.CertificateName(leaf), "serial", leaf.SerialNumber.Text(16),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339)}
}
