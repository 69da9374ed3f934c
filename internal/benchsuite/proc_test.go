package benchsuite

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// shell returns children that run /bin/sh, so that a test can script what a child prints.
func shell(t *testing.T) *children {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	return &children{bin: sh, dir: t.TempDir()}
}

func TestChildStartsAndStops(t *testing.T) {
	t.Parallel()
	c := shell(t)
	defer c.stopAll()
	ch, got, err := c.start(t.Context(), "proxy", []*regexp.Regexp{reProxyAdmin, reProxyAddr}, "-c",
		`echo starting >&2; echo "gather proxy: QueryService on 127.0.0.1:7070, admin on http://127.0.0.1:9090, 4 shards"; exec sleep 60`)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != "127.0.0.1:9090" || got[1] != "127.0.0.1:7070" {
		t.Errorf("addresses %q, want the admin's then the QueryService's", got)
	}
	if pids := c.pids(); len(pids) != 2 || pids[1] != ch.cmd.Process.Pid {
		t.Errorf("pids %v, want this process's and the child's", pids)
	}
	start := time.Now()
	c.stopAll()
	if err := ch.alive(); err == nil {
		t.Error("the child is still alive after stopAll")
	}
	if time.Since(start) > stopGrace {
		t.Error("SIGTERM did not end the child")
	}
	ch.stop() // again: nothing happens
	b, err := os.ReadFile(filepath.Join(c.dir, "proxy.log"))
	if err != nil || string(b) != "starting\n" {
		t.Errorf("log file: %q, %v; want the child's stderr", b, err)
	}
}

func TestChildExitsBeforeServing(t *testing.T) {
	t.Parallel()
	c := shell(t)
	defer c.stopAll()
	_, _, err := c.start(t.Context(), "shard-0", []*regexp.Regexp{reShardAddr}, "-c", "echo bad flag >&2; exit 2")
	if err == nil || !strings.Contains(err.Error(), "shard-0 exited before serving") || !strings.Contains(err.Error(), "shard-0.log") {
		t.Errorf("err = %v, want one that names the child and its log", err)
	}
}

func TestChildStartCanceled(t *testing.T) {
	t.Parallel()
	c := shell(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, _, err := c.start(ctx, "quiet", []*regexp.Regexp{reShardAddr}, "-c", "exec sleep 60")
	if err == nil {
		t.Error("start succeeded without the address line")
	}
	c.stopAll() // the child was registered, and is stopped
	if pids := c.pids(); len(pids) != 1 {
		t.Errorf("pids after stopAll: %v", pids)
	}
}

func TestCoresBetween(t *testing.T) {
	t.Parallel()
	a := load{machine: cpuTimes{busy: 1000, total: 10000, ok: true}, ours: 500}
	b := load{machine: cpuTimes{busy: 1180, total: 10200, ok: true}, ours: 650}
	// 200 ticks over 2 cores: 100 ticks of wall time; 180 busy = 1.8 cores, 150 ours = 1.5 cores.
	busy, others := coresBetween(a, b, 2)
	if busy < 1.799 || busy > 1.801 || others < 0.299 || others > 0.301 {
		t.Errorf("coresBetween = %v, %v; want 1.8, 0.3", busy, others)
	}
	if busy, others := coresBetween(load{}, b, 2); busy != 0 || others != 0 {
		t.Errorf("without a first sample: %v, %v; want 0, 0", busy, others)
	}
	if !readCPUTimes().ok {
		return // no /proc
	}
	// Burn CPU until /proc shows some (a tick is 10ms), for at most 2s.
	for deadline := time.Now().Add(2 * time.Second); processTicks([]int{os.Getpid()}) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("after 2s of spinning, /proc shows no CPU time for this process")
		}
	}
}
