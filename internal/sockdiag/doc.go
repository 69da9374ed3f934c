// Package sockdiag reports the running process's TCP sockets by state and the kernel's
// listen-queue counters, read from procfs, so that the failure that killed gather's predecessor
// (thousands of sockets stuck in CLOSE_WAIT, accept queues overflowing) shows on a dashboard and
// in `gather diag` instead of being reconstructed with netstat and awk.
//
// A Reader takes a Snapshot; a Collector exports a fresh one on every Prometheus scrape;
// ParseMetrics turns the scraped text back into a Snapshot and Snapshot.WriteTable prints it.
//
// What is counted, and the caveats:
//
//   - Snapshot.Sockets counts the sockets this process holds open: the lines of
//     /proc/<pid>/net/tcp and tcp6 whose inode is the target of one of the process's
//     /proc/<pid>/fd/* symlinks ("socket:[INODE]"). A socket reached through several fds counts
//     once. Some states never appear here: a TIME_WAIT socket, a half-open SYN_RECV handshake, a
//     connection still waiting in the accept queue and a connection that close() has orphaned
//     (FIN_WAIT1/2, LAST_ACK, CLOSING after close) have no socket inode, so no process owns them.
//   - Snapshot.ListenerUnowned counts exactly those inode-less sockets, but only the ones whose
//     local address is one this process listens on: they are connections to our servers that the
//     kernel still tracks. This is how TIME_WAIT is attributed: a TIME_WAIT left by a connection
//     the process dialed (to a shard, say) has an ephemeral local port and cannot be told apart
//     from any other process's, so it is not counted anywhere. The attribution is by address, not
//     by ownership: another process sharing the port through SO_REUSEPORT, or the previous
//     instance of gather that listened on the same port, is counted too.
//   - Snapshot.ListenOverflows and ListenDrops are the TcpExt counters of /proc/<pid>/net/netstat:
//     cumulative since boot and shared by every process in the network namespace (the whole host,
//     unless the process runs in its own namespace as in a Kubernetes pod). They tell that some
//     accept queue overflowed, not that ours did.
//
// A snapshot is not atomic: the fd table is read before the socket tables, and sockets opened or
// closed in between may be missed. Reading tcp and tcp6 makes the kernel walk its whole TCP hash
// table, sized by memory and not by use: expect milliseconds per Read even with few sockets
// (about 5 ms per table on a large host; see BenchmarkReadReal), more with many. Read on demand
// (a scrape, `gather diag`), not in a loop.
//
// On a system without procfs (not Linux, or a sandbox) Read reports Available false with an error
// wrapping ErrUnavailable, and the Collector exports gather_sockdiag_up 0; neither panics.
package sockdiag
