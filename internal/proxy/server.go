// Package proxy implements gather.query.v1.QueryService: it validates a query, fans it out with
// package fanout, merges the shard streams with package merge into the global top-k, applies the
// partial-results policy and turns everything that went wrong into proper gRPC statuses.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/lifecycle"
	"github.com/gatherproxy/gather/internal/merge"
)

// Server is the QueryService. Create it with New.
type Server struct {
	queryv1.UnimplementedQueryServiceServer
	fan   *fanout.Client
	names []string
	cfg   Config
}

// New returns a QueryService answering from the shards of fan. The caller keeps ownership of fan
// and closes it after the gRPC server has stopped.
func New(fan *fanout.Client, cfg Config) *Server {
	return &Server{fan: fan, names: fan.Shards(), cfg: cfg.withDefaults()}
}

// Search answers with the merged global top_k.
func (s *Server) Search(ctx context.Context, req *queryv1.SearchRequest) (_ *queryv1.SearchResponse, err error) {
	oc := outcome{method: "Search", text: req.GetQuery(), topK: req.GetTopK(), start: time.Now()}
	defer func() { s.observe(ctx, &oc, err) }()
	q, err := parse(req.GetQuery(), req.GetTopK(), req.GetPartialPolicy(), req.GetShardTimeout(), s.cfg)
	if err != nil {
		return nil, invalidArgument(err)
	}
	out := &collect{hits: make([]*queryv1.Hit, 0, min(q.topK, 128))}
	sum, err := s.run(ctx, q, out, &oc)
	if err != nil {
		return nil, err
	}
	return &queryv1.SearchResponse{
		Hits:         out.hits,
		Coverage:     sum.Coverage,
		Shards:       sum.Shards,
		TotalMatches: sum.TotalMatches,
		Took:         sum.Took,
	}, nil
}

// SearchStream streams the merged hits as they become final, then the summary. Every message goes
// through a send watchdog: a client that stops reading ends its stream after SendTimeout instead
// of pinning the query (and its shard calls) for as long as the connection lives.
func (s *Server) SearchStream(req *queryv1.SearchStreamRequest, stream queryv1.QueryService_SearchStreamServer) (err error) {
	ctx := stream.Context()
	oc := outcome{method: "SearchStream", text: req.GetQuery(), topK: req.GetTopK(), start: time.Now()}
	defer func() { s.observe(ctx, &oc, err) }()
	q, err := parse(req.GetQuery(), req.GetTopK(), req.GetPartialPolicy(), req.GetShardTimeout(), s.cfg)
	if err != nil {
		return invalidArgument(err)
	}
	snd := lifecycle.NewSender(stream, s.cfg.SendTimeout)
	defer snd.Close()
	out := &streamer{ctx: ctx, snd: snd}
	sum, err := s.run(ctx, q, out, &oc)
	if err != nil {
		return err
	}
	if err := snd.Send(ctx, &queryv1.SearchStreamResponse{Summary: sum}); err != nil {
		return sendError(ctx, err)
	}
	return nil
}

// sink receives the merged hits in order. flush is called when the merge is about to wait for
// the network and at the end, so hits that are final are not held back.
type sink interface {
	add(h *queryv1.Hit)
	flush() error
}

type collect struct{ hits []*queryv1.Hit }

func (c *collect) add(h *queryv1.Hit) { c.hits = append(c.hits, h) }
func (c *collect) flush() error       { return nil }

// streamer sends batches of final hits. The pending batch is at most top_k hits.
type streamer struct {
	ctx   context.Context
	snd   *lifecycle.Sender
	batch []*queryv1.Hit
}

func (s *streamer) add(h *queryv1.Hit) { s.batch = append(s.batch, h) }

func (s *streamer) flush() error {
	if len(s.batch) == 0 {
		return nil
	}
	err := s.snd.Send(s.ctx, &queryv1.SearchStreamResponse{Hits: s.batch})
	s.batch = nil // the message owns the slice now
	return err
}

// slabHits is the size of an answer's first slab of hits; each later slab holds as many hits as
// the answer so far, so an answer the shards cannot fill allocates at most max(slabHits, 2n) for n hits.
const slabHits = 128

// run fans q out, merges into out and returns the summary, or the gRPC status error that ends
// the RPC. Every shard call is over and its goroutine joined when run returns.
func (s *Server) run(ctx context.Context, q query, out sink, oc *outcome) (*queryv1.SearchSummary, error) {
	start := time.Now()
	call := s.fan.Start(ctx, fanout.Request{Query: q.text, TopK: q.topK, ShardTimeout: q.shardTimeout})
	defer func() { oc.results = call.Close() }()

	cursors := call.Cursors()
	seqs := make([]merge.Sequence[fanout.Hit], len(cursors))
	for i, c := range cursors {
		seqs[i] = c
	}
	tree := merge.New(fanout.Less, seqs...)
	var (
		n    uint32
		slab []queryv1.Hit // the answer's hits are carved from it: an allocation per slab, not per hit
	)
	for n < q.topK {
		if q.requireFull && call.Failed() > 0 {
			break // the answer is already lost; the results below say why
		}
		if n > 0 && !cursors[tree.Source()].Buffered() {
			if err := out.flush(); err != nil {
				return nil, sendError(ctx, err)
			}
		}
		if !tree.Next() {
			break
		}
		if len(slab) == 0 {
			slab = make([]queryv1.Hit, min(q.topK-n, max(n, slabHits)))
		}
		h, hit := tree.At(), &slab[0]
		slab = slab[1:]
		hit.DocId, hit.Score, hit.Shard = h.GetDocId(), h.GetScore(), s.names[h.Shard]
		hit.Text, hit.Fields = h.GetText(), h.GetFields() // shared with the shard's message, read-only
		out.add(hit)
		n++
	}
	oc.hits = n
	if n == q.topK {
		call.Stop()
	}
	results := call.Close()
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	sum := summarize(results)
	sum.Took = durationpb.New(time.Since(start))
	if missing := sum.Coverage.ShardsTotal - sum.Coverage.ShardsSucceeded; sum.Coverage.ShardsSucceeded == 0 ||
		(q.requireFull && missing > 0) {
		return nil, unavailable(missing, sum)
	}
	if err := out.flush(); err != nil {
		return nil, sendError(ctx, err)
	}
	return sum, nil
}

