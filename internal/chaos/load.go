package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/lifecycle"
)

// queries are what workers and vanishers ask, in turn; probeQuery is the probe's.
var queries = []string{
	"union constitution war", "slavery emancipation", "tariff revenue", "gold standard currency",
	"indian treaty", "foreign relations commerce", "public debt", "army navy", "railroad territory",
	"education schools", "depression unemployment", "atomic energy", "civil rights", "health care",
}

const (
	probeQuery = "union constitution war"
	// stallQuery matches nearly every passage, so 1000 hits are far more than a 64 KiB window.
	stallQuery = "people government country states nation congress"
	stallTopK  = 1000
	// hogTopK keeps the hog's answers (some 170 KB) past what the proxy can hand to the transport
	// for a stream nobody reads (the 64 KiB window plus grpc-go's 64 KiB write quota), so that its
	// sends block and the watchdog ends it, while fetching a fifth of a staller's hits: hundreds of
	// top-1000 searches would make the hog a CPU bomb in the demo, which is not what it is there
	// to show.
	hogTopK = 200
	// smallWindow is the stallers' fixed HTTP/2 window (grpc-go grows it with BDP estimation
	// unless it is set).
	smallWindow = 64 << 10
	// vanishAfter is how long a vanisher's query runs before its relay goes silent: well inside
	// the query, which takes the proxy's idle timeout (1s) while shards are slow.
	vanishAfter = 200 * time.Millisecond
	// failPause keeps a client that gets errors from spinning against a broken proxy.
	failPause = 50 * time.Millisecond
)

// outcome is how one query ended, seen from its client.
type outcome int

const (
	outOK          outcome = iota // answered with full coverage
	outDegraded                   // answered, some shards missing
	outShed                       // RESOURCE_EXHAUSTED from admission control
	outQSTimeout                  // the client's own deadline passed: the incident's symptom
	outUnavailable                // UNAVAILABLE: no shard answered, or no connection
	outOther                      // anything else
)

// Counts are the outcomes of the workers' queries.
type Counts struct {
	OK, Degraded, Shed int64
	// QSTimeout, Unavailable and Other are the failures.
	QSTimeout, Unavailable, Other int64
	// Examples holds the first error message of each failure kind, by kind.
	Examples map[string]string
	// FirstQSTimeout and LastQSTimeout are when the first and the last query that hit its
	// timeout ended (zero without any).
	FirstQSTimeout, LastQSTimeout time.Time
}

// Failed returns the failures of every kind.
func (c Counts) Failed() int64 { return c.QSTimeout + c.Unavailable + c.Other }

// tally counts outcomes; safe for concurrent use.
type tally struct {
	n               [outOther + 1]atomic.Int64
	mu              sync.Mutex
	examples        map[string]string
	firstTO, lastTO time.Time
}

func (t *tally) add(o outcome, err error) {
	t.n[o].Add(1)
	if err == nil {
		return
	}
	kind := map[outcome]string{outQSTimeout: "qs timeout", outUnavailable: "unavailable", outOther: "other"}[o]
	if kind == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if o == outQSTimeout {
		now := time.Now()
		if t.firstTO.IsZero() {
			t.firstTO = now
		}
		t.lastTO = now
	}
	if t.examples == nil {
		t.examples = map[string]string{}
	}
	if _, ok := t.examples[kind]; !ok {
		t.examples[kind] = err.Error()
	}
}

func (t *tally) counts() Counts {
	t.mu.Lock()
	ex := make(map[string]string, len(t.examples))
	for k, v := range t.examples {
		ex[k] = v
	}
	first, last := t.firstTO, t.lastTO
	t.mu.Unlock()
	return Counts{
		OK: t.n[outOK].Load(), Degraded: t.n[outDegraded].Load(), Shed: t.n[outShed].Load(),
		QSTimeout: t.n[outQSTimeout].Load(), Unavailable: t.n[outUnavailable].Load(), Other: t.n[outOther].Load(),
		Examples: ex, FirstQSTimeout: first, LastQSTimeout: last,
	}
}

// classify says how a Search ended and, when it was shed, how long the proxy asked to wait.
func classify(resp *queryv1.SearchResponse, err error) (outcome, time.Duration) {
	if err == nil {
		if resp.GetCoverage().GetDegraded() {
			return outDegraded, 0
		}
		return outOK, 0
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.ResourceExhausted:
		return outShed, retryDelay(st)
	case codes.DeadlineExceeded:
		return outQSTimeout, 0
	case codes.Unavailable:
		return outUnavailable, 0
	}
	return outOther, 0
}

