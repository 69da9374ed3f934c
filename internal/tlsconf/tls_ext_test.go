package tlsconf_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/gatherproxy/gather/internal/peerid"
	"github.com/gatherproxy/gather/internal/tlsconf"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

// pki is a CA and the files of the certificates it issued, in a test's temporary directory.
type pki struct {
	t   *testing.T
	dir string
	ca  *tlsconf.CA
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	ca, err := tlsconf.NewCA(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{t: t, dir: t.TempDir(), ca: ca}
	p.writeCA("ca.pem")
	return p
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

// writeCA writes the CA's certificate to name (renamed over what is there).
func (p *pki) writeCA(name string) string {
	p.t.Helper()
	if err := tlsconf.WriteFileAtomic(p.path(name), p.ca.CertPEM(), 0o644); err != nil {
		p.t.Fatal(err)
	}
	return p.path(name)
}

// issue writes NAME.pem and NAME-key.pem for a leaf with the identity id and returns their paths.
func (p *pki) issue(name, id string, server bool) (cert, key string) {
	p.t.Helper()
	cert, key = p.path(name+".pem"), p.path(name+"-key.pem")
	leaf := tlsconf.Leaf{CommonName: name, URIs: []string{id}, Client: !server, Server: server}
	if server {
		leaf.IPs = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	if err := p.ca.WritePair(cert, key, leaf); err != nil {
		p.t.Fatal(err)
	}
	return cert, key
}

// server is a gRPC health server on loopback with the given TLS; callers records the identity
// (peerid) of every caller it answered.
type server struct {
	addr    string
	mu      sync.Mutex
	callers []string
}

func (s *server) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.callers) == 0 {
		return ""
	}
	return s.callers[len(s.callers)-1]
}

func startServer(t *testing.T, cfg tlsconf.Server) *server {
	t.Helper()
	creds, err := cfg.ServerCredentials("tls", quiet)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{}
	srv := grpc.NewServer(grpc.Creds(creds), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			s.mu.Lock()
			s.callers = append(s.callers, peerid.FromContext(ctx).String())
			s.mu.Unlock()
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	s.addr = lis.Addr().String()
	return s
}

// check makes one health check on a new connection with creds, and returns the server's
// certificate as the client saw it.
func check(t *testing.T, addr string, creds credentials.TransportCredentials) (*x509.Certificate, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var p peer.Peer
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		return nil, err
	}
	if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
		return info.State.PeerCertificates[0], nil
	}
	return nil, nil
}

func clientCreds(t *testing.T, c tlsconf.Client) credentials.TransportCredentials {
	t.Helper()
	creds, err := c.Credentials("client", quiet)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// insistingCreds always sends its certificate, even one the server's CertificateRequest does
// not ask for (crypto/tls's own client then sends none), so that the server has to refuse it.
func insistingCreds(t *testing.T, caFile, certFile, keyFile string) credentials.TransportCredentials {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	return credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }})
}

// TestMutualTLS: with client_auth require, only a client with a certificate from the client CA
// is answered, and the server knows it by its certificate's identity.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "test CA")
	srvCert, srvKey := p.issue("server", "spiffe://test/server", true)
	qsCert, qsKey := p.issue("qs", "spiffe://test/qs", false)
	other := newPKI(t, "another CA")
	strangerCert, strangerKey := other.issue("stranger", "spiffe://test/qs", false)
	s := startServer(t, tlsconf.Server{CertFile: srvCert, KeyFile: srvKey, ClientCAFile: p.path("ca.pem")})

	tests := []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{"plaintext", insecure.NewCredentials()},
		{"TLS without a client certificate", clientCreds(t, tlsconf.Client{CAFile: p.path("ca.pem")})},
		{"a client certificate from another CA", insistingCreds(t, p.path("ca.pem"), strangerCert, strangerKey)},
		{"a server the client does not trust", clientCreds(t, tlsconf.Client{CAFile: other.path("ca.pem"), CertFile: qsCert, KeyFile: qsKey})},
	}
	for _, tt := range tests {
		if _, err := check(t, s.addr, tt.creds); status.Code(err) != codes.Unavailable {
			t.Errorf("%s: got %v, want UNAVAILABLE (refused at the handshake)", tt.name, err)
		}
	}
	if got := s.last(); got != "" {
		t.Errorf("a refused client reached the service as %s", got)
	}
	if _, err := check(t, s.addr, clientCreds(t, tlsconf.Client{CAFile: p.path("ca.pem"), CertFile: qsCert, KeyFile: qsKey})); err != nil {
		t.Fatalf("a client of the client CA: %v", err)
	}
	if got, want := s.last(), "cert:spiffe://test/qs"; got != want {
		t.Errorf("the server saw the caller as %q, want %q", got, want)
	}
}

