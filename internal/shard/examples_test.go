package shard_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/corpus"
	"github.com/gatherproxy/gather/internal/shard"
)

func ExampleOpen() {
	tmp, err := os.MkdirTemp("", "shard-example")
	if err != nil {
		log.Fatal(err)
	}
	err = func() (err error) {
		src := corpus.FromBytes("example", []byte(`{"id": "a", "text": "Apples grow on trees in the orchard."}
{"id": "b", "text": "Bananas and apples are sold at the market."}
{"id": "c", "text": "The river runs to the sea."}
`))
		ix, err := shard.Open(context.Background(), filepath.Join(tmp, "index-0of1"), src, corpus.Partition{Index: 0, Count: 1})
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, ix.Close()) }()

		res, err := ix.Search(context.Background(), "apple market", 10)
		if err != nil {
			return err
		}
		fmt.Printf("%d of %d passages match\n", res.Total, res.Documents)
		for _, h := range res.Hits {
			fmt.Println(h.DocID, h.Fields["source_id"], h.Text)
		}
		return nil
	}()
	_ = os.RemoveAll(tmp) // a leftover temporary directory is harmless
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// 2 of 3 passages match
	// b#001 b Bananas and apples are sold at the market.
	// a#001 a Apples grow on trees in the orchard.
}

func ExampleNewServer() {
	tmp, err := os.MkdirTemp("", "shard-example")
	if err != nil {
		log.Fatal(err)
	}
	err = func() (err error) {
		ix, err := shard.Open(context.Background(), filepath.Join(tmp, "index"), corpus.FromBytes("example",
			[]byte(`{"id": "a", "text": "Hello, world."}`)), corpus.Partition{Index: 0, Count: 1})
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, ix.Close()) }() // after the server has stopped

		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := grpc.NewServer()
		shardv1.RegisterShardServiceServer(srv, shard.NewServer(ix, shard.WithHitsPerMessage(32)))
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.Serve(lis)
		}()
		fmt.Println("serving", ix.Info().Documents, "passages")

		srv.GracefulStop()
		<-done
		return nil
	}()
	_ = os.RemoveAll(tmp) // a leftover temporary directory is harmless
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// serving 1 passages
}
