// Package proxy implements gather.query.v1.QueryService: it validates a query, fans it out with
// package fanout, merges the shard streams with package merge into the global top-k, applies the
// partial-results policy and turns everything that went wrong into proper gRPC statuses.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/admission"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/flowguard"
	"github.com/gatherproxy/gather/internal/lifecycle"
	"github.com/gatherproxy/gather/internal/merge"
)

// Server is the QueryService. Create it with New.
type Server struct {
	queryv1.UnimplementedQueryServiceServer
	fan *fanout.Client
	cfg Config
	// view is what the answers of the fan-out's latest topology need; a query uses the one of
	// the topology its call started with (viewOf).
	view atomic.Pointer[view]
}

// view is what answering from one topology takes: the shard names, the room MaxAnswerBytes
// leaves for hits next to the rest of an answer (summaryBound), the size of the smallest hit an
// answer can hold, and the replica masks (nil unless HideReplicas).
type view struct {
	topo         *fanout.Topology
	names        []string
	room, minHit int
	masks        *masks
}

// New returns a QueryService answering from the shards of fan, following its topology as
// fan.Update changes it. The caller keeps ownership of fan and closes it after the gRPC server
// has stopped.
func New(fan *fanout.Client, cfg Config) *Server {
	return &Server{fan: fan, cfg: cfg.withDefaults()}
}

// viewOf returns the view of t, made once per topology.
func (s *Server) viewOf(t *fanout.Topology) *view {
	if v := s.view.Load(); v != nil && v.topo == t {
		return v
	}
	v := &view{topo: t, names: t.Shards()}
	spec := t.Specs()
	shortest := 0
	for i, name := range v.names {
		if i == 0 || len(name) < shortest {
			shortest = len(name)
		}
	}
	v.room = s.cfg.Room(spec)
	v.minHit = hitSize("", 0, strings.Repeat("x", shortest), "", nil) // a doc_id may be empty
	if s.cfg.HideReplicas {
		v.masks = newMasks(t.Replicas())
	}
	if cur := s.fan.Current(); cur == t {
		s.view.Store(v) // a query on an older topology makes its view without keeping it
	}
	return v
}

// Register registers s on r as gather.query.v1.QueryService. Use it instead of
// queryv1.RegisterQueryServiceServer: Search is registered as a stream handler that sends exactly
// one message (the same RPC on the wire and in the proto), so that the handler writes its answer
// itself and holds the query, with its admission slot, until the answer's bytes have left the
// process or the client's connection was closed for not taking them (Config.Flow). Registered
// the generated way, grpc-go sends the answer after the handler and every interceptor have
// returned, and then nothing bounds how long it stays queued.
//
// The stream is declared server-streaming because grpc-go runs stream interceptors (admission,
// lifecycle, metrics) only for streaming descriptors; those that label calls by type see Search
// as a server stream.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	desc := queryv1.QueryService_ServiceDesc // a copy: the generated one is shared
	desc.Methods = slices.DeleteFunc(slices.Clone(desc.Methods), func(m grpc.MethodDesc) bool { return m.MethodName == "Search" })
	desc.Streams = append(slices.Clone(desc.Streams),
		grpc.StreamDesc{StreamName: "Search", Handler: s.searchHandler, ServerStreams: true})
	r.RegisterService(&desc, s)
}

// searchHandler serves Search as registered by Register.
func (s *Server) searchHandler(_ any, stream grpc.ServerStream) error {
	req := new(queryv1.SearchRequest)
	if err := stream.RecvMsg(req); err != nil {
		return err
	}
	_, err := s.search(stream.Context(), req, stream)
	return err
}

// Search answers with the merged global top_k. It is the QueryServiceServer method, for
// in-process callers; served through Register, the answer is written by the handler itself.
func (s *Server) Search(ctx context.Context, req *queryv1.SearchRequest) (*queryv1.SearchResponse, error) {
	return s.search(ctx, req, nil)
}

