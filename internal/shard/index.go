package shard

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/search"
	"github.com/blevesearch/bleve/v2/search/query"
	index "github.com/blevesearch/bleve_index_api"

	"github.com/gatherproxy/gather/internal/corpus"
)

var (
	// ErrNotIndexDir is returned by Open for an existing directory that it
	// would have to replace but that holds neither an index nor its meta
	// file.
	ErrNotIndexDir = errors.New("not an index directory")
	// ErrCorpusChanged is returned by Open when the corpus bytes changed
	// while it was building the index.
	ErrCorpusChanged = errors.New("the corpus changed while the index was being built")
	// ErrPassageTooLarge is returned by Open for a corpus with a passage
	// that would not fit in one shard message (shardsvc.MaxMessageBytes).
	ErrPassageTooLarge = errors.New("passage too large to serve")
	// ErrBlankQuery is returned by Search for a query with no words.
	ErrBlankQuery = errors.New("the query is blank")
	// ErrInvalidTopK is returned by Search for a topK below 1.
	ErrInvalidTopK = errors.New("invalid top_k")
)

// Index is one partition's search index, opened read-only. Its methods may
// be called concurrently, until Close.
type Index struct {
	bx   bleve.Index
	info Info

	closeOnce sync.Once
	closeErr  error
}

// Info describes an open [Index].
type Info struct {
	// Dir is the index directory.
	Dir       string
	Partition corpus.Partition
	// CorpusSHA256 is the digest of the corpus the index was built from.
	CorpusSHA256 string
	// Documents is the number of passages in the index.
	Documents uint64
	// Built is true if Open built the index, false if it reused one.
	Built bool
}

// Open returns the index of partition part of the corpus src, kept in the
// directory dir.
//
// If dir holds a complete index of the same corpus bytes (see
// [corpus.Source.Digest]), partition and index mapping, whose files all
// match the sizes and checksums recorded when it was built, Open opens it
// read-only, which takes milliseconds (reading the files for their
// checksums takes 1 to 3 ms for a quarter of the bundled corpus). A file
// that does not match is logged as a warning that names it, and the index
// is rebuilt. Otherwise it builds the index: it
// reads the corpus twice (once to count the partition's passages, for
// progress reports), indexes the passages in batches into a new directory
// beside dir (named dir's base name plus ".building-" and a random suffix),
// writes the meta file, and only then replaces dir with it. An existing dir
// is replaced only if it is empty or looks like an index (it has a bleve or
// gather meta file); any other directory makes Open fail with
// [ErrNotIndexDir] rather than delete it. Processes must not share an index
// directory.
//
// If ctx ends during the build, Open stops at the next passage, removes the
// new directory and returns an error wrapping ctx.Err(); dir is left as it
// was. Only a process killed mid-build leaves a ".building-" directory
// behind, which is safe to delete. The last step, merging the batches into
// one segment (a fraction of a second for the default corpus), does not
// watch ctx.
//
// The caller must Close the index.
func Open(ctx context.Context, dir string, src corpus.Source, part corpus.Partition, opts ...OpenOption) (*Index, error) {
	cfg := newOpenConfig(opts)
	if err := part.Validate(); err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, fmt.Errorf("partition %s: no index directory given", part)
	}
	dir = filepath.Clean(dir)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	digest, err := src.Digest()
	if err != nil {
		return nil, fmt.Errorf("partition %s: %w", part, err)
	}
	want := meta{
		Format:         metaFormat,
		MappingVersion: mappingVersion,
		ScoringModel:   scoringModel,
		Partition:      part.String(),
		CorpusSHA256:   digest,
	}
	log := cfg.logger.With("partition", part.String(), "dir", dir)

	ix, why, err := reopen(dir, part, want, log)
	if err != nil {
		return nil, fmt.Errorf("partition %s: %w", part, err)
	}
	if ix != nil {
		log.Info("reusing index", "documents", ix.info.Documents, "corpus", src.Name())
		return ix, nil
	}
	log.Info("building index", "reason", why, "corpus", src.Name())
	if err := build(ctx, dir, src, part, want, cfg, log); err != nil {
		return nil, fmt.Errorf("partition %s: building index in %s: %w", part, dir, err)
	}
	ix, why, err = reopen(dir, part, want, log)
	if err != nil {
		return nil, fmt.Errorf("partition %s: %w", part, err)
	}
	if ix == nil {
		return nil, fmt.Errorf("partition %s: the index just built in %s is not usable: %s", part, dir, why)
	}
	ix.info.Built = true
	return ix, nil
}

