package sockdiag_test

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/gatherproxy/gather/internal/sockdiag"
)

// The fixture: a process with an IPv4 listener on 0.0.0.0:8080, an IPv6 (dual-stack) listener on
// [::]:9443, connections on both, two CLOSE_WAITs, an outbound connection, and around them
// sockets of other processes and ownerless ones, some on our listening ports and some not.
// Addresses are as a little-endian kernel prints them.
const (
	fixtureTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1001 1 0000000000000000 100 0 0 10 0                       
   1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 1002 1 0000000000000000 20 4 30 10 -1                      
   2: 0500000A:1F90 0900000A:C350 08 00000000:00000001 00:00000000 00000000  1000        0 1003 1 0000000000000000 20 4 30 10 -1                      
   3: 0500000A:1F90 0900000A:C351 08 00000000:00000001 00:00000000 00000000  1000        0 1004 1 0000000000000000 20 4 30 10 -1                      
   4: 0500000A:C738 0900000A:2328 01 00000000:00000000 02:000001F4 00000000  1000        0 1005 2 0000000000000000 20 4 30 10 -1                      
   5: 0500000A:0016 0900000A:E000 01 00000000:00000000 02:000001F4 00000000     0        0 5000 2 0000000000000000 20 4 30 10 -1                      
   6: 0500000A:1F90 0900000A:C352 06 00000000:00000000 03:00000D2F 00000000     0        0 0 3 0000000000000000
   7: 0500000A:1F90 0900000A:C353 06 00000000:00000000 03:00000D2F 00000000     0        0 0 3 0000000000000000
   8: 0500000A:C739 0900000A:2328 06 00000000:00000000 03:00000D2F 00000000     0        0 0 3 0000000000000000
   9: 0500000A:1F90 0900000A:C354 03 00000000:00000000 01:00000064 00000000  1000        0 0 2 0000000000000000
  10: 0500000A:2382 0900000A:C355 06 00000000:00000000 03:00000D2F 00000000     0        0 0 3 0000000000000000
`
	fixtureTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:24E3 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2001 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:24E3 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 2002 1 0000000000000000 20 4 30 10 -1
   2: B80D0120000000000000000001000000:24E3 B80D0120000000000000000002000000:D432 01 00000000:00000000 02:0000012C 00000000  1000        0 2003 2 0000000000000000 20 4 30 10 -1
   3: 0000000000000000FFFF00000500000A:24E3 0000000000000000FFFF00000900000A:D433 09 00000000:00000001 01:00000032 00000000  1000        0 0 2 0000000000000000 20 4 30 10 -1
   4: B80D0120000000000000000001000000:24E3 B80D0120000000000000000002000000:D434 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   5: 00000000000000000000000001000000:1B58 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6000 1 0000000000000000 100 0 0 10 0
`
	fixtureNetstat = `TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops TCPHPHits
TcpExt: 0 0 17 23 2650
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
MPTcpExt: ListenOverflows ListenDrops
MPTcpExt: 5 6
`
)

// fixtureFDs is the fixture process's fd table: sockets 1001-1005 and 2001-2003, one of them
// twice, a socket that is not TCP (9999), and things that are not sockets.
func fixtureFDs() map[string]string {
	return map[string]string{
		"0": "/dev/pts/0", "1": "pipe:[77]", "2": "anon_inode:[eventpoll]",
		"3": "socket:[1001]", "4": "socket:[1002]", "5": "socket:[1003]", "6": "socket:[1004]",
		"7": "socket:[1005]", "8": "socket:[2001]", "9": "socket:[2002]", "10": "socket:[2003]",
		"11": "socket:[1003]", "12": "socket:[9999]",
	}
}

func fixtureFiles() map[string]string {
	return map[string]string{"net/tcp": fixtureTCP, "net/tcp6": fixtureTCP6, "net/netstat": fixtureNetstat}
}

