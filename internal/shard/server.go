package shard

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/shardsvc"
)

// Server serves an [Index] as a gather.shard.v1.ShardService. It does not
// own the index: the caller closes it after stopping the gRPC server.
type Server struct {
	shardv1.UnimplementedShardServiceServer

	ix  *Index
	cfg serverConfig
}

// NewServer returns a Server searching ix.
func NewServer(ix *Index, opts ...Option) *Server {
	return &Server{ix: ix, cfg: newServerConfig(opts)}
}

var _ shardv1.ShardServiceServer = (*Server)(nil)

// Search implements the ShardService Search RPC.
//
// It validates the request (InvalidArgument for a query that is blank, not
// UTF-8 or longer than the maximum, and for a top_k of 0 or above the
// maximum), searches the index, and streams the hits in the contract's
// order: score descending, ties by doc_id ascending. A message carries at
// most the configured hits per message and at most shardsvc.MaxMessageBytes
// encoded, and honours the request's first_batch_hits (shardsvc.Pace); the
// first one carries total_matches and documents, and is sent
// even when there are no hits. If the stream's context ends, the search stops
// and Search returns Canceled or DeadlineExceeded; the context is also
// checked between messages.
func (s *Server) Search(req *shardv1.SearchRequest, stream grpc.ServerStreamingServer[shardv1.SearchResponse]) error {
	if err := shardsvc.Validate(req, s.cfg.limits); err != nil {
		return err
	}
	ctx := stream.Context()
	res, err := s.ix.Search(ctx, req.GetQuery(), int(req.GetTopK()))
	if err != nil {
		return statusOf(ctx, err)
	}

	structs := make([]shardv1.Hit, len(res.Hits))
	hits := make([]*shardv1.Hit, len(res.Hits))
	for i, h := range res.Hits {
		structs[i] = shardv1.Hit{DocId: h.DocID, Score: h.Score, Text: h.Text, Fields: h.Fields}
		hits[i] = &structs[i]
	}
	msg := &shardv1.SearchResponse{TotalMatches: res.Total, Documents: res.Documents}
	pace := shardsvc.NewPace(req, s.cfg.hitsPerMessage)
	for {
		n, err := shardsvc.NextBatch(hits, pace.Next())
		if err != nil { // the index holds a passage too large to send; Open refuses to build one
			return status.Errorf(codes.Internal, "partition %s: %v", s.ix.info.Partition, err)
		}
		msg.Hits = hits[:n:n]
		hits = hits[n:]
		if err := stream.Send(msg); err != nil {
			return statusOf(ctx, err)
		}
		if len(hits) == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return statusOf(ctx, err)
		}
		msg = &shardv1.SearchResponse{}
	}
}

// Pull implements the ShardService Pull RPC: Search's messages, each after the first sent when
// the caller asks for it (shardsvc.ServePull).
func (s *Server) Pull(stream grpc.BidiStreamingServer[shardv1.PullRequest, shardv1.SearchResponse]) error {
	return shardsvc.ServePull(stream, s.Search)
}

// statusOf turns an error met while serving a call with context ctx into a
// status error: Canceled or DeadlineExceeded if the call's context has ended
// (or err is a context error), a gRPC status error unchanged, and Internal
// otherwise.
func statusOf(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return status.FromContextError(ctxErr).Err()
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}
