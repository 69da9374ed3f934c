package discovery_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/gatherproxy/gather/internal/discovery"
)

func TestParseDNSName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want discovery.DNSName
	}{
		{"dns:///shards.search.svc.cluster.local:7071", discovery.DNSName{Host: "shards.search.svc.cluster.local", Port: 7071}},
		{"DNS:///shards.local.:7071", discovery.DNSName{Host: "shards.local.", Port: 7071}},
		{"dns://127.0.0.1:5353/shards:1", discovery.DNSName{Server: "127.0.0.1:5353", Host: "shards", Port: 1}},
		{"dns://10.0.0.10/shards:65535", discovery.DNSName{Server: "10.0.0.10:53", Host: "shards", Port: 65535}},
		{"dns://[::1]:53/[::1]:7071", discovery.DNSName{Server: "[::1]:53", Host: "::1", Port: 7071}},
		{"dns://[::1]/h:7", discovery.DNSName{Server: "[::1]:53", Host: "h", Port: 7}},
		{"dns://ns.example.net:53/h:7", discovery.DNSName{Server: "ns.example.net:53", Host: "h", Port: 7}},
		{" dns:///h:7 ", discovery.DNSName{Host: "h", Port: 7}},
	} {
		got, err := discovery.ParseDNSName(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseDNSName(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		if back, err := discovery.ParseDNSName(got.String()); err != nil || back != got {
			t.Errorf("ParseDNSName(%q.String() = %q) = %+v, %v", tc.in, got.String(), back, err)
		}
		if !discovery.IsDNSName(tc.in) {
			t.Errorf("IsDNSName(%q) = false", tc.in)
		}
	}
}

func TestParseDNSNameErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"dns:shards:7071", "no // after dns:"},
		{"dns://shards:7071", "no / before HOST:PORT"},
		{"dns:///shards", "the port is required"},
		{"dns:///:7071", "no host"},
		{"dns:///shards:http", `port "http"`},
		{"dns:///shards:0", `port "0"`},
		{"dns:///shards:70000", `port "70000"`},
		{"dns:///::1:7071", "IPv6 host goes in brackets"},
		{"dns://:53/shards:1", `DNS server ":53": no host`},
		{"dns://ns:dns/shards:1", `DNS server "ns:dns": port "dns"`},
		{"dns://::1/shards:1", `DNS server "::1"`},
		{"dns:///shards:1?x=y", "query strings"},
		{"dns:///shards:1/more", "nothing may follow HOST:PORT"},
		{"etcd://h:1/p", "does not start with dns:"},
	} {
		_, err := discovery.ParseDNSName(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, discovery.ErrDNSName) {
			t.Errorf("ParseDNSName(%q): got %v, want an error with %q", tc.in, err, tc.want)
		}
	}
	for _, s := range []string{"127.0.0.1:7071", "dnshost:7071", "shards.dns:1", ""} {
		if discovery.IsDNSName(s) {
			t.Errorf("IsDNSName(%q) = true", s)
		}
	}
}