// errorDomain is the google.rpc.ErrorInfo domain of gather's errors.
const errorDomain = "gather.query.v1"

// invalidArgument is the INVALID_ARGUMENT status for a validation error, with the field at fault
// as google.rpc.BadRequest and google.rpc.ErrorInfo details.
func invalidArgument(err error) error {
	st := status.New(codes.InvalidArgument, err.Error())
	var fe *FieldError
	if errors.As(err, &fe) {
		if d, derr := st.WithDetails(
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: fe.Field, Description: fe.Msg}}},
			&errdetails.ErrorInfo{Reason: "INVALID_REQUEST", Domain: errorDomain, Metadata: map[string]string{"field": fe.Field}},
		); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// sendError maps a failed Send: a stall keeps its own status (RESOURCE_EXHAUSTED); when the
// caller went away, its context says why.
func sendError(ctx context.Context, err error) error {
	if errors.Is(err, lifecycle.ErrSendStalled) {
		return err
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Unavailable, err.Error())
}

// summarize builds the coverage and per-shard results.
func summarize(results []fanout.Result) *queryv1.SearchSummary {
	sum := &queryv1.SearchSummary{
		Coverage: &queryv1.Coverage{ShardsTotal: uint32(len(results))},
		Shards:   make([]*queryv1.ShardResult, len(results)),
	}
	// One allocation each for all the shard results and their latencies, not two per shard.
	srs := make([]queryv1.ShardResult, len(results))
	lats := make([]durationpb.Duration, len(results))
	for i, r := range results {
		sr, lat := &srs[i], &lats[i]
		lat.Seconds, lat.Nanos = durationParts(r.Latency)
		sr.Shard, sr.Status, sr.Replica, sr.Hits = r.Shard, shardStatus(r.Status), r.Replica, uint32(r.Hits)
		sr.Latency, sr.StoppedEarly, sr.TotalMatches = lat, r.StoppedEarly, r.TotalMatches
		if r.Err != nil {
			sr.Error = r.Err.Error()
		}
		sum.Shards[i] = sr
		sum.TotalMatches += r.TotalMatches
		if r.Status == fanout.StatusOK {
			sum.Coverage.ShardsSucceeded++
			sum.Coverage.DocumentsSearched += r.Documents
		}
	}
	sum.Coverage.Degraded = sum.Coverage.ShardsSucceeded < sum.Coverage.ShardsTotal
	return sum
}

// durationParts splits d as durationpb.New does.
func durationParts(d time.Duration) (seconds int64, nanos int32) {
	n := d.Nanoseconds()
	seconds = n / 1e9
	return seconds, int32(n - seconds*1e9)
}

func shardStatus(s fanout.Status) queryv1.ShardStatus {
	switch s {
	case fanout.StatusOK:
		return queryv1.ShardStatus_SHARD_STATUS_OK
	case fanout.StatusDeadlineExceeded:
		return queryv1.ShardStatus_SHARD_STATUS_DEADLINE_EXCEEDED
	case fanout.StatusUnavailable:
		return queryv1.ShardStatus_SHARD_STATUS_UNAVAILABLE
	case fanout.StatusCanceled:
		return queryv1.ShardStatus_SHARD_STATUS_CANCELED
	case fanout.StatusFailed:
		return queryv1.ShardStatus_SHARD_STATUS_FAILED
	case fanout.StatusProtocolViolation:
		return queryv1.ShardStatus_SHARD_STATUS_PROTOCOL_VIOLATION
	}
	return queryv1.ShardStatus_SHARD_STATUS_UNSPECIFIED
}

// unavailable is the error for a query without enough shards: its message lists the missing
// shards and why, and its details carry every ShardResult.
func unavailable(missing uint32, sum *queryv1.SearchSummary) error {
	var why []string
	for _, r := range sum.Shards {
		if r.Status != queryv1.ShardStatus_SHARD_STATUS_OK {
			why = append(why, fmt.Sprintf("%s: %s", r.Shard, r.Error))
		}
	}
	st := status.New(codes.Unavailable, fmt.Sprintf("%d of %d shards did not answer: %s",
		missing, sum.Coverage.ShardsTotal, strings.Join(why, "; ")))
	meta := map[string]string{
		"shards_total":     fmt.Sprint(sum.Coverage.ShardsTotal),
		"shards_succeeded": fmt.Sprint(sum.Coverage.ShardsSucceeded),
	}
	var names []string
	for _, r := range sum.Shards {
		if r.Status != queryv1.ShardStatus_SHARD_STATUS_OK {
			names = append(names, r.Shard)
		}
	}
	meta["missing_shards"] = strings.Join(names, ",")
	details := []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: "SHARDS_UNAVAILABLE", Domain: errorDomain, Metadata: meta}}
	for _, r := range sum.Shards {
		details = append(details, r)
	}
	if withDetails, err := st.WithDetails(details...); err == nil {
		st = withDetails
	}
	return st.Err()
}