// reopen opens the index in dir if it matches want and its files match the
// checksums of its meta file. If there is no usable index, it returns a nil
// Index and why (and logs a warning naming the file, for a damaged one); it
// returns an error only for a directory it must not replace or cannot
// inspect.
func reopen(dir string, part corpus.Partition, want meta, log *slog.Logger) (ix *Index, why string, err error) {
	m, err := readMeta(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			return nil, "no index yet", nil
		}
		why = "no " + metaFile + ", so the index is incomplete"
	case err != nil:
		why = fmt.Sprintf("unreadable meta file: %v", err)
	default:
		why = m.mismatch(want)
	}
	if why != "" {
		ok, err := replaceable(dir)
		if err != nil {
			return nil, "", err
		}
		if !ok {
			return nil, "", fmt.Errorf("%w: %s holds neither a bleve index nor %s; remove it or choose another directory",
				ErrNotIndexDir, dir, metaFile)
		}
		return nil, why, nil
	}

	// Before bleve reads a byte: a damaged segment can pass bleve's own
	// checks on open and then panic a search.
	if err := verifyFiles(dir, m.Files); err != nil {
		log.Warn("not reusing the index: "+err.Error(), "err", err)
		return nil, err.Error(), nil
	}
	bx, err := bleve.OpenUsing(dir, map[string]any{"read_only": true, "bolt_timeout": "10s"})
	if err != nil {
		return nil, fmt.Sprintf("bleve cannot open it: %v", err), nil
	}
	n, err := bx.DocCount()
	if err == nil && n != m.Documents {
		err = fmt.Errorf("it holds %d documents, its meta file says %d", n, m.Documents)
	}
	if err != nil {
		return nil, fmt.Sprintf("damaged: %v", errors.Join(err, bx.Close())), nil
	}
	return &Index{bx: bx, info: Info{
		Dir:          dir,
		Partition:    part,
		CorpusSHA256: m.CorpusSHA256,
		Documents:    n,
	}}, "", nil
}

// Info describes the index.
func (ix *Index) Info() Info { return ix.info }

// Close releases the index. Searches must have returned first. Later calls
// do nothing and return the first call's result.
func (ix *Index) Close() error {
	ix.closeOnce.Do(func() { ix.closeErr = ix.bx.Close() })
	return ix.closeErr
}

// Hit is one search result.
type Hit struct {
	DocID  string
	Score  float64
	Text   string
	Fields map[string]string
}

// Result is the outcome of a search.
type Result struct {
	// Hits are the best hits: score descending, ties by DocID ascending
	// (byte-wise), at most topK.
	Hits []Hit
	// Total is the number of passages that matched, which may exceed
	// len(Hits).
	Total uint64
	// Documents is the number of passages searched.
	Documents uint64
}