// retryDelay is the RetryInfo delay of a shed status, kept within 10ms..1s; 100ms if absent.
func retryDelay(st *status.Status) time.Duration {
	d := 100 * time.Millisecond
	if ri, ok := retryInfo(st); ok {
		d = ri.GetRetryDelay().AsDuration()
	}
	return min(max(d, 10*time.Millisecond), time.Second)
}

func retryInfo(st *status.Status) (*errdetails.RetryInfo, bool) {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri, true
		}
	}
	return nil, false
}

// sleep waits d or until ctx ends, and reports whether it waited the whole d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// dial returns a lazy client connection; it does no I/O and fails only for a bad target.
func dial(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
}

// workerRamp is how long the workers take to start, one after the other.
const workerRamp = time.Second

// awaitReady connects conn and waits, at most timeout, until it is ready.
func awaitReady(ctx context.Context, conn *grpc.ClientConn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn.Connect()
	for {
		s := conn.GetState()
		if s == connectivity.Ready {
			return nil
		}
		if !conn.WaitForStateChange(ctx, s) {
			return fmt.Errorf("connection to %s not ready after %s (%s)", conn.Target(), timeout, s)
		}
	}
}

// worker queries in a loop, with the QS timeout, until ctx ends. It closes its connection and
// dials a new one every cfg.ReconnectEvery queries and after a query that hit its timeout. Its
// queries name cfg.WorkerCaller as their caller (CallerHeader), if set.
func worker(ctx context.Context, cfg Config, id int, t *tally) {
	var conn *grpc.ClientConn
	defer func() {
		if conn != nil {
			_ = conn.Close() // closing a client connection reports nothing useful
		}
	}()
	sent := 0
	for n := id; ctx.Err() == nil; n++ {
		if conn == nil || sent >= cfg.ReconnectEvery {
			if conn != nil {
				_ = conn.Close()
			}
			var err error
			if conn, err = dial(cfg.Addr); err != nil {
				t.add(outOther, err)
				return
			}
			sent = 0
			// A QS has its connection up before it starts a query's clock: the timeout is the
			// proxy's to keep, not the dial's. A connection that is not up within the timeout
			// is counted as a failure of its own.
			if err := awaitReady(ctx, conn, cfg.Timeout); err != nil {
				if ctx.Err() != nil {
					return
				}
				t.add(outOther, err)
				_ = conn.Close()
				conn = nil
				sleep(ctx, failPause)
				continue
			}
		}
		qctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		if cfg.WorkerCaller != "" {
			qctx = metadata.AppendToOutgoingContext(qctx, CallerHeader, cfg.WorkerCaller)
		}
		resp, err := queryv1.NewQueryServiceClient(conn).Search(qctx,
			&queryv1.SearchRequest{Query: queries[n%len(queries)], TopK: 10})
		cancel()
		if ctx.Err() != nil {
			return // stopped by the run, not an outcome
		}
		sent++
		o, delay := classify(resp, err)
		t.add(o, err)
		switch o {
		case outShed:
			sleep(ctx, delay)
		case outQSTimeout:
			_ = conn.Close() // QS gives up on the connection, as in the incident
			conn = nil
		case outUnavailable, outOther:
			sleep(ctx, failPause)
		}
	}
}

// probeResult is one probe query: started at start, resolved at end.
type probeResult struct {
	start, end time.Time
	answered   bool // ok or degraded, possibly after being shed
	full       bool // answered with every shard
	sheds      int  // how many tries admission control shed
	shedOut    bool // shed on every try until the QS timeout
	err        string
}

// probe asks a healthy query every interval, each query in its own goroutine with the QS
// timeout, retrying after the RetryInfo delay while shed. It records every query that resolved
// (answered or failed); queries the run stopped are not recorded.
type probe struct {
	client   queryv1.QueryServiceClient
	timeout  time.Duration
	every    time.Duration
	inflight atomic.Int64

	mu      sync.Mutex
	results []probeResult
}

