// Package config is the proxy's configuration: a YAML file, overridden by flags, validated at
// start with errors that name the bad key.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gatherproxy/gather/internal/access"
	"github.com/gatherproxy/gather/internal/admission"
	"github.com/gatherproxy/gather/internal/discovery"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/hedge"
	"github.com/gatherproxy/gather/internal/liveness"
	"github.com/gatherproxy/gather/internal/proxy"
	"github.com/gatherproxy/gather/internal/replica"
	"github.com/gatherproxy/gather/internal/tlsconf"
)

// Proxy configures `gather proxy`. Zero durations and limits take the documented defaults of
// packages fanout and proxy.
//
// Memory: whatever the shards send, one query holds at most max_query_hit_bytes of hits, plus
// per shard a message on its way in (about 3.25 × max_shard_message_bytes + top_k × (592 + 160
// × max_hit_fields) bytes) and 16 KiB of headers, twice while a hedge races (shards of several
// replicas), plus its answer (max_answer_bytes, and the hits' structs); see fanout.Config for the
// terms.
type Proxy struct {
	// Listen is the QueryService address. Default 127.0.0.1:7070.
	Listen string `yaml:"listen"`
	// Admin is the admin HTTP address (/metrics, /healthz). Default 127.0.0.1:9090.
	Admin string `yaml:"admin"`
	// Shards is the topology: every shard with its replicas. A config file's shards are
	// re-read when the file changes or on SIGHUP. Not with Discover.
	Shards []Shard `yaml:"shards"`
	// Discover, etcd://HOST:PORT[,HOST:PORT...]/PREFIX, takes the topology from the shards
	// registered under PREFIX (gather shard --register), followed as it changes.
	Discover string `yaml:"discover"`
	// DiscoverExpect names the shards a discovered topology must have (reported missing when
	// no replica of one is registered). Default: shard-0 to shard-(N-1) once registrations say
	// there are N partitions.
	DiscoverExpect []string `yaml:"discover_expect"`
	// DNSRefresh is how often shard replicas given as dns:///HOST:PORT are resolved again (they
	// also are when a replica's connection is lost). Default discovery.DefaultDNSInterval.
	DNSRefresh time.Duration `yaml:"dns_refresh"`
	// ShardTimeout, IdleTimeout, MergeReserve and PullFanOut: see fanout.Config.
	ShardTimeout time.Duration `yaml:"shard_timeout"`
	IdleTimeout  time.Duration `yaml:"idle_timeout"`
	MergeReserve time.Duration `yaml:"merge_reserve"`
	PullFanOut   int           `yaml:"pull_fan_out"`
	// MaxTopK, MaxQueryBytes and SendTimeout: see proxy.Config.
	MaxTopK       uint32        `yaml:"max_top_k"`
	MaxQueryBytes int           `yaml:"max_query_bytes"`
	SendTimeout   time.Duration `yaml:"send_timeout"`
	// MaxInFlight, AdmissionWait, RetryAfter and AdmissionSchedTarget (SchedTarget): see
	// admission.Config.
	MaxInFlight          int           `yaml:"max_in_flight"`
	AdmissionWait        time.Duration `yaml:"admission_wait"`
	RetryAfter           time.Duration `yaml:"retry_after"`
	AdmissionSchedTarget time.Duration `yaml:"admission_sched_target"`
	// MaxConcurrentStreams bounds the calls one QS connection may have open at once (HTTP/2
	// SETTINGS_MAX_CONCURRENT_STREAMS), and so the query slots it can hold. Default: half of
	// MaxInFlight, so that no single connection can take every slot (see MaxStreams).
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams"`
	// Keepalive is the QueryService's server keepalive toward QS.
	Keepalive liveness.Server `yaml:"keepalive"`
	// ShardKeepalive is the keepalive of the proxy's shard connections.
	ShardKeepalive liveness.Client `yaml:"shard_keepalive"`

	// Security (README "Security"). TLS is the QueryService's TLS toward QS, ShardTLS that of
	// the shard connections, AdminTLS that of the admin port; each is plaintext when empty.
	TLS      tlsconf.Server `yaml:"tls"`
	ShardTLS tlsconf.Client `yaml:"shard_tls"`
	AdminTLS tlsconf.Server `yaml:"admin_tls"`
	// Access holds the QueryService's bearer tokens and authorization policy; none by default.
	Access access.Config `yaml:"authz"`
	// Pprof serves /debug/pprof/ on the admin port. Default off.
	Pprof bool `yaml:"pprof"`
	// MaxShardMessageBytes, MaxHitDocIDBytes, MaxHitTextBytes, MaxHitFields, MaxHitFieldBytes and
	// MaxQueryHitBytes: the size limits of the shard hop, see fanout.Config (MaxMessageBytes,
	// MaxDocIDBytes, MaxTextBytes, MaxFields, MaxFieldBytes, MaxQueryHitBytes). Checked by
	// validateSizeLimits.
	MaxShardMessageBytes int   `yaml:"max_shard_message_bytes"`
	MaxHitDocIDBytes     int   `yaml:"max_hit_doc_id_bytes"`
	MaxHitTextBytes      int   `yaml:"max_hit_text_bytes"`
	MaxHitFields         int   `yaml:"max_hit_fields"`
	MaxHitFieldBytes     int   `yaml:"max_hit_field_bytes"`
	MaxQueryHitBytes     int64 `yaml:"max_query_hit_bytes"`
	// MaxHitBytesInFlight bounds the shard hits all queries in flight hold together: see
	// fanout.Config.MaxHitBytesInFlight.
	MaxHitBytesInFlight int64 `yaml:"max_hit_bytes_in_flight"`
	// MaxAnswerBytes bounds every answer: see proxy.Config.MaxAnswerBytes.
	MaxAnswerBytes int `yaml:"max_answer_bytes"`
	// ExposeReplicas puts replica addresses in answers and error details (ShardResult.replica);
	// false names a replica by its ordinal ("replica 1"). Default true.
	ExposeReplicas *bool `yaml:"expose_replicas"`

	// Replicas of a shard (README "Replicas"). HedgePercentile is the percentile of a shard's
	// recent times to first message after which a call still waiting for its first message is
	// hedged on another replica; default 95. HedgeBudget is the most extra shard calls hedges and
	// retries may add together, as a fraction of the shard calls: default 0.05, and 0 turns
	// hedging and budgeted retries off. See hedge.Config.
	HedgePercentile float64  `yaml:"hedge_percentile"`
	HedgeBudget     *float64 `yaml:"hedge_budget"`
}

