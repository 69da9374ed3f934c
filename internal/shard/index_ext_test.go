package shard_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatherproxy/gather/internal/corpus"
	"github.com/gatherproxy/gather/internal/shard"
)

// opened opens an index and registers its Close.
func opened(t *testing.T, dir string, src corpus.Source, part corpus.Partition, opts ...shard.OpenOption) *shard.Index {
	t.Helper()
	ix, err := shard.Open(t.Context(), dir, src, part, opts...)
	if err != nil {
		t.Fatalf("Open(%s, %v): %v", dir, part, err)
	}
	t.Cleanup(func() { _ = ix.Close() })
	return ix
}

// countingProgress returns an option that records progress reports.
func countingProgress(reports *[]shard.Progress) shard.OpenOption {
	return shard.WithProgress(func(p shard.Progress) { *reports = append(*reports, p) })
}

func metaModTime(t *testing.T, dir string) time.Time {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, "gather-shard.json"))
	if err != nil {
		t.Fatal(err)
	}
	return fi.ModTime()
}

// entries returns the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestOpenBuildsThenReuses(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	dir := filepath.Join(parent, "index")
	src := testSource(t)
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))

	var reports []shard.Progress
	ix := opened(t, dir, src, whole, countingProgress(&reports), shard.WithLogger(logger), shard.WithBuildBatchSize(5))
	info := ix.Info()
	n := len(testDocs())
	if !info.Built || info.Documents != uint64(n) || info.Partition != whole || info.Dir != dir {
		t.Errorf("first Open: info %+v, want a built index of %d documents", info, n)
	}
	if len(reports) != 10 {
		t.Errorf("got %d progress reports, want 10: %+v", len(reports), reports)
	}
	if last := reports[len(reports)-1]; last.Indexed != n || last.Total != n {
		t.Errorf("last progress report %+v, want %d of %d", last, n, n)
	}
	for _, want := range []string{"building index", "reason=\"no index yet\"", "indexed 42/42 passages of partition 0/1 (100%)", "built index of partition 0/1: 42 passages in "} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log does not contain %q:\n%s", want, logs.String())
		}
	}
	if got := entries(t, parent); len(got) != 1 || got[0] != "index" {
		t.Errorf("parent directory holds %v, want only the index", got)
	}
	built := metaModTime(t, dir)
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}

	logs.Reset()
	reports = nil
	again := opened(t, dir, src, whole, countingProgress(&reports), shard.WithLogger(logger))
	if info := again.Info(); info.Built || info.Documents != uint64(n) {
		t.Errorf("second Open: info %+v, want a reused index of %d documents", info, n)
	}
	if len(reports) != 0 || !strings.Contains(logs.String(), "reusing index") || strings.Contains(logs.String(), "building") {
		t.Errorf("second Open rebuilt: %d progress reports, log:\n%s", len(reports), logs.String())
	}
	if !metaModTime(t, dir).Equal(built) {
		t.Error("second Open rewrote the meta file")
	}
	res, err := again.Search(t.Context(), "apple", 3)
	if err != nil || len(res.Hits) != 3 {
		t.Errorf("Search on the reused index = %d hits, %v; want 3", len(res.Hits), err)
	}
}

func TestOpenRebuildsWhenCorpusChanges(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "index")
	docs := testDocs()
	ix := opened(t, dir, corpus.FromBytes("v1", jsonl(t, docs)), whole)
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}

	docs = append(docs, testDoc{ID: "new", Year: 2030, Text: "A zebra in the meadow."})
	var logs bytes.Buffer
	ix = opened(t, dir, corpus.FromBytes("v2", jsonl(t, docs)), whole, shard.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if info := ix.Info(); !info.Built || info.Documents != uint64(len(docs)) {
		t.Errorf("Open of a changed corpus: info %+v, want a rebuilt index of %d documents", info, len(docs))
	}
	if !strings.Contains(logs.String(), "corpus changed") {
		t.Errorf("log does not say why it rebuilt:\n%s", logs.String())
	}
	res, err := ix.Search(t.Context(), "zebra", 10)
	if err != nil || len(res.Hits) != 1 || res.Hits[0].DocID != "new#001" {
		t.Errorf("Search(zebra) = %+v, %v; want new#001", res.Hits, err)
	}
}

