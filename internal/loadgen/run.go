package loadgen

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/protobuf/types/known/durationpb"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
)

// Run sends load to client as cfg says and returns what it measured. It returns an error only for
// a Config it cannot run (wrapping [ErrInvalidConfig]); failed requests are counted in the
// Result, not returned.
//
// Run blocks until the run is over: the measured window has passed or the request count is
// reached, and every request sent has ended (each within cfg.Timeout). If ctx ends first, Run
// stops sending, cancels the requests in flight and returns the partial Result with Canceled set.
// Every goroutine Run starts has returned when it returns.
func Run(ctx context.Context, client queryv1.QueryServiceClient, cfg Config) (*Result, error) {
	cfg, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	r := newRun(client, cfg)
	stopProgress := r.startProgress()
	if cfg.Mode == Open {
		r.open(ctx)
	} else {
		r.closed(ctx)
	}
	stopProgress()
	return r.result(ctx.Err() != nil), nil
}

// RunAddr is Run against the QueryService at addr: a gRPC target ("127.0.0.1:7070",
// "dns:///proxies.example:7070"), or several HOST:PORT addresses separated by commas (two proxies
// side by side). The channel balances over every address of the target or the list with
// round_robin, one connection to each, so that load given several proxies is spread evenly over
// them (grpc-go's default, pick_first, would send it all to one). It dials with plaintext
// credentials, then opts (which may replace them or the service config), and closes the channel
// before it returns. The Result's Target is addr.
func RunAddr(ctx context.Context, addr string, cfg Config, opts ...grpc.DialOption) (*Result, error) {
	if _, err := cfg.resolve(); err != nil {
		return nil, err
	}
	target, targetOpts, err := dialTarget(addr)
	if err != nil {
		return nil, err
	}
	opts = append(append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, targetOpts...), opts...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", addr, err)
	}
	defer func() { _ = conn.Close() }()
	res, err := Run(ctx, queryv1.NewQueryServiceClient(conn), cfg)
	if res != nil {
		res.Target = addr
	}
	return res, err
}

// roundRobin is the service config of RunAddr's channel.
const roundRobin = `{"loadBalancingConfig": [{"round_robin": {}}]}`

// dialTarget is the gRPC target and dial options of RunAddr's addr: addr itself with round_robin,
// or for a comma-separated list, a resolver of its own that returns the list.
func dialTarget(addr string) (string, []grpc.DialOption, error) {
	opts := []grpc.DialOption{grpc.WithDefaultServiceConfig(roundRobin)}
	if !strings.Contains(addr, ",") {
		return addr, opts, nil
	}
	var state resolver.State
	for a := range strings.SplitSeq(addr, ",") {
		if a = strings.TrimSpace(a); a == "" {
			return "", nil, fmt.Errorf("target %q: an empty address in the list; give HOST:PORT,HOST:PORT", addr)
		}
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r := manual.NewBuilderWithScheme("loadgen")
	r.InitialState(state)
	return r.Scheme() + ":///list", append(opts, grpc.WithResolvers(r)), nil
}

// run is the state of one Run.
type run struct {
	client queryv1.QueryServiceClient
	cfg    Config
	reqs   []*queryv1.SearchRequest // one per query, shared read-only by every call

	start    time.Time // of the run, warmup included
	winStart time.Time // of the measured window
	end      time.Time // of the measured window; zero if no Duration

	seq      atomic.Int64 // requests a closed loop has sent, warmup included: picks the query
	tickets  atomic.Int64 // measured requests a closed loop has started
	issued   atomic.Int64 // measured requests sent
	inFlight atomic.Int64
	dropped  int64     // set by open once its dispatcher has stopped
	stopped  time.Time // when sending stopped

	rec *recorder
}

func newRun(client queryv1.QueryServiceClient, cfg Config) *run {
	r := &run{client: client, cfg: cfg, rec: newRecorder()}
	for _, q := range cfg.Queries {
		req := &queryv1.SearchRequest{Query: q, TopK: cfg.TopK, PartialPolicy: cfg.PartialPolicy}
		if cfg.ShardTimeout > 0 {
			req.ShardTimeout = durationpb.New(cfg.ShardTimeout)
		}
		r.reqs = append(r.reqs, req)
	}
	r.start = time.Now()
	r.winStart = r.start.Add(cfg.Warmup)
	if cfg.Duration > 0 {
		r.end = r.winStart.Add(cfg.Duration)
	}
	return r
}

// call sends request number seq and records its outcome if measured, with its latency counted
// from `from`: when it was sent (closed loop), or as the open loop's dispatcher decided.
func (r *run) call(ctx context.Context, seq int64, from time.Time, measured bool) {
	if ctx.Err() != nil {
		return // the run is over: the request was handed over but never sent
	}
	req := r.reqs[seq%int64(len(r.reqs))]
	if measured {
		r.issued.Add(1)
	}
	r.inFlight.Add(1)
	sent := time.Now()
	cctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	resp, err := r.client.Search(cctx, req)
	cancel()
	done := time.Now()
	r.inFlight.Add(-1)
	if !measured {
		return
	}
	if err != nil && ctx.Err() != nil {
		r.rec.interrupted()
		return
	}
	r.rec.record(done.Sub(from), resp, err, sent, done)
}

// closed runs the closed loop: Workers goroutines, each sending its next request when the
// previous one ends, until the window ends, the measured requests are all started, or ctx ends.
func (r *run) closed(ctx context.Context) {
	var wg sync.WaitGroup
	for range r.cfg.Workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				now := time.Now()
				measured := !now.Before(r.winStart)
				if measured {
					if !r.end.IsZero() && !now.Before(r.end) {
						return
					}
					if r.cfg.Requests > 0 && r.tickets.Add(1) > r.cfg.Requests {
						return
					}
				}
				r.call(ctx, r.seq.Add(1)-1, now, measured)
			}
		})
	}
	wg.Wait()
	r.stopped = time.Now()
}

