// Package wirecodec is the protobuf codec of gather's gRPC servers. It decodes exactly as
// grpc-go's own, except for one case: a request whose only fault is a top-level string field
// that is not valid UTF-8.
//
// protobuf-go rejects such a message while decoding it, and grpc-go turns every decoding error
// into INTERNAL before any interceptor or handler runs, so a client that sent bad text was told
// the server had failed. For the message types it is given, this codec decodes such a request
// anyway, with the bytes as they came, so that the handler's own validation answers
// INVALID_ARGUMENT and says what is wrong. The handlers of those types must therefore check
// UTF-8 themselves (gather's QueryService and ShardService do). Any other decoding error, and
// any error in a message of another type, stays what grpc-go makes of it.
//
// The lenient decoding runs only after the normal one has failed, so a well-formed request costs
// what it costs with grpc-go's codec.
package wirecodec

import (
	"errors"
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Codec is a grpc-go CodecV2, for grpc.ForceServerCodecV2. Create it with New.
type Codec struct {
	base    encoding.CodecV2
	lenient map[protoreflect.FullName]bool
}

var _ encoding.CodecV2 = (*Codec)(nil)

// New returns a codec that decodes requests of the given types even when a top-level string
// field is not valid UTF-8. Their handlers must reject such requests.
func New(lenient ...protoreflect.MessageType) *Codec {
	c := &Codec{base: encoding.GetCodecV2(grpcproto.Name), lenient: make(map[protoreflect.FullName]bool, len(lenient))}
	for _, t := range lenient {
		c.lenient[t.Descriptor().FullName()] = true
	}
	return c
}

// Name is grpc-go's proto codec's: the content-subtype does not change.
func (c *Codec) Name() string { return grpcproto.Name }

// Marshal is grpc-go's proto codec's.
func (c *Codec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

// Unmarshal is grpc-go's proto codec's, falling back to a decoding that keeps invalid UTF-8 in
// top-level string fields for the lenient types.
func (c *Codec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.base.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok || !c.lenient[m.ProtoReflect().Descriptor().FullName()] {
		return err
	}
	if lerr := unmarshalKeepingInvalidUTF8(data.Materialize(), m); lerr != nil {
		return err // the message has other faults: report the original error
	}
	return nil
}

// errValidUTF8 says that a message that failed to decode has no invalid UTF-8 in its top-level
// strings, so its fault lies elsewhere.
var errValidUTF8 = errors.New("no top-level string field holds invalid UTF-8")

// unmarshalKeepingInvalidUTF8 decodes b into m with every singular top-level string field that
// is not valid UTF-8 taken aside, then sets those fields to their bytes as they came (protoreflect
// does not check UTF-8; only the wire decoder does).
func unmarshalKeepingInvalidUTF8(b []byte, m proto.Message) error {
	fields := m.ProtoReflect().Descriptor().Fields()
	type kept struct {
		fd protoreflect.FieldDescriptor
		v  string
	}
	var (
		rest []byte
		bad  []kept
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		vn := protowire.ConsumeFieldValue(num, typ, b[n:])
		if vn < 0 {
			return protowire.ParseError(vn)
		}
		field := b[:n+vn]
		b = b[n+vn:]
		if fd := fields.ByNumber(num); fd != nil && typ == protowire.BytesType &&
			fd.Kind() == protoreflect.StringKind && fd.Cardinality() != protoreflect.Repeated {
			if v, _ := protowire.ConsumeBytes(field[n:]); !utf8.Valid(v) {
				bad = append(bad, kept{fd, string(v)})
				continue
			}
		}
		rest = append(rest, field...)
	}
	if len(bad) == 0 {
		return errValidUTF8
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return err
	}
	for _, k := range bad {
		m.ProtoReflect().Set(k.fd, protoreflect.ValueOfString(k.v))
	}
	return nil
}

// InvalidUTF8At returns the byte offset of the first byte of s that is not part of valid UTF-8,
// or -1 if s is valid UTF-8. Handlers use it to say where the bad text is.
func InvalidUTF8At(s string) int {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return i
			}
		}
	}
	return -1
}
