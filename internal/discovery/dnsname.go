package discovery

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// DNSScheme starts a shard replica entry that names DNS records rather than one address:
// dns:///HOST:PORT, or dns://DNSSERVER[:PORT]/HOST:PORT to ask a given DNS server (grpc-go's
// target syntax).
const DNSScheme = "dns"

// defaultDNSPort is the port of a DNS server named without one, as in grpc-go.
const defaultDNSPort = "53"

// ErrDNSName is wrapped by every error of ParseDNSName.
var ErrDNSName = errors.New("invalid dns replica entry")

// DNSName is a parsed dns replica entry: every A and AAAA address of Host, with Port, is a
// replica.
type DNSName struct {
	// Server is the DNS server to ask, HOST:PORT, or "" for the system's resolver
	// (/etc/resolv.conf, /etc/hosts).
	Server string
	// Host is the name to resolve, as written (a final dot makes it absolute: the resolver's
	// search domains are not tried).
	Host string
	// Port is the port of every address Host resolves to, from 1 to 65535.
	Port uint16
}

// IsDNSName reports whether a replica entry is meant as a dns one (it starts with "dns:",
// in any case), well-formed or not: ParseDNSName says which.
func IsDNSName(entry string) bool {
	scheme, _, ok := strings.Cut(strings.TrimSpace(entry), ":")
	return ok && strings.EqualFold(scheme, DNSScheme)
}

// ParseDNSName parses dns:///HOST:PORT or dns://DNSSERVER[:PORT]/HOST:PORT (the server's port
// defaults to 53). HOST and DNSSERVER may be names or IP addresses (IPv6 in brackets); PORT is
// a number. Names are checked for shape by the caller (config), not here, and not resolved.
func ParseDNSName(entry string) (DNSName, error) {
	const form = "want dns:///HOST:PORT, or dns://DNSSERVER:PORT/HOST:PORT to ask a given DNS server"
	bad := func(format string, args ...any) (DNSName, error) {
		return DNSName{}, fmt.Errorf("%w %q: %s", ErrDNSName, entry, fmt.Sprintf(format, args...))
	}
	s := strings.TrimSpace(entry)
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || !strings.EqualFold(scheme, DNSScheme) {
		return bad("it does not start with %s:; %s", DNSScheme, form)
	}
	rest, ok = strings.CutPrefix(rest, "//")
	if !ok {
		return bad("no // after %s:; %s", DNSScheme, form)
	}
	if strings.ContainsAny(rest, "?#") {
		return bad("query strings and fragments are not supported; %s", form)
	}
	authority, hostport, ok := strings.Cut(rest, "/")
	if !ok {
		return bad("no / before HOST:PORT; %s", form)
	}
	var n DNSName
	if authority != "" {
		server, err := parseDNSServer(authority)
		if err != nil {
			return bad("DNS server %q: %v; %s", authority, err, form)
		}
		n.Server = server
	}
	if strings.Contains(hostport, "/") {
		return bad("%q has a '/': nothing may follow HOST:PORT; %s", hostport, form)
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return bad("%q is not HOST:PORT (the port is required; an IPv6 host goes in brackets: [::1]:7071); %s", hostport, form)
	}
	if host == "" {
		return bad("no host before :%s; %s", port, form)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return bad("port %q is not a number from 1 to 65535", port)
	}
	n.Host, n.Port = host, uint16(p)
	return n, nil
}

// parseDNSServer checks a DNS server's HOST[:PORT] and returns it as HOST:PORT.
func parseDNSServer(a string) (string, error) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		// No port: the whole is the host, in brackets if it is IPv6.
		host, port = strings.TrimSuffix(strings.TrimPrefix(a, "["), "]"), defaultDNSPort
		if strings.Contains(host, "]") || strings.Contains(host, "[") ||
			strings.Contains(host, ":") && !strings.HasPrefix(a, "[") {
			return "", errors.New("not HOST or HOST:PORT (an IPv6 server goes in brackets: [::1]:53)")
		}
	}
	if host == "" {
		return "", errors.New("no host")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return net.JoinHostPort(host, port), nil
}

// ServerHost returns the host of Server ("" for the system's resolver).
func (n DNSName) ServerHost() string {
	h, _, _ := net.SplitHostPort(n.Server)
	return h
}

// String returns the entry in the form ParseDNSName reads, the server with its port.
func (n DNSName) String() string {
	return DNSScheme + "://" + n.Server + "/" + net.JoinHostPort(n.Host, strconv.Itoa(int(n.Port)))
}
