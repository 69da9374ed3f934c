// Package etcdtest runs a real etcd server for tests: one member on 127.0.0.1, on free ports,
// with its data in a temporary directory, stopped when the test ends.
//
// It runs the etcd binary named by $GATHER_ETCD, or etcd on $PATH (Debian's etcd-server package:
// apt-get install etcd-server). Without one, Start skips the test and says so, unless
// $GATHER_REQUIRE_ETCD is set (CI sets it), in which case the test fails.
package etcdtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long Start waits for etcd to answer /health.
const startTimeout = 30 * time.Second

// Server is a running etcd member. Its methods are not safe for concurrent use.
type Server struct {
	tb                   testing.TB
	bin, dir, logFile    string
	clientPort, peerPort int
	cmd                  *exec.Cmd
	exited               chan struct{}
}

// Binary returns the etcd binary to run, or "" if there is none.
func Binary() string {
	if b := os.Getenv("GATHER_ETCD"); b != "" {
		return b
	}
	b, err := exec.LookPath("etcd")
	if err != nil {
		return ""
	}
	return b
}

// Start starts etcd and waits until it is healthy. The test's cleanup stops it (its data
// directory is the test's temporary directory).
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin := Binary()
	if bin == "" {
		msg := "no etcd binary: install Debian's etcd-server (apt-get install etcd-server), put etcd on PATH, or set GATHER_ETCD"
		if os.Getenv("GATHER_REQUIRE_ETCD") != "" {
			tb.Fatal(msg + " ($GATHER_REQUIRE_ETCD is set)")
		}
		tb.Skip(msg)
	}
	dir := tb.TempDir()
	s := &Server{tb: tb, bin: bin, dir: filepath.Join(dir, "data"), logFile: filepath.Join(dir, "etcd.log")}
	var err error
	for range 3 { // a free port can be taken between picking it and etcd binding it
		s.clientPort, s.peerPort = freePort(tb), freePort(tb)
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		tb.Fatalf("etcd: %v\n%s", err, s.logTail())
	}
	tb.Cleanup(s.Stop)
	return s
}

// Endpoint returns the client address, 127.0.0.1:PORT.
func (s *Server) Endpoint() string { return "127.0.0.1:" + strconv.Itoa(s.clientPort) }

// URL returns etcd://ENDPOINT/PREFIX; prefix has no leading '/'.
func (s *Server) URL(prefix string) string { return "etcd://" + s.Endpoint() + "/" + prefix }

func (s *Server) start() error {
	peer := "http://127.0.0.1:" + strconv.Itoa(s.peerPort)
	client := "http://" + s.Endpoint()
	logf, err := os.OpenFile(s.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = logf.Close() }() // the child holds its own descriptor
	cmd := exec.Command(s.bin,
		"--name", "gather-test",
		"--data-dir", s.dir,
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "gather-test="+peer,
		"--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	// etcd 3.4 refuses to start on most architectures other than amd64 unless told which it is.
	cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH="+runtime.GOARCH)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.exited) }()
	if err := s.waitHealthy(); err != nil {
		s.kill()
		return err
	}
	return nil
}

// waitHealthy polls /health until etcd says it is healthy, it exits, or startTimeout passes.
func (s *Server) waitHealthy() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	url := "http://" + s.Endpoint() + "/health"
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"true"`)) {
				http.DefaultClient.CloseIdleConnections()
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited before it was healthy", s.bin)
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy at %s after %v", s.bin, url, startTimeout)
		case <-tick.C:
		}
	}
}

// Stop stops etcd (SIGTERM, then SIGKILL after 10 s) and waits for it. Its data stays for
// Restart. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.kill()
	}
	s.cmd = nil
}

// Restart stops etcd and starts it again on the same ports with the same data.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	s.Resume()
}

// Resume starts a stopped etcd again on the same ports with the same data, as after a network
// cut or an outage.
func (s *Server) Resume() {
	s.tb.Helper()
	if err := s.start(); err != nil {
		s.tb.Fatalf("etcd restart: %v\n%s", err, s.logTail())
	}
}

// RestartEmpty stops etcd, deletes its data and starts it again on the same ports: a cluster
// with a new history, as after a restore from an old backup. Revisions start again from 1.
func (s *Server) RestartEmpty() {
	s.tb.Helper()
	s.Stop()
	if err := os.RemoveAll(s.dir); err != nil {
		s.tb.Fatal(err)
	}
	if err := s.start(); err != nil {
		s.tb.Fatalf("etcd restart: %v\n%s", err, s.logTail())
	}
}

func (s *Server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// logTail returns the end of etcd's log, for a failure message.
func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.logFile)
	if len(b) > 4<<10 {
		b = b[len(b)-4<<10:]
	}
	return string(b)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(tb testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("pick a port: %v", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}