// run starts a probe query every p.every until ctx ends, and returns when all have ended. At
// most timeout/every+2 run at once; a tick that finds that many still running records a failure.
func (p *probe) run(ctx context.Context) {
	limit := int64(p.timeout/p.every) + 2
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	for {
		start := time.Now()
		if p.inflight.Load() >= limit {
			p.record(probeResult{start: start, end: start, err: "too many probe queries unanswered"})
		} else {
			p.inflight.Add(1)
			wg.Go(func() {
				defer p.inflight.Add(-1)
				p.query(ctx, start)
			})
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (p *probe) query(ctx context.Context, start time.Time) {
	qctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	deadline, _ := qctx.Deadline()
	sheds := 0
	for range 1000 { // bounded by the timeout long before
		left := time.Until(deadline)
		resp, err := p.client.Search(qctx, &queryv1.SearchRequest{Query: probeQuery, TopK: 10})
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			p.record(probeResult{start: start, end: time.Now(), answered: true,
				full: !resp.GetCoverage().GetDegraded(), sheds: sheds})
			return
		}
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted {
			msg := err.Error()
			if sheds > 0 {
				msg = fmt.Sprintf("%s (after %d sheds, on a try with %s of the %s left)", msg, sheds,
					left.Round(time.Millisecond), p.timeout)
			}
			// A try that ran into the QS timeout may have been waiting for a slot: not admitted.
			p.record(probeResult{start: start, end: time.Now(), err: msg, sheds: sheds})
			return
		}
		sheds++
		if !sleep(qctx, retryDelay(st)) {
			if ctx.Err() == nil {
				p.record(probeResult{start: start, end: time.Now(), sheds: sheds, shedOut: true,
					err: fmt.Sprintf("shed %d times until the QS timeout: %v", sheds, err)})
			}
			return
		}
	}
}

func (p *probe) record(r probeResult) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.results = append(p.results, r)
}

// snapshot returns the results so far, in the order they resolved.
func (p *probe) snapshot() []probeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]probeResult(nil), p.results...)
}

// StallStats are the streams of the stallers, or of the hog.
type StallStats struct {
	// Held is how many streams the proxy started sending on and the staller left unread.
	Held int64
	// EndedByWatchdog is how many of them the staller found ended with RESOURCE_EXHAUSTED by
	// the proxy's send watchdog when it finally read them.
	EndedByWatchdog int64
	// ConnClosed is how many of them ended with their connection, closed by the proxy's flow
	// guard because the stream made no room for send_timeout: the one way a gRPC server can
	// drop what it has already queued for a client.
	ConnClosed int64
	// Completed is how many of them ended OK: the proxy finished sending while unread, so the
	// stream never stalled (the answer fit in the window).
	Completed int64
	// Shed is how many streams admission control refused before they started.
	Shed int64
	// Other counts streams that ended any other way; Example is the first such error.
	Other   int64
	Example string
}

// staller opens SearchStreams on a connection with a small fixed window and leaves each unread
// for cfg.StallHold, then reads it to its end to learn how the proxy ended it. It starts a new
// stream while the incident (ctx) lasts and leaves room for one more hold; its first hold may
// run past the incident, bounded by hardCtx and the hold. It records into s under mu.
func staller(ctx, hardCtx context.Context, cfg Config, incidentEnd time.Time, mu *sync.Mutex, s *StallStats) {
	conn := dialStaller(cfg.Addr, mu, s)
	if conn == nil {
		return
	}
	defer func() { _ = conn.Close() }()
	stallLoop(ctx, hardCtx, cfg, queryv1.NewQueryServiceClient(conn), stallQuery, stallTopK, incidentEnd, mu, s)
}

// hog is one connection with cfg.Hog streams it never reads: cfg.Hog stall loops on one
// connection, each opening a new stream when the last one is done, while the incident lasts.
// The loops start one after another over one StallHold, the pace at which they open streams
// from then on: opened in one instant, the first streams would be a hundred searches at once in
// the demo's shards, which share the proxy's process and CPU (in production they would not), a
// CPU spike rather than the slot hog the run is there to show.
// The connection's streams beyond the proxy's max_concurrent_streams wait in this client until
// one of its streams ends. It records into s under mu.
func hog(ctx, hardCtx context.Context, cfg Config, incidentEnd time.Time, mu *sync.Mutex, s *StallStats) {
	conn := dialStaller(cfg.Addr, mu, s)
	if conn == nil {
		return
	}
	defer func() { _ = conn.Close() }()
	client := queryv1.NewQueryServiceClient(conn)
	var wg sync.WaitGroup
	for i := range cfg.Hog {
		wg.Go(func() {
			if sleep(ctx, time.Duration(i)*cfg.StallHold/time.Duration(cfg.Hog)) {
				stallLoop(ctx, hardCtx, cfg, client, stallQuery, hogTopK, incidentEnd, mu, s)
			}
		})
	}
	wg.Wait()
}

