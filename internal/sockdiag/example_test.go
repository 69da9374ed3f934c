package sockdiag_test

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatherproxy/gather/internal/sockdiag"
)

// The collector is registered by the caller, on the registry the admin port serves.
func ExampleNewCollector() {
	reg := prometheus.NewRegistry()
	reg.MustRegister(sockdiag.NewCollector(sockdiag.New("")))
	// Serve reg on /metrics with promhttp.HandlerFor(reg, ...).
}

// `gather diag` reads a scraped page and prints it.
func ExampleParseMetrics() {
	page := `# TYPE gather_sockdiag_up gauge
gather_sockdiag_up 1
gather_tcp_sockets{state="established"} 12
gather_tcp_sockets{state="close_wait"} 3
gather_tcp_sockets{state="listen"} 2
gather_tcp_listener_unowned_sockets{state="time_wait"} 40
gather_tcp_listen_overflows_total 0
gather_tcp_listen_drops_total 0
`
	snap, err := sockdiag.ParseMetrics(strings.NewReader(page))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(snap.Available, snap.Sockets[sockdiag.CloseWait], snap.ListenerUnowned[sockdiag.TimeWait])
	// Output: true 3 40
}

func ExampleSnapshot_WriteTable() {
	var snap sockdiag.Snapshot
	snap.Time = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	snap.Available = true
	snap.Sockets[sockdiag.Established] = 12
	snap.Sockets[sockdiag.CloseWait] = 3
	snap.Sockets[sockdiag.Listen] = 2
	snap.ListenerUnowned[sockdiag.TimeWait] = 40
	snap.ListenerUnowned[sockdiag.CloseWait] = 1
	snap.ListenStatsAvailable = true
	snap.ListenOverflows = 7
	snap.ListenDrops = 9
	if err := snap.WriteTable(os.Stdout); err != nil {
		fmt.Println(err)
	}
	// Output:
	// TCP sockets at 2026-03-01T12:00:00Z
	// STATE        OWNED  UNOWNED ON OUR LISTEN ADDRESSES
	// ESTABLISHED  12     0
	// SYN_SENT     0      0
	// SYN_RECV     0      0
	// FIN_WAIT1    0      0
	// FIN_WAIT2    0      0
	// TIME_WAIT    0      40
	// CLOSE        0      0
	// CLOSE_WAIT   3      1  <-- peer closed, we have not; peer closed before we accepted
	// LAST_ACK     0      0
	// LISTEN       2      0
	// CLOSING      0      0
	// TOTAL        17     41
	// OWNED: open in this process. UNOWNED: held by no process (TIME_WAIT, not yet accepted,
	// or closed by us and finishing) on an address this process listens on.
	//
	// Listen queue counters (whole network namespace, cumulative since boot):
	// ListenOverflows  7
	// ListenDrops      9
}
