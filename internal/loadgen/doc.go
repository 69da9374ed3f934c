// Package loadgen drives load against a gather.query.v1.QueryService and measures its latency
// distribution, throughput and error classes: the engine of `gather bench`.
//
// # Closed and open loop
//
// A closed loop ([Closed]) runs Workers goroutines, each sending its next request as soon as the
// previous one is answered, so at most Workers requests are outstanding and the offered load
// adapts to the target's speed. Latency is measured from the moment each request is sent. This
// finds the throughput ceiling, but its latencies flatter a target that stalls: while the target
// is stuck, the workers are stuck with it and send nothing, so the requests that a real client
// population would have sent during the stall, and that would have waited, are never measured.
// This is coordinated omission: the tail is hidden exactly when it matters.
//
// An open loop ([Open]) sends requests on a fixed schedule, Rate per second, whatever the target
// does, and measures each request's latency from its intended start time on that schedule, not
// from when it was actually sent. When the target falls behind, requests wait for one of the
// MaxOutstanding slots, and that wait is part of their latency, as it would be for real callers
// arriving at that rate. The number of requests in flight is bounded by MaxOutstanding, and the
// schedule is a counter, not a queue, so an overloaded target cannot make the generator's memory
// grow. Requests that the schedule called for within the measured window but that could not be
// sent by shortly after its end (50ms), because every slot stayed taken, are counted as dropped:
// a non-zero Dropped means the target could not sustain the rate, and the latencies of the
// requests that were sent already show the growing backlog.
//
// Only the target's delays are charged, not the generator's own: a request sent late because the
// generator's timer woke late (Go timers are about 1ms coarse in an otherwise idle process) or
// its goroutine was not scheduled, while a slot was free, counts from when it was sent. The
// pacing has the same granularity: at rates above about 1000/s, requests that fall due together
// are sent back to back.
//
// # What is measured
//
// Each request ends in one class: ok (an answer with full coverage), degraded (an answer whose
// coverage.degraded is set), shed (RESOURCE_EXHAUSTED: the proxy refused it for lack of
// capacity) or failed (any other error, counted by gRPC code, the per-request Timeout's
// DEADLINE_EXCEEDED included). Latencies go into HDR histograms (1µs to 60s, 3 significant
// digits), one over every completed request and one over the ok ones only, since fast refusals
// would otherwise flatter the overall distribution. A third histogram holds the overhead of each
// answered request: its round trip less the latency of the slowest shard as the proxy reports it
// in the answer, that is, the latency the proxy and the network added, whatever the shards did.
// Requests started during Warmup are sent but not counted. Requests cut short because Run's
// context ended are counted as interrupted, not failed.
//
// # Lifetime
//
// [Run] returns when the run is over: every goroutine it started has returned and every request
// it sent has finished (each is bounded by the per-request Timeout). If its context ends first it
// stops sending, cancels the requests in flight, and returns what it measured so far, with
// Result.Canceled set.
package loadgen