// endGrace is how long after the measured window an open loop that is behind its schedule may go
// on sending the requests due within the window; those still unsent then are dropped.
const endGrace = 50 * time.Millisecond

// job is one request of an open loop: its number on the schedule and the time its latency counts
// from.
type job struct {
	seq      int64
	from     time.Time
	measured bool
}

// open runs the open loop: a dispatcher walks the schedule and hands each due request to a free
// goroutine of a pool that grows on demand up to MaxOutstanding; when all are busy it waits for
// one, and that wait counts in the latency of the requests that fell due meanwhile (see dispatch).
func (r *run) open(ctx context.Context) {
	jobs := make(chan job)
	var wg sync.WaitGroup
	workers := 0
	spawn := func() bool {
		if workers == r.cfg.MaxOutstanding {
			return false
		}
		workers++
		wg.Go(func() {
			for j := range jobs {
				r.call(ctx, j.seq, j.from, j.measured)
			}
		})
		return true
	}
	sent := r.dispatch(ctx, jobs, spawn)
	r.stopped = time.Now()
	close(jobs)
	wg.Wait()

	// Dropped: measured requests due before sending stopped but never sent.
	s := schedule{interval: float64(time.Second) / r.cfg.Rate}
	until := r.stopped.Sub(r.start)
	if !r.end.IsZero() {
		until = min(until, r.end.Sub(r.start))
	}
	due := s.count(until) - s.count(r.cfg.Warmup)
	if r.cfg.Requests > 0 {
		due = min(due, r.cfg.Requests)
	}
	r.dropped = max(0, due-sent)
}

