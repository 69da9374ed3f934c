package tlsconf

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority that issues certificates: the demo's local CA, and the CAs of
// tests. Its key lives in memory unless written out with KeyPEM.
type CA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
}

// NewCA makes a self-signed CA named name, valid for validFor from an hour ago (clock skew).
func NewCA(name string, validFor time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"gather"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// LoadCA reads a CA written with CertPEM and KeyPEM.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM key in it", keyFile)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: the key cannot sign", keyFile)
	}
	return &CA{cert: certs[0], key: signer, certPEM: certPEM}, nil
}

// CertPEM is the CA's certificate, for the CA files of servers and clients.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// KeyPEM is the CA's private key (PKCS #8), for LoadCA.
func (ca *CA) KeyPEM() ([]byte, error) { return keyPEM(ca.key) }

// Leaf describes a certificate for CA.Issue.
type Leaf struct {
	// CommonName is the subject's common name.
	CommonName string
	// URIs are URI SANs; the first is the holder's identity (package peerid), such as
	// spiffe://gather.demo/qs.
	URIs []string
	// DNSNames and IPs are the names a server answers to (host name verification).
	DNSNames []string
	IPs      []net.IP
	// Server and Client are the extended key usages; a certificate for both may serve and
	// present itself as a client, as the proxy's does.
	Server, Client bool
	// ValidFor is the lifetime from now. Default (zero) 7 days; a negative one, down to -1h,
	// makes a certificate that has expired already, for tests.
	ValidFor time.Duration
}

// Issue makes a new key and a certificate for it, signed by ca, and returns both in PEM.
func (ca *CA) Issue(l Leaf) (certPEM, keyPEMBytes []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	if l.ValidFor == 0 {
		l.ValidFor = 7 * 24 * time.Hour
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: l.CommonName, Organization: []string{"gather"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(l.ValidFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		DNSNames:     l.DNSNames,
		IPAddresses:  l.IPs,
	}
	for _, u := range l.URIs {
		parsed, err := url.Parse(u)
		if err != nil {
			return nil, nil, fmt.Errorf("URI SAN %q: %w", u, err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	if l.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if l.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, err
	}
	kp, err := keyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), kp, nil
}

// WritePair issues a certificate for l and writes it to certFile and its key to keyFile, each
// through a temporary file renamed over the old one, the key first: a server reading them
// meanwhile sees the old pair, a mismatched pair it refuses, or the new pair, never a torn
// file.
func (ca *CA) WritePair(certFile, keyFile string, l Leaf) error {
	certPEM, kp, err := ca.Issue(l)
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(keyFile, kp, 0o600); err != nil {
		return err
	}
	return WriteFileAtomic(certFile, certPEM, 0o644)
}

// WriteFileAtomic writes data to a temporary file in path's directory and renames it to path.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp, perm)); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// The files MintDemo writes, by name inside its directory.
const (
	CAFile         = "ca.pem"         // the demo CA's certificate: every hop's CA file
	CAKeyFile      = "ca-key.pem"     // its key, to issue more certificates (LoadCA)
	ClientCertFile = "client.pem"     // a QS or grpcurl: DemoClientID
	ClientKeyFile  = "client-key.pem" //
	ProxyCertFile  = "proxy.pem"      // the proxy: its QueryService and its shard connections, DemoProxyID
	ProxyKeyFile   = "proxy-key.pem"  //
	ShardCertFile  = "shard.pem"      // every shard: DemoShardID
	ShardKeyFile   = "shard-key.pem"  //
)

// The identities of the demo's certificates (their first URI SAN).
const (
	DemoClientID = "spiffe://gather.demo/qs"
	DemoProxyID  = "spiffe://gather.demo/proxy"
	DemoShardID  = "spiffe://gather.demo/shard"
)

// MintDemo makes a new CA and the demo's certificates in dir (created 0700 if needed), replacing
// what is there: the proxy's and the shards' serve localhost, 127.0.0.1, ::1 and the given
// extra hosts (names or IP addresses). It returns the CA, to issue more.
func MintDemo(dir string, hosts ...string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := NewCA("gather demo CA", 30*24*time.Hour)
	if err != nil {
		return nil, err
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	if err := WriteFileAtomic(filepath.Join(dir, CAKeyFile), caKey, 0o600); err != nil {
		return nil, err
	}
	if err := WriteFileAtomic(filepath.Join(dir, CAFile), ca.CertPEM(), 0o644); err != nil {
		return nil, err
	}
	dns, ips := []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if h != "" {
			dns = append(dns, h)
		}
	}
	for _, f := range []struct {
		cert, key string
		leaf      Leaf
	}{
		{ClientCertFile, ClientKeyFile, Leaf{CommonName: "qs", URIs: []string{DemoClientID}, Client: true}},
		{ProxyCertFile, ProxyKeyFile, Leaf{CommonName: "gather proxy", URIs: []string{DemoProxyID}, DNSNames: dns, IPs: ips, Server: true, Client: true}},
		{ShardCertFile, ShardKeyFile, Leaf{CommonName: "gather shard", URIs: []string{DemoShardID}, DNSNames: dns, IPs: ips, Server: true}},
	} {
		if err := ca.WritePair(filepath.Join(dir, f.cert), filepath.Join(dir, f.key), f.leaf); err != nil {
			return nil, err
		}
	}
	return ca, nil
}
