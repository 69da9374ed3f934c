package shard

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// metaFile is the name, inside an index directory, of the file that says
// what the index was built from. It is written last, so an index directory
// without it is incomplete.
const metaFile = "gather-shard.json"

// metaFormat marks a meta file as this package's.
const metaFormat = "gather-shard-index"

// bleveMetaFile is the file bleve writes first into an index directory.
const bleveMetaFile = "index_meta.json"

// meta is the content of metaFile.
type meta struct {
	Format         string `json:"format"`
	MappingVersion int    `json:"mapping_version"`
	ScoringModel   string `json:"scoring_model"`
	Partition      string `json:"partition"`
	CorpusSHA256   string `json:"corpus_sha256"`
	Documents      uint64 `json:"documents"`
	// Files is every other file of the index directory with its size and
	// checksum, taken when the build completed; Open verifies them before it
	// reuses the index, so that a damaged segment is rebuilt, not served.
	Files []fileSum `json:"files"`

	// Informational only: not compared.
	CorpusName   string    `json:"corpus_name"`
	BuiltAt      time.Time `json:"built_at"`
	BuildSeconds float64   `json:"build_seconds"`
}

// mismatch returns why an index described by m cannot serve want, or "" if
// it can. Documents is checked against the index itself and Files against
// the files, not here.
func (m meta) mismatch(want meta) string {
	switch {
	case m.Format != want.Format:
		return fmt.Sprintf("meta file format %q, want %q", m.Format, want.Format)
	case m.MappingVersion != want.MappingVersion:
		return fmt.Sprintf("built with mapping version %d, want %d", m.MappingVersion, want.MappingVersion)
	case m.ScoringModel != want.ScoringModel:
		return fmt.Sprintf("built for scoring model %q, want %q", m.ScoringModel, want.ScoringModel)
	case m.Partition != want.Partition:
		return fmt.Sprintf("built for partition %s, want %s", m.Partition, want.Partition)
	case m.CorpusSHA256 != want.CorpusSHA256:
		return fmt.Sprintf("corpus changed: built from sha256 %.12s…, the corpus is now %.12s…", m.CorpusSHA256, want.CorpusSHA256)
	}
	return ""
}

// readMeta reads dir's meta file. It returns an error wrapping
// fs.ErrNotExist if there is none.
func readMeta(dir string) (meta, error) {
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		return meta{}, err
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return meta{}, fmt.Errorf("%s: %w", metaFile, err)
	}
	return m, nil
}

// writeMeta writes m into dir's meta file and flushes it to stable storage.
func writeMeta(dir string, m meta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, metaFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// replaceable reports whether dir may be deleted to make room for a new
// index: it is empty or holds a (possibly incomplete) bleve index or a meta
// file. Open never deletes a directory that is none of these, so a mistaken
// index directory cannot wipe unrelated files.
func replaceable(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	if len(entries) == 0 {
		return true, nil
	}
	for _, name := range []string{metaFile, bleveMetaFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return true, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
	}
	return false, nil
}

// syncDir flushes a directory's entries (such as a rename into it) to
// stable storage, where the platform supports it.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}
