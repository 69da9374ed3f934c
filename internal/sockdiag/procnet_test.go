package sockdiag

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseHexAddrPort(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in    string
		order binary.ByteOrder
		want  string
	}{
		// Lines as a little-endian (x86, arm64) kernel prints them.
		{"0100007F:1F90", binary.LittleEndian, "127.0.0.1:8080"},
		{"00000000:0000", binary.LittleEndian, "0.0.0.0:0"},
		{"0500000A:C738", binary.LittleEndian, "10.0.0.5:51000"},
		{"00000000000000000000000000000000:24E3", binary.LittleEndian, "[::]:9443"},
		{"00000000000000000000000001000000:1F90", binary.LittleEndian, "[::1]:8080"},
		{"B80D0120000000000000000001000000:01BB", binary.LittleEndian, "[2001:db8::1]:443"},
		// IPv4-mapped addresses (v4 clients of a dual-stack listener) come out as IPv4.
		{"0000000000000000FFFF00000100007F:1F90", binary.LittleEndian, "127.0.0.1:8080"},
		// A big-endian kernel prints the words in network order.
		{"7F000001:1F90", binary.BigEndian, "127.0.0.1:8080"},
		{"20010DB8000000000000000000000001:01BB", binary.BigEndian, "[2001:db8::1]:443"},
	}
	for _, tt := range tests {
		got, err := parseHexAddrPort(tt.in, tt.order)
		if err != nil {
			t.Errorf("parseHexAddrPort(%q): %v", tt.in, err)
			continue
		}
		if got.String() != tt.want {
			t.Errorf("parseHexAddrPort(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestParseHexAddrPortErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "0100007F", "0100007F:", "0100007F:1F9000", "100007F:1F90", "0100007G:1F90", "0100007F0:1F90"} {
		if got, err := parseHexAddrPort(in, binary.LittleEndian); err == nil {
			t.Errorf("parseHexAddrPort(%q) = %v, want an error", in, got)
		}
	}
}

func TestParseTCPLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		line string
		want tcpEntry
	}{
		{
			name: "listen",
			line: "   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 635 1 00000000349819f3 100 0 0 10 0",
			want: tcpEntry{local: netip.MustParseAddrPort("0.0.0.0:2024"), state: Listen, inode: 635},
		},
		{
			name: "close wait",
			line: "   3: 0100007F:1F90 0100007F:9C40 08 00000000:00000001 00:00000000 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1",
			want: tcpEntry{local: netip.MustParseAddrPort("127.0.0.1:8080"), state: CloseWait, inode: 4242},
		},
		{
			name: "time wait has inode 0 and fewer columns",
			line: "   5: 0500000A:1F90 0900000A:C350 06 00000000:00000000 03:00000D2F 00000000     0        0 0 3 0000000000000000",
			want: tcpEntry{local: netip.MustParseAddrPort("10.0.0.5:8080"), state: TimeWait},
		},
		{
			name: "tcp6",
			line: "   1: B80D0120000000000000000001000000:24E3 B80D0120000000000000000002000000:D431 01 00000000:00000000 02:0000012C 00000000  1000        0 2003 2 0000000000000000 20 4 30 10 -1",
			want: tcpEntry{local: netip.MustParseAddrPort("[2001:db8::1]:9443"), state: Established, inode: 2003},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseTCPLine(tt.line, binary.LittleEndian)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseTCPLineErrors(t *testing.T) {
	t.Parallel()
	for _, line := range []string{
		"   0: 00000000:07E8 00000000:0000 0A",
		"   0: 00000000:07E8 00000000:0000 ZZ 00000000:00000000 00:00000000 00000000 0 0 635",
		"   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 -1",
		"   0: 0000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 635",
	} {
		if got, err := parseTCPLine(line, binary.LittleEndian); err == nil {
			t.Errorf("parseTCPLine(%q) = %+v, want an error", line, got)
		}
	}
}

func TestParseSocketLink(t *testing.T) {
	t.Parallel()
	tests := []struct {
		target string
		want   uint64
		wantOK bool
	}{
		{"socket:[12345]", 12345, true},
		{"socket:[0]", 0, true},
		{"pipe:[12345]", 0, false},
		{"anon_inode:[eventpoll]", 0, false},
		{"/dev/null", 0, false},
		{"socket:[12345", 0, false},
		{"socket:[x]", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseSocketLink(tt.target)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("parseSocketLink(%q) = %d, %v, want %d, %v", tt.target, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestCovers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		listener, local string
		want            bool
	}{
		{"0.0.0.0:8080", "10.0.0.5:8080", true},
		{"0.0.0.0:8080", "10.0.0.5:8081", false},
		{"0.0.0.0:8080", "[2001:db8::1]:8080", false}, // an IPv4 socket takes no IPv6 connections
		{"[::]:8080", "[2001:db8::1]:8080", true},
		{"[::]:8080", "10.0.0.5:8080", true}, // dual-stack
		{"127.0.0.1:8080", "127.0.0.1:8080", true},
		{"127.0.0.1:8080", "10.0.0.5:8080", false},
		{"[::1]:8080", "[::1]:8080", true},
		{"[::1]:8080", "127.0.0.1:8080", false},
	}
	for _, tt := range tests {
		got := covers(netip.MustParseAddrPort(tt.listener), netip.MustParseAddrPort(tt.local))
		if got != tt.want {
			t.Errorf("covers(%s, %s) = %v, want %v", tt.listener, tt.local, got, tt.want)
		}
	}
}

func TestParseNetstat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    listenStats
		wantErr error
	}{
		{
			name: "tcpext among others",
			in: "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPHPHits\n" +
				"TcpExt: 1 17 23 99\n" +
				"IpExt: InNoRoutes InOctets\n" +
				"IpExt: 0 18446744073709551615\n" +
				"MPTcpExt: ListenOverflows ListenDrops\n" +
				"MPTcpExt: 5 6\n",
			want: listenStats{overflows: 17, drops: 23, ok: true},
		},
		{
			name: "MPTcpExt is not TcpExt",
			in:   "MPTcpExt: ListenOverflows ListenDrops\nMPTcpExt: 5 6\n",
			want: listenStats{},
		},
		{
			name: "one counter missing",
			in:   "TcpExt: ListenOverflows\nTcpExt: 4\n",
			want: listenStats{overflows: 4},
		},
		{
			name: "header without values",
			in:   "TcpExt: ListenOverflows ListenDrops\n",
			want: listenStats{},
		},
		{name: "empty", in: "", want: listenStats{}},
		{
			name:    "value count mismatch",
			in:      "TcpExt: ListenOverflows ListenDrops\nTcpExt: 4\n",
			wantErr: ErrMalformed,
		},
		{
			name:    "not a number",
			in:      "TcpExt: ListenOverflows ListenDrops\nTcpExt: 4 x\n",
			wantErr: ErrMalformed,
		},
		{name: "no prefix", in: "garbage\n", wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseNetstat(strings.NewReader(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestStateLabels(t *testing.T) {
	t.Parallel()
	want := []string{
		"established", "syn_sent", "syn_recv", "fin_wait1", "fin_wait2", "time_wait", "close",
		"close_wait", "last_ack", "listen", "closing",
	}
	states := States()
	if len(states) != len(want) {
		t.Fatalf("%d states, want %d", len(states), len(want))
	}
	for i, st := range states {
		if got := st.Label(); got != want[i] {
			t.Errorf("State(%d).Label() = %q, want %q", uint8(st), got, want[i])
		}
		if got, ok := stateFromLabel(want[i]); !ok || got != st {
			t.Errorf("stateFromLabel(%q) = %v, %v, want %v", want[i], got, ok, st)
		}
	}
	// The kernel's numbering, which the st column uses.
	if CloseWait != 8 || Listen != 0x0A || Closing != 0x0B {
		t.Errorf("CloseWait, Listen, Closing = %d, %d, %d, want 8, 10, 11", CloseWait, Listen, Closing)
	}
	if got := State(12).String(); got != "State(0xc)" {
		t.Errorf("State(12).String() = %q", got)
	}
}
