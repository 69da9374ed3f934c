package config

import (
	"strings"
	"testing"
)

func TestSizeLimitsLoadAndReachThePackages(t *testing.T) {
	t.Parallel()
	cfg, err := Load(write(t, `
shards: [{name: a, replicas: [127.0.0.1:7001]}]
max_shard_message_bytes: 2097152
max_hit_doc_id_bytes: 128
max_hit_text_bytes: 65536
max_hit_fields: 8
max_hit_field_bytes: 256
max_query_hit_bytes: 8388608
max_answer_bytes: 1048576
expose_replicas: false
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	f, s := cfg.Fanout(), cfg.Service()
	if f.MaxMessageBytes != 2<<20 || f.MaxDocIDBytes != 128 || f.MaxTextBytes != 64<<10 || f.MaxFields != 8 ||
		f.MaxFieldBytes != 256 || f.MaxQueryHitBytes != 8<<20 {
		t.Errorf("fanout config %+v does not carry the limits", f)
	}
	if s.MaxAnswerBytes != 1<<20 || !s.HideReplicas {
		t.Errorf("service config %+v: want MaxAnswerBytes 1 MiB and replicas hidden", s)
	}
	if valid().Service().HideReplicas {
		t.Error("replicas hidden by default")
	}
	env := valid()
	if err := env.ApplyEnv(func(k string) (string, bool) {
		v, ok := map[string]string{"GATHER_MAX_ANSWER_BYTES": "2097152", "GATHER_EXPOSE_REPLICAS": "false"}[k]
		return v, ok
	}); err != nil || env.MaxAnswerBytes != 2<<20 || env.ExposeReplicas == nil || *env.ExposeReplicas {
		t.Errorf("from the environment: %v, max_answer_bytes %d, expose_replicas %v", err, env.MaxAnswerBytes, env.ExposeReplicas)
	}
}

func TestSizeLimitsErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		set  func(*Proxy)
		want string
	}{
		{"negative", func(c *Proxy) { c.MaxShardMessageBytes = -1 }, "max_shard_message_bytes: -1 bytes is negative"},
		{"message below the shards' packing", func(c *Proxy) { c.MaxShardMessageBytes = 100 << 10 }, "max_shard_message_bytes: 102400 bytes (100 KiB) is below the minimum of 262144 bytes"},
		{"message too large", func(c *Proxy) { c.MaxShardMessageBytes = 1 << 30 }, "max_shard_message_bytes: 1073741824 bytes (1024 MiB) is above the maximum"},
		{"doc_id", func(c *Proxy) { c.MaxHitDocIDBytes = 8 }, "max_hit_doc_id_bytes"},
		{"text", func(c *Proxy) { c.MaxHitTextBytes = 8 << 20 }, "max_hit_text_bytes"},
		{"fields", func(c *Proxy) { c.MaxHitFields = 5000 }, "max_hit_fields"},
		{"field bytes", func(c *Proxy) { c.MaxHitFieldBytes = -3 }, "max_hit_field_bytes: -3 bytes is negative"},
		{"budget", func(c *Proxy) { c.MaxQueryHitBytes = 1000 }, "max_query_hit_bytes"},
		{"answer", func(c *Proxy) { c.MaxAnswerBytes = 1000 }, "max_answer_bytes: 1000 bytes is below the minimum of 65536 bytes"},
		{"a hit at the caps does not fit a message", func(c *Proxy) { c.MaxHitTextBytes = 2 << 20 },
			"max_shard_message_bytes: 1048576 cannot hold one hit at the caps"},
		{"a hit at the caps does not fit the budget", func(c *Proxy) {
			c.MaxShardMessageBytes, c.MaxHitTextBytes, c.MaxQueryHitBytes = 8<<20, 4<<20, 1<<20
		}, "max_query_hit_bytes: 1048576 cannot hold one hit at the caps"},
		{"a hit at the caps does not fit an answer", func(c *Proxy) { c.MaxHitTextBytes, c.MaxAnswerBytes = 512<<10, 256<<10 },
			"max_answer_bytes: 262144 leaves"},
	} {
		c := valid()
		tc.set(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
