package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatherproxy/gather/internal/tlsconf"
)

// TestSecurityKeys: the tls, shard_tls, admin_tls and authz sections load, validate their files
// at start, and name the key at fault.
func TestSecurityKeys(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := tlsconf.MintDemo(dir); err != nil {
		t.Fatal(err)
	}
	f := func(name string) string { return filepath.Join(dir, name) }
	cfg, err := Load(write(t, fmt.Sprintf(`
shards: [{name: a, replicas: [127.0.0.1:7001]}]
tls: {cert_file: %s, key_file: %s, client_ca_file: %s}
shard_tls: {ca_file: %s, cert_file: %s, key_file: %s, server_name: localhost}
admin_tls: {cert_file: %s, key_file: %s}
pprof: true
`, f("proxy.pem"), f("proxy-key.pem"), f("ca.pem"), f("ca.pem"), f("proxy.pem"), f("proxy-key.pem"), f("proxy.pem"), f("proxy-key.pem"))))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid security keys: %v", err)
	}
	if cfg.TLS.Mode() != tlsconf.ClientAuthRequire || cfg.ShardTLS.ServerName != "localhost" || !cfg.AdminTLS.Enabled() || !cfg.Pprof {
		t.Errorf("loaded %+v", cfg)
	}

	if _, err := Load(write(t, "tls: {cert: x.pem}\n")); err == nil || !strings.Contains(err.Error(), "field cert not found") {
		t.Errorf("unknown key under tls: got %v", err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"tls: {cert_file: " + f("proxy.pem") + "}", "tls.key_file: missing"},
		{"shard_tls: {ca_file: " + f("nope.pem") + "}", "shard_tls.ca_file: open " + f("nope.pem")},
		{"admin_tls: {cert_file: " + f("proxy.pem") + ", key_file: " + f("shard-key.pem") + "}", "admin_tls.key_file: " + f("shard-key.pem") + " does not belong to"},
		{"authz: {policy_file: " + f("nope.json") + "}", "authz.policy_file: open"},
		{"tls: {cert_file: " + f("proxy.pem") + ", key_file: " + f("proxy-key.pem") + ", client_auth: always}", `tls.client_auth: "always"`},
	} {
		cfg, err := Load(write(t, "shards: [{name: a, replicas: [127.0.0.1:7001]}]\n"+tc.yaml+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.yaml, err, tc.want)
		}
	}

	// GATHER_TLS and friends take YAML for the section.
	env := map[string]string{"GATHER_TLS": fmt.Sprintf("{cert_file: %s, key_file: %s}", f("proxy.pem"), f("proxy-key.pem")), "GATHER_PPROF": "true"}
	c := Defaults()
	if err := c.ApplyEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if c.TLS.CertFile != f("proxy.pem") || c.TLS.Mode() != tlsconf.ClientAuthNone || !c.Pprof {
		t.Errorf("from the environment: %+v", c)
	}
}
