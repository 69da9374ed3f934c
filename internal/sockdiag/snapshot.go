package sockdiag

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Snapshot is the TCP socket picture of one process at one time. See the package documentation
// for what each count includes and leaves out.
type Snapshot struct {
	// Time is when Read started. ParseMetrics leaves it zero (the exposition carries no time);
	// its caller may set it to the time of the scrape.
	Time time.Time
	// Available reports whether the counts below mean anything. When false they are zero and Err
	// says why.
	Available bool
	// Err is nil exactly when Available is true; it wraps ErrUnavailable or ErrMalformed.
	Err error
	// Sockets counts the sockets the process holds open, by state.
	Sockets StateCounts
	// ListenerUnowned counts sockets owned by no process whose local address is one of the
	// process's listening sockets, by state: TIME_WAIT after a close, SYN_RECV handshakes,
	// ESTABLISHED and CLOSE_WAIT connections not yet accepted, and FIN_WAIT1/2, LAST_ACK and
	// CLOSING connections the process has closed.
	ListenerUnowned StateCounts
	// ListenStatsAvailable reports whether ListenOverflows and ListenDrops were read; a kernel
	// or sandbox without TcpExt counters leaves it false and the counters zero.
	ListenStatsAvailable bool
	// ListenOverflows is TcpExt ListenOverflows: how many times a connection found an accept
	// queue full. Cumulative, and for the whole network namespace, not this process.
	ListenOverflows uint64
	// ListenDrops is TcpExt ListenDrops: SYNs and handshake completions dropped by listening
	// sockets for any reason, overflows included. Cumulative, for the whole network namespace.
	ListenDrops uint64
}

// Notes printed after a non-zero count: the states that point at a bug or an overload.
const (
	noteOwnedCloseWait     = "peer closed, we have not"
	noteUnownedCloseWait   = "peer closed before we accepted"
	noteUnownedEstablished = "waiting in the accept queue"
)

// WriteTable prints the snapshot for a person: every state, zeros included, with the process's
// own sockets and the unowned sockets on its listening addresses side by side, CLOSE_WAIT flagged
// when non-zero, then the listen-queue counters. An unavailable snapshot prints one line saying
// why. The error is the first error writing to w.
func (s Snapshot) WriteTable(w io.Writer) error {
	if !s.Available {
		reason := "no data"
		if s.Err != nil {
			reason = s.Err.Error()
		}
		_, err := fmt.Fprintf(w, "TCP socket diagnostics unavailable: %s\n", reason)
		return err
	}
	// The table is laid out in memory and written with one Write: a tabwriter over a
	// bytes.Buffer cannot fail, and w sees either the whole table or an error.
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 8, 2, ' ', 0)
	printf := func(format string, args ...any) { _, _ = fmt.Fprintf(tw, format, args...) }
	if !s.Time.IsZero() {
		printf("TCP sockets at %s\n", s.Time.Format(time.RFC3339))
	}
	// No cell ends in a tab unless a note follows it, so that no line has trailing padding.
	printf("STATE\tOWNED\tUNOWNED ON OUR LISTEN ADDRESSES\n")
	for _, st := range States() {
		var notes []string
		if st == CloseWait && s.Sockets[st] > 0 {
			notes = append(notes, noteOwnedCloseWait)
		}
		if st == CloseWait && s.ListenerUnowned[st] > 0 {
			notes = append(notes, noteUnownedCloseWait)
		}
		if st == Established && s.ListenerUnowned[st] > 0 {
			notes = append(notes, noteUnownedEstablished)
		}
		printf("%s\t%d\t%d", st, s.Sockets[st], s.ListenerUnowned[st])
		if len(notes) > 0 {
			printf("\t<-- %s", strings.Join(notes, "; "))
		}
		printf("\n")
	}
	printf("TOTAL\t%d\t%d\n", s.Sockets.Total(), s.ListenerUnowned.Total())
	printf("OWNED: open in this process. UNOWNED: held by no process (TIME_WAIT, not yet accepted,\n")
	printf("or closed by us and finishing) on an address this process listens on.\n\n")
	if s.ListenStatsAvailable {
		printf("Listen queue counters (whole network namespace, cumulative since boot):\n")
		printf("ListenOverflows\t%d\n", s.ListenOverflows)
		printf("ListenDrops\t%d\n", s.ListenDrops)
	} else {
		printf("Listen queue counters unavailable.\n")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(buf.Bytes())
	return err
}
