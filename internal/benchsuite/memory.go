package benchsuite

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/loadgen"
)

// pollEvery is the interval of the suite's polls of a proxy's /metrics.
const pollEvery = 20 * time.Millisecond

// heapShapes are the fan-outs and top_ks the heap per in-flight query is measured at: the
// target's fan-out and each of the run's fan-outs from 16 up, at every top_k; only the
// target's shape when quick.
func heapShapes(fanOuts []int, quick bool) (shapes [][2]int) {
	ns := []int{HeapFanOut}
	for _, n := range fanOuts {
		if n >= 16 && n != HeapFanOut && !quick {
			ns = append(ns, n)
		}
	}
	if quick {
		return [][2]int{{HeapFanOut, HeapTopK}}
	}
	for _, n := range ns {
		for _, k := range TopKs {
			shapes = append(shapes, [2]int{n, k})
		}
	}
	return shapes
}

// heapSlowProcs is how many processes serve the slow shards of the heap measurement.
const heapSlowProcs = 4

// heapScaling measures the proxy's heap per in-flight query at every shape of heapShapes, each on a
// fresh proxy over slow shards shared by all. Each shape holds about as many shard calls in flight
// as the target's (heapQueries × HeapFanOut), so the larger fan-outs run fewer queries.
func (s *suite) heapScaling(ctx context.Context, fanOuts []int) ([]HeapResult, error) {
	shapes := heapShapes(fanOuts, s.cfg.Quick)
	maxN := 0
	for _, sh := range shapes {
		maxN = max(maxN, sh[0])
	}
	s.progressf("heap per in-flight query: %d shapes, shards delayed %v", len(shapes), s.t.heapDelay)
	shards, procs, err := s.startShards(ctx, "slow-shard", maxN, heapSlowProcs, s.t.heapDelay.String())
	defer stopGroup(procs...)
	if err != nil {
		return nil, err
	}
	var out []HeapResult
	for _, sh := range shapes {
		n, k := sh[0], sh[1]
		m := min(max(s.t.heapQueries*HeapFanOut/n, s.t.heapQueries/16, 5), s.t.heapQueries)
		r, err := s.heapPerQuery(ctx, shards[:n], k, m)
		if err != nil {
			return out, err
		}
		s.progressf("  fan-out %d, top_k %d, %d queries: %s", n, k, m, r)
		out = append(out, *r)
	}
	return out, nil
}

// settled scrapes the proxy after a collection once its goroutines have stopped falling (the
// same count twice, 500ms apart, at most 10s): the fan-out keeps the goroutines of a round's
// shard calls waiting for a second for the next calls (fanout's workers), and a baseline taken
// with them in it would count the next round's calls as running on goroutines already there.
func settled(ctx context.Context, adm admin) (metrics, error) {
	last, err := adm.metricsAfterGC(ctx)
	for end := time.Now().Add(10 * time.Second); err == nil && time.Now().Before(end); {
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		var now metrics
		if now, err = adm.metricsAfterGC(ctx); err == nil {
			if now.get(mGoroutines) >= last.get(mGoroutines) {
				return now, nil
			}
			last = now
		}
	}
	return last, err
}

