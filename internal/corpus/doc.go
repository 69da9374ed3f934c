// Package corpus reads the documents a shard serves and cuts them into the
// passages it indexes.
//
// # Input
//
// A corpus is JSON Lines, plain or gzip-compressed (detected by the gzip
// magic bytes, not by the file name): one JSON object per line, blank lines
// ignored. Each object must have a non-empty string "id" (without '#') and a
// non-blank string "text"; every other key becomes a field of the document,
// strings kept as they are and numbers and booleans as their JSON text. A
// null value is treated as absent. Bad input is reported as a [*LineError]
// naming the 1-based line. Reading is bounded (see [Limits]): a line longer
// than 4 MiB, or more than 1 GiB after decompression, is an error by default.
//
// # Passages
//
// Each document is split into passages of about 100 to 150 words, cut at
// sentence ends where possible (see [Passages] for the exact bounds). A
// passage's doc_id is "<id>#<nnn>", nnn being its 1-based number padded to
// three digits (more when a document has 1000 passages or more), and its
// fields are the document's fields plus [FieldSourceID] and [FieldPassage].
//
// # Partitions
//
// A corpus is spread over N shards by passage: passage d belongs to partition
// FNV-1a-64(d) mod N (see [PartitionOf]), so every passage lands in exactly
// one partition and the assignment never depends on the rest of the corpus.
//
// # Sources
//
// A [Source] is a corpus that can be read again: [Default] is the embedded
// corpus of State of the Union addresses, [File] a file on disk. A Source's
// [Source.Digest] identifies its bytes, so an index built from one corpus is
// never reused for another.
package corpus
