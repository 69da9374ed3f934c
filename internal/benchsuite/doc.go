// Package benchsuite is the engine of `gather benchsuite` (and so of `make bench`): it measures,
// in one run on one machine, what a query through gather costs next to what the machine allows
// and next to the naive design gather replaces, and judges the performance targets of the issue
// that asked for it.
//
// # What runs
//
// Every measured server is a real process of the gather binary on 127.0.0.1, started by [Run]
// and killed and waited for on every exit path:
//
//   - synthetic shards (`gather shard --synthetic --latency none`), shared by every scenario: one
//     process per shard up to [ShardProcs] shards, several partitions per process beyond
//     (`--partitions`), so fan-out 64 and 128 do not spend the machine on a runtime per shard;
//   - the ceiling: a [Canned] QueryService that answers every Search with a prebuilt response of
//     the size of gather's answer, a raw grpc-go unary hop with the same payload and nothing
//     else (no interceptors, no metrics);
//   - gather itself (`gather proxy`) at each fan-out of [DefaultFanOuts] (or [Config].FanOuts);
//   - the baseline: a [Naive] QueryService, a unary-style fan-out as the old system's authors
//     would write it: call every shard, read each stream whole, wait for all, concatenate, sort,
//     cut.
//
// Each scenario (ceiling at top_k 10 and 100; gather and naive at each fan-out and top_k) gets a
// saturation run, a closed loop with enough workers to keep both cores busy, whose throughput is
// its QPS; then an open-loop run at half that rate, whose latencies and overhead (loadgen's
// latency added over the slowest shard) are what a caller sees at a sane load. At the targets'
// fan-out the ceiling is also run at gather's open-loop rates: a raw hop at the same load, the
// floor under gather's added latency. Every server runs for the whole of the scenarios, which
// run in [Config].Rounds rounds, each in an order rotated from the last; a ratio of two scenarios
// is taken within each round and judged on its median (see [Spread]), so that a verdict means
// the same on a rerun on a noisy machine. A [CostModel] is fitted to gather's CPU per query over
// the fan-outs and top_ks. Two memory measurements follow: the proxy's heap per in-flight query
// (shards slowed so queries stay in flight; at several fan-outs and top_ks) and the cost of 10,000
// idle QS connections. Each server process's CPU time and allocations per query come from its
// admin /metrics (and the proxy's hits received and decoded, when it counts them), and a CPU
// profile of the proxy can be taken at saturation.
//
// # Reading the numbers
//
// Everything shares the machine: the load generator (this process), the server under test and
// its shards compete for the same cores, so a query's cost is the whole machine's work for it.
// That is why QPS is compared with ceiling/(N+1): a query at fan-out N makes N+1 RPCs, each at
// least as expensive as the ceiling's one. Processes outside the suite disturb it; every
// measurement reports how many cores they kept busy, and [Config].QuietWait lets a run wait for
// them. Nothing here asserts speed; [Judge] compares numbers with the targets and reports MET or
// NOT MET.
package benchsuite
