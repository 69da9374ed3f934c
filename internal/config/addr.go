package config

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/gatherproxy/gather/internal/discovery"
)

// lookupTimeout bounds the name lookup of a listen address, so a broken resolver delays the
// start by seconds at most.
const lookupTimeout = 2 * time.Second

// host is what address checks need from the machine: name resolution and its own addresses.
// Tests replace it.
type host struct {
	lookup func(ctx context.Context, name string) ([]string, error)
	addrs  func() ([]net.Addr, error)
}

func thisHost() host {
	return host{lookup: net.DefaultResolver.LookupHost, addrs: net.InterfaceAddrs}
}

// splitAddr splits HOST:PORT and parses the port, which must be a number (grpc-go and the admin
// server take numbers; service names are not portable).
func splitAddr(a string, minPort int) (string, int, error) {
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not HOST:PORT (an IPv6 host goes in brackets: [::1]:7070)", a)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < minPort || port > 65535 {
		return "", 0, fmt.Errorf("%q: port %q is not a number from %d to 65535", a, p, minPort)
	}
	return h, port, nil
}

// checkListen checks an address the proxy listens on: a numeric port (0 picks a free one) and a
// host it can bind, which is empty (every interface), an IP address of this machine (loopback,
// unspecified, or one of its interfaces'), or a name that resolves to one. What fails here would
// fail at net.Listen a moment later, with a message that names neither the key nor the reason.
func (h host) checkListen(a string) error {
	name, _, err := splitAddr(a, 0)
	if err != nil {
		return err
	}
	if name == "" {
		return nil
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		if ok, err := h.local(ip); err != nil || !ok {
			return errors.Join(fmt.Errorf("%q: %s is not an address of this machine, so nothing can listen on it: use 127.0.0.1, 0.0.0.0 or an address of one of its interfaces", a, name), err)
		}
		return nil
	}
	if err := checkHostname(name); err != nil {
		return fmt.Errorf("%q: %w", a, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	ips, err := h.lookup(ctx, name)
	if err != nil {
		return fmt.Errorf("%q: %s does not resolve (%w): use an IP address or a name of this machine", a, name, err)
	}
	for _, s := range ips {
		if ip, err := netip.ParseAddr(s); err == nil {
			if ok, _ := h.local(ip); ok {
				return nil
			}
		}
	}
	return fmt.Errorf("%q: %s resolves to %s, none of which is an address of this machine", a, name, strings.Join(ips, ", "))
}

// local reports whether ip can be bound here: loopback, unspecified, or an interface's address.
func (h host) local(ip netip.Addr) (bool, error) {
	ip = ip.Unmap().WithZone("")
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true, nil
	}
	addrs, err := h.addrs()
	if err != nil {
		return false, fmt.Errorf("listing this machine's addresses: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if own, ok := netip.AddrFromSlice(n.IP); ok && own.Unmap() == ip {
				return true, nil
			}
		}
	}
	return false, nil
}

// checkReplica checks a shard replica entry: a literal address (checkAddress) or a dns one,
// dns:///HOST:PORT or dns://DNSSERVER[:PORT]/HOST:PORT (checkDNSReplica).
func checkReplica(a string) error {
	if discovery.IsDNSName(a) {
		return checkDNSReplica(a)
	}
	return checkAddress(a)
}

// checkAddress checks a shard replica's address: a port from 1 and a host that is an IP address
// one can connect to or a well-formed DNS name. Names are not resolved: a shard may not be in DNS
// yet when the proxy starts, and grpc-go resolves again on every reconnect (readiness reports a
// shard with no reachable replica).
func checkAddress(a string) error {
	name, _, err := splitAddr(a, 1)
	if err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("%q has no host: give the shard's address, such as 127.0.0.1:7071", a)
	}
	return checkReplicaHost(a, name)
}

// checkReplicaHost checks the host of a replica entry a: an IP address one can connect to or a
// well-formed DNS name.
func checkReplicaHost(a, name string) error {
	if ip, err := netip.ParseAddr(name); err == nil {
		if ip.IsUnspecified() || ip.IsMulticast() {
			return fmt.Errorf("%q: %s is not an address a shard can be reached at", a, name)
		}
		return nil
	}
	if err := checkHostname(name); err != nil {
		return fmt.Errorf("%q: %w", a, err)
	}
	return nil
}

// checkDNSReplica checks a dns replica entry: its form (discovery.ParseDNSName), the name to
// resolve, and the DNS server's host. Nothing is resolved here: the proxy resolves the name
// itself, again and again (discovery.DNSSource), and a name with no address yet leaves its
// shard without replicas until it has one.
func checkDNSReplica(a string) error {
	n, err := discovery.ParseDNSName(a)
	if err != nil {
		return err
	}
	if err := checkReplicaHost(a, n.Host); err != nil {
		return err
	}
	if n.Server == "" {
		return nil
	}
	server := n.ServerHost()
	if ip, err := netip.ParseAddr(server); err == nil {
		if ip.IsUnspecified() || ip.IsMulticast() {
			return fmt.Errorf("%q: DNS server %s is not an address one can ask", a, server)
		}
		return nil
	}
	if err := checkHostname(server); err != nil {
		return fmt.Errorf("%q: DNS server: %w", a, err)
	}
	return nil
}

// checkHostname accepts a DNS name: dot-separated labels of letters, digits, '-' and '_' (used by
// some internal zones), none empty or longer than 63 bytes or starting or ending with '-'; 253
// bytes at most.
func checkHostname(name string) error {
	bad := fmt.Errorf("host %q is neither an IP address nor a valid host name", name)
	if len(name) > 253 {
		return bad
	}
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return bad
		}
		for _, r := range label {
			if !hostnameRune(r) {
				return bad
			}
		}
	}
	return nil
}

func hostnameRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}
