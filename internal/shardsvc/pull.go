package shardsvc

import (
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
)

// Search is a ShardService Search handler.
type Search func(*shardv1.SearchRequest, grpc.ServerStreamingServer[shardv1.SearchResponse]) error

// ServePull serves a Pull stream with search, the server's own Search handler: it reads the
// query from the caller's first message and runs search on it, which sends its first message at
// once and each later one only after the caller has asked for it. When the caller half-closes the
// stream instead of asking, the stream ends OK without the rest of the hits (search's Send of
// them fails, and whatever search makes of that failure is not the stream's status).
//
// The search handler needs no change to serve both methods: its batches, their pace and its
// answers to a context that ends are the same. It must not call RecvMsg.
func ServePull(stream grpc.BidiStreamingServer[shardv1.PullRequest, shardv1.SearchResponse], search Search) error {
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return status.Error(codes.InvalidArgument, "Pull: the stream ended before its first message, which carries the query")
		}
		return err
	}
	if first.GetSearch() == nil {
		return status.Error(codes.InvalidArgument, "Pull: the first message carries no search: it must hold the query")
	}
	p := &puller{BidiStreamingServer: stream}
	err = search(first.GetSearch(), p)
	if p.ended {
		return p.end // whatever search made of the failed Send
	}
	return err
}

// puller is a Pull stream as its Search handler sees it: Send waits for the caller to ask before
// every message but the first.
type puller struct {
	grpc.BidiStreamingServer[shardv1.PullRequest, shardv1.SearchResponse]
	sent bool
	// ended: Send failed for the caller's doing, and end is then the stream's status: nil when
	// the caller half-closed it, INVALID_ARGUMENT for a later message that was not a plain ask.
	ended bool
	end   error
}

var errPullClosed = errors.New("the caller half-closed the Pull stream")

func (p *puller) Send(m *shardv1.SearchResponse) error {
	if p.sent {
		req, err := p.Recv()
		switch {
		case errors.Is(err, io.EOF):
			p.ended = true
			return errPullClosed
		case err != nil:
			return err
		case req.GetSearch() != nil:
			p.ended = true
			p.end = status.Error(codes.InvalidArgument, "Pull: a message after the first carries a search: only the first may")
			return p.end
		}
	}
	p.sent = true
	return p.BidiStreamingServer.Send(m)
}
