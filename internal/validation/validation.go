// Package validation checks requests at the gRPC edge against the protovalidate rules written in
// gather's protos, with go-grpc-middleware's protovalidate interceptor, and answers a violation
// the way gather's services answer their own validation errors: INVALID_ARGUMENT with the message
// "invalid request: " and what to fix, and google.rpc.BadRequest (the field at fault) and
// google.rpc.ErrorInfo (reason INVALID_REQUEST, the API's package as domain) as details, next to
// protovalidate's own buf.validate.Violations.
//
// Only static rules are written in the protos: a blank query, a top_k of 0, an unknown
// partial_policy, a negative shard_timeout. What is configured (the query size and top_k
// limits) and what the codec lets through for the handlers to refuse (a query that is not
// UTF-8, see package wirecodec) stays in the services' Go code, which also keeps the static
// checks for callers that reach a handler without this interceptor.
package validation

import (
	"context"
	"fmt"
	"strings"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	pvinterceptor "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/protovalidate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/anypb"
)

// Reason is the google.rpc.ErrorInfo reason of a request that breaks a rule, as for the
// services' own validation errors.
const Reason = "INVALID_REQUEST"

// Validator validates the requests of the gRPC servers whose interceptors it provides. Create it
// with New; it is safe for concurrent use, and compiles each message type's rules once, on first
// use.
type Validator struct {
	v protovalidate.Validator
}

// New returns a Validator for the rules of every message type linked into the program. The
// rules of the types of warm are compiled now rather than on their first request (which then
// takes about 15 ms).
func New(warm ...proto.Message) (*Validator, error) {
	v, err := protovalidate.New(protovalidate.WithMessages(warm...))
	if err != nil {
		return nil, fmt.Errorf("protovalidate: %w", err)
	}
	return &Validator{v: v}, nil
}

// UnaryServerInterceptor validates the request of a unary call before the handler runs.
func (v *Validator) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	inner := pvinterceptor.UnaryServerInterceptor(v.v)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := inner(ctx, req, info, handler)
		return resp, explain(info.FullMethod, err)
	}
}

// StreamServerInterceptor validates every message a streaming call receives, when the handler
// receives it (for a server-streaming call: before the handler sees the request).
func (v *Validator) StreamServerInterceptor() grpc.StreamServerInterceptor {
	inner := pvinterceptor.StreamServerInterceptor(v.v)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return explain(info.FullMethod, inner(srv, ss, info, handler))
	}
}

// violationsType is the type URL of protovalidate's error detail.
const violationsType = "type.googleapis.com/buf.validate.Violations"

// explain rewrites the INVALID_ARGUMENT of a rule violation into gather's form, and returns any
// other error (the handler's own, or nil) unchanged. It looks at the details' type URLs before
// decoding anything, so that the handler's errors cost nothing more.
func explain(method string, err error) error {
	if err == nil || status.Code(err) != codes.InvalidArgument {
		return err
	}
	st := status.Convert(err)
	var vs validate.Violations
	found := false
	for _, d := range st.Proto().GetDetails() {
		if d.GetTypeUrl() == violationsType {
			found = anypb.UnmarshalTo(d, &vs, proto.UnmarshalOptions{}) == nil
			break
		}
	}
	if !found || len(vs.GetViolations()) == 0 {
		return err
	}
	var (
		msgs, fields []string
		br           errdetails.BadRequest
	)
	for _, v := range vs.GetViolations() {
		field := protovalidate.FieldPathString(v.GetField())
		msg := v.GetMessage()
		if field != "" && !strings.HasPrefix(msg, field) {
			msg = field + ": " + msg
		}
		msgs, fields = append(msgs, msg), append(fields, field)
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: field, Description: msg})
	}
	out := status.New(codes.InvalidArgument, "invalid request: "+strings.Join(msgs, "; "))
	details := []protoadapt.MessageV1{
		&br,
		&errdetails.ErrorInfo{Reason: Reason, Domain: domain(method), Metadata: map[string]string{"field": strings.Join(fields, ",")}},
		protoadapt.MessageV1Of(&vs),
	}
	if withDetails, derr := out.WithDetails(details...); derr == nil {
		out = withDetails
	}
	return out.Err()
}

// domain is the proto package of a full method name: "/gather.query.v1.QueryService/Search" is
// in "gather.query.v1", the ErrorInfo domain of the proxy's own errors.
func domain(method string) string {
	svc, _, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	if i := strings.LastIndexByte(svc, '.'); i > 0 {
		return svc[:i]
	}
	return svc
}