// dispatch sends the jobs of the schedule until the window ends, the measured requests are all
// sent, or ctx ends, and returns the number of measured requests sent. Requests due within the
// window but still unsent endGrace after it are left unsent. When no goroutine is free
// to take a job it calls spawn, which starts one unless MaxOutstanding are running.
//
// A request's latency counts from when it fell due if the dispatcher was held back by the target,
// and from when it was sent if the dispatcher was only late by itself. The dispatcher is held back
// from the moment it finds every slot taken until it is ahead of the schedule again (it has to
// sleep for the next request): every request sent in between counts from the later of its due
// time and that moment, so the target's stall is charged in full to every request it delayed.
// Outside such a stretch, a request is late only because the dispatcher's timer woke it late (Go
// timers are only as fine as about 1ms in an otherwise idle process) or it was not scheduled;
// a client on another machine would not suffer that, so it is not charged to the target.
func (r *run) dispatch(ctx context.Context, jobs chan<- job, spawn func() bool) (sent int64) {
	s := schedule{interval: float64(time.Second) / r.cfg.Rate}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var windowEnd <-chan time.Time
	if !r.end.IsZero() {
		t := time.NewTimer(time.Until(r.end.Add(endGrace)))
		defer t.Stop()
		windowEnd = t.C
	}
	var heldSince time.Time // zero while the dispatcher is not held back by the target
	for i := int64(0); ; i++ {
		if ctx.Err() != nil {
			return sent
		}
		due := r.start.Add(s.offset(i))
		measured := !due.Before(r.winStart)
		if measured {
			if !r.end.IsZero() && !due.Before(r.end) {
				return sent
			}
			if r.cfg.Requests > 0 && sent >= r.cfg.Requests {
				return sent
			}
		}
		if d := time.Until(due); d > 0 {
			heldSince = time.Time{} // ahead of the schedule again
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return sent
			}
		} else if !r.end.IsZero() && time.Since(r.end) > endGrace {
			return sent // too far behind: the rest is dropped
		}
		j := job{seq: i, measured: measured}
		if heldSince.IsZero() {
			j.from = time.Now()
		} else {
			j.from = latest(due, heldSince)
		}
		select {
		case jobs <- j: // a goroutine was free
		default:
			if spawn() {
				jobs <- j // the new goroutine, or one that just finished, takes it
				break
			}
			// Every slot is taken: wait for one, unless the window (and its grace) ends first, in
			// which case the requests still due are dropped.
			if heldSince.IsZero() {
				heldSince = time.Now()
			}
			j.from = latest(due, heldSince)
			select {
			case jobs <- j:
			case <-windowEnd:
				return sent
			case <-ctx.Done():
				return sent
			}
		}
		if measured {
			sent++
		}
	}
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// schedule is an open loop's timetable: request i is due interval×i nanoseconds after the start.
type schedule struct {
	interval float64 // nanoseconds
}

func (s schedule) offset(i int64) time.Duration {
	return time.Duration(float64(i) * s.interval)
}

// count returns how many requests are due before t: the number of i ≥ 0 with offset(i) < t.
func (s schedule) count(t time.Duration) int64 {
	if t <= 0 {
		return 0
	}
	n := int64(float64(t) / s.interval)
	for n > 0 && s.offset(n-1) >= t {
		n--
	}
	for s.offset(n) < t {
		n++
	}
	return n
}

// startProgress starts the goroutine that calls cfg.Progress, and returns the function that
// stops it and waits for it.
func (r *run) startProgress() (stop func()) {
	if r.cfg.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(r.cfg.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				r.cfg.Progress(r.progress(now))
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

func (r *run) progress(now time.Time) Progress {
	if now.Before(r.winStart) {
		return Progress{Warmup: true, Elapsed: now.Sub(r.start), InFlight: r.inFlight.Load()}
	}
	p := r.rec.progress()
	p.Elapsed = now.Sub(r.winStart)
	p.InFlight = r.inFlight.Load()
	if p.Elapsed > 0 {
		p.QPS = float64(p.Completed) / p.Elapsed.Seconds()
	}
	return p
}

// result builds the Result once the run is over.
func (r *run) result(canceled bool) *Result {
	res := &Result{
		Schema:   Schema,
		Config:   r.cfg,
		Start:    r.winStart.Round(0).UTC(),
		Canceled: canceled,
	}
	res.Config.Progress, res.Config.ProgressEvery = nil, 0
	res.Counts, res.Latency, res.OKLatency, res.Overhead = r.rec.final()
	res.Counts.Issued = r.issued.Load()
	res.Counts.Dropped = r.dropped
	last := r.stopped
	if ld := r.rec.lastDone(); ld.After(last) {
		last = ld
	}
	if elapsed := last.Sub(r.winStart); elapsed > 0 {
		res.ElapsedUS = elapsed.Microseconds()
		res.Throughput = float64(res.Counts.Completed) / elapsed.Seconds()
	}
	return res
}
