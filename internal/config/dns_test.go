package config

import (
	"strings"
	"testing"
)

// proxyWith returns a valid configuration but for the replica entries of shard a.
func proxyWith(replicas ...string) Proxy {
	return Proxy{Listen: "127.0.0.1:1", Admin: "127.0.0.1:2", Shards: []Shard{{Name: "a", Replicas: replicas}}}
}

func TestDNSReplicaEntries(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{
		"dns:///shards.search.svc.cluster.local:7071",
		"dns:///shards.search.svc.cluster.local.:7071",
		"dns://127.0.0.1:5353/shards.gather.test.:7071",
		"dns://10.96.0.10/shards:7071",
		"dns://[::1]:53/shards:7071",
		"dns://kube-dns.kube-system:53/shards:7071",
		"DNS:///localhost:7071",
	} {
		if err := proxyWith(ok, "127.0.0.1:7081").Validate(); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
		if _, err := ParseShardFlag("a=" + ok + ",127.0.0.1:7081"); err != nil {
			t.Errorf("--shard a=%s: %v", ok, err)
		}
	}
	for _, tc := range []struct{ entry, want string }{
		{"dns:///shards", "the port is required"},
		{"dns:///:7071", "no host"},
		{"dns:///shards:0", `port "0"`},
		{"dns:shards:7071", "no // after dns:"},
		{"dns://shards:7071", "no / before HOST:PORT"},
		{"dns://:53/shards:7071", `DNS server ":53": no host`},
		{"dns://ns:x/shards:7071", `DNS server "ns:x"`},
		{"dns://0.0.0.0:53/shards:7071", "DNS server 0.0.0.0 is not an address one can ask"},
		{"dns://bad_host!:53/shards:7071", "DNS server: host \"bad_host!\""},
		{"dns:///bad..name:7071", `host "bad..name" is neither`},
		{"dns:///0.0.0.0:7071", "not an address a shard can be reached at"},
	} {
		err := proxyWith("127.0.0.1:7081", tc.entry).Validate()
		if err == nil || !strings.Contains(err.Error(), "shards[0].replicas[1]: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate %q: got %v, want an error naming shards[0].replicas[1] with %q", tc.entry, err, tc.want)
		}
	}
	// The flag names itself and checks the form at once.
	if _, err := ParseShardFlag("a=127.0.0.1:1,dns:///shards"); err == nil ||
		!strings.Contains(err.Error(), `--shard "a=127.0.0.1:1,dns:///shards"`) || !strings.Contains(err.Error(), "the port is required") {
		t.Errorf("--shard with a bad dns entry: got %v", err)
	}
}

func TestDNSReplicaEntriesFromEnvAndYAML(t *testing.T) {
	t.Parallel()
	env := map[string]string{"GATHER_SHARDS": "s0=dns:///s0.search.svc.cluster.local:7071;s1=dns://127.0.0.1:5353/s1.gather.test.:7071,127.0.0.1:7082"}
	cfg := Defaults()
	if err := cfg.ApplyEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := cfg.Topology(); len(got) != 2 || got[0].Replicas[0] != "dns:///s0.search.svc.cluster.local:7071" ||
		got[1].Replicas[0] != "dns://127.0.0.1:5353/s1.gather.test.:7071" || got[1].Replicas[1] != "127.0.0.1:7082" {
		t.Errorf("topology from GATHER_SHARDS: %+v", got)
	}
	bad := map[string]string{"GATHER_SHARDS": "s0=dns://h:1"}
	if err := cfg.ApplyEnv(func(k string) (string, bool) { v, ok := bad[k]; return v, ok }); err == nil ||
		!strings.Contains(err.Error(), "GATHER_SHARDS") || !strings.Contains(err.Error(), "no / before HOST:PORT") {
		t.Errorf("a bad dns entry in GATHER_SHARDS: got %v, want an error naming the variable", err)
	}

	cfg, err := Load(write(t, `
shards:
  - name: s0
    replicas: ["dns:///s0.search.svc.cluster.local:7071"]
  - name: s1
    replicas: ["dns://127.0.0.1:5353/s1.gather.test.:7071", 127.0.0.1:7082]
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg, err = Load(write(t, "shards: [{name: s0, replicas: [\"dns:///s0.search.svc.cluster.local\"]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "shards[0].replicas[0]") || !strings.Contains(err.Error(), "the port is required") {
		t.Errorf("a bad dns entry in YAML: got %v, want an error naming shards[0].replicas[0]", err)
	}
}
