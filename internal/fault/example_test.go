package fault_test

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/fault"
)

func ExampleParseSpec() {
	spec, err := fault.ParseSpec("reset-after=1, delay=200ms, every=3")
	fmt.Println(spec, err)
	_, err = fault.ParseSpec("delay=soon")
	fmt.Println(err)
	// Output:
	// delay=200ms,reset-after=1,every=3 <nil>
	// bad fault spec: delay=soon: time: invalid duration "soon"
}

// twoBatches is a ShardService that answers every query with two one-hit messages.
type twoBatches struct {
	shardv1.UnimplementedShardServiceServer
}

func (twoBatches) Search(_ *shardv1.SearchRequest, stream grpc.ServerStreamingServer[shardv1.SearchResponse]) error {
	for i, id := range []string{"a", "b"} {
		if err := stream.Send(&shardv1.SearchResponse{Hits: []*shardv1.Hit{{DocId: id, Score: float64(2 - i)}}}); err != nil {
			return err
		}
	}
	return nil
}

// A shard switched from healthy to dying after its first batch, and back.
func ExampleInjector() {
	lis, err := fault.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	inj := fault.NewInjector(fault.Spec{}, lis)
	srv := grpc.NewServer(inj.ServerOption())
	shardv1.RegisterShardServiceServer(srv, twoBatches{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	defer func() { srv.Stop(); <-served }()

	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer func() { _ = cc.Close() }()
	client := shardv1.NewShardServiceClient(cc)
	// search prints what one call received. Under reset-after=1 the count is "at most 1": the
	// reset can reach the client before it has read the batch sent ahead of it, and a TCP reset
	// discards what the client had not read yet.
	search := func() {
		stream, err := client.Search(context.Background(), &shardv1.SearchRequest{Query: "q", TopK: 10})
		n := 0
		for err == nil {
			if _, err = stream.Recv(); err == nil {
				n++
			}
		}
		if errors.Is(err, io.EOF) {
			err = nil
		}
		if code := status.Code(err); code == codes.OK {
			fmt.Printf("%d messages, %v\n", n, code)
		} else {
			fmt.Printf("at most 1 message: %v, then %v\n", n <= 1, code)
		}
	}

	search()
	spec, err := fault.ParseSpec("reset-after=1")
	if err != nil {
		panic(err)
	}
	inj.Set(spec)
	search()
	inj.Set(fault.Spec{})
	search()
	// Output:
	// 2 messages, OK
	// at most 1 message: true, then Unavailable
	// 2 messages, OK
}
