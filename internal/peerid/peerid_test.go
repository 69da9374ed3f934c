package peerid_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/url"
	"testing"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/gatherproxy/gather/internal/peerid"
)

func TestFromContext(t *testing.T) {
	t.Parallel()
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50312}
	spiffe, _ := url.Parse("spiffe://gather.local/qs")
	withCert := func(c *x509.Certificate) context.Context {
		info := credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}}
		return peer.NewContext(context.Background(), &peer.Peer{Addr: addr, AuthInfo: info})
	}
	tests := []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"no peer", context.Background(), "unknown:"},
		{"plaintext connection", peer.NewContext(context.Background(), &peer.Peer{Addr: addr}), "conn:127.0.0.1:50312"},
		{"TLS without a client certificate", peer.NewContext(context.Background(),
			&peer.Peer{Addr: addr, AuthInfo: credentials.TLSInfo{}}), "conn:127.0.0.1:50312"},
		{"URI SAN first", withCert(&x509.Certificate{URIs: []*url.URL{spiffe}, DNSNames: []string{"qs.local"},
			Subject: pkix.Name{CommonName: "qs"}}), "cert:spiffe://gather.local/qs"},
		{"then DNS SAN", withCert(&x509.Certificate{DNSNames: []string{"qs.local"}, Subject: pkix.Name{CommonName: "qs"}}),
			"cert:qs.local"},
		{"then common name", withCert(&x509.Certificate{Subject: pkix.Name{CommonName: "qs"}}), "cert:qs"},
		{"authenticated wins", peerid.NewContext(withCert(&x509.Certificate{Subject: pkix.Name{CommonName: "qs"}}), "token:search-frontend"),
			"auth:token:search-frontend"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := peerid.FromContext(tt.ctx).String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
