package shard_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatherproxy/gather/internal/shard"
)

// segments returns the index's segment files (bleve scorch's .zap files), relative to dir.
func segments(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".zap") {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, filepath.ToSlash(rel))
		}
		return err
	})
	if err != nil || len(out) == 0 {
		t.Fatalf("no segment files in %s (%v)", dir, err)
	}
	return out
}

// TestCorruptSegmentIsRebuilt: one flipped byte in the middle of a segment, which bleve would
// open and then maybe panic on, makes Open rebuild the index, saying which file did not match.
func TestCorruptSegmentIsRebuilt(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "index")
	src := testSource(t)
	ix := opened(t, dir, src, whole)
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		corrupt func(path string) error
		want    string
	}{
		{"a flipped byte", func(path string) error {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			b[len(b)/2] ^= 0x40
			return os.WriteFile(path, b, 0o644)
		}, "does not match its checksum"},
		{"a truncated file", func(path string) error {
			fi, err := os.Stat(path)
			if err != nil {
				return err
			}
			return os.Truncate(path, fi.Size()-1)
		}, "bytes when the index was built"},
		{"a removed file", os.Remove, "is missing"},
	} {
		seg := segments(t, dir)[0]
		if err := tc.corrupt(filepath.Join(dir, filepath.FromSlash(seg))); err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		ix := opened(t, dir, src, whole, shard.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		if !ix.Info().Built {
			t.Errorf("%s in %s: the index was reused", tc.name, seg)
		}
		if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "file "+seg+" ") ||
			!strings.Contains(logs.String(), tc.want) {
			t.Errorf("%s in %s: the log does not warn about that file (%q):\n%s", tc.name, seg, tc.want, logs.String())
		}
		if res, err := ix.Search(t.Context(), "apple", 3); err != nil || len(res.Hits) != 3 {
			t.Errorf("%s: search on the rebuilt index: %d hits, %v", tc.name, len(res.Hits), err)
		}
		if err := ix.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// A file that appeared since the build is damage too.
	write(t, filepath.Join(dir, "store", "stray.zap"), "x")
	var logs bytes.Buffer
	ix = opened(t, dir, src, whole, shard.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if !ix.Info().Built || !strings.Contains(logs.String(), "file store/stray.zap was not there when the index was built") {
		t.Errorf("a stray file: built %v, log:\n%s", ix.Info().Built, logs.String())
	}
}

// TestMetaWithoutChecksumsIsRebuilt: an index built before checksums were recorded is not
// trusted.
func TestMetaWithoutChecksumsIsRebuilt(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "index")
	src := testSource(t)
	buildThenEditMeta(t, dir, src, `"files": [`, `"old_files": [`)
	path := filepath.Join(dir, "gather-shard.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Drop the renamed key: the meta file of an older gather.
	s := string(b)
	start := strings.Index(s, `"old_files": [`)
	end := strings.Index(s[start:], "]") + start + 1
	write(t, path, strings.Replace(s[:start]+s[end:], ",\n  ,", ",", 1))
	var logs bytes.Buffer
	ix := opened(t, dir, src, whole, shard.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if !ix.Info().Built || !strings.Contains(logs.String(), "records no file checksums") {
		t.Errorf("built %v, log:\n%s", ix.Info().Built, logs.String())
	}
}