func TestOpenPartitions(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	src := testSource(t)
	var sum uint64
	for i := range 3 {
		part := corpus.Partition{Index: i, Count: 3}
		ix := opened(t, filepath.Join(parent, part.String()[:1]), src, part)
		sum += ix.Info().Documents
		res, err := ix.Search(t.Context(), "apple banana river", 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range res.Hits {
			if !part.Contains(h.DocID) {
				t.Errorf("partition %v returned %s, which is not in it", part, h.DocID)
			}
		}
	}
	if sum != uint64(len(testDocs())) {
		t.Errorf("partitions hold %d documents in all, want %d", sum, len(testDocs()))
	}

	// The same directory for another partition is rebuilt.
	dir := filepath.Join(parent, "0")
	ix := opened(t, dir, src, corpus.Partition{Index: 1, Count: 3})
	if !ix.Info().Built {
		t.Error("Open of another partition reused the index")
	}
}

func TestOpenEmptyPartition(t *testing.T) {
	t.Parallel()
	// One passage, "only#001", in partition 1 of 2 (FNV-1a-64 is odd).
	src := corpus.FromBytes("one", []byte(`{"id": "only", "text": "Just an apple."}`))
	part := corpus.Partition{Index: 0, Count: 2}
	if part.Contains("only#001") {
		t.Fatal("test assumption broken: only#001 is in partition 0/2")
	}
	ix := opened(t, filepath.Join(t.TempDir(), "index"), src, part)
	if ix.Info().Documents != 0 {
		t.Errorf("documents = %d, want 0", ix.Info().Documents)
	}
	res, err := ix.Search(t.Context(), "apple", 5)
	if err != nil || len(res.Hits) != 0 || res.Total != 0 || res.Documents != 0 {
		t.Errorf("Search on an empty index = %+v, %v; want nothing", res, err)
	}
}

func TestOpenReplacesIncompleteIndex(t *testing.T) {
	t.Parallel()
	src := testSource(t)
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) // makes dir hold a bad index
		why   string                         // in the log
	}{
		{
			name:  "empty directory",
			setup: func(t *testing.T, dir string) { mkdir(t, dir) },
			why:   "no gather-shard.json",
		},
		{
			name: "bleve files without meta",
			setup: func(t *testing.T, dir string) {
				mkdir(t, dir)
				write(t, filepath.Join(dir, "index_meta.json"), `{"storage":"scorch","index_type":"scorch"}`)
			},
			why: "no gather-shard.json",
		},
		{
			name: "unreadable meta",
			setup: func(t *testing.T, dir string) {
				mkdir(t, dir)
				write(t, filepath.Join(dir, "gather-shard.json"), `{"format": `)
			},
			why: "unreadable meta file",
		},
		{
			name: "meta of another mapping version",
			setup: func(t *testing.T, dir string) {
				buildThenEditMeta(t, dir, src, `"mapping_version": 1`, `"mapping_version": 0`)
			},
			why: "mapping version 0, want 1",
		},
		{
			name: "meta with the wrong document count",
			setup: func(t *testing.T, dir string) {
				buildThenEditMeta(t, dir, src, `"documents": 42`, `"documents": 41`)
			},
			why: "damaged: it holds 42 documents, its meta file says 41",
		},
		{
			name: "meta without the bleve index",
			setup: func(t *testing.T, dir string) {
				mkdir(t, dir)
				buildThenEditMeta(t, dir+".src", src, "", "")
				b, err := os.ReadFile(filepath.Join(dir+".src", "gather-shard.json"))
				if err != nil {
					t.Fatal(err)
				}
				write(t, filepath.Join(dir, "gather-shard.json"), string(b))
			},
			why: "file index_meta.json is missing",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "index")
			tt.setup(t, dir)
			var logs bytes.Buffer
			ix := opened(t, dir, src, whole, shard.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
			if info := ix.Info(); !info.Built || info.Documents != uint64(len(testDocs())) {
				t.Errorf("info %+v, want a rebuilt index", info)
			}
			if !strings.Contains(logs.String(), tt.why) {
				t.Errorf("log does not say %q:\n%s", tt.why, logs.String())
			}
		})
	}
}

func TestOpenRefusesForeignDirectory(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "home")
	mkdir(t, dir)
	write(t, filepath.Join(dir, "notes.txt"), "precious")
	_, err := shard.Open(t.Context(), dir, testSource(t), whole)
	if !errors.Is(err, shard.ErrNotIndexDir) || !strings.Contains(err.Error(), "remove it or choose another directory") {
		t.Fatalf("Open of a foreign directory: error = %v, want ErrNotIndexDir", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "notes.txt")); err != nil || string(b) != "precious" {
		t.Errorf("foreign file damaged: %q, %v", b, err)
	}
}