// dialStaller dials a connection with a small fixed window, which a stream fills soon when it
// is not read. A target it cannot dial is recorded into s under mu, and the result is nil.
func dialStaller(addr string, mu *sync.Mutex, s *StallStats) *grpc.ClientConn {
	conn, err := dial(addr, grpc.WithInitialWindowSize(smallWindow), grpc.WithInitialConnWindowSize(smallWindow))
	if err != nil {
		mu.Lock()
		s.Other++
		s.Example = err.Error()
		mu.Unlock()
		return nil
	}
	return conn
}

// stallLoop runs stallOnce (query, for topK hits) on client while the incident (ctx) lasts and leaves room for one more
// hold, and records each stream into s under mu.
func stallLoop(ctx, hardCtx context.Context, cfg Config, client queryv1.QueryServiceClient, query string, topK uint32,
	incidentEnd time.Time, mu *sync.Mutex, s *StallStats) {
	held := 0
	for hardCtx.Err() == nil {
		if ctx.Err() != nil || (held > 0 && time.Until(incidentEnd) < cfg.StallHold+cfg.Timeout) {
			return
		}
		res, delay, err := stallOnce(hardCtx, client, query, topK, cfg.StallHold)
		mu.Lock()
		switch res {
		case stallWatchdog:
			s.Held++
			s.EndedByWatchdog++
		case stallConnClosed:
			s.Held++
			s.ConnClosed++
		case stallCompleted:
			s.Held++
			s.Completed++
		case stallShed:
			s.Shed++
		case stallOther:
			s.Other++
			if s.Example == "" && err != nil {
				s.Example = err.Error()
			}
		}
		mu.Unlock()
		switch res {
		case stallWatchdog, stallCompleted:
			held++
		case stallConnClosed:
			held++
			// Every stream of the connection ended at once; without a pause they would all
			// start again in the same instant, the hog's 256 searches of 1000 hits at once
			// every few seconds, rather than the staggered streams it ramped up to.
			sleep(ctx, rand.N(cfg.StallHold/2))
		case stallShed:
			sleep(ctx, delay)
		case stallOther:
			sleep(ctx, failPause)
		}
	}
}

type stallResult int

const (
	stallStopped    stallResult = iota // the run was interrupted
	stallWatchdog                      // ended by the proxy's send watchdog
	stallConnClosed                    // ended with the connection, closed by the proxy's flow guard
	stallCompleted                     // ended OK although unread
	stallShed                          // refused by admission control
	stallOther                         // anything else
)

// stallOnce opens one stream for query's topK hits, waits for the proxy to start sending, leaves it unread for hold
// and then reads it to its end. The stream has no deadline of the QS kind, so that only the
// proxy's send watchdog can end it early; it is cancelled at the latest some time after hold.
func stallOnce(ctx context.Context, client queryv1.QueryServiceClient, query string, topK uint32, hold time.Duration) (stallResult, time.Duration, error) {
	sctx, cancel := context.WithTimeout(ctx, hold+30*time.Second)
	defer cancel()
	stream, err := client.SearchStream(sctx, &queryv1.SearchStreamRequest{Query: query, TopK: topK})
	if err != nil {
		return stallOther, 0, err
	}
	md, err := stream.Header() // blocks until the proxy sends its first hits, or ends the stream
	if err == nil && md == nil {
		_, err = stream.Recv() // ended without headers: the status says why
	}
	if md == nil {
		if ctx.Err() != nil {
			return stallStopped, 0, nil
		}
		if st := status.Convert(err); st.Code() == codes.ResourceExhausted {
			if _, ok := retryInfo(st); ok {
				return stallShed, retryDelay(st), err
			}
		}
		return stallOther, 0, err
	}
	if !sleep(ctx, hold) { // the proxy is sending; do not read
		return stallStopped, 0, nil
	}
	for range 1 << 20 { // bounded by sctx long before
		if _, err = stream.Recv(); err != nil {
			break
		}
	}
	switch st := status.Convert(err); {
	case ctx.Err() != nil:
		return stallStopped, 0, nil
	case errors.Is(err, io.EOF):
		return stallCompleted, 0, nil
	case st.Code() == codes.ResourceExhausted && strings.Contains(st.Message(), lifecycle.ErrSendStalled.Error()):
		return stallWatchdog, 0, nil
	case st.Code() == codes.Unavailable && !strings.Contains(st.Message(), "shards did not answer"):
		return stallConnClosed, 0, nil // the connection broke under the unread stream
	default:
		return stallOther, 0, err
	}
}

