package main

import (
	"fmt"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/discovery/dnstest"
)

// TestProxyFollowsDNS: gather proxy --shard NAME=dns://SERVER/HOST:PORT against a real DNS server
// on loopback, with the shard's replicas on 127.0.0.1 and 127.0.0.2 at one port, as the pods of
// a headless Service. A proxy that resolves every second finds a replica added to the name; a
// proxy that resolves hourly resolves again when its replica's process dies, and finds the one
// the name now points to.
func TestProxyFollowsDNS(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(lis.Addr().(*net.TCPAddr).Port)
	_ = lis.Close()
	shard := func(ip string) *process {
		p := startGather(t, "shard", "--synthetic", "--latency", "none", "--listen", ip+":"+port, "--partition", "0/1")
		p.await(t, shardAddr)
		return p
	}
	const name = "shards.gather.test."
	dns := dnstest.Start(t)
	a := shard("127.0.0.1")
	dns.Set(name, "127.0.0.1")
	target := "s0=dns://" + dns.Addr() + "/" + name + ":" + port
	proxy := func(refresh string) (queryv1.QueryServiceClient, string, *process) {
		px := startGather(t, "proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--shard", target, "--dns-refresh", refresh)
		return queryv1.NewQueryServiceClient(dial(t, px.await(t, proxyAddr))), px.await(t, adminAddr), px
	}
	fast, fastAdmin, fastPx := proxy("1s")
	slow, slowAdmin, slowPx := proxy("1h")
	replicas := func(admin string) float64 { return metricValue(t, admin, `gather_topology_replicas{shard="s0"}`) }
	poll(t, 10*time.Second, answeredBy(t, fast, okFrom("s0", "127.0.0.1:"+port)))
	poll(t, 10*time.Second, answeredBy(t, slow, okFrom("s0", "127.0.0.1:"+port)))

	// A second replica appears in DNS: the proxy that resolves every second finds it.
	b := shard("127.0.0.2")
	dns.Set(name, "127.0.0.1", "127.0.0.2")
	poll(t, 10*time.Second, func() string {
		if n := replicas(fastAdmin); n != 2 {
			return fmt.Sprintf("the 1s proxy has %v replicas of s0, want 2", n)
		}
		return ""
	})
	if n := replicas(slowAdmin); n != 1 {
		t.Errorf("the hourly proxy has %v replicas of s0 before any connection was lost, want 1", n)
	}

	// The first replica dies and leaves DNS: the hourly proxy resolves again on the loss.
	dns.Set(name, "127.0.0.2")
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.exited
	poll(t, 15*time.Second, answeredBy(t, slow, okFrom("s0", "127.0.0.2:"+port)))
	if n := replicas(slowAdmin); n != 1 {
		t.Errorf("the hourly proxy has %v replicas of s0 after re-resolving, want 1", n)
	}
	poll(t, 10*time.Second, answeredBy(t, fast, okFrom("s0", "127.0.0.2:"+port)))
	fastPx.stop(t)
	slowPx.stop(t)
	b.stop(t)
}
