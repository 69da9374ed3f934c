package watchfile_test

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gatherproxy/gather/internal/watchfile"
)

// The package starts no goroutines; this keeps it that way.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair parses two files that must hold the same word, like a certificate and its key.
func pair(contents [][]byte) (string, error) {
	a, b := strings.TrimSpace(string(contents[0])), strings.TrimSpace(string(contents[1]))
	if a != b {
		return "", errors.New("the files do not match")
	}
	return a, nil
}

// replace writes data to path the way a rotation does: a new file renamed over the old one.
func replace(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func TestSet(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "cert"), filepath.Join(dir, "key")
	replace(t, a, "one")
	replace(t, b, "one")
	var logs logBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	s, err := watchfile.New("test.cert/test.key", []string{a, b}, pair, watchfile.WithLogger[string](log),
		watchfile.WithDescribe(func(v string) []any { return []any{"value", v} }))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Get(); got != "one" {
		t.Fatalf("Get = %q, want one", got)
	}

	// Half a rotation: the pair does not match, the old value stays, with one warning.
	replace(t, a, "two")
	if got := s.Get(); got != "one" {
		t.Errorf("after replacing one file of the pair: Get = %q, want the old one", got)
	}
	if !strings.Contains(logs.String(), "refused new contents") || !strings.Contains(logs.String(), "the files do not match") {
		t.Errorf("no warning about the refused contents:\n%s", logs.String())
	}
	// The rest of the rotation: the next Get loads both.
	replace(t, b, "two")
	if got := s.Get(); got != "two" {
		t.Errorf("after replacing both: Get = %q, want two", got)
	}
	if got := s.Current(); got != "two" {
		t.Errorf("Current = %q, want two", got)
	}
	if !strings.Contains(logs.String(), "value=two") {
		t.Errorf("the reload is not logged with its description:\n%s", logs.String())
	}

	// A file written in place (same inode) with the same size is seen by its modification time.
	if err := os.WriteFile(a, []byte("six"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte("six"), 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute) // a coarse clock could give both writes the old time
	for _, p := range []string{a, b} {
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Get(); got != "six" {
		t.Errorf("after rewriting in place: Get = %q, want six", got)
	}

	// A file gone for a while: the loaded value stays, and the warning is said once.
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got := s.Get(); got != "six" {
			t.Errorf("with a file missing: Get = %q, want six", got)
		}
	}
	if n := strings.Count(logs.String(), "cannot look at the files"); n != 1 {
		t.Errorf("a missing file was reported %d times, want once:\n%s", n, logs.String())
	}
	replace(t, a, "six")
	if got := s.Get(); got != "six" {
		t.Errorf("file back: Get = %q", got)
	}
}

func TestNewFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "cert"), filepath.Join(dir, "key")
	replace(t, a, "one")
	replace(t, b, "two")
	if _, err := watchfile.New("tls.cert_file/tls.key_file", []string{a, b}, pair); err == nil ||
		!strings.Contains(err.Error(), "tls.cert_file/tls.key_file: the files do not match") {
		t.Errorf("mismatched pair: got %v", err)
	}
	if _, err := watchfile.New("tls.cert_file", []string{filepath.Join(dir, "nope")}, pair); err == nil ||
		!strings.Contains(err.Error(), "tls.cert_file: stat") {
		t.Errorf("missing file: got %v", err)
	}
}

// TestReload: a file rewritten in place with its size and modification time kept looks
// unchanged to Get; Reload reads it, and the Gets after it keep what it read.
func TestReload(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "word")
	if err := os.WriteFile(path, []byte("alpha"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := watchfile.New("word", []string{path}, func(c [][]byte) (string, error) { return string(c[0]), nil },
		watchfile.WithLogger[string](slog.New(slog.NewTextHandler(&logBuffer{}, nil))))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("omega"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if got := s.Get(); got != "alpha" {
		t.Fatalf("Get after an edit that kept size and time: %q, want the loaded alpha", got)
	}
	if got := s.Reload(); got != "omega" {
		t.Errorf("Reload: %q, want omega", got)
	}
	if got := s.Get(); got != "omega" {
		t.Errorf("Get after Reload: %q, want omega", got)
	}
}
