package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// ClientAuth says whether a server asks its clients for a certificate.
type ClientAuth string

// The client authentication modes.
const (
	// ClientAuthNone: no client certificate is asked for.
	ClientAuthNone ClientAuth = "none"
	// ClientAuthOptional: a client certificate is verified against the client CA when the
	// client sends one; clients without one are let through.
	ClientAuthOptional ClientAuth = "optional"
	// ClientAuthRequire: every client must present a certificate that the client CA signed.
	ClientAuthRequire ClientAuth = "require"
)

// Server is the TLS of one server. The zero value serves plaintext.
type Server struct {
	// CertFile and KeyFile are the server's certificate chain and private key (PEM). Both are
	// required for TLS.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile holds the CA certificates (PEM) that client certificates are verified
	// against.
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientAuth is none, optional or require. Default: require when ClientCAFile is set,
	// else none.
	ClientAuth ClientAuth `yaml:"client_auth"`
}

// Enabled reports whether s asks for TLS at all.
func (s Server) Enabled() bool { return s != Server{} }

// Mode returns ClientAuth with its default.
func (s Server) Mode() ClientAuth {
	switch {
	case s.ClientAuth != "":
		return s.ClientAuth
	case s.ClientCAFile != "":
		return ClientAuthRequire
	}
	return ClientAuthNone
}

// Validate checks s and loads its files, once, the way the server will: every error names the
// key under section ("tls.cert_file: ..."). A zero s is valid (plaintext).
func (s Server) Validate(section string) error {
	return s.validate(yamlKeys(section))
}

func (s Server) validate(key namer) error {
	if !s.Enabled() {
		return nil
	}
	var errs []error
	switch {
	case s.CertFile == "" && s.KeyFile == "":
		errs = append(errs, fmt.Errorf("%s, %s: missing: a TLS server needs its certificate and key", key("cert_file"), key("key_file")))
	case s.CertFile == "":
		errs = append(errs, fmt.Errorf("%s: missing: %s is set, give the certificate it belongs to", key("cert_file"), key("key_file")))
	case s.KeyFile == "":
		errs = append(errs, fmt.Errorf("%s: missing: %s is set, give its private key", key("key_file"), key("cert_file")))
	default:
		if _, err := loadPair(key, s.CertFile, s.KeyFile, time.Now()); err != nil {
			errs = append(errs, err)
		}
	}
	switch s.Mode() {
	case ClientAuthNone:
		if s.ClientCAFile != "" {
			errs = append(errs, fmt.Errorf("%s: none, but %s is set: say optional or require, or drop %s",
				key("client_auth"), key("client_ca_file"), key("client_ca_file")))
		}
	case ClientAuthOptional, ClientAuthRequire:
		if s.ClientCAFile == "" {
			errs = append(errs, fmt.Errorf("%s: missing: %s %s verifies client certificates against it",
				key("client_ca_file"), key("client_auth"), s.Mode()))
		}
	default:
		errs = append(errs, fmt.Errorf("%s: %q: want none, optional or require", key("client_auth"), s.ClientAuth))
	}
	if s.ClientCAFile != "" {
		if _, err := loadPool(key("client_ca_file"), s.ClientCAFile); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Client is the TLS of a client's connections (the proxy's to its shards, gather query's to the
// proxy). The zero value connects in plaintext.
type Client struct {
	// CAFile holds the CA certificates (PEM) that server certificates are verified against.
	// Default: the system's roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client's own certificate and key (PEM), presented to servers
	// that ask for one (mutual TLS). Optional; both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name every server certificate must carry. Default: the host part of the
	// address dialled (an IP address must then be among the certificate's IP SANs).
	ServerName string `yaml:"server_name"`
}

// Enabled reports whether c asks for TLS at all.
func (c Client) Enabled() bool { return c != Client{} }

// Validate checks c and loads its files once; every error names the key under section
// ("shard_tls.ca_file: ..."). A zero c is valid (plaintext).
func (c Client) Validate(section string) error {
	return c.validate(yamlKeys(section))
}

func (c Client) validate(key namer) error {
	var errs []error
	switch {
	case c.CertFile == "" && c.KeyFile == "":
	case c.CertFile == "":
		errs = append(errs, fmt.Errorf("%s: missing: %s is set, give the certificate it belongs to", key("cert_file"), key("key_file")))
	case c.KeyFile == "":
		errs = append(errs, fmt.Errorf("%s: missing: %s is set, give its private key", key("key_file"), key("cert_file")))
	default:
		if _, err := loadPair(key, c.CertFile, c.KeyFile, time.Now()); err != nil {
			errs = append(errs, err)
		}
	}
	if c.CAFile != "" {
		if _, err := loadPool(key("ca_file"), c.CAFile); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// namer turns a field's YAML key into the name a message should use for it: the config key
// ("tls.cert_file") or the flag ("--tls-cert").
type namer func(field string) string

func yamlKeys(section string) namer {
	return func(field string) string {
		if section == "" {
			return field
		}
		return section + "." + field
	}
}

// loadPair reads a certificate and its key; the error names the file at fault.
func loadPair(key namer, certFile, keyFile string, now time.Time) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: %w", key("cert_file"), err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: %w", key("key_file"), err)
	}
	return parsePair(key, certFile, keyFile, certPEM, keyPEM, now)
}

func parsePair(key namer, certFile, keyFile string, certPEM, keyPEM []byte, now time.Time) (tls.Certificate, error) {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: %s: %w", key("cert_file"), certFile, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// crypto/tls's messages quote neither file's contents.
		msg := strings.TrimPrefix(err.Error(), "tls: ")
		if strings.Contains(msg, "does not match") {
			return tls.Certificate{}, fmt.Errorf("%s: %s does not belong to %s %s: %s", key("key_file"), keyFile, key("cert_file"), certFile, msg)
		}
		return tls.Certificate{}, fmt.Errorf("%s: %s: %s", key("key_file"), keyFile, msg)
	}
	leaf := certs[0]
	switch {
	case now.After(leaf.NotAfter):
		return tls.Certificate{}, fmt.Errorf("%s: %s expired at %s: replace it", key("cert_file"), certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return tls.Certificate{}, fmt.Errorf("%s: %s is not valid before %s: check the clock, or the certificate", key("cert_file"), certFile,
			leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	pair.Leaf = leaf
	return pair, nil
}

// loadPool reads a CA file into a pool; the error is prefixed with name.
func loadPool(name, file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return parsePool(name, file, data)
}

func parsePool(name, file string, data []byte) (*x509.CertPool, error) {
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", name, file, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// parseCerts parses every CERTIFICATE block of a PEM file; other blocks are skipped.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate in it")
	}
	return certs, nil
}