// VanishStats are the vanishers' connections.
type VanishStats struct {
	// Vanished is how many connections went silent; MidQuery how many of them while their query
	// was still unanswered; BeforeReady how many of those before the connection was ready (the
	// proxy's HTTP/2 settings had not reached the client: the proxy was still accepting or
	// handshaking it, and the query had not left the client).
	Vanished, MidQuery, BeforeReady int64
	// Dropped is how many the proxy closed (its FIN reached the relay) within VanishWait;
	// NotDropped how many it did not.
	Dropped, NotDropped int64
	// LongestDrop is the longest time from going silent to the proxy's FIN.
	LongestDrop time.Duration
	// Other counts rounds that failed to set up; Example is the first error.
	Other   int64
	Example string
}

// vanisher repeats vanishing rounds while the incident (ctx) lasts and leaves room for one more
// wait for the proxy to drop the connection; its first round may run past the incident, bounded
// by hardCtx and cfg.VanishWait.
func vanisher(ctx, hardCtx context.Context, cfg Config, id int, incidentEnd time.Time, mu *sync.Mutex, s *VanishStats) {
	for round := 0; hardCtx.Err() == nil; round++ {
		if ctx.Err() != nil || (round > 0 && time.Until(incidentEnd) < cfg.VanishWait+cfg.Timeout) {
			return
		}
		vanishOnce(hardCtx, cfg, queries[(id+round)%len(queries)], mu, s)
	}
}

// vanishOnce connects through a new Relay, starts a query, makes the relay go silent while the
// query runs, and waits up to cfg.VanishWait for the proxy to close the connection. A query that
// ends before it has run vanishAfter (shed, most likely) is followed by another, so that the
// connection vanishes mid-query; after a few tries it vanishes all the same.
func vanishOnce(ctx context.Context, cfg Config, query string, mu *sync.Mutex, s *VanishStats) {
	fail := func(err error) {
		mu.Lock()
		s.Other++
		if s.Example == "" {
			s.Example = err.Error()
		}
		mu.Unlock()
		sleep(ctx, failPause)
	}
	relay, err := NewRelay(cfg.Addr)
	if err != nil {
		fail(err)
		return
	}
	defer func() { _ = relay.Close() }() // after conn.Close below: nothing left to report
	conn, err := dial(relay.Addr())
	if err != nil {
		fail(err)
		return
	}
	defer func() { _ = conn.Close() }()
	client := queryv1.NewQueryServiceClient(conn)

	var wg sync.WaitGroup // the queries; each ends at its deadline at the latest
	qctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		wg.Wait()
	}()
	midQuery := false
	for try := 0; try < 10 && !midQuery; try++ {
		answered := make(chan struct{})
		wg.Go(func() {
			defer close(answered)
			tctx, tcancel := context.WithTimeout(qctx, cfg.Timeout)
			defer tcancel()
			_, _ = client.Search(tctx, &queryv1.SearchRequest{Query: query, TopK: 10})
		})
		if !sleep(ctx, vanishAfter) {
			return
		}
		select {
		case <-answered: // answered or shed already: try again
		default:
			midQuery = true
		}
	}
	ready := conn.GetState() == connectivity.Ready
	relay.Blackhole()
	at := time.Now()
	mu.Lock()
	s.Vanished++
	if midQuery {
		s.MidQuery++
		if !ready {
			s.BeforeReady++
		}
	}
	mu.Unlock()

	t := time.NewTimer(cfg.VanishWait)
	defer t.Stop()
	select {
	case <-relay.TargetClosed():
		d := time.Since(at)
		mu.Lock()
		s.Dropped++
		s.LongestDrop = max(s.LongestDrop, d)
		mu.Unlock()
	case <-t.C:
		mu.Lock()
		s.NotDropped++
		mu.Unlock()
	case <-ctx.Done():
		mu.Lock()
		s.Vanished-- // interrupted: neither dropped nor kept
		if midQuery {
			s.MidQuery--
			if !ready {
				s.BeforeReady--
			}
		}
		mu.Unlock()
	}
}
