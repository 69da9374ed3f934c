package config

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gatherproxy/gather/internal/hedge"
)

// valid is a configuration that passes: every test below breaks one thing in it.
func valid() Proxy {
	c := Defaults()
	c.Shards = []Shard{{Name: "s0", Replicas: []string{"127.0.0.1:7071"}}, {Name: "s1", Replicas: []string{"shard-1.example:7072"}}}
	return c
}

func TestBoundsTable(t *testing.T) {
	t.Parallel()
	if err := valid().Validate(); err != nil {
		t.Fatalf("the base configuration: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Proxy)
		want string // "" means valid; otherwise a substring of the error, which must start with the key
	}{
		{"shard_timeout at the ceiling", func(c *Proxy) { c.ShardTimeout = 5 * time.Minute }, ""},
		{"shard_timeout 10000h", func(c *Proxy) { c.ShardTimeout = 10000 * time.Hour }, "shard_timeout: 10000h0m0s is above the maximum of 5m0s"},
		{"shard_timeout negative", func(c *Proxy) { c.ShardTimeout = -time.Second }, "shard_timeout: -1s is negative"},
		{"shard_timeout 1ns", func(c *Proxy) { c.ShardTimeout = 1 }, "shard_timeout: 1ns is below the minimum of 1ms"},
		{"idle_timeout above", func(c *Proxy) { c.IdleTimeout = 6 * time.Minute }, "idle_timeout: 6m0s is above the maximum"},
		{"merge_reserve above", func(c *Proxy) { c.MergeReserve = time.Minute }, "merge_reserve: 1m0s is above the maximum of 5s"},
		{"send_timeout above", func(c *Proxy) { c.SendTimeout = time.Hour }, "send_timeout: 1h0m0s is above the maximum of 1m0s"},
		{"admission_wait above", func(c *Proxy) { c.AdmissionWait = time.Minute }, "admission_wait: 1m0s is above the maximum of 10s"},
		{"admission_sched_target above", func(c *Proxy) { c.AdmissionSchedTarget = 2 * time.Second }, "admission_sched_target: 2s is above the maximum of 1s"},
		{"admission_sched_target below", func(c *Proxy) { c.AdmissionSchedTarget = time.Microsecond }, "admission_sched_target: 1µs is below the minimum of 1ms"},
		{"retry_after above", func(c *Proxy) { c.RetryAfter = time.Hour }, "retry_after: 1h0m0s is above"},
		{"max_query_bytes 64 KiB", func(c *Proxy) { c.MaxQueryBytes = 64 << 10 }, ""},
		{"max_query_bytes 2e9", func(c *Proxy) { c.MaxQueryBytes = 2e9 }, "max_query_bytes: 2000000000 bytes (1953125 KiB) is above the maximum of 65536 bytes (64 KiB)"},
		{"max_query_bytes negative", func(c *Proxy) { c.MaxQueryBytes = -1 }, "max_query_bytes: -1 bytes is negative"},
		{"max_top_k 10000", func(c *Proxy) { c.MaxTopK = 10000 }, ""},
		{"max_top_k 10001", func(c *Proxy) { c.MaxTopK = 10001 }, "max_top_k: 10001 is above the maximum of 10000"},
		{"max_in_flight above", func(c *Proxy) { c.MaxInFlight = 1 << 20 }, "max_in_flight: 1048576 is above the maximum of 10000"},
		{"max_in_flight negative", func(c *Proxy) { c.MaxInFlight = -5 }, "max_in_flight: -5 is negative"},
		{"pull_fan_out negative", func(c *Proxy) { c.PullFanOut = -1 }, "pull_fan_out: -1 is negative"},
		{"pull_fan_out 1 (always)", func(c *Proxy) { c.PullFanOut = 1 }, ""},
		{"max_concurrent_streams above", func(c *Proxy) { c.MaxConcurrentStreams = 1 << 30 }, "max_concurrent_streams: 1073741824 is above"},
		{"keepalive.time below grpc-go's floor", func(c *Proxy) { c.Keepalive.Time = 500 * time.Millisecond }, "keepalive.time: 500ms is below the minimum of 1s"},
		{"keepalive.time above", func(c *Proxy) { c.Keepalive.Time = 3 * time.Hour }, "keepalive.time: 3h0m0s is above the maximum of 2h0m0s"},
		{"keepalive.timeout above", func(c *Proxy) { c.Keepalive.Timeout = time.Hour }, "keepalive.timeout: 1h0m0s is above"},
		{"keepalive.max_connection_idle negative", func(c *Proxy) { c.Keepalive.MaxConnectionIdle = -time.Second }, "keepalive.max_connection_idle: -1s is negative"},
		{"keepalive.max_connection_age above", func(c *Proxy) { c.Keepalive.MaxConnectionAge = 48 * time.Hour }, "keepalive.max_connection_age: 48h0m0s is above"},
		{"keepalive.max_connection_age_grace above", func(c *Proxy) { c.Keepalive.MaxConnectionAgeGrace = time.Hour }, "keepalive.max_connection_age_grace: 1h0m0s is above"},
		{"keepalive.min_time above", func(c *Proxy) { c.Keepalive.MinTime = time.Hour }, "keepalive.min_time: 1h0m0s is above"},
		{"shard_keepalive.time below grpc-go's client floor", func(c *Proxy) { c.ShardKeepalive.Time = 5 * time.Second }, "shard_keepalive.time: 5s is below the minimum of 10s"},
		{"shard_keepalive.timeout above", func(c *Proxy) { c.ShardKeepalive.Timeout = 2 * time.Minute }, "shard_keepalive.timeout: 2m0s is above"},
		{"hedge_percentile 99.9", func(c *Proxy) { c.HedgePercentile = 99.9 }, ""},
		{"hedge_percentile 100", func(c *Proxy) { c.HedgePercentile = 100 }, "hedge_percentile: 100 is above the maximum of 99.9"},
		{"hedge_percentile 10", func(c *Proxy) { c.HedgePercentile = 10 }, "hedge_percentile: 10 is below the minimum of 50"},
		{"hedge_percentile NaN", func(c *Proxy) { c.HedgePercentile = math.NaN() }, "hedge_percentile: NaN is not a number"},
		{"hedge_budget 0 (off)", func(c *Proxy) { c.HedgeBudget = ptr(0.0) }, ""},
		{"hedge_budget 1", func(c *Proxy) { c.HedgeBudget = ptr(1.0) }, ""},
		{"hedge_budget 2", func(c *Proxy) { c.HedgeBudget = ptr(2.0) }, "hedge_budget: 2 is above the maximum of 1"},
		{"hedge_budget negative", func(c *Proxy) { c.HedgeBudget = ptr(-0.05) }, "hedge_budget: -0.05 is negative"},
		{"hedge_budget +Inf", func(c *Proxy) { c.HedgeBudget = ptr(math.Inf(1)) }, "hedge_budget: +Inf is not a number"},
		{"65 replicas", func(c *Proxy) { c.Shards[0].Replicas = make([]string, 65); fillReplicas(c.Shards[0].Replicas) },
			"shards[0].replicas: shard \"s0\" has 65 replicas, more than the 64"},

		// Cross-checks, on effective values, when the dependent key is set.
		{"idle_timeout equal to shard_timeout", func(c *Proxy) { c.ShardTimeout, c.IdleTimeout = time.Second, time.Second }, ""},
		{"idle_timeout above shard_timeout", func(c *Proxy) { c.ShardTimeout, c.IdleTimeout = time.Second, 2*time.Second },
			"idle_timeout: 2s is above shard_timeout 1s: an idle timeout longer than the shard timeout never fires"},
		{"idle_timeout above the default shard_timeout", func(c *Proxy) { c.IdleTimeout = 3 * time.Second },
			"idle_timeout: 3s is above shard_timeout 2s (its default)"},
		{"default idle_timeout above a short shard_timeout", func(c *Proxy) { c.ShardTimeout = 500 * time.Millisecond }, ""},
		{"merge_reserve equal to shard_timeout", func(c *Proxy) { c.ShardTimeout, c.MergeReserve = time.Second, time.Second },
			"merge_reserve: 1s is at least shard_timeout 1s"},
		{"merge_reserve below shard_timeout", func(c *Proxy) { c.ShardTimeout, c.MergeReserve = time.Second, 999*time.Millisecond }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestEveryNumericKeyHasARow walks Proxy by its YAML keys: every numeric key must have a row in
// the bounds table, with a reason, whose value function reads that key (set past its ceiling, the
// key is named in the error). A new numeric key without a row fails here.
func TestEveryNumericKeyHasARow(t *testing.T) {
	t.Parallel()
	rows := map[string]setting{}
	for _, s := range settings() {
		if _, dup := rows[s.key]; dup {
			t.Errorf("%s: two rows", s.key)
		}
		rows[s.key] = s
	}
	for _, r := range relations() {
		if _, ok := rows[r.key]; !ok {
			t.Errorf("relation names %s, which has no row", r.key)
		}
		if _, ok := rows[r.limit]; !ok {
			t.Errorf("relation names %s, which has no row", r.limit)
		}
	}
	seen := map[string]bool{}
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		for i := range v.NumField() {
			key, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
			if key == "" || key == "-" {
				continue
			}
			key = prefix + key
			f := v.Field(i)
			kind := f.Kind()
			if kind == reflect.Pointer {
				kind = f.Type().Elem().Kind() // an optional number, such as hedge_budget
			}
			switch kind {
			case reflect.Struct:
				if f.Kind() == reflect.Struct {
					walk(f, key+".")
				}
				continue
			case reflect.Int, reflect.Int64, reflect.Uint32, reflect.Float64:
			default:
				continue
			}
			seen[key] = true
			row, ok := rows[key]
			if !ok {
				t.Errorf("%s: numeric key without a row in the bounds table", key)
				continue
			}
			if row.Why == "" || row.Max <= 0 {
				t.Errorf("%s: row without a maximum or a reason", key)
			}
			c := valid()
			field := reflect.ValueOf(&c).Elem().FieldByIndex(fieldPath(t, reflect.TypeFor[Proxy](), key))
			if field.Kind() == reflect.Pointer {
				field.Set(reflect.New(field.Type().Elem()))
				field = field.Elem()
			}
			switch kind {
			case reflect.Uint32:
				field.SetUint(uint64(row.Max + 1))
			case reflect.Float64: // a Decimal row counts millionths
				field.SetFloat(float64(row.Max+1) / 1e6)
			default:
				field.SetInt(row.Max + 1)
			}
			if got := row.value(c); got != row.Max+1 {
				t.Errorf("%s: the row reads %d, want %d", key, got, row.Max+1)
			}
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), key+": ") {
				t.Errorf("%s past its ceiling: got %v, want an error naming it", key, err)
			}
		}
	}
	walk(reflect.ValueOf(valid()), "")
	for key := range rows {
		if !seen[key] {
			t.Errorf("row %s names no key of Proxy", key)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func fillReplicas(addrs []string) {
	for i := range addrs {
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", 7100+i)
	}
}

// TestHedgeKeys: unset hedge keys take hedge's defaults, hedge_budget 0 turns hedging off.
func TestHedgeKeys(t *testing.T) {
	t.Parallel()
	c := valid()
	if h := c.Fanout().Hedge.WithDefaults(); h.Percentile != hedge.DefaultPercentile || h.Budget != hedge.DefaultBudget {
		t.Errorf("unset: %+v, want the defaults", h)
	}
	c.HedgePercentile, c.HedgeBudget = 99, ptr(0.0)
	if h := c.Fanout().Hedge.WithDefaults(); h.Percentile != 99 || h.Enabled() {
		t.Errorf("hedge_percentile 99, hedge_budget 0: %+v, want p99 and hedging off", h)
	}
	c.HedgeBudget = ptr(0.2)
	if h := c.Fanout().Hedge.WithDefaults(); h.Budget != 0.2 {
		t.Errorf("hedge_budget 0.2: %+v", h)
	}
}

// fieldPath finds the struct field of a dotted YAML key.
func fieldPath(t *testing.T, typ reflect.Type, key string) []int {
	t.Helper()
	var path []int
	for _, part := range strings.Split(key, ".") {
		found := false
		for i := range typ.NumField() {
			if name, _, _ := strings.Cut(typ.Field(i).Tag.Get("yaml"), ","); name == part {
				path, typ, found = append(path, i), typ.Field(i).Type, true
				break
			}
		}
		if !found {
			t.Fatalf("no field for %s", key)
		}
	}
	return path
}

// fakeHost resolves from a map and owns the given addresses.
func fakeHost(names map[string][]string, own ...string) host {
	return host{
		lookup: func(_ context.Context, name string) ([]string, error) {
			if ips, ok := names[name]; ok {
				return ips, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
		},
		addrs: func() ([]net.Addr, error) {
			var out []net.Addr
			for _, a := range own {
				out = append(out, &net.IPNet{IP: net.ParseIP(a), Mask: net.CIDRMask(24, 32)})
			}
			return out, nil
		},
	}
}

func TestAddresses(t *testing.T) {
	t.Parallel()
	h := fakeHost(map[string][]string{"localhost": {"127.0.0.1", "::1"}, "me.example": {"10.1.2.3"}, "elsewhere.example": {"203.0.113.9"}}, "10.1.2.3")
	for _, tc := range []struct {
		listen, replica string
		want            string
	}{
		{"127.0.0.1:7070", "127.0.0.1:7071", ""},
		{"127.0.0.1:0", "h:1", ""},  // port 0 picks a free port to listen on
		{":7070", "[::1]:7071", ""}, // every interface
		{"[::]:7070", "shard-0.svc.cluster.local:7071", ""},
		{"localhost:7070", "10.0.0.9:7071", ""},
		{"10.1.2.3:7070", "db_1.internal:7071", ""}, // an interface's address
		{"me.example:7070", "127.0.0.1:7071", ""},
		{"192.0.2.1:7070", "127.0.0.1:7071", `listen: "192.0.2.1:7070": 192.0.2.1 is not an address of this machine`},
		{"elsewhere.example:7070", "127.0.0.1:7071", "elsewhere.example resolves to 203.0.113.9, none of which is an address of this machine"},
		{"nosuch.invalid:7070", "127.0.0.1:7071", "nosuch.invalid does not resolve"},
		{"127.0.0.1:70000", "127.0.0.1:7071", `listen: "127.0.0.1:70000": port "70000" is not a number from 0 to 65535`},
		{"127.0.0.1:http", "127.0.0.1:7071", `port "http" is not a number`},
		{"127.0.0.1", "127.0.0.1:7071", "listen: \"127.0.0.1\" is not HOST:PORT"},
		{"bad host!:7070", "127.0.0.1:7071", "is neither an IP address nor a valid host name"},
		{"127.0.0.1:7070", "127.0.0.1:0", `shards[0].replicas[0]: "127.0.0.1:0": port "0" is not a number from 1 to 65535`},
		{"127.0.0.1:7070", ":7071", "has no host"},
		{"127.0.0.1:7070", "0.0.0.0:7071", "0.0.0.0 is not an address a shard can be reached at"},
		{"127.0.0.1:7070", "-bad-.example:7071", "neither an IP address nor a valid host name"},
		{"127.0.0.1:7070", "a..b:7071", "neither an IP address nor a valid host name"},
	} {
		c := Proxy{Listen: tc.listen, Admin: "127.0.0.1:0", Shards: []Shard{{Name: "s", Replicas: []string{tc.replica}}}}
		err := c.validate(h)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("listen %q, replica %q: got %v, want no error", tc.listen, tc.replica, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("listen %q, replica %q: got %v, want an error containing %q", tc.listen, tc.replica, err, tc.want)
		}
	}
}

// TestListenAddressOfThisMachine runs the real checks: loopback and the wildcard always bind; a
// TEST-NET-1 address (RFC 5737) is never assigned.
func TestListenAddressOfThisMachine(t *testing.T) {
	t.Parallel()
	h := thisHost()
	for _, ok := range []string{"127.0.0.1:0", "0.0.0.0:0", ":0", "[::1]:0"} {
		if err := h.checkListen(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	if err := h.checkListen("192.0.2.1:7070"); err == nil {
		t.Error("192.0.2.1: accepted")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_ = lis.Close()
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
				if err := h.checkListen(net.JoinHostPort(n.IP.String(), "0")); err != nil {
					t.Errorf("this machine's own %s: %v", n.IP, err)
				}
			}
		}
	}
}

func TestValidateReportsEveryBadKey(t *testing.T) {
	t.Parallel()
	c := valid()
	c.ShardTimeout, c.MaxTopK, c.Listen = time.Hour, 20000, "nope"
	err := c.Validate()
	for _, key := range []string{"shard_timeout:", "max_top_k:", "listen:"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("error %v does not name %s", err, key)
		}
	}
	if n := len(strings.Split(err.Error(), "\n")); n != 3 {
		t.Errorf("%d lines, want one per bad key:\n%v", n, err)
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		t.Errorf("%T is not a joined error", err)
	}
}

func TestValidateDiscover(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		change func(*Proxy)
		want   string // in the error; "" for none
	}{
		{"discover alone", func(c *Proxy) { c.Shards, c.Discover = nil, "etcd://127.0.0.1:2379/gather" }, ""},
		{"discover and expect", func(c *Proxy) {
			c.Shards, c.Discover, c.DiscoverExpect = nil, "etcd://127.0.0.1:2379/gather", []string{"shard-0"}
		}, ""},
		{"both", func(c *Proxy) { c.Discover = "etcd://127.0.0.1:2379/gather" }, "discover: the topology comes from discovery or from shards"},
		{"bad url", func(c *Proxy) { c.Shards, c.Discover = nil, "http://127.0.0.1:2379/gather" }, "discover: "},
		{"expect without discover", func(c *Proxy) { c.DiscoverExpect = []string{"shard-0"} }, "discover_expect: only with discover"},
		{"neither", func(c *Proxy) { c.Shards = nil }, "or --discover"},
	} {
		c := valid()
		tc.change(&c)
		err := c.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestChangedKeys(t *testing.T) {
	t.Parallel()
	a := valid()
	b := a
	b.Shards = append([]Shard{{Name: "x", Replicas: []string{"127.0.0.1:1"}}}, a.Shards...)
	b.ShardTimeout = time.Second
	if got := strings.Join(ChangedKeys(a, b), ","); got != "shards,shard_timeout" {
		t.Errorf("ChangedKeys: %s, want shards,shard_timeout", got)
	}
	if got := ChangedKeys(a, a); len(got) != 0 {
		t.Errorf("ChangedKeys of the same config: %v", got)
	}
}
