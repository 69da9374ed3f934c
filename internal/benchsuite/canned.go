package benchsuite

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/synthetic"
)

// Defaults of the canned answer's shape.
const (
	// DefaultCannedShards is the number of ShardResults in a canned answer: the fan-out of the
	// first target.
	DefaultCannedShards = 4
	// MaxCannedTopK is the largest top_k a Canned answers, gather's default maximum.
	MaxCannedTopK = 1000
	// cannedQuery is the query whose synthetic hits make up a canned answer.
	cannedQuery = "union"
	// cannedTook is the canned answer's took: a sub-millisecond value, like gather's.
	cannedTook = 345 * time.Microsecond
)

// Canned is the ceiling's QueryService: every Search is answered at once with a prebuilt
// response of the size gather answers with at that top_k, built once per top_k and then shared
// read-only by every call (gRPC only reads a message it sends). It does no other work, so a run
// against it measures a raw grpc-go unary hop carrying gather's payload. Create it with
// [NewCanned]; it is safe for concurrent use.
type Canned struct {
	queryv1.UnimplementedQueryServiceServer
	shards, textBytes int

	mu  sync.Mutex
	byK map[uint32]*queryv1.SearchResponse
}

// NewCanned returns a Canned whose answers list shards ShardResults and carry hits with
// textBytes of text each (synthetic.DefaultTextBytes is what `gather shard --synthetic` sends).
func NewCanned(shards, textBytes int) *Canned {
	return &Canned{shards: max(shards, 1), textBytes: textBytes, byK: map[uint32]*queryv1.SearchResponse{}}
}

// Search answers with the canned response for the request's top_k; a top_k of 0 or above
// MaxCannedTopK is INVALID_ARGUMENT.
func (c *Canned) Search(_ context.Context, req *queryv1.SearchRequest) (*queryv1.SearchResponse, error) {
	k := req.GetTopK()
	if k == 0 || k > MaxCannedTopK {
		return nil, status.Errorf(codes.InvalidArgument, "top_k %d: want 1 to %d", k, MaxCannedTopK)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	resp, ok := c.byK[k]
	if !ok {
		resp = CannedResponse(int(k), c.shards, c.textBytes)
		c.byK[k] = resp
	}
	return resp, nil
}

// CannedResponse builds the answer gather gives at fan-out shards and top_k topK when its shards
// are synthetic ones with textBytes of text per hit: the global top topK of shards synthetic
// servers (seeds 1 to shards, as `gather shard --synthetic --partition I/N` uses), with coverage,
// total matches and one OK ShardResult per shard whose name and replica address are as long as
// the suite's. The shard latencies are 0, so that loadgen's overhead of a call to it is the
// whole round trip.
func CannedResponse(topK, shards, textBytes int) *queryv1.SearchResponse {
	replies := make([]ShardReply, shards)
	for i := range replies {
		srv := synthetic.New(uint64(i)+1, synthetic.WithTextBytes(textBytes))
		hits := srv.Hits(cannedQuery, topK)
		replies[i] = ShardReply{
			Shard:        ShardName(i),
			Replica:      fmt.Sprintf("127.0.0.1:%d", 40000+i),
			Hits:         hits,
			TotalMatches: 150_000,
			Documents:    synthetic.DefaultDocuments,
		}
	}
	resp := NaiveAnswer(replies, uint32(topK))
	resp.Took = durationpb.New(cannedTook) // as long on the wire as gather's

	return resp
}

// ShardName is the name the suite gives its i-th shard on the proxy and the baseline.
func ShardName(i int) string { return fmt.Sprintf("shard-%d", i) }
