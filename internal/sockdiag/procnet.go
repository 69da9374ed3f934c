package sockdiag

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// socketInodes returns the inodes of the sockets open in fdDir (/proc/<pid>/fd), whose entries
// are symlinks like "socket:[12345]". An fd closed between listing and readlink is skipped.
func socketInodes(fdDir string) (map[uint64]struct{}, error) {
	d, err := os.Open(fdDir)
	if err != nil {
		return nil, unavailable(err)
	}
	defer func() { _ = d.Close() }() // read-only: nothing to lose
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, unavailable(fmt.Errorf("list %s: %w", fdDir, err))
	}
	inodes := make(map[uint64]struct{}, len(names))
	for _, name := range names {
		target, err := os.Readlink(filepath.Join(fdDir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, unavailable(err)
		}
		if ino, ok := parseSocketLink(target); ok {
			inodes[ino] = struct{}{}
		}
	}
	return inodes, nil
}

// parseSocketLink returns the inode of an fd symlink target "socket:[INODE]".
func parseSocketLink(target string) (uint64, bool) {
	s, ok := strings.CutPrefix(target, "socket:[")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "]")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(s, 10, 64)
	return ino, err == nil
}

// tcpEntry is what sockdiag needs from one line of /proc/net/tcp or tcp6.
type tcpEntry struct {
	local netip.AddrPort // IPv4-mapped IPv6 addresses are unmapped
	state State
	inode uint64 // 0 for sockets no process owns
}

// parseTCPLine parses a socket line of /proc/net/tcp or tcp6:
//
//	sl  local_address rem_address   st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
//	0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 1000 0 12345 ...
//
// Addresses are printed as 32-bit words in the host's byte order (order), ports and states in
// hex, the inode in decimal.
func parseTCPLine(line string, order binary.ByteOrder) (tcpEntry, error) {
	f := strings.Fields(line)
	if len(f) < 10 {
		return tcpEntry{}, fmt.Errorf("%d fields, want at least 10", len(f))
	}
	local, err := parseHexAddrPort(f[1], order)
	if err != nil {
		return tcpEntry{}, fmt.Errorf("local address: %w", err)
	}
	st, err := strconv.ParseUint(f[3], 16, 8)
	if err != nil {
		return tcpEntry{}, fmt.Errorf("state: %w", err)
	}
	ino, err := strconv.ParseUint(f[9], 10, 64)
	if err != nil {
		return tcpEntry{}, fmt.Errorf("inode: %w", err)
	}
	return tcpEntry{local: local, state: State(st), inode: ino}, nil
}

