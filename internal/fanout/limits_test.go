package fanout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/shardtest"
)

// run starts a call to one shard per behavior and reads every cursor to its end (in shard
// order), returning the hits read per shard and the results.
func run(t *testing.T, cfg Config, topK uint32, behaviors ...shardtest.Behavior) ([][]Hit, []Result) {
	t.Helper()
	var topo []ShardSpec
	for i, b := range behaviors {
		s := shardtest.Start(t, b)
		topo = append(topo, ShardSpec{Name: fmt.Sprintf("s%d", i), Replicas: []string{s.Addr()}})
	}
	c, err := New(topo, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	call := c.Start(ctx, Request{Query: "q", TopK: topK})
	got := make([][]Hit, len(behaviors))
	for i, cur := range call.Cursors() {
		for cur.Next() {
			got[i] = append(got[i], cur.At())
		}
	}
	return got, call.Close()
}

// TestMessageOverLimit: a message over MaxMessageBytes ends its shard as a protocol violation
// naming the limit, without being read; the other shard is unaffected.
func TestMessageOverLimit(t *testing.T) {
	t.Parallel()
	giant := &shardv1.SearchResponse{Hits: []*shardv1.Hit{{DocId: "big", Score: 1, Text: strings.Repeat("x", 2<<20)}}}
	got, res := run(t, Config{}, 10,
		shardtest.Behavior{Hits: shardtest.Hits("a", 5, 1)},
		shardtest.Behavior{Script: []shardtest.Step{{Msg: &shardv1.SearchResponse{Hits: shardtest.Hits("b", 2, 2)}}, {Msg: giant}}})
	if res[0].Status != StatusOK || len(got[0]) != 5 {
		t.Errorf("healthy shard: %v with %d hits, want OK with 5", res[0].Status, len(got[0]))
	}
	r := res[1]
	if r.Status != StatusProtocolViolation || !errors.Is(r.Err, ErrOverLimit) || r.Hits != 2 ||
		!strings.Contains(r.Err.Error(), fmt.Sprintf("max_shard_message_bytes (%d)", DefaultMaxMessageBytes)) {
		t.Fatalf("giant message: %v, %d hits, %v; want PROTOCOL_VIOLATION after 2 hits naming max_shard_message_bytes", r.Status, r.Hits, r.Err)
	}
}

func TestOverLimitTranslatesTransportRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   error
		want error
	}{
		{status.Error(codes.ResourceExhausted, "grpc: received message larger than max (2097163 vs. 1048576)"), ErrOverLimit},
		{status.Error(codes.ResourceExhausted, "grpc: received message after decompression larger than max 1048576"), ErrOverLimit},
		{status.Error(codes.Internal, "peer header list size exceeded limit"), ErrOverLimit},
		{status.Error(codes.ResourceExhausted, "shard overloaded"), nil},
		{status.Error(codes.Internal, "disk on fire"), nil},
	} {
		got := overLimit(tc.in, 1<<20)
		if tc.want == nil && got != tc.in || tc.want != nil && !errors.Is(got, tc.want) { //nolint:errorlint // the same error back
			t.Errorf("overLimit(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// encode marshals m into the BufferSlice grpc-go hands a codec.
func encode(t testing.TB, m proto.Message) mem.BufferSlice {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}
}

// TestCodecRefusesBeforeDecoding: a response whose hits or field entries are over the call's
// counts is refused without being decoded: the target stays empty and next to nothing is
// allocated, however many entries the message holds.
func TestCodecRefusesBeforeDecoding(t *testing.T) {
	base := encoding.GetCodecV2(grpcproto.Name)
	fields := make(map[string]string, 20_000)
	for i := range 20_000 {
		fields[fmt.Sprint(i)] = ""
	}
	manyFields := encode(t, &shardv1.SearchResponse{Hits: []*shardv1.Hit{{DocId: "a", Score: 1, Fields: fields}}})
	var raw []byte // 50,000 empty hits: 100 KB on the wire, 5 MB decoded
	for range 50_000 {
		raw = protowire.AppendTag(raw, 1, protowire.BytesType)
		raw = protowire.AppendBytes(raw, nil)
	}
	manyHits := mem.BufferSlice{mem.SliceBuffer(raw)}
	for _, tc := range []struct {
		name string
		data mem.BufferSlice
		want error
	}{
		{"20k field entries", manyFields, ErrOverLimit},
		{"50k empty hits", manyHits, ErrTooMany},
	} {
		c := &codec{base: base, topK: 1000, maxFields: 32}
		var got shardv1.SearchResponse
		allocs := testing.AllocsPerRun(5, func() {
			c.refused = nil
			if err := c.Unmarshal(tc.data, &got); !errors.Is(err, tc.want) || !errors.Is(c.refused, tc.want) {
				t.Fatalf("%s: Unmarshal: %v (refused %v), want %v", tc.name, err, c.refused, tc.want)
			}
		})
		if len(got.GetHits()) != 0 || allocs > 8 {
			t.Errorf("%s: decoded %d hits with %v allocations, want none decoded and a handful of allocations", tc.name, len(got.GetHits()), allocs)
		}
	}
}

// TestCodecDecodesAndDropsUnknownFields: a good response decodes as protobuf does, without the
// unknown fields a newer shard might add (they would be held, uncounted).
func TestCodecDecodesAndDropsUnknownFields(t *testing.T) {
	t.Parallel()
	want := &shardv1.SearchResponse{Hits: shardtest.Hits("a", 20, 1), TotalMatches: 7, Documents: 9}
	b, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	b = protowire.AppendTag(b, 99, protowire.BytesType)
	b = protowire.AppendBytes(b, make([]byte, 4096))
	c := &codec{base: encoding.GetCodecV2(grpcproto.Name), topK: 20, maxFields: 32}
	var got shardv1.SearchResponse
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &got); err != nil {
		t.Fatal(err)
	}
	got.Hits = protoHits(c.hits)
	if !proto.Equal(&got, want) || len(got.ProtoReflect().GetUnknown()) != 0 {
		t.Errorf("decoded %v with %d unknown bytes, want %v and none", &got, len(got.ProtoReflect().GetUnknown()), want)
	}
}

// TestHitCostBoundsHeap checks the cost model against the heap that received hits really hold,
// for hits of several shapes: the budget must count at least what is held.
func TestHitCostBoundsHeap(t *testing.T) {
	for _, shape := range []struct{ hits, fields, key, value, id, text int }{
		{1000, 0, 0, 0, 0, 0},
		{1000, 0, 0, 0, 17, 33},
		{1000, 1, 1, 0, 8, 0},
		{1000, 5, 8, 20, 30, 1200},
		{1000, 9, 1, 1, 1, 0},
		{100, 32, 3, 1000, 40, 16 << 10},
		{50, 1000, 6, 0, 30, 0},
		{20, 2, 1, 1, 1, 40 << 10},
	} {
		resp := &shardv1.SearchResponse{}
		for i := range shape.hits {
			h := &shardv1.Hit{DocId: fmt.Sprintf("%0*d", shape.id, i)[:shape.id], Score: 1, Text: strings.Repeat("t", shape.text)}
			if shape.fields > 0 {
				h.Fields = make(map[string]string, shape.fields)
				for j := range shape.fields {
					h.Fields[fmt.Sprintf("%0*d", shape.key, j)] = strings.Repeat("v", shape.value)
				}
			}
			resp.Hits = append(resp.Hits, h)
		}
		b, err := proto.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		c := &codec{topK: shape.hits, maxFields: shape.fields}
		// The least of three measures: anything else the process allocates meanwhile only adds.
		held, cost := int64(math.MaxInt64), int64(0)
		for range 3 {
			var before, after runtime.MemStats
			c.hits = nil
			runtime.GC()
			runtime.ReadMemStats(&before)
			if !c.read(b, &shardv1.SearchResponse{}) {
				t.Fatal("read refused a good message")
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			held = min(held, int64(after.HeapAlloc)-int64(before.HeapAlloc))
			cost = 0
			for i := range c.hits {
				cost += c.hits[i].cost()
			}
			runtime.KeepAlive(c.hits)
			runtime.KeepAlive(b)
		}
		// The cursor's Hit and the duplicate set's entry come on top of what read allocates.
		held += int64(shape.hits) * (16 + 64)
		if cost < held {
			t.Errorf("shape %+v: received hits hold %d bytes, the cost model counts only %d", shape, held, cost)
		}
		t.Logf("shape %+v: held %d, counted %d (%.2fx)", shape, held, cost, float64(cost)/float64(held))
	}
}

// TestBudgetSharedByShards: the shards of one call share MaxQueryHitBytes; the shard whose batch
// crosses it keeps the hits that fit and ends as RESOURCE_EXHAUSTED, and the hits accepted in all
// never cost more than the budget.
func TestBudgetSharedByShards(t *testing.T) {
	t.Parallel()
	var per []int64 // the cost of each shard's 100 hits
	behaviors := make([]shardtest.Behavior, 3)
	for i := range behaviors {
		hits := shardtest.Hits(fmt.Sprint("d", i), 100, uint64(i))
		var c int64
		for _, h := range hits {
			c += hitCost(h)
		}
		per = append(per, c)
		behaviors[i] = shardtest.Behavior{Hits: hits, Batch: 10}
	}
	budget := per[0] + per[1]/2 // one shard and a half
	got, res := run(t, Config{MaxQueryHitBytes: budget}, 100, behaviors...)
	var spent int64
	exhausted := 0
	for i, r := range res {
		spent += r.Bytes
		if len(got[i]) != r.Hits {
			t.Errorf("shard %d: %d hits read, result says %d", i, len(got[i]), r.Hits)
		}
		switch r.Status {
		case StatusOK:
			if r.Hits != 100 {
				t.Errorf("shard %d: OK with %d hits, want all 100", i, r.Hits)
			}
		case StatusResourceExhausted:
			exhausted++
			if !errors.Is(r.Err, ErrBudget) || !strings.Contains(r.Err.Error(), fmt.Sprintf("max_query_hit_bytes (%d)", budget)) {
				t.Errorf("shard %d: error %v, want ErrBudget naming max_query_hit_bytes", i, r.Err)
			}
		default:
			t.Errorf("shard %d: %v (%v), want OK or RESOURCE_EXHAUSTED", i, r.Status, r.Err)
		}
	}
	if spent > budget || spent < budget-per[0]/100 || exhausted == 0 {
		t.Errorf("spent %d of a budget of %d with %d shards exhausted; want within one hit of the budget, and some exhausted", spent, budget, exhausted)
	}
}

// TestEmptyMessagesAreNoProgress: a shard that keeps sending messages without hits is cut by
// the idle timeout, though it never goes silent; its first message's hits and counts are kept.
func TestEmptyMessagesAreNoProgress(t *testing.T) {
	t.Parallel()
	first := &shardv1.SearchResponse{Hits: shardtest.Hits("a", 3, 1), TotalMatches: 77, Documents: 1000}
	drip := shardtest.Behavior{Script: shardtest.Drip(first, 400, 5*time.Millisecond)} // 2s of chatter
	_, res := run(t, Config{ShardTimeout: 10 * time.Second, IdleTimeout: 400 * time.Millisecond}, 10, drip)
	r := res[0]
	if r.Status != StatusDeadlineExceeded || !errors.Is(r.Err, ErrIdle) || r.Hits != 3 || r.TotalMatches != 77 {
		t.Fatalf("drip-feeding shard: %v (%v) with %d hits, total %d; want DEADLINE_EXCEEDED (idle) with 3 hits, total 77",
			r.Status, r.Err, r.Hits, r.TotalMatches)
	}
}

// TestFirstEmptyMessageCounts: a shard with no match sends one message without hits; its counts
// are taken and it ends OK.
func TestFirstEmptyMessageCounts(t *testing.T) {
	t.Parallel()
	_, res := run(t, Config{}, 10, shardtest.Behavior{Script: []shardtest.Step{{Msg: &shardv1.SearchResponse{TotalMatches: 0, Documents: 321}}}})
	if r := res[0]; r.Status != StatusOK || r.Documents != 321 {
		t.Fatalf("got %v with %d documents, want OK with 321", r.Status, r.Documents)
	}
}

// TestWindowBoundsUnread: a shard that sends faster than the proxy reads can park at most about
// one flow-control window (MaxMessageBytes) of messages in the proxy. (On loopback grpc-go's
// window estimation does not grow windows much either, so TestShardConnectionSettings is what
// shows the window is fixed.)
func TestWindowBoundsUnread(t *testing.T) {
	t.Parallel()
	const msgBytes = 100 << 10
	var script []shardtest.Step
	for i := range 200 { // 20 MiB in all
		script = append(script, shardtest.Step{Msg: &shardv1.SearchResponse{Hits: []*shardv1.Hit{
			{DocId: fmt.Sprintf("d%04d", i), Score: float64(1000 - i), Text: strings.Repeat("x", msgBytes)}}}})
	}
	s := shardtest.Start(t, shardtest.Behavior{Script: script})
	c, err := New([]ShardSpec{{Name: "s", Replicas: []string{s.Addr()}}}, Config{Buffer: 1, MaxTextBytes: 1 << 20, ShardTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	before := s.Sent()
	call := c.Start(t.Context(), Request{Query: "q", TopK: 1000})
	defer call.Close()
	// Nobody reads the cursor: wait for the shard's sending to stall, then count.
	var last int64 = -1
	for stable := 0; stable < 30; {
		if n := s.Sent() - before; n != last {
			last, stable = n, 0
		} else {
			stable++
		}
		time.Sleep(10 * time.Millisecond) // a quiet period is what is being waited for
	}
	// The window, grpc-go's write quota and what the receiving goroutine holds (one batch in the
	// cursor's buffer, one waiting to be put there), with room for one message in transit.
	const bound = DefaultMaxMessageBytes/msgBytes + 1 + 2 + 2
	if last > bound {
		t.Errorf("the shard sent %d messages of %d KiB that nobody read, want at most %d", last, msgBytes>>10, bound)
	}
}

// TestRefusedHitsAreReleased: the hits after a violation are dropped from the message's backing
// array and from the allocation of its strings, which the accepted hits share, so they do not stay
// in memory, uncounted, as long as the accepted ones.
func TestRefusedHitsAreReleased(t *testing.T) {
	t.Parallel()
	hits := shardtest.Hits("a", 100, 1)
	hits[1] = &shardv1.Hit{DocId: "nan", Score: math.NaN()}
	s := shardtest.Start(t, shardtest.Behavior{Hits: hits})
	c, err := New([]ShardSpec{{Name: "s", Replicas: []string{s.Addr()}}}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	call := c.Start(t.Context(), Request{Query: "q", TopK: 100})
	batch := <-call.Cursors()[0].ch // white-box: the batch as the merge would get it
	res := call.Close()[0]
	if len(batch) != 1 || cap(batch) != 1 || res.Status != StatusProtocolViolation {
		t.Fatalf("batch of %d (capacity %d), %v; want the one hit before the violation, alone", len(batch), cap(batch), res.Status)
	}
	// compact, which made the batch, gives it strings of its own (TestCompact).
}

// TestShardConnectionSettings: the proxy tells every shard, in its HTTP/2 settings, a fixed
// per-stream window of MaxMessageBytes (grpc-go would estimate one and grow it, up to 16 MiB,
// whether or not the proxy reads) and a header list limit of MaxHeaderBytes.
func TestShardConnectionSettings(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lis.Close() }()
	c, err := New([]ShardSpec{{Name: "s", Replicas: []string{lis.Addr().String()}}}, Config{MaxMessageBytes: 3 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	conn, err := lis.Accept() // New connects at once
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, len(http2.ClientPreface))); err != nil {
		t.Fatal(err)
	}
	f, err := http2.NewFramer(conn, conn).ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	settings, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %v, want SETTINGS", f)
	}
	if v, ok := settings.Value(http2.SettingInitialWindowSize); !ok || v != 3<<20 {
		t.Errorf("SETTINGS_INITIAL_WINDOW_SIZE %d (sent %v), want %d", v, ok, 3<<20)
	}
	if v, ok := settings.Value(http2.SettingMaxHeaderListSize); !ok || v != MaxHeaderBytes {
		t.Errorf("SETTINGS_MAX_HEADER_LIST_SIZE %d (sent %v), want %d", v, ok, MaxHeaderBytes)
	}
}

// TestBudgetSharedByCalls: all calls of a Client share MaxHitBytesInFlight; a call gives back
// what it took when it is closed. While one call holds most of it, another's shard keeps what
// fits and ends RESOURCE_EXHAUSTED naming the bound; once both are closed nothing is held, and a
// third call gets everything.
func TestBudgetSharedByCalls(t *testing.T) {
	t.Parallel()
	hits := shardtest.Hits("d", 100, 1)
	var cost int64
	for _, h := range hits {
		cost += hitCost(h)
	}
	s := shardtest.Start(t, shardtest.Behavior{Hits: hits, Batch: 10})
	inFlight := cost + cost/2
	c, err := New([]ShardSpec{{Name: "s0", Replicas: []string{s.Addr()}}},
		Config{MaxQueryHitBytes: cost, MaxHitBytesInFlight: inFlight})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	drain := func(call *Call) int {
		n := 0
		for cur := call.Cursors()[0]; cur.Next(); {
			n++
		}
		return n
	}
	first := c.Start(t.Context(), Request{Query: "q", TopK: 100})
	if n := drain(first); n != 100 {
		t.Fatalf("first call: %d hits, want 100", n)
	}
	if got := c.held.Load(); got != cost {
		t.Errorf("held %d with the first call open, want its %d", got, cost)
	}
	second := c.Start(t.Context(), Request{Query: "q", TopK: 100})
	n := drain(second)
	r := second.Close()[0]
	if r.Status != StatusResourceExhausted || !errors.Is(r.Err, ErrBudget) || n == 0 || n >= 100 ||
		!strings.Contains(r.Err.Error(), fmt.Sprintf("max_hit_bytes_in_flight (%d)", inFlight)) {
		t.Errorf("second call: %v (%v) with %d hits; want RESOURCE_EXHAUSTED naming max_hit_bytes_in_flight, with the hits that fit", r.Status, r.Err, n)
	}
	if got := c.held.Load(); got != cost {
		t.Errorf("held %d after the second call closed, want the first's %d", got, cost)
	}
	if r := first.Close()[0]; r.Status != StatusOK {
		t.Errorf("first call: %v (%v)", r.Status, r.Err)
	}
	if got := c.held.Load(); got != 0 {
		t.Errorf("held %d with every call closed, want 0", got)
	}
	third := c.Start(t.Context(), Request{Query: "q", TopK: 100})
	if n := drain(third); n != 100 {
		t.Errorf("third call: %d hits, want 100", n)
	}
	third.Close()
}
