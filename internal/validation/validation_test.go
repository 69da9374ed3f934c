package validation_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/validation"
	"github.com/gatherproxy/gather/internal/wirecodec"
	"github.com/gatherproxy/gather/internal/wirecodec/wiretest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// services answer every request that reaches them: Search with no hits, SearchStream and the
// shard's Search with one empty message; the query "handler-invalid" gets the handler's own
// INVALID_ARGUMENT. reached counts the calls that got to a handler.
type services struct {
	queryv1.UnimplementedQueryServiceServer
	reached atomic.Int64
}

func (s *services) Search(_ context.Context, req *queryv1.SearchRequest) (*queryv1.SearchResponse, error) {
	s.reached.Add(1)
	if req.GetQuery() == "handler-invalid" {
		return nil, status.Error(codes.InvalidArgument, "the handler's own words")
	}
	return &queryv1.SearchResponse{}, nil
}

func (s *services) SearchStream(_ *queryv1.SearchStreamRequest, st grpc.ServerStreamingServer[queryv1.SearchStreamResponse]) error {
	s.reached.Add(1)
	return st.Send(&queryv1.SearchStreamResponse{})
}

type shard struct {
	shardv1.UnimplementedShardServiceServer
	s *services
}

func (h shard) Search(_ *shardv1.SearchRequest, st grpc.ServerStreamingServer[shardv1.SearchResponse]) error {
	h.s.reached.Add(1)
	return st.Send(&shardv1.SearchResponse{})
}

func start(t *testing.T) (*grpc.ClientConn, *services) {
	t.Helper()
	v, err := validation.New(&queryv1.SearchRequest{}, &queryv1.SearchStreamRequest{}, &shardv1.SearchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(
		grpc.ForceServerCodecV2(wirecodec.New((&queryv1.SearchRequest{}).ProtoReflect().Type())),
		grpc.ChainUnaryInterceptor(v.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(v.StreamServerInterceptor()))
	s := &services{}
	queryv1.RegisterQueryServiceServer(srv, s)
	shardv1.RegisterShardServiceServer(srv, shard{s: s})
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
		wg.Wait()
	})
	return conn, s
}

// explained is what a client reads from a validation error.
type explained struct {
	code           codes.Code
	msg            string
	fields         []string // of google.rpc.BadRequest
	domain, reason string   // of google.rpc.ErrorInfo
	rules          []string // rule ids of buf.validate.Violations
}

func explain(err error) explained {
	st := status.Convert(err)
	e := explained{code: st.Code(), msg: st.Message()}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			for _, f := range d.GetFieldViolations() {
				e.fields = append(e.fields, f.GetField())
			}
		case *errdetails.ErrorInfo:
			e.domain, e.reason = d.GetDomain(), d.GetReason()
		case *validate.Violations:
			for _, v := range d.GetViolations() {
				e.rules = append(e.rules, v.GetRuleId())
			}
		}
	}
	return e
}

