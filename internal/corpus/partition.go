package corpus

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// ErrInvalidPartition is wrapped by every error about a malformed or
// out-of-range partition.
var ErrInvalidPartition = errors.New("invalid partition")

// Partition names one of Count disjoint parts of a corpus; Index is 0-based.
// The zero value is not valid; Partition{Index: 0, Count: 1} is the whole
// corpus.
type Partition struct {
	Index, Count int
}

// ParsePartition parses "I/N", as printed by [Partition.String]: I is the
// 0-based index and N the number of partitions, 0 <= I < N.
func ParsePartition(s string) (Partition, error) {
	is, ns, ok := strings.Cut(s, "/")
	if !ok {
		return Partition{}, fmt.Errorf("%w %q: want I/N, e.g. 0/4 for the first of 4 partitions", ErrInvalidPartition, s)
	}
	i, err := strconv.Atoi(is)
	if err != nil {
		return Partition{}, fmt.Errorf("%w %q: index %q is not an integer; want I/N, e.g. 0/4", ErrInvalidPartition, s, is)
	}
	n, err := strconv.Atoi(ns)
	if err != nil {
		return Partition{}, fmt.Errorf("%w %q: count %q is not an integer; want I/N, e.g. 0/4", ErrInvalidPartition, s, ns)
	}
	p := Partition{Index: i, Count: n}
	if err := p.Validate(); err != nil {
		return Partition{}, err
	}
	return p, nil
}

// Validate reports whether p names a partition: Count >= 1 and
// 0 <= Index < Count.
func (p Partition) Validate() error {
	if p.Count < 1 {
		return fmt.Errorf("%w %s: the count must be at least 1", ErrInvalidPartition, p)
	}
	if p.Index < 0 || p.Index >= p.Count {
		return fmt.Errorf("%w %s: the index is 0-based and must be in [0, %d]", ErrInvalidPartition, p, p.Count-1)
	}
	return nil
}

// String returns "I/N", the form [ParsePartition] reads.
func (p Partition) String() string {
	return strconv.Itoa(p.Index) + "/" + strconv.Itoa(p.Count)
}

// Contains reports whether the passage docID belongs to p. It is false for
// every docID if p is not valid.
func (p Partition) Contains(docID string) bool {
	return p.Count >= 1 && PartitionOf(docID, p.Count) == p.Index
}

// PartitionOf returns the index of the partition, out of count, that the
// passage docID belongs to: FNV-1a-64 of its bytes, modulo count. It depends
// on nothing else, so it is stable across corpus versions and processes. It
// panics if count < 1.
func PartitionOf(docID string, count int) int {
	if count < 1 {
		panic("corpus: PartitionOf with count < 1")
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(docID)) // a hash.Hash never returns an error
	return int(h.Sum64() % uint64(count))
}
