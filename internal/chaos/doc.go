// Package chaos replays, on loopback and for a bounded time, the incident that took down the
// system gather replaces, against a running `gather demo`, and judges how the proxy came through.
//
// The incident: query clients (QS) with a 3 s timeout, shards slowed past it, more load than the
// proxy admits; the old proxy wrote results on blocking sockets without a timeout and never closed
// its side when QS closed, and ended with thousands of sockets in CLOSE_WAIT at 0% CPU. [Run]
// drives three phases:
//
//   - before: a probe client asks a healthy query every 100 ms and the proxy's admin /metrics is
//     read for the baseline (sockets by state, goroutines, heap);
//   - incident: the chosen shards are slowed past the QS timeout through the demo's fault
//     control (POST /debug/fault, see [FaultHandler]) while workers (started over a second) query in a loop with the QS
//     timeout, more of them than the proxy admits, all as one caller (see [CallerHeader]);
//     stallers open SearchStreams they never read, a hog keeps hundreds of them open on one
//     connection, and vanishers reach the proxy through a [Relay] that goes silent mid-query, as a
//     pulled cable does; the probe keeps asking, retrying after the proxy's RetryInfo hint when
//     shed, and counts how often it was shed before being admitted;
//     With [Config.Replicas] of 2 or more, against a demo with as many replicas per shard, only
//     replica 0 of each slow shard is slowed, and the proxy must route around it: every worker
//     query answered in full;
//   - recovery: the shards are healed, the load stops, every connection chaos opened except the
//     probe's is closed, and the proxy is polled until it is clean again.
//
// Against a `gather cluster` ([Config.Cluster]), the incident is a replica's death instead: no
// shard is slowed; a third of the way in, the cluster's control kills one shard replica process
// with SIGKILL and starts a new one on a new port ([ReplaceHandler]), and every worker query must
// still be answered in full, while etcd lists the dead replica until its lease expires and the
// proxy then follows the new topology.
//
// The [Report] holds the counts and the proxy's state before, at the peak and after, and its
// [Report.Checks] say whether the proxy came through clean. What chaos claims about the proxy it
// reads from the proxy's own metrics (socket states, goroutines, calls ended by the send
// watchdog), not from what its clients saw; a vanished connection counts as dropped when the
// proxy's FIN reaches the relay.
//
// Every goroutine Run starts is joined before it returns, every loop is bounded in time, and
// Run heals the shards on every path, so an interrupted run leaves the demo healthy.
package chaos
