// Package tlsconf is gather's transport security: TLS for its gRPC and admin servers, TLS for
// the proxy's shard connections, mutual authentication with client certificates as an option,
// and certificates that are picked up again when their files change.
//
// A Server or Client is a validated configuration (YAML keys, or flags through AddServerFlags
// and AddClientFlags). Its zero value is plaintext. Validate reads every file at start and says
// which key is wrong: a missing file, a file with no certificate, a key that does not match
// its certificate, an expired certificate, a client_auth that asks for client certificates
// without a CA to check them against.
//
// # Reloading
//
// Certificate, key and CA files are looked at before every TLS handshake (one stat per file)
// and read again when they changed, so a new connection sees new files at once and connections
// already open keep theirs. A replacement that does not load (a key that does not match yet,
// a certificate that is not yet complete) is refused with a warning and the previous files stay
// in use; see package watchfile. Write new files next to the old ones and rename them over.
//
// This is built on crypto/tls's per-handshake callbacks and grpc-go's credentials.NewTLS rather
// than on grpc-go's advancedtls and pemfile provider: pemfile polls on a timer (a new
// connection can see the old certificate for a whole refresh period), logs the PEM contents of
// the certificate and the private key when the two do not match (which every non-atomic
// rotation passes through), and reports unreadable files only to grpclog; advancedtls v1.0.0 is
// a separate module built against grpc-go 1.64 that reaches into grpc-go's internal packages.
// Verification is crypto/tls's own in every case: no custom chain checking.
//
// # Client certificates
//
// ClientAuth "require" refuses clients without a certificate signed by the client CA; "optional"
// verifies a certificate when one is sent and lets clients without one through (to be
// authenticated another way, such as a bearer token, see package access). There is no mode that
// accepts unverified certificates: the identity in a client certificate (package peerid) is only
// ever read from a verified one.
//
// # Demo certificates
//
// NewCA and CA.Issue mint ECDSA P-256 certificates for `gather demo --tls` and for tests;
// MintDemo writes a whole set into a directory.
package tlsconf