// Shard is one shard and its replica entries, in order of preference. An entry is an address,
// HOST:PORT, or a DNS name that stands for all its addresses: dns:///HOST:PORT, or
// dns://DNSSERVER:PORT/HOST:PORT to ask a given DNS server (discovery.DNSSource resolves them;
// docs/discovery-dns.md).
type Shard struct {
	Name     string   `yaml:"name"`
	Replicas []string `yaml:"replicas"`
}

// Defaults returns a configuration with the default addresses and no shards.
func Defaults() Proxy {
	return Proxy{Listen: "127.0.0.1:7070", Admin: "127.0.0.1:9090"}
}

// Load reads a YAML file over Defaults. Unknown keys are errors.
func Load(path string) (Proxy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Defaults(), err
	}
	return Parse(data, path)
}

// Parse reads YAML over Defaults, as Load does; path names the file in errors.
func Parse(data []byte, path string) (Proxy, error) {
	cfg := Defaults()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) { // EOF: an empty file
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// ParseShardFlag parses NAME=ADDR[,ADDR...], each ADDR a replica entry: HOST:PORT, or
// dns:///HOST:PORT (every address of HOST) or dns://DNSSERVER:PORT/HOST:PORT (asking that DNS
// server). The form of a dns entry is checked here, as its error is clearer at the flag; the
// rest, and literal addresses, by Validate.
func ParseShardFlag(v string) (Shard, error) {
	name, addrs, ok := strings.Cut(v, "=")
	if !ok || strings.TrimSpace(name) == "" || strings.TrimSpace(addrs) == "" {
		return Shard{}, fmt.Errorf("--shard %q: want NAME=HOST:PORT[,HOST:PORT...], where dns:///HOST:PORT stands for every address of HOST", v)
	}
	s := Shard{Name: strings.TrimSpace(name)}
	var errs []error
	for _, a := range strings.Split(addrs, ",") {
		a = strings.TrimSpace(a)
		if discovery.IsDNSName(a) {
			if _, err := discovery.ParseDNSName(a); err != nil {
				errs = append(errs, fmt.Errorf("--shard %q: %w", v, err))
			}
		}
		s.Replicas = append(s.Replicas, a)
	}
	return s, errors.Join(errs...)
}

// Validate checks every key: the addresses, the topology, and every numeric key against the
// bounds table (bounds.go) and its cross-checks. The error names each bad key and says what is
// allowed. Checking the listen and admin addresses may look up a host name (at most 2s).
func (c Proxy) Validate() error { return c.validate(thisHost()) }

func (c Proxy) validate(h host) error {
	var errs []error
	if err := h.checkListen(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: %w", err))
	}
	if err := h.checkListen(c.Admin); err != nil {
		errs = append(errs, fmt.Errorf("admin: %w", err))
	}
	switch {
	case c.Discover != "" && len(c.Shards) > 0:
		errs = append(errs, errors.New("discover: the topology comes from discovery or from shards, not both: drop one"))
	case c.Discover != "":
		if _, err := discovery.ParseTarget(c.Discover); err != nil {
			errs = append(errs, fmt.Errorf("discover: %w", err))
		}
	case len(c.DiscoverExpect) > 0:
		errs = append(errs, errors.New("discover_expect: only with discover"))
	case len(c.Shards) == 0:
		errs = append(errs, errors.New("shards: no shard configured: give at least one (--shard NAME=ADDR or a shards: list), or --discover etcd://HOST:PORT/PREFIX"))
	}
	seen := map[string]bool{}
	for i, s := range c.Shards {
		switch {
		case s.Name == "":
			errs = append(errs, fmt.Errorf("shards[%d].name: empty", i))
		case seen[s.Name]:
			errs = append(errs, fmt.Errorf("shards[%d].name: %q configured twice", i, s.Name))
		}
		seen[s.Name] = true
		if len(s.Replicas) == 0 {
			errs = append(errs, fmt.Errorf("shards[%d].replicas: shard %q has no replica address", i, s.Name))
		}
		if len(s.Replicas) > replica.MaxReplicas {
			errs = append(errs, fmt.Errorf("shards[%d].replicas: shard %q has %d replicas, more than the %d a shard may have",
				i, s.Name, len(s.Replicas), replica.MaxReplicas))
		}
		for j, r := range s.Replicas {
			if err := checkReplica(r); err != nil {
				errs = append(errs, fmt.Errorf("shards[%d].replicas[%d]: %w", i, j, err))
			}
		}
	}
	errs = append(errs, c.checkSettings()...)
	errs = append(errs, c.TLS.Validate("tls"), c.ShardTLS.Validate("shard_tls"), c.AdminTLS.Validate("admin_tls"), c.Access.Validate("authz"))
	errs = append(errs, c.validateSizeLimits()...)
	return errors.Join(errs...)
}

// Topology returns the shards for fanout.New.
func (c Proxy) Topology() []fanout.ShardSpec {
	out := make([]fanout.ShardSpec, len(c.Shards))
	for i, s := range c.Shards {
		out[i] = fanout.ShardSpec{Name: s.Name, Replicas: s.Replicas}
	}
	return out
}

// Fanout returns the fan-out tunables.
func (c Proxy) Fanout() fanout.Config {
	return fanout.Config{
		ShardTimeout:        c.ShardTimeout,
		IdleTimeout:         c.IdleTimeout,
		MergeReserve:        c.MergeReserve,
		PullFanOut:          c.PullFanOut,
		Keepalive:           c.ShardKeepalive.Params(),
		MaxMessageBytes:     c.MaxShardMessageBytes,
		MaxDocIDBytes:       c.MaxHitDocIDBytes,
		MaxTextBytes:        c.MaxHitTextBytes,
		MaxFields:           c.MaxHitFields,
		MaxFieldBytes:       c.MaxHitFieldBytes,
		MaxQueryHitBytes:    c.MaxQueryHitBytes,
		MaxHitBytesInFlight: c.MaxHitBytesInFlight,
		Hedge:               hedge.Config{Percentile: c.HedgePercentile, Budget: c.hedgeBudget()},
	}
}

// hedgeBudget is HedgeBudget as hedge.Config.Budget takes it: 0 for the default, hedge.Off for 0.
func (c Proxy) hedgeBudget() float64 {
	switch {
	case c.HedgeBudget == nil:
		return 0
	case *c.HedgeBudget == 0:
		return hedge.Off
	}
	return *c.HedgeBudget
}

// Service returns the QueryService tunables.
func (c Proxy) Service() proxy.Config {
	return proxy.Config{MaxTopK: c.MaxTopK, MaxQueryBytes: c.MaxQueryBytes, SendTimeout: c.SendTimeout,
		MaxAnswerBytes: c.MaxAnswerBytes, HideReplicas: c.ExposeReplicas != nil && !*c.ExposeReplicas}
}

// Admission returns the admission-control settings.
func (c Proxy) Admission() admission.Config {
	return admission.Config{MaxInFlight: c.MaxInFlight, MaxWait: c.AdmissionWait, RetryAfter: c.RetryAfter,
		SchedTarget: c.AdmissionSchedTarget, Weight: admission.ByTopK}
}

// MaxStreams returns MaxConcurrentStreams or its default, half of the admission bound (at least
// 1). Slots cannot be taken back from a query, and one that streams to a client that does not
// read holds its slot until the send watchdog ends it (shard timeout plus send timeout, 7s by
// default), so a connection allowed every slot could leave callers arriving after it nothing to
// be admitted to for that long, fair sharing or not. With the cap, a connection's streams beyond
// it wait in the client (grpc-go queues them until one ends or the call's deadline passes)
// instead of costing the proxy a goroutine and a shed each, and the other half of the slots
// stays within reach of everyone else.
func (c Proxy) MaxStreams() uint32 {
	if c.MaxConcurrentStreams != 0 {
		return c.MaxConcurrentStreams
	}
	n := c.MaxInFlight
	if n <= 0 {
		n = admission.DefaultMaxInFlight
	}
	return uint32(max(1, n/2))
}

// ChangedKeys returns the top-level keys whose values differ between a and b, in the order of
// the struct: what a reload changed.
func ChangedKeys(a, b Proxy) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var keys []string
	for i := range va.NumField() {
		key, _, _ := strings.Cut(va.Type().Field(i).Tag.Get("yaml"), ",")
		if key != "" && key != "-" && !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			keys = append(keys, key)
		}
	}
	return keys
}

