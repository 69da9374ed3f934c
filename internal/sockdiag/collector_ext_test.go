package sockdiag_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatherproxy/gather/internal/sockdiag"
)

func TestCollector(t *testing.T) {
	t.Parallel()
	skipIfBigEndian(t)
	c := sockdiag.NewCollector(sockdiag.New(writeProc(t, fixtureFiles(), fixtureFDs())))

	const want = `
# HELP gather_sockdiag_up 1 if this process's TCP sockets could be read from /proc, 0 if not (then no gather_tcp_* series are exported).
# TYPE gather_sockdiag_up gauge
gather_sockdiag_up 1
# HELP gather_tcp_sockets TCP sockets held open by this process, by state; close_wait counts connections the peer closed and this process has not. TIME_WAIT and other ownerless sockets are never counted here.
# TYPE gather_tcp_sockets gauge
gather_tcp_sockets{state="close"} 0
gather_tcp_sockets{state="close_wait"} 2
gather_tcp_sockets{state="closing"} 0
gather_tcp_sockets{state="established"} 4
gather_tcp_sockets{state="fin_wait1"} 0
gather_tcp_sockets{state="fin_wait2"} 0
gather_tcp_sockets{state="last_ack"} 0
gather_tcp_sockets{state="listen"} 2
gather_tcp_sockets{state="syn_recv"} 0
gather_tcp_sockets{state="syn_sent"} 0
gather_tcp_sockets{state="time_wait"} 0
# HELP gather_tcp_listen_overflows_total TcpExt ListenOverflows from /proc/net/netstat: times a connection found an accept queue full. System-wide (whole network namespace), not specific to this process.
# TYPE gather_tcp_listen_overflows_total counter
gather_tcp_listen_overflows_total 17
# HELP gather_tcp_listen_drops_total TcpExt ListenDrops from /proc/net/netstat: connections dropped by listening sockets for any reason, overflows included. System-wide (whole network namespace), not specific to this process.
# TYPE gather_tcp_listen_drops_total counter
gather_tcp_listen_drops_total 23
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"gather_sockdiag_up", "gather_tcp_sockets", "gather_tcp_listen_overflows_total", "gather_tcp_listen_drops_total",
	); err != nil {
		t.Error(err)
	}

	counts := []struct {
		name string
		want int
	}{
		{"gather_sockdiag_up", 1},
		{"gather_tcp_sockets", 11},
		{"gather_tcp_listener_unowned_sockets", 11},
		{"gather_tcp_listen_overflows_total", 1},
		{"gather_tcp_listen_drops_total", 1},
	}
	for _, tt := range counts {
		if got := testutil.CollectAndCount(c, tt.name); got != tt.want {
			t.Errorf("%s: %d series, want %d", tt.name, got, tt.want)
		}
	}

	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	// A checked registry accepts it: Describe and Collect agree.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if _, err := reg.Gather(); err != nil {
		t.Errorf("Gather: %v", err)
	}
}

func TestCollectorWithoutListenStats(t *testing.T) {
	t.Parallel()
	files := fixtureFiles()
	delete(files, "net/netstat")
	c := sockdiag.NewCollector(sockdiag.New(writeProc(t, files, fixtureFDs())))
	for _, name := range []string{"gather_tcp_listen_overflows_total", "gather_tcp_listen_drops_total"} {
		if got := testutil.CollectAndCount(c, name); got != 0 {
			t.Errorf("%s: %d series, want none", name, got)
		}
	}
	if got := testutil.CollectAndCount(c, "gather_sockdiag_up"); got != 1 {
		t.Errorf("gather_sockdiag_up: %d series, want 1", got)
	}
}

func TestCollectorUnavailable(t *testing.T) {
	t.Parallel()
	c := sockdiag.NewCollector(sockdiag.New(filepath.Join(t.TempDir(), "no-such-proc")))
	// Only gather_sockdiag_up is exported, so ToFloat64 (which wants exactly one series) applies.
	if got := testutil.ToFloat64(c); got != 0 {
		t.Errorf("gather_sockdiag_up = %v, want 0", got)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if _, err := reg.Gather(); err != nil {
		t.Errorf("Gather failed, want the scrape to succeed: %v", err)
	}
}
