package tlsconf_test

import (
	"flag"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gatherproxy/gather/internal/tlsconf"
)

// TestValidate: every mistake is found at start, with the key to fix.
func TestValidate(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "test CA")
	cert, key := p.issue("server", "spiffe://test/server", true)
	otherCert, _ := p.issue("other", "spiffe://test/other", true)
	ca := p.path("ca.pem")
	expiredCert, expiredKey := p.path("expired.pem"), p.path("expired-key.pem")
	if err := p.ca.WritePair(expiredCert, expiredKey, tlsconf.Leaf{CommonName: "old", ValidFor: -time.Minute}); err != nil {
		t.Fatal(err)
	}
	garbage := p.path("garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := p.path("missing.pem")

	servers := []struct {
		name string
		cfg  tlsconf.Server
		want string // "" for valid
	}{
		{"plaintext", tlsconf.Server{}, ""},
		{"TLS", tlsconf.Server{CertFile: cert, KeyFile: key}, ""},
		{"mutual TLS", tlsconf.Server{CertFile: cert, KeyFile: key, ClientCAFile: ca}, ""},
		{"optional client certificates", tlsconf.Server{CertFile: cert, KeyFile: key, ClientCAFile: ca, ClientAuth: "optional"}, ""},
		{"no key", tlsconf.Server{CertFile: cert}, "tls.key_file: missing: tls.cert_file is set"},
		{"no certificate", tlsconf.Server{KeyFile: key}, "tls.cert_file: missing: tls.key_file is set"},
		{"only a client CA", tlsconf.Server{ClientCAFile: ca}, "tls.cert_file, tls.key_file: missing"},
		{"missing file", tlsconf.Server{CertFile: missing, KeyFile: key}, "tls.cert_file: open " + missing + ": no such file"},
		{"not PEM", tlsconf.Server{CertFile: garbage, KeyFile: key}, "tls.cert_file: " + garbage + ": no PEM certificate in it"},
		{"key of another certificate", tlsconf.Server{CertFile: otherCert, KeyFile: key},
			"tls.key_file: " + key + " does not belong to tls.cert_file " + otherCert},
		{"expired", tlsconf.Server{CertFile: expiredCert, KeyFile: expiredKey}, "tls.cert_file: " + expiredCert + " expired at"},
		{"bad mode", tlsconf.Server{CertFile: cert, KeyFile: key, ClientCAFile: ca, ClientAuth: "request"},
			`tls.client_auth: "request": want none, optional or require`},
		{"require without a CA", tlsconf.Server{CertFile: cert, KeyFile: key, ClientAuth: "require"},
			"tls.client_ca_file: missing: tls.client_auth require verifies client certificates against it"},
		{"none with a CA", tlsconf.Server{CertFile: cert, KeyFile: key, ClientCAFile: ca, ClientAuth: "none"},
			"tls.client_auth: none, but tls.client_ca_file is set"},
		{"CA not PEM", tlsconf.Server{CertFile: cert, KeyFile: key, ClientCAFile: garbage}, "tls.client_ca_file: " + garbage + ": no PEM certificate"},
	}
	for _, tt := range servers {
		err := tt.cfg.Validate("tls")
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("server %s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("server %s: got %v, want an error saying %q", tt.name, err, tt.want)
		}
	}

	clients := []struct {
		name string
		cfg  tlsconf.Client
		want string
	}{
		{"plaintext", tlsconf.Client{}, ""},
		{"system roots", tlsconf.Client{ServerName: "shard.internal"}, ""},
		{"mutual TLS", tlsconf.Client{CAFile: ca, CertFile: cert, KeyFile: key}, ""},
		{"no key", tlsconf.Client{CAFile: ca, CertFile: cert}, "shard_tls.key_file: missing"},
		{"CA missing", tlsconf.Client{CAFile: missing}, "shard_tls.ca_file: open " + missing},
		{"mismatched pair", tlsconf.Client{CertFile: otherCert, KeyFile: key}, "shard_tls.key_file: " + key + " does not belong to"},
	}
	for _, tt := range clients {
		err := tt.cfg.Validate("shard_tls")
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("client %s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("client %s: got %v, want an error saying %q", tt.name, err, tt.want)
		}
	}
}

// TestFlags: flags fill a configuration, and errors name the flags.
func TestFlags(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "test CA")
	cert, key := p.issue("server", "spiffe://test/server", true)
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	sf := tlsconf.AddServerFlags(fs, "tls", "the test server")
	cf := tlsconf.AddClientFlags(fs, "shard-tls", "shard connections")
	if err := fs.Parse([]string{"--tls-cert", cert, "--tls-client-ca", p.path("ca.pem"), "--shard-tls-ca", p.path("ca.pem"),
		"--shard-tls-server-name", "shard.internal"}); err != nil {
		t.Fatal(err)
	}
	if _, err := sf.Server(); err == nil || !strings.Contains(err.Error(), "--tls-key: missing: --tls-cert is set") {
		t.Errorf("server flags without a key: got %v", err)
	}
	c, err := cf.Client()
	if err != nil || c.CAFile != p.path("ca.pem") || c.ServerName != "shard.internal" {
		t.Errorf("client flags: %+v, %v", c, err)
	}
	// Flags override a configuration file's values; unset flags leave them.
	s := tlsconf.Server{CertFile: "from-file.pem", KeyFile: key, ClientAuth: tlsconf.ClientAuthOptional}
	sf.Apply(&s)
	if want := (tlsconf.Server{CertFile: cert, KeyFile: key, ClientCAFile: p.path("ca.pem"), ClientAuth: tlsconf.ClientAuthOptional}); s != want {
		t.Errorf("applied flags: %+v, want %+v", s, want)
	}
}
