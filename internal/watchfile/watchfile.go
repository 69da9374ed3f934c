// Package watchfile keeps the parsed contents of a few files current while a process runs:
// certificates and keys, an authorization policy, a token list. It is how gather picks up a
// rotated certificate or an edited policy without a restart.
//
// A Set does not poll on its own. Get looks at the files (one stat each) and re-reads them only
// when one has changed on disk since it last read them: another file (inode: a rename over it,
// or a Kubernetes secret's symlink swap), another size or another modification time. Callers
// decide when that is: a TLS handshake (so a new connection sees a new certificate at once), or
// a ticker of their own.
//
// New contents that fail to parse are refused and the last good value stays in use, with one
// warning per change that names the files and the error (never their contents: keys and tokens
// live in them). That covers the moment of a rotation in which the certificate has been
// replaced and its key not yet: the pair does not match, the old pair stays, and the next Get
// after the key's replacement loads both.
package watchfile

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

// Set is the current parsed contents of a list of files read together. Create it with New; it
// is safe for concurrent use.
type Set[T any] struct {
	what     string
	paths    []string
	parse    func(contents [][]byte) (T, error)
	describe func(T) []any
	log      *slog.Logger

	mu   sync.Mutex    // serialises looking at the files and re-reading them
	seen []os.FileInfo // the files as they were when last read (parsed or refused)
	cur  atomic.Pointer[T]
	// lastWarning is the error last reported by warnOnce, so that a file missing for a while
	// is one line in the log, not one per Get.
	lastWarning string
}

// Option configures a Set.
type Option[T any] func(*Set[T])

// WithLogger sets where reloads and refused contents are reported. Default: slog.Default().
func WithLogger[T any](log *slog.Logger) Option[T] {
	return func(s *Set[T]) { s.log = log }
}

// WithDescribe adds attributes that describe a newly loaded value to the reload's log line (a
// certificate's subject and expiry, a policy's name). It must not return secrets.
func WithDescribe[T any](describe func(T) []any) Option[T] {
	return func(s *Set[T]) { s.describe = describe }
}

// New reads paths and parses their contents (in the order of paths) with parse. what names the
// files for messages, e.g. "tls.cert_file/tls.key_file". An error reading or parsing is
// returned, wrapped with what: the caller fails to start rather than serve without them.
func New[T any](what string, paths []string, parse func(contents [][]byte) (T, error), opts ...Option[T]) (*Set[T], error) {
	if len(paths) == 0 {
		return nil, errors.New("watchfile: no files")
	}
	s := &Set[T]{what: what, paths: paths, parse: parse, log: slog.Default()}
	for _, o := range opts {
		o(s)
	}
	seen, err := s.stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	v, err := s.read()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	s.seen = seen
	s.cur.Store(&v)
	return s, nil
}

// Current returns the value last loaded, without looking at the files.
func (s *Set[T]) Current() T { return *s.cur.Load() }

// Get looks at the files, loads them again if any has changed since they were last read, and
// returns the current value: the new one, or the last good one when the new contents do not
// parse or a file cannot be read right now.
func (s *Set[T]) Get() T { return s.get(false) }

// Reload is Get for when the caller knows better than the files' metadata (SIGHUP): the files
// are read again whether or not they look changed. An edit that kept a file's size and
// modification time is then loaded, and later Gets compare with it.
func (s *Set[T]) Reload() T { return s.get(true) }

func (s *Set[T]) get(force bool) T {
	s.mu.Lock()
	defer s.mu.Unlock()
	now, err := s.stat()
	if err != nil { // mid-rename, or removed: keep serving, look again next time
		s.warnOnce("cannot look at the files; keeping the loaded version", err)
		return s.Current()
	}
	if !force && !s.changed(now) {
		return s.Current()
	}
	s.seen = now // whatever the outcome, these contents are not read again
	v, err := s.read()
	if err != nil {
		s.log.Warn("refused new contents; keeping the loaded version", "what", s.what,
			"files", strings.Join(s.paths, ","), "err", err)
		return s.Current()
	}
	s.cur.Store(&v)
	s.lastWarning = ""
	attrs := []any{"what", s.what, "files", strings.Join(s.paths, ",")}
	if s.describe != nil {
		attrs = append(attrs, s.describe(v)...)
	}
	s.log.Info("reloaded", attrs...)
	return v
}

func (s *Set[T]) warnOnce(msg string, err error) {
	if err.Error() == s.lastWarning {
		return
	}
	s.lastWarning = err.Error()
	s.log.Warn(msg, "what", s.what, "files", strings.Join(s.paths, ","), "err", err)
}

func (s *Set[T]) stat() ([]os.FileInfo, error) {
	out := make([]os.FileInfo, len(s.paths))
	for i, p := range s.paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		out[i] = fi
	}
	return out, nil
}

func (s *Set[T]) changed(now []os.FileInfo) bool {
	for i, fi := range now {
		old := s.seen[i]
		if !os.SameFile(old, fi) || !old.ModTime().Equal(fi.ModTime()) || old.Size() != fi.Size() {
			return true
		}
	}
	return false
}

func (s *Set[T]) read() (T, error) {
	contents := make([][]byte, len(s.paths))
	for i, p := range s.paths {
		b, err := os.ReadFile(p)
		if err != nil {
			var zero T
			return zero, err
		}
		contents[i] = b
	}
	return s.parse(contents)
}
