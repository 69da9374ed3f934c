// Package faulttest holds gather's fault tests: a real proxy on loopback gRPC in front of fake
// shards, driven into every failure of the incident gather replaces (shards that hang, crawl,
// close or reset mid-stream; query clients that cancel, stop reading, vanish or abandon their
// connections). Each test asserts the answer's semantics and that nothing is left behind:
// goroutines back to their baseline, no socket of the process in CLOSE_WAIT, heap back.
//
// The tests run one after another, never in parallel, so that the goroutine and socket baselines
// belong to the test that takes them. The package has no non-test code but this file.
package faulttest
