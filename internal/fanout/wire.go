package fanout

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
)

// MaxHeaderBytes bounds the header list (headers or trailers, with the status message) a shard
// may send on one call: grpc-go would accept 16 MiB. gRPC servers honour the limit the proxy
// advertises by resetting the stream instead (the call fails as INTERNAL); a peer that ignores it
// is refused as a protocol violation.
const MaxHeaderBytes = 16 << 10

// codec is the codec of one shard call: protobuf, as grpc-go's default codec, except that each
// SearchResponse is looked over before it is decoded (see scan), and unknown fields are dropped
// while decoding rather than kept, uncounted, with the hits. It is used by the call's receiving
// goroutine only.
type codec struct {
	base      encoding.CodecV2 // grpc-go's proto codec, for the request
	topK      int
	maxFields int
	// refused is why the last response was not decoded; the stream reports it instead of grpc-go's
	// INTERNAL "failed to unmarshal".
	refused error
}

var discardUnknown = proto.UnmarshalOptions{DiscardUnknown: true}

// Name is the content-subtype of the call ("application/grpc+proto"), which every gRPC server
// accepts for protobuf.
func (c *codec) Name() string { return c.base.Name() }

// Marshal encodes the request as grpc-go does.
func (c *codec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

// Unmarshal decodes one response message.
func (c *codec) Unmarshal(data mem.BufferSlice, v any) error {
	resp, ok := v.(*shardv1.SearchResponse)
	if !ok {
		return c.base.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	b := buf.ReadOnlyData()
	if err := c.scan(b); err != nil {
		c.refused = err
		return err
	}
	return discardUnknown.Unmarshal(b, resp)
}

// scan refuses an encoded SearchResponse whose decoding could allocate more than the call's
// limits allow, before anything is allocated: one of more than top_k hits, or with a hit of more
// than MaxFields field entries. A hit costs about 110 bytes of heap however short its encoding
// (2 bytes), a field entry about 80 (from 4), so these two counts, not the message's size, bound
// what decoding a message can take besides the bytes of its strings. Malformed input is left to
// the decoder to report.
func (c *codec) scan(b []byte) error {
	hits := 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType { // not a hit
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil
			}
			b = b[n:]
			continue
		}
		hit, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if hits++; hits > c.topK {
			return fmt.Errorf("%w (%d): a single message carries more", ErrTooMany, c.topK)
		}
		entries := 0
		for len(hit) > 0 {
			num, typ, n := protowire.ConsumeTag(hit)
			if n < 0 {
				return nil
			}
			hit = hit[n:]
			if num == 4 && typ == protowire.BytesType {
				if entries++; entries > c.maxFields {
					return fmt.Errorf("%w: a hit with more than %d field entries, over max_hit_fields",
						ErrOverLimit, c.maxFields)
				}
			}
			if n = protowire.ConsumeFieldValue(num, typ, hit); n < 0 {
				return nil
			}
			hit = hit[n:]
		}
	}
	return nil
}

// overLimit translates the errors with which grpc-go refuses what a shard sends into ErrOverLimit
// violations naming the limit; other errors are returned as they are.
func overLimit(err error, maxMessage int) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch {
	case st.Code() == codes.ResourceExhausted && strings.HasPrefix(st.Message(), "grpc: received message"):
		return fmt.Errorf("%w: a message over max_shard_message_bytes (%d) (%s)", ErrOverLimit, maxMessage, st.Message())
	case st.Code() == codes.Internal && st.Message() == "peer header list size exceeded limit":
		return fmt.Errorf("%w: headers or trailers over %d bytes", ErrOverLimit, MaxHeaderBytes)
	}
	return err
}
