package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gatherproxy/gather/internal/access"
	"github.com/gatherproxy/gather/internal/tlsconf"
)

// withAccess puts the guard's authentication and authorization in front of the given
// interceptors (admission, faults). serverOptions puts the metrics and lifecycle recorders
// before all of them, so a refused call is recorded, and never takes a query slot. A nil guard
// adds nothing.
func withAccess(g *access.Guard, unary []grpc.UnaryServerInterceptor, stream []grpc.StreamServerInterceptor) ([]grpc.UnaryServerInterceptor, []grpc.StreamServerInterceptor) {
	return append(g.UnaryServerInterceptors(), unary...), append(g.StreamServerInterceptors(), stream...)
}

// serverTLS returns the grpc.Creds option for s, or nothing for plaintext.
func serverTLS(s tlsconf.Server, section string, log *slog.Logger) ([]grpc.ServerOption, error) {
	if !s.Enabled() {
		return nil, nil
	}
	creds, err := s.ServerCredentials(section, log)
	if err != nil {
		return nil, err
	}
	return []grpc.ServerOption{grpc.Creds(creds)}, nil
}

// serverCreds returns the transport credentials for s: TLS, or insecure ones for plaintext, for
// a server that wraps them (the proxy's flow guard).
func serverCreds(s tlsconf.Server, section string, log *slog.Logger) (credentials.TransportCredentials, error) {
	if !s.Enabled() {
		return insecure.NewCredentials(), nil
	}
	return s.ServerCredentials(section, log)
}

// accessFlags are --authz-policy and, for the proxy, --authz-tokens.
type accessFlags struct {
	policy, tokens *string
}

func addAccessFlags(fs *flag.FlagSet, tokens bool) accessFlags {
	f := accessFlags{policy: fs.String("authz-policy", "", "grpc authorization policy `file` (JSON): which callers may call which methods; re-read when it changes")}
	if tokens {
		f.tokens = fs.String("authz-tokens", "", "`file` of bearer tokens, one 'NAME TOKEN' per line: callers without a client certificate must send one")
	}
	return f
}

// apply overrides c with the flags that were given.
func (f accessFlags) apply(c *access.Config) {
	if *f.policy != "" {
		c.PolicyFile = *f.policy
	}
	if f.tokens != nil && *f.tokens != "" {
		c.TokensFile = *f.tokens
	}
}

// demoPolicy is the authorization policy of `gather demo --tls`: the QS certificate may search
// the proxy, look at it with reflection and check its health; the proxy's certificate may
// search the shards; nothing else is allowed.
func demoPolicy() string {
	p := map[string]any{
		"name": "gather-demo",
		"allow_rules": []any{
			map[string]any{
				"name":   "qs-searches-the-proxy",
				"source": map[string]any{"principals": []string{tlsconf.DemoClientID}},
				"request": map[string]any{"paths": []string{
					"/gather.query.v1.QueryService/*", "/grpc.health.v1.Health/*",
					"/grpc.reflection.v1.ServerReflection/*", "/grpc.reflection.v1alpha.ServerReflection/*"}},
			},
			map[string]any{
				"name":    "proxy-searches-the-shards",
				"source":  map[string]any{"principals": []string{tlsconf.DemoProxyID}},
				"request": map[string]any{"paths": []string{"/gather.shard.v1.ShardService/*", "/grpc.health.v1.Health/*"}},
			},
		},
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		panic(err) // a literal map of strings always marshals
	}
	return string(b) + "\n"
}

// demoTLS is the security of `gather demo --tls`: every hop with mutual TLS from one local CA
// minted into dir, and demoPolicy on every server.
type demoTLS struct {
	dir            string
	shard          tlsconf.Server
	proxy          tlsconf.Server
	proxyToShards  tlsconf.Client
	access         access.Config
	clientCertFile string
	clientKeyFile  string
}

// mintDemoTLS writes a new CA, the demo's certificates and its policy into dir; host is the
// proxy's listen host, which its certificate must name besides localhost.
func mintDemoTLS(dir, host string) (demoTLS, error) {
	if _, err := tlsconf.MintDemo(dir, host); err != nil {
		return demoTLS{}, fmt.Errorf("minting the demo's certificates into %s: %w", dir, err)
	}
	policy := filepath.Join(dir, "authz.json")
	if err := tlsconf.WriteFileAtomic(policy, []byte(demoPolicy()), 0o644); err != nil {
		return demoTLS{}, err
	}
	f := func(name string) string { return filepath.Join(dir, name) }
	return demoTLS{
		dir:            dir,
		shard:          tlsconf.Server{CertFile: f(tlsconf.ShardCertFile), KeyFile: f(tlsconf.ShardKeyFile), ClientCAFile: f(tlsconf.CAFile)},
		proxy:          tlsconf.Server{CertFile: f(tlsconf.ProxyCertFile), KeyFile: f(tlsconf.ProxyKeyFile), ClientCAFile: f(tlsconf.CAFile)},
		proxyToShards:  tlsconf.Client{CAFile: f(tlsconf.CAFile), CertFile: f(tlsconf.ProxyCertFile), KeyFile: f(tlsconf.ProxyKeyFile)},
		access:         access.Config{PolicyFile: policy},
		clientCertFile: f(tlsconf.ClientCertFile),
		clientKeyFile:  f(tlsconf.ClientKeyFile),
	}, nil
}

// grpcurlFlags are the grpcurl flags that reach a server of the demo.
func (d *demoTLS) grpcurlFlags() string {
	if d == nil {
		return "-plaintext"
	}
	return fmt.Sprintf("-cacert %s -cert %s -key %s", filepath.Join(d.dir, tlsconf.CAFile), d.clientCertFile, d.clientKeyFile)
}

// queryFlags are the gather query flags that reach the demo's proxy.
func (d *demoTLS) queryFlags() string {
	if d == nil {
		return ""
	}
	return fmt.Sprintf(" --tls-ca %s --tls-cert %s --tls-key %s", filepath.Join(d.dir, tlsconf.CAFile), d.clientCertFile, d.clientKeyFile)
}