func TestRulesAndMessages(t *testing.T) {
	t.Parallel()
	conn, s := start(t)
	q := queryv1.NewQueryServiceClient(conn)
	sh := shardv1.NewShardServiceClient(conn)
	stream := func(req *queryv1.SearchStreamRequest) error {
		st, err := q.SearchStream(t.Context(), req)
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	shardSearch := func(req *shardv1.SearchRequest) error {
		st, err := sh.Search(t.Context(), req)
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	for _, tc := range []struct {
		name   string
		call   func() error
		msg    string
		fields []string
		domain string
		rules  []string
	}{
		{"blank query", func() error {
			_, err := q.Search(t.Context(), &queryv1.SearchRequest{Query: " \t\u00a0", TopK: 1})
			return err
		}, "invalid request: query is empty: give one or more words to search for", []string{"query"}, "gather.query.v1", []string{"query.not_blank"}},
		{"top_k 0", func() error {
			_, err := q.Search(t.Context(), &queryv1.SearchRequest{Query: "q"})
			return err
		}, "invalid request: top_k is 0: ask for at least 1 hit", []string{"top_k"}, "gather.query.v1", []string{"top_k.at_least_one"}},
		{"unknown policy", func() error {
			_, err := q.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 1, PartialPolicy: 9})
			return err
		}, "invalid request: partial_policy 9 is not a known PartialPolicy: use PARTIAL_POLICY_ALLOW or PARTIAL_POLICY_REQUIRE_FULL",
			[]string{"partial_policy"}, "gather.query.v1", []string{"partial_policy.known"}},
		{"negative shard_timeout", func() error {
			_, err := q.Search(t.Context(), &queryv1.SearchRequest{Query: "q", TopK: 1, ShardTimeout: durationpb.New(-1500 * time.Millisecond)})
			return err
		}, "invalid request: shard_timeout is negative (-1.5s): give a positive cap or leave it unset", []string{"shard_timeout"}, "gather.query.v1",
			[]string{"shard_timeout.not_negative"}},
		{"everything wrong, on SearchStream", func() error {
			return stream(&queryv1.SearchStreamRequest{PartialPolicy: -1, ShardTimeout: durationpb.New(-time.Second)})
		}, "invalid request: query is empty: give one or more words to search for; top_k is 0: ask for at least 1 hit; partial_policy -1 is not",
			[]string{"query", "top_k", "partial_policy", "shard_timeout"}, "gather.query.v1",
			[]string{"query.not_blank", "top_k.at_least_one", "partial_policy.known", "shard_timeout.not_negative"}},
		{"shard: blank query and top_k 0", func() error { return shardSearch(&shardv1.SearchRequest{}) },
			"invalid request: query is blank: send at least one word to search for; top_k is 0: ask for at least 1 hit",
			[]string{"query", "top_k"}, "gather.shard.v1", []string{"query.not_blank", "top_k.at_least_one"}},
	} {
		got := explain(tc.call())
		if got.code != codes.InvalidArgument || !strings.HasPrefix(got.msg, tc.msg) || strings.Join(got.fields, ",") != strings.Join(tc.fields, ",") ||
			got.domain != tc.domain || got.reason != validation.Reason || strings.Join(got.rules, ",") != strings.Join(tc.rules, ",") {
			t.Errorf("%s:\n got %+v\nwant InvalidArgument %q, fields %v, domain %s, rules %v", tc.name, got, tc.msg, tc.fields, tc.domain, tc.rules)
		}
	}
	if n := s.reached.Load(); n != 0 {
		t.Errorf("%d invalid requests reached a handler", n)
	}

	// Valid requests reach the handlers, and the handlers' own errors pass unchanged.
	if _, err := q.Search(t.Context(), &queryv1.SearchRequest{Query: "union", TopK: 1, PartialPolicy: 2, ShardTimeout: durationpb.New(0)}); err != nil {
		t.Errorf("a valid Search: %v", err)
	}
	if err := stream(&queryv1.SearchStreamRequest{Query: "union", TopK: 1}); err != nil {
		t.Errorf("a valid SearchStream: %v", err)
	}
	if err := shardSearch(&shardv1.SearchRequest{Query: "union", TopK: 1}); err != nil {
		t.Errorf("a valid shard Search: %v", err)
	}
	_, err := q.Search(t.Context(), &queryv1.SearchRequest{Query: "handler-invalid", TopK: 1})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message() != "the handler's own words" || len(st.Details()) != 0 {
		t.Errorf("the handler's own error came back as %v", err)
	}
	// Invalid UTF-8 is not a rule: it passes to the handler, which must refuse it (wirecodec).
	if _, err := wiretest.Unary(t.Context(), conn, "/gather.query.v1.QueryService/Search", wiretest.SearchRequest("\xff\xfe", 1)); err != nil {
		t.Errorf("invalid UTF-8 did not reach the handler: %v", err)
	}
	if n := s.reached.Load(); n != 5 {
		t.Errorf("%d calls reached a handler, want 5", n)
	}
}