// TestOptionalClientAuth: clients without a certificate are let through as connections; a
// certificate that is sent is still verified.
func TestOptionalClientAuth(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "test CA")
	srvCert, srvKey := p.issue("server", "spiffe://test/server", true)
	qsCert, qsKey := p.issue("qs", "spiffe://test/qs", false)
	other := newPKI(t, "another CA")
	strangerCert, strangerKey := other.issue("stranger", "spiffe://test/qs", false)
	s := startServer(t, tlsconf.Server{CertFile: srvCert, KeyFile: srvKey, ClientCAFile: p.path("ca.pem"), ClientAuth: tlsconf.ClientAuthOptional})

	if _, err := check(t, s.addr, clientCreds(t, tlsconf.Client{CAFile: p.path("ca.pem")})); err != nil {
		t.Fatalf("no client certificate: %v", err)
	}
	if got := s.last(); !strings.HasPrefix(got, "conn:127.0.0.1:") {
		t.Errorf("a client without a certificate is %q, want its connection", got)
	}
	if _, err := check(t, s.addr, clientCreds(t, tlsconf.Client{CAFile: p.path("ca.pem"), CertFile: qsCert, KeyFile: qsKey})); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	if got := s.last(); got != "cert:spiffe://test/qs" {
		t.Errorf("a client with a certificate is %q", got)
	}
	if _, err := check(t, s.addr, insistingCreds(t, p.path("ca.pem"), strangerCert, strangerKey)); status.Code(err) != codes.Unavailable {
		t.Errorf("a certificate from another CA: got %v, want UNAVAILABLE", err)
	}
}

// waitFor polls a new connection until cond holds for it, for at most 10s.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after 10s", what, got)
		}
		time.Sleep(20 * time.Millisecond) // between two connection attempts, not waiting for a condition
	}
}

// TestServerCertificateReload: certificate files replaced on disk are served to the next new
// connection, without a restart; a replacement that does not load is refused.
func TestServerCertificateReload(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "test CA")
	srvCert, srvKey := p.issue("server", "spiffe://test/server-1", true)
	qsCert, qsKey := p.issue("qs", "spiffe://test/qs", false)
	s := startServer(t, tlsconf.Server{CertFile: srvCert, KeyFile: srvKey, ClientCAFile: p.path("ca.pem")})
	creds := clientCreds(t, tlsconf.Client{CAFile: p.path("ca.pem"), CertFile: qsCert, KeyFile: qsKey})
	seen := func() string {
		cert, err := check(t, s.addr, creds)
		if err != nil {
			t.Fatal(err)
		}
		return peerid.CertificateName(cert)
	}
	if got := seen(); got != "spiffe://test/server-1" {
		t.Fatalf("before the rotation the server is %q", got)
	}
	// A certificate whose key is not there yet is refused: the old pair stays.
	next, err := os.ReadFile(p.path("qs.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := tlsconf.WriteFileAtomic(srvCert, next, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := seen(); got != "spiffe://test/server-1" {
		t.Errorf("with a certificate that does not match its key the server is %q, want the old pair", got)
	}
	p.issue("server", "spiffe://test/server-2", true)
	waitFor(t, "new server certificate", func() (bool, string) {
		got := seen()
		return got == "spiffe://test/server-2", got
	})
}

