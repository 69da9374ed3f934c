package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"time"
)

// Errors that Read and ParseMetrics wrap; test with errors.Is.
var (
	// ErrUnavailable: procfs, or a file sockdiag needs in it, is missing or unreadable (not Linux,
	// a sandbox without /proc, another process's fd table without permission), or, from
	// ParseMetrics, the scraped process reported gather_sockdiag_up 0.
	ErrUnavailable = errors.New("sockdiag: /proc unavailable")
	// ErrMalformed: a /proc file or a metrics exposition is not in the expected format.
	ErrMalformed = errors.New("sockdiag: malformed input")
)

// DefaultProcRoot is where procfs is mounted on Linux; New uses it for an empty procRoot.
const DefaultProcRoot = "/proc"

// Reader reads Snapshots of one process's TCP sockets from procfs. It holds no state between
// reads, so it is safe for concurrent use (concurrent scrapes each read /proc themselves). The
// zero Reader reads the calling process under DefaultProcRoot, like New("").
type Reader struct {
	procRoot string
	pid      string
	// order is how the kernel laid out the 32-bit address words it printed with %08X: the
	// host's byte order.
	order binary.ByteOrder
}

// Option configures a Reader.
type Option func(*Reader)

// WithPID makes the Reader look at process pid instead of the calling process ("self"). Reading
// another process's fd table needs the same permission as ptrace-attaching to it; without it Read
// reports ErrUnavailable. A pid <= 0 means the calling process.
func WithPID(pid int) Option {
	return func(r *Reader) {
		if pid > 0 {
			r.pid = strconv.Itoa(pid)
		}
	}
}

// New returns a Reader of the calling process's sockets under procRoot ("" means
// DefaultProcRoot). It reads <procRoot>/<pid>/fd, <procRoot>/<pid>/net/tcp, tcp6 and netstat,
// where pid is "self" unless WithPID says otherwise; the per-process net directory is the one
// that shows the process's own network namespace. New touches nothing: a missing procRoot shows
// up on Read.
func New(procRoot string, opts ...Option) *Reader {
	if procRoot == "" {
		procRoot = DefaultProcRoot
	}
	r := &Reader{procRoot: procRoot, pid: "self", order: binary.NativeEndian}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Read takes a Snapshot. On failure the Snapshot has Available false, Err set to the returned
// error and no counts; the error wraps ErrUnavailable when procfs could not be read and
// ErrMalformed when it could not be parsed. A missing tcp6 table (IPv6 disabled) is read as empty,
// and a missing or TcpExt-less netstat only leaves ListenStatsAvailable false.
func (r *Reader) Read() (Snapshot, error) {
	now := time.Now()
	snap, err := r.read()
	snap.Time = now
	if err != nil {
		return Snapshot{Time: now, Err: err}, err
	}
	snap.Available = true
	return snap, nil
}

func (r *Reader) read() (Snapshot, error) {
	var snap Snapshot
	root, pid, order := r.procRoot, r.pid, r.order
	if root == "" {
		root = DefaultProcRoot
	}
	if pid == "" {
		pid = "self"
	}
	if order == nil {
		order = binary.NativeEndian
	}
	dir := filepath.Join(root, pid)
	owned, err := socketInodes(filepath.Join(dir, "fd"))
	if err != nil {
		return snap, err
	}
	t := newTCPTable(owned)
	for _, name := range []string{"tcp", "tcp6"} {
		err := t.readFile(filepath.Join(dir, "net", name), order)
		if name == "tcp6" && errors.Is(err, fs.ErrNotExist) {
			continue // kernel booted with ipv6.disable=1
		}
		if err != nil {
			return snap, err
		}
	}
	snap.Sockets = t.sockets
	snap.ListenerUnowned = t.unownedOnListeners()

	ls, err := readNetstat(filepath.Join(dir, "net", "netstat"))
	switch {
	case errors.Is(err, ErrUnavailable):
		// Leave ListenStatsAvailable false: the socket counts are still worth having.
	case err != nil:
		return snap, err
	default:
		snap.ListenOverflows, snap.ListenDrops, snap.ListenStatsAvailable = ls.overflows, ls.drops, ls.ok
	}
	return snap, nil
}

// unavailable wraps an error reading procfs.
func unavailable(err error) error { return fmt.Errorf("%w: %w", ErrUnavailable, err) }
