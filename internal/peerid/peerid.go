// Package peerid names the caller of an RPC, one way for every part of gather that needs to say
// who a caller is: admission control shares slots fairly among callers, authorization says who
// was refused for what, and logs say who asked.
//
// A caller is, in order of preference: an identity that an authentication interceptor vouched
// for and stored with NewContext (a bearer token's name, say); the identity in the verified client
// certificate of a TLS connection (its first URI SAN, such as a SPIFFE ID, else its first DNS
// SAN, else its subject's common name); or, without either, the connection itself (the peer's
// address), so that two connections of an unauthenticated client are two callers.
package peerid

import (
	"context"
	"crypto/x509"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Kind says where an ID comes from.
type Kind string

// The kinds of caller identity.
const (
	// Authenticated: stored by an authentication interceptor with NewContext.
	Authenticated Kind = "auth"
	// Certificate: the verified client certificate of a TLS connection.
	Certificate Kind = "cert"
	// Connection: the peer's address; the caller proved nothing about itself.
	Connection Kind = "conn"
	// Unknown: the context carries no peer at all (a call made in-process).
	Unknown Kind = "unknown"
)

// ID is a caller's identity.
type ID struct {
	Kind Kind
	Name string
}

// String is "kind:name", such as "cert:spiffe://gather.local/qs" or "conn:127.0.0.1:50312".
func (id ID) String() string { return string(id.Kind) + ":" + id.Name }

type ctxKey struct{}

// NewContext returns ctx carrying an identity that an authentication step has verified; it
// takes precedence over the certificate and the connection in FromContext.
func NewContext(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, ctxKey{}, ID{Kind: Authenticated, Name: name})
}

// FromContext returns the identity of the caller of the RPC whose server context is ctx.
func FromContext(ctx context.Context) ID {
	if id, ok := ctx.Value(ctxKey{}).(ID); ok {
		return id
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ID{Kind: Unknown}
	}
	if tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		if name := certName(tlsInfo); name != "" {
			return ID{Kind: Certificate, Name: name}
		}
	}
	if p.Addr == nil {
		return ID{Kind: Unknown}
	}
	return ID{Kind: Connection, Name: p.Addr.String()}
}

// certName is the identity in the leaf of the first verified chain, or "" when the connection
// has no verified client certificate.
func certName(info credentials.TLSInfo) string {
	if chains := info.State.VerifiedChains; len(chains) > 0 && len(chains[0]) > 0 {
		return CertificateName(chains[0][0])
	}
	return ""
}

// CertificateName is the name a certificate gives its holder: its first URI SAN (such as a
// SPIFFE ID), else its first DNS SAN, else its subject's common name. It is the Name of a
// Certificate ID; it says nothing about whether c was verified.
func CertificateName(c *x509.Certificate) string {
	switch {
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	}
	return c.Subject.CommonName
}