// parseHexAddrPort parses "0100007F:1F90" (IPv4) or a 32-digit IPv6 address and a port.
func parseHexAddrPort(s string, order binary.ByteOrder) (netip.AddrPort, error) {
	addrHex, portHex, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%q: no port", s)
	}
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: port: %w", s, err)
	}
	if len(addrHex) != 8 && len(addrHex) != 32 {
		return netip.AddrPort{}, fmt.Errorf("%q: address has %d hex digits, want 8 or 32", s, len(addrHex))
	}
	raw, err := hex.DecodeString(addrHex)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: %w", s, err)
	}
	// Each 32-bit word was printed as a number; put it back in memory order.
	for i := 0; i < len(raw); i += 4 {
		order.PutUint32(raw[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(raw) // 4 or 16 bytes: cannot fail
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// tcpTable accumulates the lines of the tcp and tcp6 tables.
type tcpTable struct {
	owned     map[uint64]struct{}
	sockets   StateCounts
	listeners []netip.AddrPort
	// unowned counts the inode-0 sockets by local address; it is matched against listeners once
	// both tables are read, as a listener may come after its connections.
	unowned map[netip.AddrPort]*StateCounts
}

func newTCPTable(owned map[uint64]struct{}) *tcpTable {
	return &tcpTable{owned: owned, unowned: make(map[netip.AddrPort]*StateCounts)}
}

// readFile adds the sockets of one table. The error wraps fs.ErrNotExist if the file is missing.
func (t *tcpTable) readFile(path string, order binary.ByteOrder) error {
	f, err := os.Open(path)
	if err != nil {
		return unavailable(err)
	}
	defer func() { _ = f.Close() }() // read-only: nothing to lose
	sc := bufio.NewScanner(f)
	// The kernel resumes its hash-table walk on every read(2); fewer, larger reads are cheaper.
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if n == 1 || strings.TrimSpace(line) == "" {
			continue // the header "  sl  local_address ..."
		}
		e, err := parseTCPLine(line, order)
		if err != nil {
			return fmt.Errorf("%w: %s line %d: %w", ErrMalformed, path, n, err)
		}
		t.add(e)
	}
	if err := sc.Err(); err != nil {
		return unavailable(fmt.Errorf("read %s: %w", path, err))
	}
	return nil
}

func (t *tcpTable) add(e tcpEntry) {
	if !e.state.valid() {
		return // not printed by any kernel so far; nothing to count it as
	}
	if e.inode == 0 {
		c := t.unowned[e.local]
		if c == nil {
			c = new(StateCounts)
			t.unowned[e.local] = c
		}
		c[e.state]++
		return
	}
	if _, ok := t.owned[e.inode]; !ok {
		return // another process's socket
	}
	t.sockets[e.state]++
	if e.state == Listen {
		t.listeners = append(t.listeners, e.local)
	}
}

// unownedOnListeners sums the unowned sockets whose local address one of our listeners covers.
func (t *tcpTable) unownedOnListeners() StateCounts {
	var sum StateCounts
	for local, c := range t.unowned {
		for _, l := range t.listeners {
			if covers(l, local) {
				for s, n := range c {
					sum[s] += n
				}
				break
			}
		}
	}
	return sum
}

// covers reports whether a listener bound to l accepts connections to local. A wildcard IPv4
// listener covers IPv4 only; a wildcard IPv6 listener is assumed dual-stack, since /proc does not
// show IPV6_V6ONLY.
func covers(l, local netip.AddrPort) bool {
	if l.Port() != local.Port() {
		return false
	}
	la := l.Addr()
	switch {
	case la == local.Addr():
		return true
	case la.IsUnspecified() && la.Is4():
		return local.Addr().Is4()
	default:
		return la.IsUnspecified()
	}
}

// listenStats are the TcpExt counters of /proc/net/netstat.
type listenStats struct {
	overflows, drops uint64
	ok               bool // both were present
}

// readNetstat reads listenStats from path. A missing or unreadable file is ErrUnavailable.
func readNetstat(path string) (listenStats, error) {
	f, err := os.Open(path)
	if err != nil {
		return listenStats{}, unavailable(err)
	}
	defer func() { _ = f.Close() }() // read-only: nothing to lose
	ls, err := parseNetstat(f)
	if err != nil {
		return listenStats{}, fmt.Errorf("%s: %w", path, err)
	}
	return ls, nil
}

// parseNetstat parses the /proc/net/netstat format: per prefix, a line of names then a line of
// values,
//
//	TcpExt: SyncookiesSent ... ListenOverflows ListenDrops ...
//	TcpExt: 0 ... 3 5 ...
//
// and returns ListenOverflows and ListenDrops, with ok false if either is missing.
func parseNetstat(r io.Reader) (listenStats, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	headers := make(map[string][]string)
	var ls listenStats
	var haveO, haveD bool
	for n := 1; sc.Scan(); n++ {
		prefix, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			if strings.TrimSpace(sc.Text()) == "" {
				continue
			}
			return listenStats{}, fmt.Errorf("%w: line %d: no prefix", ErrMalformed, n)
		}
		fields := strings.Fields(rest)
		names, seen := headers[prefix]
		if !seen {
			headers[prefix] = fields
			continue
		}
		delete(headers, prefix)
		if prefix != "TcpExt" {
			continue
		}
		if len(names) != len(fields) {
			return listenStats{}, fmt.Errorf("%w: line %d: %d TcpExt values for %d names",
				ErrMalformed, n, len(fields), len(names))
		}
		for i, name := range names {
			var dst *uint64
			switch name {
			case "ListenOverflows":
				dst, haveO = &ls.overflows, true
			case "ListenDrops":
				dst, haveD = &ls.drops, true
			default:
				continue
			}
			v, err := strconv.ParseUint(fields[i], 10, 64)
			if err != nil {
				return listenStats{}, fmt.Errorf("%w: line %d: %s: %w", ErrMalformed, n, name, err)
			}
			*dst = v
		}
	}
	if err := sc.Err(); err != nil {
		return listenStats{}, unavailable(err)
	}
	ls.ok = haveO && haveD
	return ls, nil
}
