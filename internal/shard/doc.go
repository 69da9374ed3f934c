// Package shard is the reference index shard: a bleve index of one corpus
// partition ([Index], made by [Open]) and the gather.shard.v1.ShardService
// that serves it ([Server]).
//
// # Index lifecycle
//
// [Open] builds a partition's index once into a directory and reopens it on
// later starts. The index is built into a temporary directory beside the
// final one and renamed into place only when complete, with a meta file
// recording the corpus digest, the partition, the mapping version and the
// size and CRC-32C of every file of the index; an index whose meta file is
// missing or does not match, or whose files do not match their checksums, is
// rebuilt, never reused (a damaged segment can pass bleve's checks on open
// and panic a later search). A built index is opened read-only and never
// changes.
//
// # Scoring
//
// Hits are scored with bleve's BM25 (k1 = 1.2, b = 0.75) over the English
// analysis of the passage text (lower-casing, stop words, Porter stemming).
// Scores are computed from this partition's statistics alone, so they are
// comparable across shards only roughly; see [Index.Search] for a caveat
// about bleve's average field length.
package shard
