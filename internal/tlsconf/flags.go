package tlsconf

import (
	"flag"
	"fmt"
)

// ServerFlags are the command-line flags of a Server: --PREFIX-cert, --PREFIX-key,
// --PREFIX-client-ca and --PREFIX-client-auth.
type ServerFlags struct {
	prefix                          string
	cert, key, clientCA, clientAuth *string
}

// AddServerFlags registers the flags of a server's TLS on fs; what says which server they are
// for in the usage ("the QueryService").
func AddServerFlags(fs *flag.FlagSet, prefix, what string) ServerFlags {
	return ServerFlags{
		prefix:     prefix,
		cert:       fs.String(prefix+"-cert", "", fmt.Sprintf("serve %s over TLS with this certificate `file` (PEM; needs --%s-key)", what, prefix)),
		key:        fs.String(prefix+"-key", "", fmt.Sprintf("private key `file` (PEM) of --%s-cert", prefix)),
		clientCA:   fs.String(prefix+"-client-ca", "", fmt.Sprintf("verify client certificates of %s against the CA certificates in this `file` (mutual TLS)", what)),
		clientAuth: fs.String(prefix+"-client-auth", "", fmt.Sprintf("`mode` for client certificates of %s: none, optional or require (default: require with --%s-client-ca)", what, prefix)),
	}
}

// Apply overrides the fields of s whose flags were given.
func (f ServerFlags) Apply(s *Server) {
	set(&s.CertFile, *f.cert)
	set(&s.KeyFile, *f.key)
	set(&s.ClientCAFile, *f.clientCA)
	if *f.clientAuth != "" {
		s.ClientAuth = ClientAuth(*f.clientAuth)
	}
}

// Server returns the Server the flags describe, validated, with errors that name the flags:
// for commands configured by flags alone.
func (f ServerFlags) Server() (Server, error) {
	var s Server
	f.Apply(&s)
	names := map[string]string{"cert_file": "cert", "key_file": "key", "client_ca_file": "client-ca", "client_auth": "client-auth"}
	return s, s.validate(func(field string) string { return "--" + f.prefix + "-" + names[field] })
}

// ClientFlags are the command-line flags of a Client: --PREFIX-ca, --PREFIX-cert, --PREFIX-key
// and --PREFIX-server-name.
type ClientFlags struct {
	prefix                    string
	ca, cert, key, serverName *string
}

// AddClientFlags registers the flags of a client's TLS on fs; what says which connections they
// are for in the usage ("shard connections").
func AddClientFlags(fs *flag.FlagSet, prefix, what string) ClientFlags {
	return ClientFlags{
		prefix:     prefix,
		ca:         fs.String(prefix+"-ca", "", fmt.Sprintf("use TLS for %s, verifying servers against the CA certificates in this `file` (PEM)", what)),
		cert:       fs.String(prefix+"-cert", "", fmt.Sprintf("present this client certificate `file` (PEM) on %s, for servers that require one", what)),
		key:        fs.String(prefix+"-key", "", fmt.Sprintf("private key `file` (PEM) of --%s-cert", prefix)),
		serverName: fs.String(prefix+"-server-name", "", fmt.Sprintf("`name` that server certificates of %s must carry (default: the host dialled)", what)),
	}
}

// Apply overrides the fields of c whose flags were given.
func (f ClientFlags) Apply(c *Client) {
	set(&c.CAFile, *f.ca)
	set(&c.CertFile, *f.cert)
	set(&c.KeyFile, *f.key)
	set(&c.ServerName, *f.serverName)
}

// Client returns the Client the flags describe, validated, with errors that name the flags.
func (f ClientFlags) Client() (Client, error) {
	var c Client
	f.Apply(&c)
	names := map[string]string{"ca_file": "ca", "cert_file": "cert", "key_file": "key", "server_name": "server-name"}
	return c, c.validate(func(field string) string { return "--" + f.prefix + "-" + names[field] })
}

func set(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}
