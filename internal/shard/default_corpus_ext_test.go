package shard_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatherproxy/gather/internal/corpus"
	"github.com/gatherproxy/gather/internal/shard"
)

// fullCorpus skips tb unless GATHER_FULL_CORPUS is set and -short is not:
// indexing the whole default corpus takes seconds.
func fullCorpus(tb testing.TB) {
	tb.Helper()
	if testing.Short() || os.Getenv("GATHER_FULL_CORPUS") == "" {
		tb.Skip("indexes the whole default corpus; set GATHER_FULL_CORPUS=1 to run")
	}
}

// TestDefaultCorpus builds the four partitions of the default corpus one
// after the other, checks them, and logs how long building and reopening
// take.
func TestDefaultCorpus(t *testing.T) {
	fullCorpus(t)
	const n = 4
	var want [n]uint64
	if _, err := corpus.Default().Passages(whole, func(p corpus.Passage) error {
		want[corpus.PartitionOf(p.ID, n)]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	parent := t.TempDir()
	dir := func(i int) string { return filepath.Join(parent, "part", string(rune('0'+i))) }
	start := time.Now()
	for i := range n {
		part := corpus.Partition{Index: i, Count: n}
		began := time.Now()
		ix, err := shard.Open(t.Context(), dir(i), corpus.Default(), part)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(began)
		info := ix.Info()
		if err := ix.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("built partition %v: %d passages in %v (%.1f MB)", part, info.Documents, took.Round(time.Millisecond), dirMB(t, dir(i)))
		if !info.Built || info.Documents != want[i] {
			t.Errorf("partition %v: info %+v, want a built index of %d passages", part, info, want[i])
		}
	}
	t.Logf("built all %d partitions in %v", n, time.Since(start).Round(time.Millisecond))

	began := time.Now()
	ix, err := shard.Open(t.Context(), dir(0), corpus.Default(), corpus.Partition{Index: 0, Count: n})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := ix.Close(); err != nil {
			t.Error(err)
		}
	}()
	t.Logf("reopened partition 0/%d in %v", n, time.Since(began).Round(time.Microsecond))
	if ix.Info().Built {
		t.Error("reopening rebuilt the index")
	}

	res, err := ix.Search(t.Context(), "emancipation of slaves", 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("emancipation of slaves: %d matches of %d", res.Total, res.Documents)
	for _, h := range res.Hits {
		t.Logf("  %.4f %s (%s)", h.Score, h.DocID, h.Fields["president"])
	}
	if len(res.Hits) != 3 {
		t.Errorf("got %d hits, want 3", len(res.Hits))
	}

	began = time.Now()
	all, err := shard.Open(t.Context(), filepath.Join(parent, "all"), corpus.Default(), whole)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := all.Close(); err != nil {
			t.Error(err)
		}
	}()
	t.Logf("built the whole corpus as one partition: %d passages in %v", all.Info().Documents, time.Since(began).Round(time.Millisecond))
}

func dirMB(t *testing.T, dir string) float64 {
	t.Helper()
	var size int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		size += fi.Size()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return float64(size) / 1e6
}

// BenchmarkOpenReuse measures reopening a built partition of the default
// corpus.
func BenchmarkOpenReuse(b *testing.B) {
	fullCorpus(b)
	dir := filepath.Join(b.TempDir(), "index")
	part := corpus.Partition{Index: 0, Count: 4}
	ix, err := shard.Open(context.Background(), dir, corpus.Default(), part)
	if err != nil {
		b.Fatal(err)
	}
	_ = ix.Close()
	for b.Loop() {
		ix, err := shard.Open(context.Background(), dir, corpus.Default(), part)
		if err != nil {
			b.Fatal(err)
		}
		_ = ix.Close()
	}
}

// BenchmarkSearch measures a search of a partition of the default corpus.
func BenchmarkSearch(b *testing.B) {
	fullCorpus(b)
	part := corpus.Partition{Index: 0, Count: 4}
	ix, err := shard.Open(context.Background(), filepath.Join(b.TempDir(), "index"), corpus.Default(), part)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := ix.Close(); err != nil {
			b.Error(err)
		}
	}()
	for _, bm := range []struct {
		name  string
		query string
		topK  int
	}{
		{"rare/k10", "emancipation", 10},
		{"common/k10", "government people states", 10},
		{"common/k1000", "government people states", 1000},
	} {
		b.Run(bm.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := ix.Search(context.Background(), bm.query, bm.topK); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
