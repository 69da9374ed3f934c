package chaos

import (
	"errors"
	"math"
	"strings"
	"testing"
)

const page = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 58
# HELP go_memstats_heap_inuse_bytes Number of heap bytes that are in use.
# TYPE go_memstats_heap_inuse_bytes gauge
go_memstats_heap_inuse_bytes 3.489792e+06
gather_admission_shed_total 12
gather_grpc_rpc_ends_total{method="/gather.query.v1.QueryService/SearchStream",reason="send_stalled",side="server"} 2
gather_grpc_rpc_ends_total{method="/gather.query.v1.QueryService/Search",reason="completed",side="server"} 40
gather_grpc_rpc_ends_total{method="/gather.shard.v1.ShardService/Search",reason="canceled",side="client"} 7 1700000000000
gather_grpc_rpc_ends_total{method="/gather.shard.v1.ShardService/Search",reason="canceled",side="server"} 5
weird_labels{a="x\"y\\z",b="line\nbreak",} +Inf
`

func TestParsePage(t *testing.T) {
	t.Parallel()
	p, err := ParsePage(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.Goroutines(); err != nil || got != 58 {
		t.Errorf("Goroutines() = %d, %v; want 58", got, err)
	}
	if got, err := p.HeapInuse(); err != nil || got != 3489792 {
		t.Errorf("HeapInuse() = %d, %v; want 3489792", got, err)
	}
	for _, tc := range []struct {
		name  string
		match []string
		want  float64
		found bool
	}{
		{"gather_admission_shed_total", nil, 12, true},
		{"gather_grpc_rpc_ends_total", nil, 54, true},
		{"gather_grpc_rpc_ends_total", []string{"side", "server"}, 47, true},
		{"gather_grpc_rpc_ends_total", []string{"side", "client", "reason", "canceled"}, 7, true},
		{"gather_grpc_rpc_ends_total", []string{"reason", "send_stalled", "method", methodSearchStrm}, 2, true},
		{"gather_grpc_rpc_ends_total", []string{"reason", "reset"}, 0, false},
		{"absent_total", nil, 0, false},
	} {
		got, found := p.Sum(tc.name, tc.match...)
		if got != tc.want || found != tc.found {
			t.Errorf("Sum(%s, %q) = %v, %v; want %v, %v", tc.name, tc.match, got, found, tc.want, tc.found)
		}
	}
	// Escapes in label values, a trailing comma, and +Inf.
	if got, found := p.Sum("weird_labels", "a", `x"y\z`, "b", "line\nbreak"); !found || !math.IsInf(got, 1) {
		t.Errorf("Sum(weird_labels) = %v, %v; want +Inf, true", got, found)
	}
}

func TestParsePageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ page, want string }{
		{"go_goroutines\n", "line 1"},
		{"# ok\ngo_goroutines many\n", "line 2"},
		{`x{a="b" 1` + "\n", "line 1"},
		{`x{a=b} 1` + "\n", "line 1"},
		{"x 1 2 3\n", "line 1"},
	} {
		_, err := ParsePage(strings.NewReader(tc.page))
		if !errors.Is(err, ErrMetrics) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePage(%q) = %v, want an ErrMetrics naming %q", tc.page, err, tc.want)
		}
	}
}

// TestGoroutinesAndHeapMissing: a page without the Go collector cannot give a baseline.
func TestGoroutinesAndHeapMissing(t *testing.T) {
	t.Parallel()
	for _, text := range []string{"gather_admission_shed_total 1\n", "go_goroutines 1.5\ngo_memstats_heap_inuse_bytes -1\n"} {
		p, err := ParsePage(strings.NewReader(text))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Goroutines(); !errors.Is(err, ErrMetrics) {
			t.Errorf("%q: Goroutines() error %v, want ErrMetrics", text, err)
		}
		if _, err := p.HeapInuse(); !errors.Is(err, ErrMetrics) {
			t.Errorf("%q: HeapInuse() error %v, want ErrMetrics", text, err)
		}
	}
}
