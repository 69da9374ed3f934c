package corpus

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
)

//go:embed sotu.jsonl.gz
var embedded embed.FS

// defaultName is the embedded corpus's file name, also its Source name.
const defaultName = "sotu.jsonl.gz"

// Source is a corpus that can be read from the start any number of times.
// The zero Source has no bytes: Open reports an error.
type Source struct {
	name   string
	open   func() (io.ReadCloser, error)
	limits Limits
}

// Default returns the embedded default corpus: the 233 State of the Union
// addresses from 1790 to 2021 described in README.md (15,719 passages).
func Default() Source {
	return Source{
		name: defaultName + " (embedded)",
		open: func() (io.ReadCloser, error) { return embedded.Open(defaultName) },
	}
}

// File returns the corpus in the file at path. The file is opened by every
// read, not by File.
func File(path string) Source {
	return Source{
		name: path,
		open: func() (io.ReadCloser, error) { return os.Open(path) },
	}
}

// FromBytes returns a corpus held in memory, named name in errors and logs.
// It does not copy data, which the caller must not change afterwards.
func FromBytes(name string, data []byte) Source {
	return Source{
		name: name,
		open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
	}
}

// WithLimits returns s read within lim by [Source.Passages] (the default [Limits] otherwise).
// The digest does not depend on them: [Source.Digest] streams the stored bytes whatever their
// size.
func (s Source) WithLimits(lim Limits) Source {
	s.limits = lim
	return s
}

// Name returns the name the source was made with, for logs and errors.
func (s Source) Name() string {
	if s.name == "" {
		return "(unnamed)"
	}
	return s.name
}

// Open returns a reader of the corpus bytes as stored (compressed or not),
// which the caller must close.
func (s Source) Open() (io.ReadCloser, error) {
	if s.open == nil {
		return nil, errors.New("the zero Source has no bytes")
	}
	return s.open()
}

// Digest returns the hex-encoded SHA-256 of the corpus bytes as stored
// (compressed or not), which identifies the corpus: the same documents stored
// differently have different digests.
func (s Source) Digest() (string, error) {
	rc, err := s.Open()
	if err != nil {
		return "", fmt.Errorf("corpus %s: %w", s.Name(), err)
	}
	defer func() { _ = rc.Close() }() // read only: a close error cannot matter
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return "", fmt.Errorf("corpus %s: %w", s.Name(), err)
	}
	return digestOf(h), nil
}

// Passages calls [PassagesWithin] with the source's limits on the corpus bytes, and on
// success returns their digest, as [Source.Digest] would. A caller that
// recorded the digest earlier compares the two to make sure the corpus did
// not change in between. Errors other than fn's are wrapped with the source
// name.
func (s Source) Passages(p Partition, fn func(Passage) error) (digest string, err error) {
	rc, err := s.Open()
	if err != nil {
		return "", fmt.Errorf("corpus %s: %w", s.Name(), err)
	}
	defer func() { _ = rc.Close() }() // read only: a close error cannot matter
	h := sha256.New()
	var fnErr error
	err = PassagesWithin(io.TeeReader(rc, h), p, s.limits, func(pg Passage) error {
		fnErr = fn(pg)
		return fnErr
	})
	switch {
	case err == nil:
	case fnErr != nil && errors.Is(err, fnErr): // fn's own error, returned as is
		return "", err
	default:
		return "", fmt.Errorf("corpus %s: %w", s.Name(), err)
	}
	// Hash whatever the parser left unread, so that the digest covers all
	// of the bytes, as Digest's does.
	if _, err := io.Copy(h, rc); err != nil {
		return "", fmt.Errorf("corpus %s: %w", s.Name(), err)
	}
	return digestOf(h), nil
}

func digestOf(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }
