// Package admission bounds the queries a proxy works on at once and shares that bound fairly
// among its callers. A query that finds no slot for it waits a short, bounded time; past that it
// is shed with RESOURCE_EXHAUSTED and a retry hint, so overload shows up as fast, explicit
// refusals instead of a growing queue of callers that have long given up (the listen-queue
// overflows of the old system).
//
// # Callers and their share
//
// A caller is what [peerid.FromContext] names: an authenticated name, else the identity in the
// client certificate, else the connection. The Limiter counts, per caller, the slots it holds
// and the queries it has waiting; a caller with either is a caller with demand. Its fair share
// is MaxInFlight divided by the number of callers with demand, and it changes as callers come
// and go: a caller alone may use every slot, and a second one that shows up is entitled to half
// of them.
//
// Slots are never taken back from a query that holds one (a query cannot be paused), so fairness
// acts on the slots that free up:
//
//   - A query is admitted at once when a slot is free and no query waits. Nothing is reserved
//     for callers that are not asking, so a caller alone gets every slot.
//   - Otherwise it joins its caller's queue (first come, first served within a caller).
//   - A slot that frees goes straight to the waiting caller that holds the fewest slots, ties to
//     the caller whose oldest query has waited longest; it is never put back in a pool that a
//     newcomer could grab first. A caller at or over its share is therefore not admitted while
//     a caller holding fewer waits, and a light caller gets the next slot that frees however
//     many queries a heavy one has queued: holdings converge to the max-min fair allocation.
//   - A query that waited MaxWait without a slot is shed, unless it is the oldest waiting query
//     of a caller that holds less than its fair share: that one may wait up to 20 times MaxWait
//     (1s at the default), because it is next in line. Slots held by long queries free in
//     bursts, and a light caller that was shed and retried would miss the bursts that fall
//     between its tries (the probe of `gather chaos` was shed for its whole 3s budget that way).
//     One query per caller waits so, for a bounded time.
//   - A query that waited without a slot is shed. The error says why: the proxy was
//     full (the caller was under its share and no slot freed in time) or the caller was over
//     its share (slots freed, and went to callers that held fewer).
//
// The invariant that makes this work: while any query waits, every slot is held, because a
// freed slot is handed to a waiter under the same lock that frees it.
//
// What fairness cannot do: when one caller took every slot while alone, a newcomer waits for the
// first of those queries to end. Long holds (a SearchStream whose client does not read keeps its
// slot until the send watchdog ends it) are bounded per connection by the gRPC server's
// MaxConcurrentStreams, which the proxy sets below MaxInFlight so that no single connection can
// hold every slot (see the config package).
//
// Without client certificates every connection is a caller of its own, so a client that opens
// many connections gets many shares; give callers certificates (or an authenticating
// interceptor that calls peerid.NewContext) to make a service one caller.
//
// # Cost
//
// A query admitted at once costs one mutex acquisition, and its release another; it allocates
// its caller's name (peerid formats the connection's address) and its release function, and
// caller records are recycled. A query that waits also allocates its place in the queue and a
// timer. BenchmarkAcquire compares the path with the global semaphore it replaced.
//
// # Metrics
//
// gather_admission_in_flight_queries, gather_admission_max_in_flight_queries,
// gather_admission_waiting_queries, gather_admission_callers (callers with demand; the fair
// share is max_in_flight / callers), gather_admission_largest_caller_queries (the most slots one
// caller holds), gather_admission_shed_total{reason="full"|"over_share"|"cpu"} and
// gather_admission_wait_seconds; with Config.SchedTarget, gather_admission_limit_queries (the
// CPU bound), gather_admission_fresh_queries (what it bounds) and
// gather_admission_sched_latency_p99_seconds. None has a label per caller.
//
// # Following the CPU
//
// With Config.SchedTarget a second bound, on the queries admitted in the last 250ms and still
// running, follows the Go scheduler's latencies: see Limiter.adapt for the rule and why. It
// counts units of weight rather than queries when Config.Weight weighs them (the proxy uses
// ByTopK: a query for 1000 hits costs some 27 times one for 10).
package admission
