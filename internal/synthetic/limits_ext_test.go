package synthetic_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gatherproxy/gather/internal/shardsvc"
	"github.com/gatherproxy/gather/internal/shardtest"
	"github.com/gatherproxy/gather/internal/synthetic"
)

// TestMessagesStayUnderTheLimit: with the longest texts, 64 hits per message by count would be
// 4 MB; messages are split by bytes instead, and the contract holds across them.
func TestMessagesStayUnderTheLimit(t *testing.T) {
	t.Parallel()
	s := start(t, synthetic.New(1, synthetic.WithTextBytes(synthetic.MaxTextBytes+1000)))
	msgs, err := shardtest.Collect(t.Context(), s.client, "union", 40)
	if err != nil {
		t.Fatal(err)
	}
	hits := shardtest.HitsOf(msgs)
	if v := shardtest.ContractViolation(hits, 40); v != "" || len(hits) != 40 {
		t.Fatalf("%d hits, contract: %s", len(hits), v)
	}
	if got := len(hits[0].GetText()); got != synthetic.MaxTextBytes {
		t.Errorf("text of %d bytes, want the maximum %d", got, synthetic.MaxTextBytes)
	}
	for i, m := range msgs {
		if size := proto.Size(m); size > shardsvc.MaxMessageBytes {
			t.Errorf("message %d is %d bytes, over the %d-byte limit", i, size, shardsvc.MaxMessageBytes)
		}
	}
	if len(msgs) < 10 {
		t.Errorf("%d messages for 40 hits of 64 KiB: not split by bytes", len(msgs))
	}
}

func TestQueryLimits(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("union ", 200)
	for _, tc := range []struct {
		name  string
		srv   *synthetic.Server
		query string
		topK  uint32
		want  codes.Code
	}{
		{"default query cap", synthetic.New(1), long, 1, codes.InvalidArgument},
		{"raised query cap", synthetic.New(1, synthetic.WithMaxQueryBytes(4096)), long, 1, codes.OK},
		{"default top_k cap", synthetic.New(1), "q", 1001, codes.InvalidArgument},
		{"raised top_k cap", synthetic.New(1, synthetic.WithMaxTopK(2000)), "q", 1001, codes.OK},
	} {
		s := start(t, tc.srv)
		if _, err := shardtest.Collect(t.Context(), s.client, tc.query, tc.topK); status.Code(err) != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}
