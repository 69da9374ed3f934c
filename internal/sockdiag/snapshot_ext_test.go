package sockdiag_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/gatherproxy/gather/internal/sockdiag"
)

func TestWriteTable(t *testing.T) {
	t.Parallel()
	closeWait := func() sockdiag.Snapshot {
		s := sockdiag.Snapshot{Available: true}
		s.Sockets[sockdiag.CloseWait] = 2
		return s
	}
	tests := []struct {
		name        string
		snap        sockdiag.Snapshot
		wantLines   []string // each must be a line of the output
		wantMissing []string // none may appear anywhere
	}{
		{
			name: "unavailable with a reason",
			snap: sockdiag.Snapshot{Err: errors.New("sockdiag: /proc unavailable: no /proc")},
			wantLines: []string{
				"TCP socket diagnostics unavailable: sockdiag: /proc unavailable: no /proc",
			},
			wantMissing: []string{"STATE"},
		},
		{
			name:      "zero value",
			snap:      sockdiag.Snapshot{},
			wantLines: []string{"TCP socket diagnostics unavailable: no data"},
		},
		{
			name: "every state printed, zeros included, and no time when zero",
			snap: sockdiag.Snapshot{Available: true},
			wantLines: []string{
				"ESTABLISHED  0      0", "SYN_SENT     0      0", "SYN_RECV     0      0",
				"FIN_WAIT1    0      0", "FIN_WAIT2    0      0", "TIME_WAIT    0      0",
				"CLOSE        0      0", "CLOSE_WAIT   0      0", "LAST_ACK     0      0",
				"LISTEN       0      0", "CLOSING      0      0", "TOTAL        0      0",
				"Listen queue counters unavailable.",
			},
			wantMissing: []string{"<--", "TCP sockets at", "ListenOverflows"},
		},
		{
			name:      "owned CLOSE_WAIT flagged",
			snap:      closeWait(),
			wantLines: []string{"CLOSE_WAIT   2      0  <-- peer closed, we have not"},
		},
		{
			name: "unowned ESTABLISHED is the accept queue",
			snap: func() sockdiag.Snapshot {
				s := sockdiag.Snapshot{Available: true}
				s.ListenerUnowned[sockdiag.Established] = 5
				return s
			}(),
			wantLines: []string{"ESTABLISHED  0      5  <-- waiting in the accept queue"},
		},
		{
			name: "listen counters",
			snap: func() sockdiag.Snapshot {
				s := closeWait()
				s.ListenStatsAvailable, s.ListenOverflows, s.ListenDrops = true, 18446744073709551615, 3
				return s
			}(),
			wantLines: []string{"ListenOverflows  18446744073709551615", "ListenDrops      3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b bytes.Buffer
			if err := tt.snap.WriteTable(&b); err != nil {
				t.Fatal(err)
			}
			got := b.String()
			lines := make(map[string]bool)
			for _, l := range strings.Split(got, "\n") {
				lines[l] = true
			}
			for _, want := range tt.wantLines {
				if !lines[want] {
					t.Errorf("no line %q in\n%s", want, got)
				}
			}
			for _, bad := range tt.wantMissing {
				if strings.Contains(got, bad) {
					t.Errorf("%q in\n%s", bad, got)
				}
			}
		})
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

func TestWriteTableError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	for _, snap := range []sockdiag.Snapshot{{}, {Available: true}, {Available: true, ListenStatsAvailable: true}} {
		if err := snap.WriteTable(failingWriter{boom}); !errors.Is(err, boom) {
			t.Errorf("WriteTable(%+v) = %v, want %v", snap, err, boom)
		}
	}
}
