package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"time"
)

// child is one gather process of the cluster. Its stdout and stderr go to a log file; the first
// stdout line that matches its ready pattern gives its addresses.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed once Wait returned
	err     error         // Wait's error, set before exited closes
	ready   chan []string // the ready pattern's submatches, once
	log     *os.File
}

// startChild runs bin with args, its output appended to logPath, and returns once it started.
func startChild(name, bin, logPath string, ready *regexp.Regexp, args ...string) (*child, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	c := &child{name: name, logPath: logPath, exited: make(chan struct{}), ready: make(chan []string, 1), log: f}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stdout = &readyWriter{w: f, re: ready, found: c.ready}
	c.cmd.Stderr = f
	c.cmd.SysProcAttr = childAttr()
	if err := c.cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	go func() { // joined by whoever waits on exited: stop, kill, or the cluster's Stop
		c.err = c.cmd.Wait()
		_ = f.Close()
		close(c.exited)
	}()
	return c, nil
}

// pid returns the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// awaitReady waits for the ready line and returns its submatches, or fails when the child exits
// first, ctx ends or within passes.
func (c *child) awaitReady(ctx context.Context, within time.Duration) ([]string, error) {
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case m := <-c.ready:
		return m, nil
	case <-c.exited:
		return nil, fmt.Errorf("%s exited before it was serving (%w): see %s%s", c.name, c.err, c.logPath, c.logTail())
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: %w", c.name, ctx.Err())
	case <-timer.C:
		return nil, fmt.Errorf("%s not serving after %v: see %s%s", c.name, within, c.logPath, c.logTail())
	}
}

// stop sends SIGTERM, waits up to grace for the child to exit, then kills it; it reports how
// the child ended. A child that exited already is left alone.
func (c *child) stop(grace time.Duration) string {
	select {
	case <-c.exited:
		return "had exited: " + exitText(c.err)
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-c.exited:
		return exitText(c.err)
	case <-timer.C:
		c.kill()
		return fmt.Sprintf("killed: still running %v after SIGTERM", grace)
	}
}

// kill sends SIGKILL and waits for the child to exit.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.exited
}

func exitText(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exited 0"
	case errors.As(err, &ee):
		return ee.String()
	}
	return err.Error()
}

// logTail returns the last lines of the child's log, for an error message.
func (c *child) logTail() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2<<10 {
		b = b[len(b)-2<<10:]
	}
	return "; its log ends:\n" + string(b)
}

// readyWriter copies a child's stdout to w and sends the submatches of the first line that
// matches re to found.
type readyWriter struct {
	w     io.Writer
	re    *regexp.Regexp
	found chan<- []string

	mu   sync.Mutex
	line []byte
	done bool
}

func (r *readyWriter) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.done {
		r.line = append(r.line, p...)
		for {
			i := bytes.IndexByte(r.line, '\n')
			if i < 0 {
				break
			}
			if m := r.re.FindStringSubmatch(string(r.line[:i])); m != nil {
				r.found <- m // buffered, sent once
				r.done, r.line = true, nil
				break
			}
			r.line = r.line[i+1:]
		}
		if len(r.line) > 64<<10 { // a line that long is no ready line
			r.line = nil
		}
	}
	return r.w.Write(p)
}
