package benchsuite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"time"
)

// Lines the gather subcommands print on stdout once they serve, and what the suite takes from
// them. `gather benchsuite target` prints its addresses as `gather proxy` does.
var (
	reShardAddr  = regexp.MustCompile(`ShardService on (\S+)`)
	reProxyAddr  = regexp.MustCompile(`QueryService on (\S+),`)
	reProxyAdmin = regexp.MustCompile(`admin on http://(\S+),`)
)

const (
	// startTimeout bounds a child's wait for its address line (a race-built binary under a
	// loaded machine takes seconds).
	startTimeout = 60 * time.Second
	// stopGrace is how long a child may take to exit after SIGTERM before it is killed.
	stopGrace = 5 * time.Second
	// maxStdout is how much of a child's stdout is kept for finding its addresses.
	maxStdout = 64 << 10
)

// children are the processes of one suite run. Every process started is stopped and waited for
// by stopAll, which the run defers; each child's stderr (its logs, and the proxy's access log)
// goes to a file of its own in dir, written by the child directly.
type children struct {
	bin string
	dir string

	mu   sync.Mutex
	list []*child
}

// child is one running gather process.
type child struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	out  *watchWriter

	exited  chan struct{} // closed once the process has exited; err is then set
	err     error
	stopped sync.Once
}

// start runs `gather args...` as name and waits until its stdout has a match for each of want
// (in any order), returning each match's first group. The process is registered before it
// starts, so stopAll reaches it on every path.
func (c *children) start(ctx context.Context, name string, want []*regexp.Regexp, args ...string) (*child, []string, error) {
	return c.startFind(ctx, name, func(text []byte) ([]string, bool) {
		got := make([]string, len(want))
		for i, re := range want {
			m := re.FindSubmatch(text)
			if m == nil {
				return nil, false
			}
			got[i] = string(m[1])
		}
		return got, true
	}, args...)
}

// startMany is start for a process that prints n lines matching re (a multi-partition shard): it
// returns the first group of each, in order.
func (c *children) startMany(ctx context.Context, name string, re *regexp.Regexp, n int, args ...string) (*child, []string, error) {
	return c.startFind(ctx, name, func(text []byte) ([]string, bool) {
		ms := re.FindAllSubmatch(text, n)
		if len(ms) < n {
			return nil, false
		}
		got := make([]string, n)
		for i, m := range ms {
			got[i] = string(m[1])
		}
		return got, true
	}, args...)
}

// startFind is start with find looking for what the process prints once it serves.
func (c *children) startFind(ctx context.Context, name string, find func([]byte) ([]string, bool), args ...string) (*child, []string, error) {
	log, err := os.Create(filepath.Join(c.dir, name+".log"))
	if err != nil {
		return nil, nil, err
	}
	ch := &child{
		name:   name,
		cmd:    exec.Command(c.bin, args...),
		log:    log,
		out:    &watchWriter{changed: make(chan struct{}, 1)},
		exited: make(chan struct{}),
	}
	ch.cmd.Stdout = ch.out
	ch.cmd.Stderr = log // an *os.File: the child writes it directly, no copying in this process
	ch.cmd.SysProcAttr = childAttr()
	if err := ch.cmd.Start(); err != nil {
		_ = log.Close()
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	c.mu.Lock()
	c.list = append(c.list, ch)
	c.mu.Unlock()
	go func() {
		ch.err = ch.cmd.Wait()
		close(ch.exited)
	}()

	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	for {
		if got, ok := find(ch.out.bytes()); ok {
			return ch, got, nil
		}
		select {
		case <-ch.out.changed:
		case <-ch.exited:
			return nil, nil, fmt.Errorf("%s exited before serving (%s); its log: %s", name, ch.exitReason(), log.Name())
		case <-timer.C:
			return nil, nil, fmt.Errorf("%s printed no address within %v; its log: %s", name, startTimeout, log.Name())
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// stop ends the child: SIGTERM, then SIGKILL if it has not exited within stopGrace. It waits
// for the exit and closes the log file; later calls do nothing.
func (ch *child) stop() {
	ch.stopped.Do(func() {
		select {
		case <-ch.exited:
		default:
			_ = ch.cmd.Process.Signal(syscall.SIGTERM)
			t := time.NewTimer(stopGrace)
			select {
			case <-ch.exited:
			case <-t.C:
				_ = ch.cmd.Process.Kill()
				<-ch.exited
			}
			t.Stop()
		}
		_ = ch.log.Close()
	})
}

// alive reports an error if the child has exited.
func (ch *child) alive() error {
	select {
	case <-ch.exited:
		return fmt.Errorf("%s exited (%s); its log: %s", ch.name, ch.exitReason(), ch.log.Name())
	default:
		return nil
	}
}

// exitReason describes how the child exited; call it only once exited is closed.
func (ch *child) exitReason() string {
	if ch.err == nil {
		return "exit status 0"
	}
	return ch.err.Error()
}

// stopAll stops every child started, all at once, and waits for them.
func (c *children) stopAll() {
	c.mu.Lock()
	list := c.list
	c.list = nil
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, ch := range list {
		wg.Go(ch.stop)
	}
	wg.Wait()
}

// pids returns the process ids of the children still running, and this process's.
func (c *children) pids() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []int{os.Getpid()}
	for _, ch := range c.list {
		if ch.alive() == nil {
			out = append(out, ch.cmd.Process.Pid)
		}
	}
	return out
}

// stopGroup stops the given children, all at once.
func stopGroup(list ...*child) {
	var wg sync.WaitGroup
	for _, ch := range list {
		if ch != nil {
			wg.Go(ch.stop)
		}
	}
	wg.Wait()
}

// watchWriter keeps the first maxStdout bytes written to it and signals every write.
type watchWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func (w *watchWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	if room := maxStdout - w.buf.Len(); room > 0 {
		w.buf.Write(b[:min(len(b), room)])
	}
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
	return len(b), nil
}

func (w *watchWriter) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.buf.Bytes())
}

// errNoFileLimit is wrapped by raiseFileLimit's error when the limit cannot be raised.
var errNoFileLimit = errors.New("cannot raise the open-file limit")