func TestOpenCanceledDuringBuild(t *testing.T) {
	t.Parallel()
	src := testSource(t)
	for _, existing := range []bool{false, true} {
		parent := t.TempDir()
		dir := filepath.Join(parent, "index")
		var oldMeta []byte
		if existing {
			// An index of another corpus, which the canceled build must
			// leave as it was.
			ix := opened(t, dir, corpus.FromBytes("old", []byte(`{"id": "old", "text": "Old text."}`)), whole)
			if err := ix.Close(); err != nil {
				t.Fatal(err)
			}
			var err error
			if oldMeta, err = os.ReadFile(filepath.Join(dir, "gather-shard.json")); err != nil {
				t.Fatal(err)
			}
		}

		ctx, cancel := context.WithCancel(t.Context())
		var reports []shard.Progress
		_, err := shard.Open(ctx, dir, src, whole, shard.WithBuildBatchSize(3), shard.WithProgress(func(p shard.Progress) {
			reports = append(reports, p)
			cancel() // after the first 10%
		}))
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("existing index %v: error = %v, want context.Canceled", existing, err)
		}
		if len(reports) != 1 || reports[0].Indexed >= reports[0].Total {
			t.Errorf("existing index %v: progress %+v, want one report before the end", existing, reports)
		}
		if !existing {
			if got := entries(t, parent); len(got) != 0 {
				t.Errorf("canceled build left %v behind", got)
			}
			continue
		}
		if got := entries(t, parent); len(got) != 1 || got[0] != "index" {
			t.Errorf("canceled build left %v behind, want only the old index", got)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "gather-shard.json")); err != nil || !bytes.Equal(b, oldMeta) {
			t.Errorf("canceled build changed the old index's meta file: %v", err)
		}
	}
}

func TestOpenInvalidArguments(t *testing.T) {
	t.Parallel()
	if _, err := shard.Open(t.Context(), t.TempDir(), testSource(t), corpus.Partition{Index: 2, Count: 2}); !errors.Is(err, corpus.ErrInvalidPartition) {
		t.Errorf("invalid partition: error = %v, want ErrInvalidPartition", err)
	}
	if _, err := shard.Open(t.Context(), "", testSource(t), whole); err == nil {
		t.Error("empty directory name: no error")
	}
	bad := corpus.FromBytes("bad.jsonl", []byte("{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"a\", \"text\": \"y\"}\n"))
	_, err := shard.Open(t.Context(), filepath.Join(t.TempDir(), "index"), bad, whole)
	if !errors.Is(err, corpus.ErrDuplicateID) || !strings.Contains(err.Error(), "bad.jsonl: line 2") {
		t.Errorf("bad corpus: error = %v, want ErrDuplicateID naming the corpus and line", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := shard.Open(ctx, filepath.Join(t.TempDir(), "index"), testSource(t), whole); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: error = %v, want context.Canceled", err)
	}
}

func TestIndexSearchErrors(t *testing.T) {
	t.Parallel()
	ix := openIndex(t)
	if _, err := ix.Search(t.Context(), "  ", 3); !errors.Is(err, shard.ErrBlankQuery) {
		t.Errorf("blank query: error = %v, want ErrBlankQuery", err)
	}
	if _, err := ix.Search(t.Context(), "apple", 0); !errors.Is(err, shard.ErrInvalidTopK) {
		t.Errorf("top_k 0: error = %v, want ErrInvalidTopK", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := ix.Search(ctx, "apple", 3); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: error = %v, want context.Canceled", err)
	}
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// buildThenEditMeta builds the index of src in dir, then replaces old with
// new in its meta file.
func buildThenEditMeta(t *testing.T, dir string, src corpus.Source, old, new string) {
	t.Helper()
	ix, err := shard.Open(t.Context(), dir, src, whole)
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "gather-shard.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("meta file does not contain %q:\n%s", old, b)
	}
	write(t, path, strings.Replace(string(b), old, new, 1))
}

// TestSearchCutsAnywhere: the top k of a search are the first k of the full ranking (score
// descending, ties by doc id) for every k, cuts inside a run of equal scores included, where
// the passages that make the cut are decided by doc id among some the search did not return.
func TestSearchCutsAnywhere(t *testing.T) {
	t.Parallel()
	ix := openIndex(t)
	for _, q := range []string{"apple banana river", "apple", "canyon meadow", "the river"} {
		full, err := ix.Search(t.Context(), q, shard.DefaultMaxTopK)
		if err != nil {
			t.Fatal(err)
		}
		if q == "apple banana river" && len(full.Hits) < 13 {
			t.Fatalf("%q: %d hits, want the 12 tie documents and more", q, len(full.Hits))
		}
		for i := 1; i < len(full.Hits); i++ {
			a, b := full.Hits[i-1], full.Hits[i]
			if a.Score < b.Score || (a.Score == b.Score && a.DocID >= b.DocID) {
				t.Fatalf("%q: hit %d (%s %v) after hit %d (%s %v): not score descending, ties by doc id", q, i, b.DocID, b.Score, i-1, a.DocID, a.Score)
			}
		}
		for k := 1; k <= len(full.Hits); k++ {
			got, err := ix.Search(t.Context(), q, k)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Hits) != k || got.Total != full.Total {
				t.Fatalf("%q top %d: %d hits of %d matches, want %d of %d", q, k, len(got.Hits), got.Total, k, full.Total)
			}
			for i, h := range got.Hits {
				if w := full.Hits[i]; h.DocID != w.DocID || h.Score != w.Score || h.Text != w.Text {
					t.Fatalf("%q top %d: hit %d is %s (%v), want %s (%v)", q, k, i, h.DocID, h.Score, w.DocID, w.Score)
				}
			}
		}
	}
}
