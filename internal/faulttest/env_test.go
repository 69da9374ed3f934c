package faulttest

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/admission"
	"github.com/gatherproxy/gather/internal/fanout"
	"github.com/gatherproxy/gather/internal/flowguard"
	"github.com/gatherproxy/gather/internal/lifecycle"
	"github.com/gatherproxy/gather/internal/proxy"
	"github.com/gatherproxy/gather/internal/shardtest"
	"github.com/gatherproxy/gather/internal/sockdiag"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a proxy serving on loopback, wired like `gather proxy` (the flow guard, lifecycle and
// admission interceptors), in front of fake shards named s0, s1, ...
type env struct {
	fan    *fanout.Client
	shards []*shardtest.Shard
	reg    *prometheus.Registry
	addr   string
	client queryv1.QueryServiceClient
}

type options struct {
	fan        fanout.Config
	svc        proxy.Config
	admission  admission.Config
	serverOpts []grpc.ServerOption
	shardOpts  []grpc.ServerOption
}

func newEnv(t *testing.T, o options, behaviors ...shardtest.Behavior) *env {
	t.Helper()
	return newEnvTB(t, o, behaviors...)
}

func newEnvTB(t testing.TB, o options, behaviors ...shardtest.Behavior) *env {
	t.Helper()
	e := &env{reg: prometheus.NewRegistry()}
	lc := lifecycle.New(e.reg)
	var topo []fanout.ShardSpec
	for i, b := range behaviors {
		s := shardtest.Start(t, b, o.shardOpts...)
		e.shards = append(e.shards, s)
		topo = append(topo, fanout.ShardSpec{Name: fmt.Sprintf("s%d", i), Replicas: []string{s.Addr()}})
	}
	o.fan.DialOptions = append(o.fan.DialOptions, grpc.WithChainStreamInterceptor(lc.StreamClientInterceptor()))
	fan, err := fanout.New(topo, o.fan)
	if err != nil {
		t.Fatal(err)
	}
	adm := admission.New(o.admission, e.reg)
	guard := flowguard.New(flowguard.Config{SendTimeout: o.svc.SendTimeout}, e.reg)
	o.svc.Flow = guard
	svc := queryv1.QueryService_ServiceDesc.ServiceName
	srv := grpc.NewServer(append(append([]grpc.ServerOption{
		grpc.Creds(guard.Credentials(insecure.NewCredentials())),
		grpc.ChainUnaryInterceptor(lc.UnaryServerInterceptor(), adm.UnaryServerInterceptor(svc)),
		grpc.ChainStreamInterceptor(lc.StreamServerInterceptor(), adm.StreamServerInterceptor(svc)),
	}, o.svc.ServerOptions()...), o.serverOpts...)...)
	proxy.New(fan, o.svc).Register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = lis.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	conn := dial(t, e.addr)
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
		<-done
		guard.Close()
		_ = fan.Close()
	})
	e.client = queryv1.NewQueryServiceClient(conn)
	e.fan = fan
	return e
}

func dial(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// ends reads gather_grpc_rpc_ends_total for one side, method and reason.
func (e *env) ends(side, method, reason string) float64 {
	mfs, err := e.reg.Gather()
	if err != nil {
		panic(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "gather_grpc_rpc_ends_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["side"] == side && l["method"] == method && l["reason"] == reason {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// gauge reads a gauge (the sum over its label values) from the env's registry.
func (e *env) gauge(name string) float64 {
	mfs, err := e.reg.Gather()
	if err != nil {
		panic(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

const (
	searchMethod = "/gather.query.v1.QueryService/Search"
	streamMethod = "/gather.query.v1.QueryService/SearchStream"
)

// baseline is what a test must return to: goroutines and heap of the process after warm-up.
type baseline struct {
	goroutines int
	heap       uint64
}

// takeBaseline warms the env up with one query (so connections exist) and records the baseline.
func (e *env) takeBaseline(t *testing.T) baseline {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond) // slow shards are cut
	defer cancel()
	if _, err := e.client.Search(ctx, &queryv1.SearchRequest{Query: "warm up", TopK: 1}); err != nil {
		t.Logf("warm-up query: %v", err) // some envs fail every query on purpose
	}
	for _, s := range e.shards {
		s.WaitIdle(t, 10*time.Second)
	}
	// Every shard connection up before the goroutines are counted: the warm-up's shard calls
	// may be cut before grpc-go has connected (slow shards, a loaded machine), and a connection
	// that comes up afterwards brings its transport's goroutines with it (a CI run counted 52
	// against a baseline of 50 for 10s).
	eventually(t, 10*time.Second, func() string {
		for name, replicas := range e.fan.ReplicaStates() {
			for addr, st := range replicas {
				if st != connectivity.Ready {
					return fmt.Sprintf("shard %s replica %s: %v", name, addr, st)
				}
			}
		}
		return ""
	})
	return baseline{goroutines: runtime.NumGoroutine(), heap: heapInUse()}
}

// nothingLeft asserts the process is back to b: every shard call ended, goroutines at or below
// the baseline, no socket of the process in CLOSE_WAIT, the heap within 16 MiB of the baseline.
func (e *env) nothingLeft(t *testing.T, b baseline) {
	t.Helper()
	for _, s := range e.shards {
		s.WaitIdle(t, 10*time.Second)
	}
	eventually(t, 10*time.Second, func() string {
		if n := runtime.NumGoroutine(); n > b.goroutines {
			return fmt.Sprintf("%d goroutines, baseline %d", n, b.goroutines)
		}
		return ""
	})
	assertNoCloseWait(t)
	eventually(t, 10*time.Second, func() string {
		if heap := heapInUse(); heap > b.heap+16<<20 {
			return fmt.Sprintf("heap in use %d MiB, baseline %d MiB", heap>>20, b.heap>>20)
		}
		return ""
	})
}

// heapInUse is the heap in use after two collections: what sync.Pools hold (grpc-go's buffers
// among them) survives the first in the pools' victim caches, and is freed by the second.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// assertNoCloseWait waits for the process to have no socket in CLOSE_WAIT. It skips the check,
// saying so, where /proc cannot be read.
func assertNoCloseWait(t *testing.T) {
	t.Helper()
	r := sockdiag.New("")
	eventually(t, 10*time.Second, func() string {
		snap, err := r.Read()
		if err != nil || !snap.Available {
			t.Logf("socket check skipped: %v", err)
			return ""
		}
		if n := snap.Sockets[sockdiag.CloseWait]; n > 0 {
			return fmt.Sprintf("%d sockets in CLOSE_WAIT", n)
		}
		return ""
	})
}

// eventually polls cond until it returns "" and fails with its last answer after timeout.
func eventually(t *testing.T, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, why)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
