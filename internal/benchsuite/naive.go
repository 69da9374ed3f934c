package benchsuite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
)

// Shard is one shard a [Naive] fans out to.
type Shard struct {
	Name string
	Addr string
}

// Naive is the baseline QueryService, written the way the authors of the system gather replaces
// would write a fan-out: for every Search it calls every shard, reads each shard's stream whole
// into memory (a unary call in all but name), waits for all of them with a sync.WaitGroup, with
// no deadline per shard beyond the caller's, concatenates every hit, sorts the lot with
// sort.Slice and cuts top_k. Its connections are plain grpc.NewClient ones: no keepalive, no
// interceptors. It fills coverage and one ShardResult per shard with the shard's latency, like
// gather, so that loadgen's overhead means the same for both.
//
// It is safe for concurrent use. Close closes the shard connections.
type Naive struct {
	queryv1.UnimplementedQueryServiceServer
	shards []naiveShard
}

type naiveShard struct {
	Shard
	conn   *grpc.ClientConn
	client shardv1.ShardServiceClient
}

// NewNaive returns a Naive over shards, in the given order (the order of its ShardResults).
// Connections are made lazily, on the first call.
func NewNaive(shards []Shard) (*Naive, error) {
	if len(shards) == 0 {
		return nil, errors.New("naive: no shards")
	}
	n := &Naive{}
	for _, s := range shards {
		conn, err := grpc.NewClient(s.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			_ = n.Close()
			return nil, fmt.Errorf("shard %s at %s: %w", s.Name, s.Addr, err)
		}
		n.shards = append(n.shards, naiveShard{Shard: s, conn: conn, client: shardv1.NewShardServiceClient(conn)})
	}
	return n, nil
}

// Close closes every shard connection.
func (n *Naive) Close() error {
	var errs []error
	for _, s := range n.shards {
		if err := s.conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("shard %s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Search asks every shard, waits for all, and answers with the sorted top_k. It fails with
// UNAVAILABLE when no shard answered, and with the caller's own status when its context ended.
func (n *Naive) Search(ctx context.Context, req *queryv1.SearchRequest) (*queryv1.SearchResponse, error) {
	start := time.Now()
	if strings.TrimSpace(req.GetQuery()) == "" || req.GetTopK() == 0 {
		return nil, status.Error(codes.InvalidArgument, "want a query and a top_k of at least 1")
	}
	replies := make([]ShardReply, len(n.shards))
	var wg sync.WaitGroup
	for i := range n.shards {
		wg.Go(func() { replies[i] = n.shards[i].fetch(ctx, req.GetQuery(), req.GetTopK()) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	resp := NaiveAnswer(replies, req.GetTopK())
	resp.Took = durationpb.New(time.Since(start))
	if resp.GetCoverage().GetShardsSucceeded() == 0 {
		return nil, status.Errorf(codes.Unavailable, "no shard answered: %s", replies[0].Err)
	}
	return resp, nil
}

// fetch reads one shard's whole answer.
func (s *naiveShard) fetch(ctx context.Context, query string, topK uint32) (r ShardReply) {
	r = ShardReply{Shard: s.Name, Replica: s.Addr}
	start := time.Now()
	defer func() { r.Latency = time.Since(start) }()
	stream, err := s.client.Search(ctx, &shardv1.SearchRequest{Query: query, TopK: topK})
	if err != nil {
		r.Err = err
		return r
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return r
		}
		if err != nil {
			r.Err = err
			return r
		}
		if len(r.Hits) == 0 {
			r.TotalMatches, r.Documents = msg.GetTotalMatches(), msg.GetDocuments()
		}
		r.Hits = append(r.Hits, msg.GetHits()...)
	}
}

// ShardReply is one shard's whole answer as [Naive] read it.
type ShardReply struct {
	Shard, Replica          string
	Hits                    []*shardv1.Hit
	TotalMatches, Documents uint64
	Latency                 time.Duration
	// Err is why the call failed; the hits received before it are still merged.
	Err error
}

// NaiveAnswer is the naive merge: every hit of every reply in one slice, sorted with sort.Slice
// (score descending, doc_id ascending, shard ascending, gather's order), cut to topK, plus
// coverage and one ShardResult per reply. Took is left unset. The hits share their text and
// fields with the replies.
func NaiveAnswer(replies []ShardReply, topK uint32) *queryv1.SearchResponse {
	type tagged struct {
		hit   *shardv1.Hit
		shard string
	}
	var all []tagged
	resp := &queryv1.SearchResponse{
		Coverage: &queryv1.Coverage{ShardsTotal: uint32(len(replies))},
		Shards:   make([]*queryv1.ShardResult, 0, len(replies)),
	}
	for _, r := range replies {
		for _, h := range r.Hits {
			all = append(all, tagged{h, r.Shard})
		}
		sr := &queryv1.ShardResult{
			Shard:        r.Shard,
			Status:       replyStatus(r.Err),
			Replica:      r.Replica,
			Hits:         uint32(len(r.Hits)),
			Latency:      durationpb.New(r.Latency),
			TotalMatches: r.TotalMatches,
		}
		if r.Err != nil {
			sr.Error = r.Err.Error()
		} else {
			resp.Coverage.ShardsSucceeded++
			resp.Coverage.DocumentsSearched += r.Documents
		}
		resp.TotalMatches += r.TotalMatches
		resp.Shards = append(resp.Shards, sr)
	}
	resp.Coverage.Degraded = resp.Coverage.ShardsSucceeded < resp.Coverage.ShardsTotal
	sort.Slice(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if a.hit.GetScore() != b.hit.GetScore() {
			return a.hit.GetScore() > b.hit.GetScore()
		}
		if a.hit.GetDocId() != b.hit.GetDocId() {
			return a.hit.GetDocId() < b.hit.GetDocId()
		}
		return a.shard < b.shard
	})
	if uint64(len(all)) > uint64(topK) {
		all = all[:topK]
	}
	resp.Hits = make([]*queryv1.Hit, len(all))
	for i, t := range all {
		resp.Hits[i] = &queryv1.Hit{
			DocId:  t.hit.GetDocId(),
			Score:  t.hit.GetScore(),
			Shard:  t.shard,
			Text:   t.hit.GetText(),
			Fields: t.hit.GetFields(),
		}
	}
	return resp
}

func replyStatus(err error) queryv1.ShardStatus {
	if err == nil {
		return queryv1.ShardStatus_SHARD_STATUS_OK
	}
	switch status.Code(err) {
	case codes.DeadlineExceeded:
		return queryv1.ShardStatus_SHARD_STATUS_DEADLINE_EXCEEDED
	case codes.Unavailable:
		return queryv1.ShardStatus_SHARD_STATUS_UNAVAILABLE
	case codes.Canceled:
		return queryv1.ShardStatus_SHARD_STATUS_CANCELED
	}
	return queryv1.ShardStatus_SHARD_STATUS_FAILED
}