// search answers req and, when stream is not nil, writes the answer on it and waits for it to
// be written (see writeAnswer), so that its outcome is the query's.
func (s *Server) search(ctx context.Context, req *queryv1.SearchRequest, stream grpc.ServerStream) (_ *queryv1.SearchResponse, err error) {
	oc := outcome{method: "Search", text: req.GetQuery(), topK: req.GetTopK(), start: time.Now()}
	defer func() { s.observe(ctx, &oc, err) }()
	q, err := parse(req.GetQuery(), req.GetTopK(), req.GetPartialPolicy(), req.GetShardTimeout(), s.cfg)
	if err == nil {
		err = s.fits(q.topK)
	}
	if err != nil {
		return nil, invalidArgument(err)
	}
	out := &collect{topK: q.topK}
	sum, err := s.run(ctx, q, out, &oc)
	if err != nil {
		return nil, err
	}
	resp := answer(out.hits, sum)
	if stream == nil {
		// An in-process caller reads the hits, not their encoding.
		if err := decodeHits(resp); err != nil {
			return nil, status.Errorf(codes.Internal, "decoding the answer's hits: %v", err)
		}
		s.fan.CountDecoded(len(resp.GetHits()))
		return resp, nil
	}
	if err := s.writeAnswer(ctx, stream, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// answer is the SearchResponse of hits, encoded as its field 1 (see appendHit), and a summary.
// The hits are carried as the message's unknown fields, which protobuf marshals as they are,
// after the known fields: on the wire they are its hits, in their order, and any decoder reads
// them as such. Until then, GetHits is empty (decodeHits fills it).
func answer(hits []byte, sum *queryv1.SearchSummary) *queryv1.SearchResponse {
	resp := &queryv1.SearchResponse{
		Coverage:         sum.Coverage,
		Shards:           sum.Shards,
		TotalMatches:     sum.TotalMatches,
		Took:             sum.Took,
		Truncated:        sum.Truncated,
		TruncationReason: sum.TruncationReason,
	}
	if len(hits) > 0 {
		resp.ProtoReflect().SetUnknown(hits)
	}
	return resp
}

// decodeHits decodes the hits that m (an answer or a SearchStream message) carries encoded
// (answer) into its hits field.
func decodeHits(m proto.Message) error {
	r := m.ProtoReflect()
	raw := r.GetUnknown()
	if len(raw) == 0 {
		return nil
	}
	r.SetUnknown(nil)
	return proto.UnmarshalOptions{Merge: true}.Unmarshal(raw, m)
}

// writeAnswer sends the one message of a unary answer and waits until the client's connection
// has written it (Config.Flow): a client that makes no room for it within SendTimeout loses its
// connection, and with it everything grpc-go had queued for it; the query then ends with
// RESOURCE_EXHAUSTED, recorded as send_stalled. Without a Flow guard it only sends.
func (s *Server) writeAnswer(ctx context.Context, stream grpc.ServerStream, m proto.Message) error {
	conn := s.cfg.Flow.Conn(ctx)
	if conn == nil {
		return s.sendError(ctx, stream.SendMsg(m))
	}
	// The guard counts the bytes on the wire, so the answer goes out uncompressed; identity is
	// always allowed (grpc-go would otherwise answer in whatever compression the request used).
	_ = grpc.SetSendCompressor(ctx, "identity")
	target := conn.DataWritten() + grpcFrameHeader + int64(proto.Size(m))
	if err := stream.SendMsg(m); err != nil {
		return s.sendError(ctx, conn.SendError(err))
	}
	return s.sendError(ctx, conn.AwaitWritten(ctx, target))
}

// grpcFrameHeader is the length prefix of every gRPC message on the wire: a flag byte and four
// length bytes.
const grpcFrameHeader = 5

// SearchStream streams the merged hits as they become final, then the summary. Every message goes
// through a send watchdog: a client that stops reading ends its stream after SendTimeout instead
// of pinning the query (and its shard calls) for as long as the connection lives.
func (s *Server) SearchStream(req *queryv1.SearchStreamRequest, stream queryv1.QueryService_SearchStreamServer) (err error) {
	ctx := stream.Context()
	oc := outcome{method: "SearchStream", text: req.GetQuery(), topK: req.GetTopK(), start: time.Now()}
	defer func() { s.observe(ctx, &oc, err) }()
	q, err := parse(req.GetQuery(), req.GetTopK(), req.GetPartialPolicy(), req.GetShardTimeout(), s.cfg)
	if err == nil {
		err = s.fits(q.topK)
	}
	if err != nil {
		return invalidArgument(err)
	}
	conn := s.cfg.Flow.Conn(ctx)
	if conn != nil {
		_ = grpc.SetSendCompressor(ctx, "identity") // see writeAnswer
	}
	snd := lifecycle.NewSender(stream, s.cfg.SendTimeout)
	defer snd.Close()
	out := &streamer{ctx: ctx, snd: snd, conn: conn, left: q.topK}
	sum, err := s.run(ctx, q, out, &oc)
	if err != nil {
		return err
	}
	// The summary ends the answer: hold the query until it has left the process, as Search does.
	last := &queryv1.SearchStreamResponse{Summary: sum}
	target := conn.DataWritten() + grpcFrameHeader + int64(proto.Size(last))
	if err := snd.Send(ctx, last); err != nil {
		return s.sendError(ctx, conn.SendError(err))
	}
	return s.sendError(ctx, conn.AwaitWritten(ctx, target))
}

// sink receives the merged hits in order, each with the name of its shard and its encoded size
// in an answer (answerHitSize). flush is called when the merge is about to wait for the network
// and at the end, so hits that are final are not held back. The hits' strings are read-only.
// paced reports whether add and flush wait for the client to read (a stream): the merge's pace
// is then the client's, and says nothing about the proxy's load.
type sink interface {
	add(h fanout.Hit, shard string, size int) error
	flush() error
	paced() bool
}

// collect gathers the hits of a Search answer, encoded (answer).
type collect struct {
	topK uint32
	hits []byte
}

func (c *collect) add(h fanout.Hit, shard string, size int) error {
	if c.hits == nil {
		c.hits = make([]byte, 0, firstCapacity(size, c.topK, maxFirstAnswerBytes))
	}
	c.hits = appendHit(c.hits, h, shard)
	return nil
}

func (c *collect) flush() error { return nil }

func (c *collect) paced() bool { return false }

// maxFirstAnswerBytes bounds the capacity an answer's encoded hits start with (firstCapacity);
// a longer answer grows it by doubling.
const maxFirstAnswerBytes = 256 << 10

// firstCapacity is the capacity of a buffer for n hits, the first of which takes size bytes:
// room for n such hits and a quarter more, at most most bytes.
func firstCapacity(size int, n uint32, most int) int {
	return int(min(int64(size)*int64(n)*5/4, int64(most)))
}

// streamer sends batches of final hits, encoded as in an answer. The pending batch is at most
// top_k hits and, unless it is a single hit, at most maxStreamMessageBytes.
type streamer struct {
	ctx   context.Context
	snd   *lifecycle.Sender
	conn  *flowguard.Conn // nil without a flow guard
	left  uint32          // hits that may still come: top_k less those sent or pending
	batch []byte          // the hits of the next message, encoded
}

func (s *streamer) add(h fanout.Hit, shard string, size int) error {
	if len(s.batch) > 0 && len(s.batch)+size > maxStreamMessageBytes {
		if err := s.flush(); err != nil {
			return err
		}
	}
	if s.batch == nil {
		s.batch = make([]byte, 0, max(size, firstCapacity(size, s.left, maxStreamMessageBytes)))
	}
	s.batch = appendHit(s.batch, h, shard)
	s.left--
	return nil
}

func (s *streamer) paced() bool { return true }

func (s *streamer) flush() error {
	if len(s.batch) == 0 {
		return nil
	}
	m := &queryv1.SearchStreamResponse{}
	m.ProtoReflect().SetUnknown(s.batch) // its hits, as in answer
	err := s.snd.Send(s.ctx, m)
	s.batch = nil // the message owns the bytes now
	return s.conn.SendError(err)
}

// run fans q out, merges into out and returns the summary, or the gRPC status error that ends
// the RPC. Every shard call is over and its goroutine joined when run returns. The hits given to
// out take at most the view's room in bytes encoded: the merge stops before a hit that would not fit, stops
// the shard calls and marks the summary truncated.
func (s *Server) run(ctx context.Context, q query, out sink, oc *outcome) (*queryv1.SearchSummary, error) {
	start := time.Now()
	arrived, _ := admission.Arrived(ctx) // zero unless admission control saw the call
	call := s.fan.Start(ctx, fanout.Request{Query: q.text, TopK: q.topK, ShardTimeout: q.shardTimeout, Arrived: arrived})
	defer func() { oc.results = call.Close() }()
	v := s.viewOf(call.Topology())

	cursors := call.Cursors()
	seqs := make([]merge.Sequence[fanout.Hit], len(cursors))
	for i, c := range cursors {
		seqs[i] = c
	}
	tree := merge.New(fanout.Less, seqs...)
	var (
		n         uint32
		used      int  // encoded bytes of the hits so far
		truncated bool // the next hit did not fit
	)
	for n < q.topK {
		if q.requireFull && call.Failed() > 0 {
			break // the answer is already lost; the results below say why
		}
		if n > 0 && !cursors[tree.Source()].Buffered() {
			if err := out.flush(); err != nil {
				return nil, s.sendError(ctx, err)
			}
		}
		if !tree.Next() {
			break
		}
		h := tree.At()
		size := answerHitSize(h, v.names[h.Shard])
		if used+size > v.room {
			truncated = true
			break
		}
		used += size
		if err := out.add(h, v.names[h.Shard], size); err != nil {
			return nil, s.sendError(ctx, err)
		}
		n++
	}
	oc.hits = n
	if n == q.topK || truncated {
		call.Stop()
	}
	results := call.Close()
	if !out.paced() {
		// How late after the shard deadline the merge is done teaches the fan-out how much of
		// the caller's time to keep back (fanout.Client.Answered), whether or not the caller
		// is still there: the answers it gave up on are the ones to learn from.
		s.fan.Answered(call.Deadline(), time.Now())
	}
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	sum := summarize(results, v.masks)
	sum.Took = durationpb.New(time.Since(start))
	if truncated {
		sum.Truncated, sum.TruncationReason = true, truncationReason(n, s.cfg.MaxAnswerBytes)
	}
	// A shard cut by the query's hit budget did answer, in part: it does not make the query fail
	// unless full coverage was required.
	answered := sum.Coverage.ShardsSucceeded
	for _, r := range results {
		if r.Status == fanout.StatusResourceExhausted {
			answered++
		}
	}
	if missing := sum.Coverage.ShardsTotal - sum.Coverage.ShardsSucceeded; answered == 0 || (q.requireFull && missing > 0) {
		return nil, unavailable(missing, sum)
	}
	if err := out.flush(); err != nil {
		return nil, s.sendError(ctx, err)
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

// sendError maps a failed send, or the failed wait for one to be written: a stall keeps its own
// status (RESOURCE_EXHAUSTED), and so does a connection the flow guard closed for making no
// room; when the caller went away, its context says why.
func (s *Server) sendError(ctx context.Context, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, lifecycle.ErrSendStalled):
		return err
	case errors.Is(err, flowguard.ErrStalled):
		return &lifecycle.StalledError{After: s.cfg.SendTimeout}
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Unavailable, err.Error())
}

// summarize builds the coverage and per-shard results. The totals are those of the shards that
// answered (StatusOK), summed without wrapping around. With masks, replica addresses are
// replaced by their ordinals.
func summarize(results []fanout.Result, masks *masks) *queryv1.SearchSummary {
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
		sr.Source, sr.Attempts = attemptSource(r.Source), uint32(r.Attempts)
		if r.Err != nil {
			sr.Error = r.Err.Error() // made safe by fanout (CleanText)
		}
		if masks != nil {
			sr.Replica, sr.Error = masks.hide(i, r.ReplicaIndex, sr.Error)
		}
		sum.Shards[i] = sr
		if r.Status == fanout.StatusOK {
			sum.Coverage.ShardsSucceeded++
			sum.TotalMatches = satAdd(sum.TotalMatches, r.TotalMatches)
			sum.Coverage.DocumentsSearched = satAdd(sum.Coverage.DocumentsSearched, r.Documents)
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
	case fanout.StatusResourceExhausted:
		return queryv1.ShardStatus_SHARD_STATUS_RESOURCE_EXHAUSTED
	}
	return queryv1.ShardStatus_SHARD_STATUS_UNSPECIFIED
}

func attemptSource(s fanout.Source) queryv1.AttemptSource {
	switch s {
	case fanout.SourcePrimary:
		return queryv1.AttemptSource_ATTEMPT_SOURCE_PRIMARY
	case fanout.SourceHedge:
		return queryv1.AttemptSource_ATTEMPT_SOURCE_HEDGE
	case fanout.SourceRetry:
		return queryv1.AttemptSource_ATTEMPT_SOURCE_RETRY
	}
	return queryv1.AttemptSource_ATTEMPT_SOURCE_UNSPECIFIED
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

// satAdd adds without wrapping around: a sum that would overflow is math.MaxUint64. Shards
// report their own counts, and a broken one must not make the total small.
func satAdd(a, b uint64) uint64 {
	if s := a + b; s >= a {
		return s
	}
	return math.MaxUint64
}