// TestClientFilesReload: a client's certificate and a server's client CA replaced on disk are
// used by the next connection.
func TestClientFilesReload(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "test CA")
	srvCert, srvKey := p.issue("server", "spiffe://test/server", true)
	qsCert, qsKey := p.issue("qs", "spiffe://test/qs-1", false)
	clientCA := p.writeCA("client-ca.pem")
	s := startServer(t, tlsconf.Server{CertFile: srvCert, KeyFile: srvKey, ClientCAFile: clientCA})
	creds := clientCreds(t, tlsconf.Client{CAFile: p.path("ca.pem"), CertFile: qsCert, KeyFile: qsKey})
	if _, err := check(t, s.addr, creds); err != nil {
		t.Fatal(err)
	}
	p.issue("qs", "spiffe://test/qs-2", false)
	waitFor(t, "new client certificate", func() (bool, string) {
		if _, err := check(t, s.addr, creds); err != nil {
			t.Fatal(err)
		}
		return s.last() == "cert:spiffe://test/qs-2", s.last()
	})

	// The server's client CA moves to a new CA: the old client certificate is refused, one
	// from the new CA is answered.
	next := newPKI(t, "next CA")
	if err := tlsconf.WriteFileAtomic(clientCA, next.ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "old client refused", func() (bool, string) {
		_, err := check(t, s.addr, creds)
		return status.Code(err) == codes.Unavailable, status.Code(err).String()
	})
	nextCert, nextKey := next.issue("qs", "spiffe://test/qs-3", false)
	if _, err := check(t, s.addr, clientCreds(t, tlsconf.Client{CAFile: p.path("ca.pem"), CertFile: nextCert, KeyFile: nextKey})); err != nil {
		t.Errorf("a client of the new client CA: %v", err)
	}
}

// TestServerName: a server certificate that names a service instead of an address is accepted
// with server_name, and refused without it.
func TestServerName(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "test CA")
	cert, key := p.path("shard.pem"), p.path("shard-key.pem")
	if err := p.ca.WritePair(cert, key, tlsconf.Leaf{CommonName: "shard", DNSNames: []string{"shard-0.gather.internal"}, Server: true}); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, tlsconf.Server{CertFile: cert, KeyFile: key})
	if _, err := check(t, s.addr, clientCreds(t, tlsconf.Client{CAFile: p.path("ca.pem")})); status.Code(err) != codes.Unavailable {
		t.Errorf("dialled by address: got %v, want UNAVAILABLE (name mismatch)", err)
	}
	if _, err := check(t, s.addr, clientCreds(t, tlsconf.Client{CAFile: p.path("ca.pem"), ServerName: "shard-0.gather.internal"})); err != nil {
		t.Errorf("with server_name: %v", err)
	}
}

// TestHTTPServer: the same configuration serves HTTPS (the admin port), HTTP/2 and HTTP/1.1.
func TestHTTPServer(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "test CA")
	cert, key := p.issue("admin", "spiffe://test/admin", true)
	cfg, err := tlsconf.Server{CertFile: cert, KeyFile: key}.ServerConfig("admin_tls", quiet, "h2", "http/1.1")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, r.Proto) }),
		TLSConfig: cfg, ReadHeaderTimeout: 5 * time.Second}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(lis, "", "") }()
	defer func() {
		_ = srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Error(err)
		}
	}()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(p.ca.CertPEM())
	for _, h2 := range []bool{true, false} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		tr.CloseIdleConnections()
		if want := map[bool]string{true: "HTTP/2.0", false: "HTTP/1.1"}[h2]; string(body) != want {
			t.Errorf("served over %s, want %s", body, want)
		}
	}
}
