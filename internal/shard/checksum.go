package shard

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// fileSum records one file of a built index, as the build left it.
type fileSum struct {
	// Path is slash-separated and relative to the index directory.
	Path string `json:"path"`
	Size int64  `json:"size"`
	// CRC32C is the Castagnoli CRC-32 of the content. It is there to catch
	// damage (a flipped bit, a torn write, a truncated copy), not tampering:
	// anyone who can write the index can write its meta file too.
	CRC32C uint32 `json:"crc32c"`
}

// sumFiles returns a fileSum of every regular file under dir except the meta
// file, sorted by path.
func sumFiles(dir string) ([]fileSum, error) {
	var sums []fileSum
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == metaFile {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file", rel)
		}
		s, err := sumFile(path)
		if err != nil {
			return err
		}
		s.Path = rel
		sums = append(sums, s)
		return nil
	})
	slices.SortFunc(sums, func(a, b fileSum) int {
		switch {
		case a.Path < b.Path:
			return -1
		case a.Path > b.Path:
			return 1
		}
		return 0
	})
	return sums, err
}

func sumFile(path string) (fileSum, error) {
	f, err := os.Open(path)
	if err != nil {
		return fileSum{}, err
	}
	defer func() { _ = f.Close() }() // read only
	// MakeTable returns the package's one Castagnoli table, which it computes
	// with the CPU's CRC32 instruction where there is one (SSE 4.2, ARMv8).
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	n, err := io.Copy(h, f)
	if err != nil {
		return fileSum{}, err
	}
	return fileSum{Size: n, CRC32C: h.Sum32()}, nil
}

// errDamaged is wrapped by the errors of verifyFiles.
var errDamaged = errors.New("index damaged")

// verifyFiles checks that dir holds exactly the files of want, with their
// sizes and checksums. The error names the first file that does not match.
func verifyFiles(dir string, want []fileSum) error {
	if len(want) == 0 {
		return fmt.Errorf("%w: %s records no file checksums (written by an older gather)", errDamaged, metaFile)
	}
	got, err := sumFiles(dir)
	if err != nil {
		return fmt.Errorf("%w: %w", errDamaged, err)
	}
	have := make(map[string]fileSum, len(got))
	for _, s := range got {
		have[s.Path] = s
	}
	for _, w := range want {
		g, ok := have[w.Path]
		switch {
		case !ok:
			return fmt.Errorf("%w: file %s is missing", errDamaged, w.Path)
		case g.Size != w.Size:
			return fmt.Errorf("%w: file %s is %d bytes, but was %d bytes when the index was built", errDamaged, w.Path, g.Size, w.Size)
		case g.CRC32C != w.CRC32C:
			return fmt.Errorf("%w: file %s does not match its checksum (crc32c %08x, but %08x when the index was built)",
				errDamaged, w.Path, g.CRC32C, w.CRC32C)
		}
		delete(have, w.Path)
	}
	for _, g := range got {
		if _, extra := have[g.Path]; extra {
			return fmt.Errorf("%w: file %s was not there when the index was built", errDamaged, g.Path)
		}
	}
	return nil
}
