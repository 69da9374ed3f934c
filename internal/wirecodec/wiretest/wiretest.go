// Package wiretest sends hand-made protobuf bytes over real gRPC connections, for tests of how
// servers answer requests that no protobuf library would encode (a string that is not UTF-8).
package wiretest

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// SearchRequest encodes a request with query as field 1 (bytes as given, valid UTF-8 or not)
// and topK as field 2: the wire form of both gather.query.v1.SearchRequest (and
// SearchStreamRequest) and gather.shard.v1.SearchRequest.
func SearchRequest(query string, topK uint32) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, query)
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(topK))
}

// Unary calls method ("/package.Service/Method") with req as the request's bytes and returns the
// response's bytes.
func Unary(ctx context.Context, conn *grpc.ClientConn, method string, req []byte) ([]byte, error) {
	var resp []byte
	err := conn.Invoke(ctx, method, req, &resp, grpc.ForceCodecV2(raw{}))
	return resp, err
}

// ServerStream calls the server-streaming method with req as the request's bytes, reads the
// stream to its end and returns the messages' bytes and the stream's error (nil after io.EOF).
func ServerStream(ctx context.Context, conn *grpc.ClientConn, method string, req []byte) ([][]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // a stream is released by reading it to an error or by cancelling it
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method, grpc.ForceCodecV2(raw{}))
	if err != nil {
		return nil, err
	}
	if err := st.SendMsg(req); err != nil {
		return nil, err
	}
	if err := st.CloseSend(); err != nil {
		return nil, err
	}
	var msgs [][]byte
	for {
		var m []byte
		if err := st.RecvMsg(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return msgs, nil
			}
			return msgs, err
		}
		msgs = append(msgs, m)
	}
}

// raw passes []byte through as the message.
type raw struct{}

func (raw) Name() string { return "proto" }

func (raw) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("wiretest: marshal %T, want []byte", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (raw) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("wiretest: unmarshal into %T, want *[]byte", v)
	}
	*p = data.Materialize()
	return nil
}
