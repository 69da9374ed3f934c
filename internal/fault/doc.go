// Package fault makes a ShardService server misbehave the way real shards do: answer late, stream
// slowly, hang, fail with a status code, or die mid-stream with a FIN or an RST on the wire.
//
// It wraps any ShardService implementation (the bleve shard, a test double) without touching it:
// a [Listener] tracks the TCP connections the gRPC server accepts, and an [Injector]'s stream
// interceptor applies the current [Spec] to each Search (or Pull) call, cutting the call's own
// connection when the spec says so.
//
//	lis, err := fault.Listen("tcp", "127.0.0.1:7071")
//	...
//	inj := fault.NewInjector(spec, lis) // spec from fault.ParseSpec("close-after=1,every=3")
//	srv := grpc.NewServer(inj.ServerOption())
//	shardv1.RegisterShardServiceServer(srv, impl)
//	err = srv.Serve(lis)
//
// A test switches a running shard between healthy and faulty with [Injector.Set], and cuts every
// connection at once (a killed process) with [Listener.ResetAll] or [Listener.CloseAll].
//
// The package starts no goroutines: every wait runs on the call's own handler goroutine and ends
// when the call's context does, so a fault never outlives its call.
package fault
