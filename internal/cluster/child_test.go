package cluster

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// roleEnv makes the test binary play a part instead of running the tests: "parent" starts a
// child with startChild, prints its pid and waits to be killed; "sleeper" prints a ready line
// and sleeps.
const roleEnv = "GATHER_CLUSTER_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "parent":
		self, _ := os.Executable()
		if err := os.Setenv(roleEnv, "sleeper"); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		c, err := startChild("sleeper", self, filepath.Join(os.Getenv("LOGDIR"), "sleeper.log"), regexp.MustCompile(`^ready$`))
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		if _, err := c.awaitReady(context.Background(), 30*time.Second); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("child", c.pid())
		select {} // until killed
	case "sleeper":
		fmt.Println("ready")
		time.Sleep(time.Minute) // bounded: the test kills it long before
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// TestChildDiesWithParent: a child runs in a process group of its own (a terminal's Ctrl-C
// reaches only the parent) and exits when its parent is killed with SIGKILL (Pdeathsig).
func TestChildDiesWithParent(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	parent := exec.Command(self)
	parent.Env = append(os.Environ(), roleEnv+"=parent", "LOGDIR="+t.TempDir())
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "child ") {
		_ = parent.Process.Kill()
		_ = parent.Wait()
		t.Fatalf("parent said %q (%v)", line, err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "child ")))
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) }) // should be gone already

	ppg, _ := syscall.Getpgid(parent.Process.Pid)
	cpg, err := syscall.Getpgid(pid)
	if err != nil || cpg == ppg || cpg != pid {
		t.Errorf("child %d in process group %d (%v), parent's %d: want a group of its own", pid, cpg, err, ppg)
	}
	_ = parent.Process.Kill()
	_ = parent.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d still running 10s after its parent was killed", pid)
		}
		time.Sleep(20 * time.Millisecond) // polling another process's state: nothing to wait on
	}
}

// alive reports whether pid is a process that has not exited (a zombie has).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestReadyWriter: the ready line is found however the output is split, once, and everything is
// copied through.
func TestReadyWriter(t *testing.T) {
	t.Parallel()
	out := "starting\ngather shard: partition 0/4 serving gather.shard.v1.ShardService on 127.0.0.1:4242\nlater serving gather.shard.v1.ShardService on 127.0.0.1:1\n"
	for _, size := range []int{1, 3, 17, len(out)} {
		var copied strings.Builder
		found := make(chan []string, 1)
		w := &readyWriter{w: &copied, re: shardReady, found: found}
		for i := 0; i < len(out); i += size {
			if _, err := w.Write([]byte(out[i:min(i+size, len(out))])); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case m := <-found:
			if m[1] != "127.0.0.1:4242" {
				t.Errorf("writes of %d bytes: found %q, want the first ready line's address", size, m[1])
			}
		default:
			t.Errorf("writes of %d bytes: no ready line found", size)
		}
		if copied.String() != out {
			t.Errorf("writes of %d bytes: copied %q", size, copied.String())
		}
	}
}
