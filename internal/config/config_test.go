package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gather.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	t.Parallel()
	cfg, err := Load(write(t, `
listen: 127.0.0.1:7000
shards:
  - name: a
    replicas: [127.0.0.1:7001, 127.0.0.1:7011]
  - name: b
    replicas: [127.0.0.1:7002]
shard_timeout: 1500ms
max_top_k: 50
hedge_percentile: 99
hedge_budget: 0
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:7000" || cfg.Admin != "127.0.0.1:9090" || cfg.ShardTimeout != 1500*time.Millisecond ||
		cfg.MaxTopK != 50 || len(cfg.Shards) != 2 || len(cfg.Shards[0].Replicas) != 2 ||
		cfg.HedgePercentile != 99 || cfg.HedgeBudget == nil || *cfg.HedgeBudget != 0 {
		t.Errorf("got %+v", cfg)
	}
}

func TestLoadEmptyFile(t *testing.T) {
	t.Parallel()
	cfg, err := Load(write(t, ""))
	if err != nil || cfg.Listen != "127.0.0.1:7070" {
		t.Fatalf("got %+v, %v", cfg, err)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	if _, err := Load(write(t, "listen: 127.0.0.1:7000\nshard_timout: 1s\n")); err == nil || !strings.Contains(err.Error(), "shard_timout") {
		t.Errorf("unknown key: got %v, want it named", err)
	}
	if _, err := Load(write(t, "shard_timeout: soon\n")); err == nil {
		t.Error("bad duration: no error")
	}
	for _, tc := range []struct {
		cfg  Proxy
		want string
	}{
		{Proxy{Listen: "nope", Admin: "127.0.0.1:1", Shards: []Shard{{Name: "a", Replicas: []string{"h:1"}}}}, "listen"},
		{Proxy{Listen: "127.0.0.1:1", Admin: "127.0.0.1:2"}, "shards: no shard"},
		{Proxy{Listen: "127.0.0.1:1", Admin: "127.0.0.1:2", Shards: []Shard{{Name: "a"}}}, "shards[0].replicas"},
		{Proxy{Listen: "127.0.0.1:1", Admin: "127.0.0.1:2", Shards: []Shard{{Name: "a", Replicas: []string{"h:1"}}, {Name: "a", Replicas: []string{"h:2"}}}}, "shards[1].name"},
		{Proxy{Listen: "127.0.0.1:1", Admin: "127.0.0.1:2", Shards: []Shard{{Name: "a", Replicas: []string{"h"}}}}, "shards[0].replicas[0]"},
		{Proxy{Listen: "127.0.0.1:1", Admin: "127.0.0.1:2", Shards: []Shard{{Name: "a", Replicas: []string{"h:1"}}}, IdleTimeout: -1}, "idle_timeout"},
	} {
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want an error naming %q", tc.cfg, err, tc.want)
		}
	}
}

func TestParseShardFlag(t *testing.T) {
	t.Parallel()
	s, err := ParseShardFlag("s0=127.0.0.1:1, 127.0.0.1:2")
	if err != nil || s.Name != "s0" || len(s.Replicas) != 2 || s.Replicas[1] != "127.0.0.1:2" {
		t.Errorf("got %+v, %v", s, err)
	}
	for _, bad := range []string{"", "s0", "=h:1", "s0="} {
		if _, err := ParseShardFlag(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestApplyEnv(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"GATHER_LISTEN":        "127.0.0.1:7001",
		"GATHER_SHARD_TIMEOUT": "750ms",
		"GATHER_SHARDS":        "s0=127.0.0.1:1,127.0.0.1:2; s1=127.0.0.1:3",
		"GATHER_KEEPALIVE":     "{time: 20s, timeout: 2s}",
		"GATHER_MAX_IN_FLIGHT": "64",
		"GATHER_HEDGE_BUDGET":  "0.1",
	}
	cfg := Defaults()
	if err := cfg.ApplyEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:7001" || cfg.ShardTimeout != 750*time.Millisecond || len(cfg.Shards) != 2 ||
		len(cfg.Shards[0].Replicas) != 2 || cfg.Keepalive.Time != 20*time.Second || cfg.MaxInFlight != 64 ||
		cfg.HedgeBudget == nil || *cfg.HedgeBudget != 0.1 {
		t.Errorf("got %+v", cfg)
	}
	bad := map[string]string{"GATHER_SHARD_TIMEOUT": "soon", "GATHER_KEEPALIVE": "{tme: 1s}", "GATHER_SHARDS": "nonsense"}
	err := cfg.ApplyEnv(func(k string) (string, bool) { v, ok := bad[k]; return v, ok })
	for k := range bad {
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("error %v does not name %s", err, k)
		}
	}
}

func TestMaxStreamsDefault(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  Proxy
		want uint32
	}{
		{Proxy{}, 128}, // half of admission's default 256
		{Proxy{MaxInFlight: 32}, 16},
		{Proxy{MaxInFlight: 1}, 1},
		{Proxy{MaxInFlight: 32, MaxConcurrentStreams: 500}, 500},
	} {
		if got := tc.cfg.MaxStreams(); got != tc.want {
			t.Errorf("max_in_flight %d, max_concurrent_streams %d: got %d, want %d",
				tc.cfg.MaxInFlight, tc.cfg.MaxConcurrentStreams, got, tc.want)
		}
	}
}
