package faulttest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
)

// TestQSOversizedQuery: a 3 MiB query is refused by the transport with RESOURCE_EXHAUSTED
// (the largest valid request is about 1 KiB), reaches no shard, and leaves nothing behind.
func TestQSOversizedQuery(t *testing.T) {
	e := newEnv(t, options{}, healthy(0), healthy(1))
	b := e.takeBaseline(t)
	for range 5 {
		_, err := e.client.Search(t.Context(), &queryv1.SearchRequest{Query: strings.Repeat("q", 3<<20), TopK: 10})
		if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "larger than max") {
			t.Fatalf("a 3 MiB query: got %v, want ResourceExhausted saying the message is larger than the limit", err)
		}
	}
	for _, s := range e.shards {
		if s.Started() != 1 { // the warm-up query
			t.Errorf("shard %s saw %d calls, want only the warm-up", s.Addr(), s.Started())
		}
	}
	e.nothingLeft(t, b)
}

// TestQSOversizedMetadata: 8 MiB of request metadata is refused. A gRPC client learns the
// proxy's 16 KiB limit from its HTTP/2 settings and refuses to send; a raw HTTP/2 client that
// ignores the settings gets its stream or connection reset instead of a response, and the proxy
// holds none of it.
func TestQSOversizedMetadata(t *testing.T) {
	e := newEnv(t, options{}, healthy(0), healthy(1))
	b := e.takeBaseline(t)
	big := metadata.Pairs("x-big", strings.Repeat("m", 8<<20))
	_, err := e.client.Search(metadata.NewOutgoingContext(t.Context(), big), &queryv1.SearchRequest{Query: "q", TopK: 10})
	if st := status.Convert(err); st.Code() != codes.Internal || !strings.Contains(st.Message(), "header list size") {
		t.Errorf("gRPC client with 8 MiB of metadata: got %v, want Internal about the header list size", err)
	}
	if got := rawOversizedHeaders(t, e.addr, 8<<20); got != "" {
		t.Fatalf("raw client with 8 MiB of headers: %s", got)
	}
	for _, s := range e.shards {
		if s.Started() != 1 {
			t.Errorf("shard %s saw %d calls, want only the warm-up", s.Addr(), s.Started())
		}
	}
	e.nothingLeft(t, b)
}

// rawOversizedHeaders sends a Search call with a header of n bytes over a plain HTTP/2
// connection, ignoring the server's settings, and returns "" if the server refused it (reset
// the stream, went away or closed the connection) or what it did instead.
func rawOversizedHeaders(t *testing.T, addr string, n int) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if err := conn.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/gather.query.v1.QueryService/Search"},
		{":authority", addr}, {"content-type", "application/grpc"}, {"te", "trailers"}, {"x-big", strings.Repeat("m", n)}} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			t.Fatal(err)
		}
	}
	req, err := proto.Marshal(&queryv1.SearchRequest{Query: "q", TopK: 10})
	if err != nil {
		t.Fatal(err)
	}
	body := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(req)))
	body = append(body, req...)

	fr := http2.NewFramer(conn, conn)
	written := make(chan struct{})
	go func() {
		defer close(written)
		// The server may close the connection mid-way: writes then fail, which is the point.
		_ = func() error {
			if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
				return err
			}
			if err := fr.WriteSettings(); err != nil {
				return err
			}
			const frag = 16 << 10
			rest := block.Bytes()
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rest[:frag]}); err != nil {
				return err
			}
			for rest = rest[frag:]; len(rest) > 0; {
				k := min(frag, len(rest))
				if err := fr.WriteContinuation(1, k == len(rest), rest[:k]); err != nil {
					return err
				}
				rest = rest[k:]
			}
			return fr.WriteData(1, true, body)
		}()
	}()
	defer func() { <-written }()
	for {
		f, err := fr.ReadFrame()
		var se http2.StreamError
		switch {
		case errors.As(err, &se):
			continue
		case err != nil:
			return "" // the connection was closed
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				return ""
			}
		case *http2.GoAwayFrame:
			return ""
		case *http2.HeadersFrame:
			if f.StreamID == 1 {
				return fmt.Sprintf("the server answered the call (HEADERS, end of stream %v)", f.StreamEnded())
			}
		}
	}
}