// heapPerQuery measures the proxy's heap per in-flight query at fan-out len(shards) and top_k k:
// the shards wait heapDelay before answering, so queries stay in flight; a warm round of m
// concurrent queries, then a garbage collection and a scrape; then another round, and while every
// one of its queries is admitted and has started all its shard calls, another collection and
// scrape. The heap in use grew by the difference, for m queries.
func (s *suite) heapPerQuery(ctx context.Context, shards []string, k, m int) (*HeapResult, error) {
	delay, n := s.t.heapDelay, len(shards)
	proxy, addrs, err := s.startProxy(ctx, fmt.Sprintf("proxy-heap-%d-%d", n, k), shards, "--max-in-flight", strconv.Itoa(2*m+64),
		"--shard-timeout", "1m", "--idle-timeout", "1m")
	if err != nil {
		return nil, err
	}
	defer stopGroup(proxy)
	conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	client := queryv1.NewQueryServiceClient(conn)
	adm := newAdmin(addrs[1])

	// round sends m queries at once, runs measure (if any) while they are in flight, and waits
	// for every answer, each of which must have k hits. An answer degraded (a shard call that
	// failed: on an overloaded machine, one the proxy gave up on) is counted, not an error: the
	// measurement is taken while every shard call is still running.
	var degraded atomic.Int64
	round := func(measure func() error) error {
		qctx, cancel := context.WithTimeout(ctx, delay+time.Minute)
		defer cancel()
		degraded.Store(0)
		errs := make([]error, m)
		var wg sync.WaitGroup
		for i := range m {
			wg.Go(func() {
				q := loadgen.DefaultQueries[i%len(loadgen.DefaultQueries)]
				resp, err := client.Search(qctx, &queryv1.SearchRequest{Query: q, TopK: uint32(k)})
				if err == nil && len(resp.GetHits()) != k {
					err = fmt.Errorf("%d hits, coverage %v", len(resp.GetHits()), resp.GetCoverage())
				}
				if err == nil && resp.GetCoverage().GetDegraded() {
					degraded.Add(1)
				}
				if err != nil {
					errs[i] = fmt.Errorf("query %d: %w", i, err)
				}
			})
		}
		var merr error
		if measure != nil {
			merr = measure()
		}
		if merr != nil {
			cancel() // no need to wait for the shards
		}
		wg.Wait()
		if merr != nil {
			return merr
		}
		return errors.Join(errs...)
	}

	fail := func(err error) (*HeapResult, error) {
		if aerr := proxy.alive(); aerr != nil {
			err = fmt.Errorf("%w; %w", err, aerr)
		}
		return nil, fmt.Errorf("heap per query at fan-out %d, top_k %d: %w", n, k, err)
	}
	// The warm round makes what lasts (connection buffers, metric series, pools' first fill).
	if err := round(nil); err != nil {
		return fail(err)
	}
	before, err := settled(ctx, adm)
	if err != nil {
		return fail(err)
	}
	shardService := []string{"grpc_service", "gather.shard.v1.ShardService"}
	startedBefore := before.get(mStarted, shardService...)
	var during metrics
	err = round(func() error {
		// Every query admitted and every shard call started, within 3/4 of the shards' delay.
		wait := delay * 3 / 4
		deadline := time.Now().Add(wait)
		tick := time.NewTicker(pollEvery)
		defer tick.Stop()
		for {
			now, err := adm.metrics(ctx)
			if err != nil {
				return err
			}
			inFlight, started := now.get(mInFlight), now.get(mStarted, shardService...)-startedBefore
			if inFlight >= float64(m) && started >= float64(m*n) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("after %v: %v queries in flight and %v shard calls started, want %d and %d",
					wait, inFlight, started, m, m*n)
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if during, err = adm.metricsAfterGC(ctx); err != nil {
			return err
		}
		check, err := adm.metrics(ctx)
		if err != nil {
			return err
		}
		if got := check.get(mInFlight); got < float64(m) {
			return fmt.Errorf("only %v of %d queries still in flight after the scrape: the shards' delay of %v is too short for this machine", got, m, delay)
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	r := &HeapResult{
		FanOut: n, TopK: k, Queries: m, Degraded: int(degraded.Load()), ShardDelayMS: delay.Milliseconds(),
		HeapBefore: uint64(before.get(mHeapInuse)), HeapDuring: uint64(during.get(mHeapInuse)),
		StackBefore: uint64(before.get(mStackInuse)), StackDuring: uint64(during.get(mStackInuse)),
		GoroutinesBefore: int(before.get(mGoroutines)), GoroutinesDuring: int(during.get(mGoroutines)),
	}
	r.HeapPerQuery = (float64(r.HeapDuring) - float64(r.HeapBefore)) / float64(m)
	r.StackPerQuery = (float64(r.StackDuring) - float64(r.StackBefore)) / float64(m)
	r.GoroutinesPerQuery = float64(r.GoroutinesDuring-r.GoroutinesBefore) / float64(m)
	return r, nil
}

// idleConns opens idleConns QS connections to a fresh proxy, waits until each is READY, and
// reads what they cost the proxy: resident memory, heap in use, goroutines and descriptors,
// each after a garbage collection. It raises the open-file limit first, which the proxy
// inherits; if that fails, the measurement is skipped and the result says why.
func (s *suite) idleConns(ctx context.Context) (*IdleResult, error) {
	n := s.t.idleConns
	r := &IdleResult{Requested: n}
	if err := raiseFileLimit(uint64(n) + 4096); err != nil {
		r.Skipped = err.Error()
		return r, nil
	}
	proxy, addrs, err := s.startProxy(ctx, "proxy-idle", s.shards[:1])
	if err != nil {
		return nil, err
	}
	defer stopGroup(proxy)
	fail := func(err error) (*IdleResult, error) {
		if aerr := proxy.alive(); aerr != nil {
			err = fmt.Errorf("%w; %w", err, aerr)
		}
		return nil, fmt.Errorf("idle connections: %w", err)
	}
	adm := newAdmin(addrs[1])
	before, err := adm.metricsAfterGC(ctx)
	if err != nil {
		return fail(err)
	}

	conns := make([]*grpc.ClientConn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	var ready atomic.Int64
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, s.t.idleTimeout)
	defer cancel()
	g, gctx := errgroup.WithContext(dctx)
	g.SetLimit(64)
	for i := range n {
		g.Go(func() error {
			// This process's side of the connections is not what is measured: no buffers.
			c, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithReadBufferSize(0), grpc.WithWriteBufferSize(0))
			if err != nil {
				return err
			}
			conns[i] = c
			c.Connect()
			for st := c.GetState(); st != connectivity.Ready; st = c.GetState() {
				if !c.WaitForStateChange(gctx, st) {
					return fmt.Errorf("connection %d still %v: %w", i, st, gctx.Err())
				}
			}
			ready.Add(1)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		r.Note = fmt.Sprintf("%d of %d connections READY within %v: %v", ready.Load(), n, s.t.idleTimeout, err)
	}
	r.Ready = int(ready.Load())
	r.ConnectSeconds = time.Since(start).Seconds()
	if r.Ready == 0 {
		return fail(errors.New(r.Note))
	}
	after, err := adm.metricsAfterGC(ctx)
	if err != nil {
		return fail(err)
	}
	r.RSSBefore, r.RSSAfter = uint64(before.get(mRSS)), uint64(after.get(mRSS))
	r.HeapBefore, r.HeapAfter = uint64(before.get(mHeapInuse)), uint64(after.get(mHeapInuse))
	r.StackBefore, r.StackAfter = uint64(before.get(mStackInuse)), uint64(after.get(mStackInuse))
	r.GoroutinesBefore, r.GoroutinesAfter = int(before.get(mGoroutines)), int(after.get(mGoroutines))
	r.FDsBefore, r.FDsAfter = int(before.get(mFDs)), int(after.get(mFDs))
	return r, nil
}
