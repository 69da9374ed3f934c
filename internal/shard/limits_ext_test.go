package shard_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/corpus"
	"github.com/gatherproxy/gather/internal/shard"
	"github.com/gatherproxy/gather/internal/shardsvc"
	"github.com/gatherproxy/gather/internal/shardtest"
	"github.com/gatherproxy/gather/internal/wirecodec"
	"github.com/gatherproxy/gather/internal/wirecodec/wiretest"
)

// bigDocs returns n documents of one passage each (40 words) of about kb KB: every word is
// "apple" followed by kb*25 letters, so every document matches "apple" and is big.
func bigDocs(n, kb int) []testDoc {
	docs := make([]testDoc, n)
	for i := range docs {
		words := make([]string, 40)
		for j := range words {
			words[j] = "apple" + strings.Repeat(string(rune('a'+(i+j)%26)), kb*25)
		}
		docs[i] = testDoc{ID: fmt.Sprintf("big%02d", i), Year: 2000 + i, Text: strings.Join(words, " ") + " apple."}
	}
	return docs
}

// TestMessagesStayUnderTheLimit: hits of about 100 KB, 64 per message by count, must be split
// by bytes so that no message exceeds shardsvc.MaxMessageBytes (the proxy refuses more than 1 MiB).
func TestMessagesStayUnderTheLimit(t *testing.T) {
	t.Parallel()
	docs := bigDocs(12, 100)
	ix, err := shard.Open(context.Background(), t.TempDir()+"/index", corpus.FromBytes("big", jsonl(t, docs)), whole)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ix.Close() })
	c := startServer(t, ix)
	msgs, err := shardtest.Collect(t.Context(), c, "apple", 10)
	if err != nil {
		t.Fatal(err)
	}
	hits := checkContract(t, msgs, 10)
	if len(hits) != 10 {
		t.Fatalf("%d hits, want 10", len(hits))
	}
	total := 0
	for i, m := range msgs {
		size := proto.Size(m)
		total += size
		if size > shardsvc.MaxMessageBytes {
			t.Errorf("message %d is %d bytes, over the %d-byte limit", i, size, shardsvc.MaxMessageBytes)
		}
	}
	if total < 3*shardsvc.MaxMessageBytes || len(msgs) < 4 {
		t.Errorf("%d messages of %d bytes in all: the test needs an answer several messages long", len(msgs), total)
	}
}

// TestPassageTooLargeToServe: a passage no message can carry is refused when the index is built,
// naming it, instead of failing every query that finds it.
func TestPassageTooLargeToServe(t *testing.T) {
	t.Parallel()
	docs := append(testDocs(), bigDocs(1, 300)...)
	dir := t.TempDir() + "/index"
	_, err := shard.Open(context.Background(), dir, corpus.FromBytes("huge", jsonl(t, docs)), whole)
	if !errors.Is(err, shard.ErrPassageTooLarge) || !strings.Contains(err.Error(), "big00#001") {
		t.Errorf("got %v, want ErrPassageTooLarge naming big00#001", err)
	}
}

// TestInvalidUTF8: with gather's server codec, a query that is not UTF-8 reaches Validate and is
// answered INVALID_ARGUMENT, not grpc-go's INTERNAL.
func TestInvalidUTF8(t *testing.T) {
	t.Parallel()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(grpc.ForceServerCodecV2(wirecodec.New((&shardv1.SearchRequest{}).ProtoReflect().Type())))
	shardv1.RegisterShardServiceServer(srv, shard.NewServer(openIndex(t)))
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
		wg.Wait()
	})
	msgs, err := wiretest.ServerStream(t.Context(), conn, "/gather.shard.v1.ShardService/Search", wiretest.SearchRequest("apple \xed\xa0\x80", 3))
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || len(msgs) != 0 ||
		!strings.Contains(st.Message(), "query is not valid UTF-8 (bad byte at offset 6)") {
		t.Errorf("got %d messages, %v; want INVALID_ARGUMENT saying where the query is not UTF-8", len(msgs), err)
	}
	if msgs, err := wiretest.ServerStream(t.Context(), conn, "/gather.shard.v1.ShardService/Search", wiretest.SearchRequest("apple", 3)); err != nil || len(msgs) != 1 {
		t.Errorf("a valid query after: %d messages, %v", len(msgs), err)
	}
}

func TestQueryLimits(t *testing.T) {
	t.Parallel()
	ix := openIndex(t)
	for _, tc := range []struct {
		name string
		opts []shard.Option
		req  *shardv1.SearchRequest
		code codes.Code
		msg  string
	}{
		{"default query cap", nil, &shardv1.SearchRequest{Query: strings.Repeat("apple ", 200), TopK: 1}, codes.InvalidArgument,
			"query is 1200 bytes, above this shard's maximum of 1024"},
		{"raised query cap", []shard.Option{shard.WithMaxQueryBytes(2000)}, &shardv1.SearchRequest{Query: strings.Repeat("apple ", 200), TopK: 1}, codes.OK, ""},
		{"lowered query cap", []shard.Option{shard.WithMaxQueryBytes(4)}, &shardv1.SearchRequest{Query: "apple", TopK: 1}, codes.InvalidArgument,
			"query is 5 bytes"},
		{"default top_k cap", nil, &shardv1.SearchRequest{Query: "apple", TopK: 10000}, codes.InvalidArgument,
			"top_k 10000 is above this shard's maximum of 1000"},
		{"raised top_k cap", []shard.Option{shard.WithMaxTopK(10000)}, &shardv1.SearchRequest{Query: "apple", TopK: 10000}, codes.OK, ""},
	} {
		c := startServer(t, ix, tc.opts...)
		_, err := shardtest.Collect(t.Context(), c, tc.req.GetQuery(), tc.req.GetTopK())
		if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("%s: got %v, want %v containing %q", tc.name, err, tc.code, tc.msg)
		}
	}
}
