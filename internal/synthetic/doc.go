// Package synthetic provides a gather.shard.v1.ShardService that does no index work: it answers
// every query at once with deterministic, correctly ordered hits, after a delay drawn from a
// configurable [Latency] model. Served behind the proxy, it isolates the proxy's own cost and tail
// behaviour from the shards': whatever latency the proxy adds on top of the slowest shard's delay
// is the proxy's.
//
// # Hits
//
// The hits for a query depend only on the query text, the server's seed and top_k: two servers
// with the same seed and options answer alike, servers with different seeds answer differently,
// and so do different queries. They keep the ShardService ordering contract (score descending,
// ties by doc_id ascending, no doc_id twice, exactly top_k hits) and, like a real index, the
// answer for a smaller top_k is a prefix of the answer for a larger one. Each hit carries a text
// of a configurable length (default 200 bytes, about a passage) and two fields.
//
// Responses are built once per (query, top_k, first_batch_hits) and then reused, read-only, by every later call,
// concurrent ones included, up to a bound on the number of cached hits; so a warm server allocates
// next to nothing per call. This is safe because nothing writes to a message after it is built:
// gRPC and protobuf only read a message they send (grpc-go documents that a message must not be
// modified after SendMsg, since stats handlers may read it later, and sharing it read-only across
// goroutines is allowed by protobuf).
//
// # Latency
//
// The delay is taken before the first message, from a [Latency]: [Fixed], [LogNormal] or
// [SlowOneIn], or one parsed from a flag by [ParseLatency]. The wait ends as soon as the call's
// context does, and the call then fails with Canceled or DeadlineExceeded.
//
// The wait is a Go timer, which never ends early but may end up to about a millisecond late in a
// process with little else to do (the runtime's network poller sleeps in whole milliseconds), so
// sub-millisecond delays are coarse. To measure what the proxy adds, compare its answers' latency
// with the shard latencies it reports (as loadgen's Overhead does), not with the configured
// delay.
package synthetic
