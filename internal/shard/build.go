package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/blevesearch/bleve/v2"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/corpus"
	"github.com/gatherproxy/gather/internal/shardsvc"
)

// build indexes partition part of src into a new directory beside dir and
// then puts it in dir's place; want is the meta the index must end up with.
// On error nothing is left behind and dir is untouched.
func build(ctx context.Context, dir string, src corpus.Source, part corpus.Partition, want meta, cfg openConfig, log *slog.Logger) (err error) {
	start := time.Now()
	total := 0
	digest, err := src.Passages(part, func(p corpus.Passage) error {
		total++
		if err := checkHitSize(p); err != nil {
			return err
		}
		return ctx.Err()
	})
	if err != nil {
		return err
	}
	if digest != want.CorpusSHA256 {
		return ErrCorpusChanged
	}

	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, filepath.Base(dir)+".building-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if rmErr := os.RemoveAll(tmp); rmErr != nil {
				err = errors.Join(err, fmt.Errorf("removing the partial index: %w", rmErr))
			}
		}
	}()

	progress := func(n int) {
		if n != total && n*10/total == (n-1)*10/total {
			return
		}
		p := Progress{Partition: part, Indexed: n, Total: total, Elapsed: time.Since(start)}
		log.Info(fmt.Sprintf("indexed %d/%d passages of partition %s (%d%%)", n, total, part, n*100/total),
			"elapsed", p.Elapsed.Round(time.Millisecond))
		if cfg.progress != nil {
			cfg.progress(p)
		}
	}
	if err := writeIndex(ctx, tmp, src, part, want.CorpusSHA256, total, cfg.batchSize, progress); err != nil {
		return err
	}

	m := want
	if m.Files, err = sumFiles(tmp); err != nil {
		return fmt.Errorf("checksumming the new index: %w", err)
	}
	m.Documents = uint64(total)
	m.CorpusName = src.Name()
	m.BuiltAt = time.Now().UTC().Truncate(time.Second)
	m.BuildSeconds = time.Since(start).Seconds()
	if err := writeMeta(tmp, m); err != nil {
		return err
	}
	if err := replace(dir, tmp); err != nil {
		return err
	}
	elapsed := time.Since(start)
	log.Info(fmt.Sprintf("built index of partition %s: %d passages in %s", part, total, elapsed.Round(time.Millisecond)),
		"documents", total, "elapsed", elapsed.Round(time.Millisecond))
	return nil
}

// checkHitSize refuses a passage that, served as a hit, would not fit in one
// shard message: the server could never send it (shardsvc.NextBatch).
func checkHitSize(p corpus.Passage) error {
	h := &shardv1.Hit{DocId: p.ID, Score: 1, Text: p.Text, Fields: p.Fields} // any non-zero score is 9 bytes
	if n := shardsvc.HitBytes(h); n > shardsvc.MaxHitBytes {
		return fmt.Errorf("%w: passage %s is %d bytes as a hit, above the %d bytes one shard message may carry: split the words of its document (a passage is 50 to 199 of them), or move large fields out of the corpus",
			ErrPassageTooLarge, p.ID, n, shardsvc.MaxHitBytes)
	}
	return nil
}

// writeIndex indexes the total passages of partition part of src into a new
// bleve index at path, calling progress after each. It uses bleve's offline
// builder, which analyses each batch of batchSize passages into a segment
// file and at the end merges them into one segment: no background
// goroutines, no fsync per batch, and a compact single-segment index, whose
// BM25 statistics do not depend on how the build was batched.
func writeIndex(ctx context.Context, path string, src corpus.Source, part corpus.Partition, digest string,
	total, batchSize int, progress func(int)) error {
	if total == 0 {
		// The builder cannot make an empty index; an ordinary one can.
		bx, err := bleve.New(path, newMapping())
		if err != nil {
			return err
		}
		return bx.Close()
	}

	b, err := bleve.NewBuilder(path, newMapping(), map[string]any{
		"batchSize":       batchSize,
		"buildPathPrefix": path, // its scratch directory, removed by Close
	})
	if err != nil {
		return err
	}
	// On error the builder is dropped without Close: between batches it
	// holds no open files or goroutines, only memory, and its files are
	// under path, which the caller removes.
	n := 0
	got, err := src.Passages(part, func(p corpus.Passage) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		fields, err := json.Marshal(p.Fields)
		if err != nil {
			return err
		}
		if err := b.Index(p.ID, map[string]any{textField: p.Text, fieldsField: string(fields)}); err != nil {
			return fmt.Errorf("indexing %s: %w", p.ID, err)
		}
		n++
		progress(n)
		return nil
	})
	switch {
	case err != nil:
		return err
	case got != digest || n != total:
		return ErrCorpusChanged
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.Close()
}

// replace puts the complete index in tmp in the place of dir, removing dir
// first if it exists (and may be removed).
func replace(dir, tmp string) error {
	if _, err := os.Stat(dir); err == nil {
		ok, err := replaceable(dir)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %s appeared during the build and holds neither a bleve index nor %s",
				ErrNotIndexDir, dir, metaFile)
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	return syncDir(filepath.Dir(dir))
}