// Search returns the topK passages that best match query: any word of the
// query may match (after the English analysis that the index applies to the
// text, so stop words alone match nothing), and passages matching more and
// rarer words score higher. Hits are sorted by score descending, ties by doc
// id ascending, and carry their text and fields.
//
// Search stops early and returns an error wrapping ctx.Err() if ctx ends. It
// returns [ErrBlankQuery] or [ErrInvalidTopK] for requests it cannot run.
//
// Caveat: bleve v2.6's BM25 takes as the "average field length" the field's
// distinct-term count divided by the document count (rounded up), not the
// mean number of terms per passage; this index has a single segment, so
// scores are deterministic, but length normalisation weighs more than in
// textbook BM25, favouring shorter passages.
func (ix *Index) Search(ctx context.Context, query string, topK int) (Result, error) {
	if strings.TrimSpace(query) == "" {
		return Result{}, ErrBlankQuery
	}
	if topK < 1 {
		return Result{}, fmt.Errorf("%w %d: want at least 1", ErrInvalidTopK, topK)
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	q := bleve.NewMatchQuery(query)
	q.SetField(textField)
	size := topK + topK/4 + tieSlack
	res, err := ix.search(ctx, q, size, false)
	if err != nil {
		return Result{}, err
	}
	found := res.Hits
	slices.SortFunc(found, func(a, b *search.DocumentMatch) int { // score descending, then doc id
		if c := cmp.Compare(b.Score, a.Score); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	if len(found) > topK {
		// Every passage scoring more than the topK-th was found; so were all that score the
		// same, and the doc id decides among them, unless the last one found scores the same
		// too and more matched.
		if found[len(found)-1].Score == found[topK-1].Score && res.Total > uint64(len(found)) {
			if res, err = ix.search(ctx, q, topK, true); err != nil {
				return Result{}, err
			}
			found = res.Hits
		}
		found = found[:min(topK, len(found))]
	}
	hits := make([]Hit, len(found))
	for i, h := range found {
		if math.IsNaN(h.Score) || math.IsInf(h.Score, 0) {
			return Result{}, fmt.Errorf("partition %s: %s scored %v", ix.info.Partition, h.ID, h.Score)
		}
		hits[i] = Hit{DocID: h.ID, Score: h.Score}
	}
	if err := ix.load(hits); err != nil {
		return Result{}, err
	}
	return Result{Hits: hits, Total: res.Total, Documents: ix.info.Documents}, nil
}

// tieSlack is how many passages more than topK (and a quarter) Search asks bleve for, so that
// a run of equal scores across the cut is usually found whole.
const tieSlack = 8

// search runs q for its size best passages, with their doc ids and scores. Sorted by score
// alone (byID false), bleve orders ties by their place in the index: sorting by doc id as well
// makes it load the id of every passage that matches, to compare it, which was an eighth of
// the CPU of gather demo's process under gather chaos (scorch's ExternalID, for top_k 10 of
// thousands of matches), where the score alone loads the ids of the passages returned. Search
// asks so for a few more than topK and sorts by doc id itself; with byID, for a run of equal
// scores that runs past what it asked for.
func (ix *Index) search(ctx context.Context, q query.Query, size int, byID bool) (*bleve.SearchResult, error) {
	req := bleve.NewSearchRequestOptions(q, size, 0, false)
	if byID {
		req.SortBy([]string{"-_score", "_id"})
	} else {
		req.SortBy([]string{"-_score"})
	}
	res, err := ix.bx.SearchInContext(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("partition %s: search: %w", ix.info.Partition, err)
	}
	return res, nil
}

// load fills in the text and fields of hits from the index's stored fields.
func (ix *Index) load(hits []Hit) error {
	if len(hits) == 0 {
		return nil
	}
	adv, err := ix.bx.Advanced()
	if err != nil {
		return fmt.Errorf("partition %s: %w", ix.info.Partition, err)
	}
	r, err := adv.Reader()
	if err != nil {
		return fmt.Errorf("partition %s: %w", ix.info.Partition, err)
	}
	defer func() { _ = r.Close() }() // a snapshot's reference, released
	for i := range hits {
		h := &hits[i]
		doc, err := r.Document(h.DocID)
		if err != nil {
			return fmt.Errorf("partition %s: %s: %w", ix.info.Partition, h.DocID, err)
		}
		if doc == nil {
			return fmt.Errorf("partition %s: %s: not in the index", ix.info.Partition, h.DocID)
		}
		var fields []byte
		doc.VisitFields(func(f index.Field) {
			switch f.Name() {
			case textField:
				h.Text = string(f.Value())
			case fieldsField:
				fields = f.Value()
			}
		})
		if fields != nil {
			if err := json.Unmarshal(fields, &h.Fields); err != nil {
				return fmt.Errorf("partition %s: %s: stored fields: %w", ix.info.Partition, h.DocID, err)
			}
		}
	}
	return nil
}