// EnvPrefix starts the environment variables ApplyEnv reads.
const EnvPrefix = "GATHER_"

// ApplyEnv overrides c from environment variables named GATHER_ and a top-level key in upper
// case (GATHER_LISTEN, GATHER_SHARD_TIMEOUT, GATHER_MAX_IN_FLIGHT, GATHER_KEEPALIVE, ...). Each
// value is YAML for that key, e.g. GATHER_SHARD_TIMEOUT=1500ms or
// GATHER_KEEPALIVE='{time: 20s}'; GATHER_SHARDS also takes the flag syntax
// 's0=127.0.0.1:7071,127.0.0.1:7081;s1=dns:///shard-1.search.svc.cluster.local:7071'. lookup is
// os.LookupEnv in production.
// Errors name the variable.
func (c *Proxy) ApplyEnv(lookup func(string) (string, bool)) error {
	v := reflect.ValueOf(c).Elem()
	t := v.Type()
	var errs []error
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if key == "" || key == "-" {
			continue
		}
		name := EnvPrefix + strings.ToUpper(key)
		val, ok := lookup(name)
		if !ok || strings.TrimSpace(val) == "" {
			continue
		}
		if key == "shards" && !strings.HasPrefix(strings.TrimSpace(val), "[") {
			var shards []Shard
			for _, part := range strings.Split(val, ";") {
				s, err := ParseShardFlag(strings.TrimSpace(part))
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", name, err))
					continue
				}
				shards = append(shards, s)
			}
			c.Shards = shards
			continue
		}
		dec := yaml.NewDecoder(strings.NewReader(val))
		dec.KnownFields(true)
		if err := dec.Decode(v.Field(i).Addr().Interface()); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", name, val, err))
		}
	}
	return errors.Join(errs...)
}