// writeProc lays out a fake procfs under a temporary root: files (paths relative to
// <root>/self) and fds (fd number -> symlink target in <root>/self/fd). It returns the root.
func writeProc(t *testing.T, files, fds map[string]string) string {
	t.Helper()
	root := t.TempDir()
	self := filepath.Join(root, "self")
	for name, content := range files {
		p := filepath.Join(self, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if fds != nil {
		if err := os.MkdirAll(filepath.Join(self, "fd"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for fd, target := range fds {
		if err := os.Symlink(target, filepath.Join(self, "fd", fd)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// skipIfBigEndian skips tests whose fixtures hold addresses as a little-endian kernel prints
// them.
func skipIfBigEndian(t *testing.T) {
	t.Helper()
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("fixture addresses are little-endian")
	}
}

// fixtureWant is what Read makes of the full fixture.
func fixtureWant() sockdiag.Snapshot {
	var want sockdiag.Snapshot
	want.Available = true
	want.Sockets[sockdiag.Listen] = 2      // 1001, 2001
	want.Sockets[sockdiag.Established] = 4 // 1002, 1005, 2002, 2003
	want.Sockets[sockdiag.CloseWait] = 2   // 1003 (twice in the fd table), 1004
	// On 0.0.0.0:8080: two TIME_WAITs and a SYN_RECV. On [::]:9443, dual-stack: a LAST_ACK
	// from an IPv4 client and a TIME_WAIT from an IPv6 one. Not counted: the TIME_WAITs on
	// ports 51001 (outbound) and 9090 (no listener of ours).
	want.ListenerUnowned[sockdiag.TimeWait] = 3
	want.ListenerUnowned[sockdiag.SynRecv] = 1
	want.ListenerUnowned[sockdiag.LastAck] = 1
	want.ListenStatsAvailable = true
	want.ListenOverflows = 17
	want.ListenDrops = 23
	return want
}

func TestReadFixture(t *testing.T) {
	t.Parallel()
	skipIfBigEndian(t)
	tests := []struct {
		name  string
		files func(map[string]string)
		fds   func(map[string]string)
		want  func(*sockdiag.Snapshot)
	}{
		{name: "full"},
		{
			name:  "no tcp6 (IPv6 disabled)",
			files: func(f map[string]string) { delete(f, "net/tcp6") },
			want: func(s *sockdiag.Snapshot) {
				s.Sockets[sockdiag.Listen], s.Sockets[sockdiag.Established] = 1, 2
				s.ListenerUnowned[sockdiag.TimeWait], s.ListenerUnowned[sockdiag.LastAck] = 2, 0
			},
		},
		{
			name:  "no netstat",
			files: func(f map[string]string) { delete(f, "net/netstat") },
			want: func(s *sockdiag.Snapshot) {
				s.ListenStatsAvailable, s.ListenOverflows, s.ListenDrops = false, 0, 0
			},
		},
		{
			name:  "netstat without ListenDrops",
			files: func(f map[string]string) { f["net/netstat"] = "TcpExt: ListenOverflows\nTcpExt: 17\n" },
			want: func(s *sockdiag.Snapshot) {
				s.ListenStatsAvailable, s.ListenOverflows, s.ListenDrops = false, 17, 0
			},
		},
		{
			name: "no listeners, so nothing unowned is ours",
			fds: func(f map[string]string) {
				delete(f, "3")
				delete(f, "8")
			},
			want: func(s *sockdiag.Snapshot) {
				s.Sockets[sockdiag.Listen] = 0
				s.ListenerUnowned = sockdiag.StateCounts{}
			},
		},
		{
			name: "no sockets at all",
			fds:  func(f map[string]string) { clear(f) },
			want: func(s *sockdiag.Snapshot) {
				s.Sockets = sockdiag.StateCounts{}
				s.ListenerUnowned = sockdiag.StateCounts{}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			files, fds, want := fixtureFiles(), fixtureFDs(), fixtureWant()
			if tt.files != nil {
				tt.files(files)
			}
			if tt.fds != nil {
				tt.fds(fds)
			}
			if tt.want != nil {
				tt.want(&want)
			}
			r := sockdiag.New(writeProc(t, files, fds))
			got, err := r.Read()
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if got.Time.IsZero() {
				t.Error("Time is zero")
			}
			got.Time = want.Time
			if got != want {
				t.Errorf("Read:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestReadUnavailable(t *testing.T) {
	t.Parallel()
	fileRoot := filepath.Join(t.TempDir(), "proc")
	if err := os.WriteFile(fileRoot, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		root    string
		wantErr []error
	}{
		{
			name:    "no proc root",
			root:    filepath.Join(t.TempDir(), "no-such-proc"),
			wantErr: []error{sockdiag.ErrUnavailable, fs.ErrNotExist},
		},
		{
			name:    "proc root is a file",
			root:    fileRoot,
			wantErr: []error{sockdiag.ErrUnavailable},
		},
		{
			name:    "fd dir but no net dir",
			root:    writeProc(t, nil, fixtureFDs()),
			wantErr: []error{sockdiag.ErrUnavailable, fs.ErrNotExist},
		},
		{
			name:    "net dir but no fd dir",
			root:    writeProc(t, fixtureFiles(), nil),
			wantErr: []error{sockdiag.ErrUnavailable, fs.ErrNotExist},
		},
		{
			name:    "only tcp6",
			root:    writeProc(t, map[string]string{"net/tcp6": fixtureTCP6}, fixtureFDs()),
			wantErr: []error{sockdiag.ErrUnavailable, fs.ErrNotExist},
		},
		{
			name: "malformed tcp line",
			root: writeProc(t, map[string]string{
				"net/tcp":  fixtureTCP + "  11: 0500000A:1F90 0900000A:C355 XX 00000000:00000000\n",
				"net/tcp6": fixtureTCP6,
			}, fixtureFDs()),
			wantErr: []error{sockdiag.ErrMalformed},
		},
		{
			name: "malformed netstat",
			root: writeProc(t, map[string]string{
				"net/tcp": fixtureTCP, "net/netstat": "TcpExt: ListenOverflows ListenDrops\nTcpExt: 1\n",
			}, fixtureFDs()),
			wantErr: []error{sockdiag.ErrMalformed},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := sockdiag.New(tt.root).Read()
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("err = %v, want one wrapping %v", err, want)
				}
			}
			if got.Available || err == nil || !errors.Is(got.Err, err) || got.Sockets.Total() != 0 || got.ListenStatsAvailable {
				t.Errorf("snapshot = %+v, want unavailable and empty with Err = the error", got)
			}
			if got.Time.IsZero() {
				t.Error("Time is zero")
			}
		})
	}
}

func TestWithPID(t *testing.T) {
	t.Parallel()
	skipIfBigEndian(t)
	root := writeProc(t, fixtureFiles(), fixtureFDs())
	if err := os.Rename(filepath.Join(root, "self"), filepath.Join(root, "4242")); err != nil {
		t.Fatal(err)
	}
	if _, err := sockdiag.New(root).Read(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read of self: err = %v, want ErrNotExist", err)
	}
	got, err := sockdiag.New(root, sockdiag.WithPID(4242)).Read()
	if err != nil {
		t.Fatal(err)
	}
	if got.Sockets[sockdiag.CloseWait] != 2 {
		t.Errorf("CLOSE_WAIT = %d, want 2", got.Sockets[sockdiag.CloseWait])
	}
}
