// Package etcdrun runs a real etcd server as a child process: one member on 127.0.0.1, its data
// in a directory the caller gives, for tests (etcdtest) and for `gather cluster`.
//
// It runs the etcd binary named by $GATHER_ETCD, or etcd on $PATH (Debian's etcd-server package:
// apt-get install etcd-server).
package etcdrun

import (
	"bytes"
	"context"
	"errors"
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
	"time"
)

// ErrNoBinary is returned by Start when there is no etcd to run.
var ErrNoBinary = errors.New("no etcd binary: install Debian's etcd-server (apt-get install etcd-server), put etcd on PATH, or set GATHER_ETCD")

// startTimeout bounds how long Start waits for etcd to answer /health.
const startTimeout = 30 * time.Second

// stopGrace is how long Stop waits after SIGTERM before it kills etcd.
const stopGrace = 10 * time.Second

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

// Options say where etcd runs.
type Options struct {
	// Dir holds the member's data (Dir/data) and its log (Dir/etcd.log); Start creates it.
	// Required.
	Dir string
	// ClientPort and PeerPort are the ports on 127.0.0.1; 0 picks a free one (Start then tries
	// three pairs, as a port can be taken between picking it and etcd binding it).
	ClientPort, PeerPort int
	// SysProcAttr, if not nil, is set on the child (its own process group, a signal when the
	// parent dies).
	SysProcAttr *syscall.SysProcAttr
}

// Server is a running etcd member. Its methods are not safe for concurrent use.
type Server struct {
	opts                 Options
	bin, data, logFile   string
	clientPort, peerPort int
	cmd                  *exec.Cmd
	exited               chan struct{}
}

// Start starts etcd and waits until it is healthy, at most 30 s or until ctx ends. The caller
// stops it with Stop; its data stays in opts.Dir.
func Start(ctx context.Context, opts Options) (*Server, error) {
	bin := Binary()
	if bin == "" {
		return nil, ErrNoBinary
	}
	if opts.Dir == "" {
		return nil, errors.New("etcdrun: no data directory")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	s := &Server{opts: opts, bin: bin, data: filepath.Join(opts.Dir, "data"), logFile: filepath.Join(opts.Dir, "etcd.log")}
	tries := 1
	if opts.ClientPort == 0 || opts.PeerPort == 0 {
		tries = 3
	}
	var err error
	for range tries {
		s.clientPort, s.peerPort = opts.ClientPort, opts.PeerPort
		if s.clientPort == 0 {
			if s.clientPort, err = freePort(); err != nil {
				return nil, err
			}
		}
		if s.peerPort == 0 {
			if s.peerPort, err = freePort(); err != nil {
				return nil, err
			}
		}
		if err = s.start(ctx); err == nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("%w\n%s", err, s.LogTail())
}

// Endpoint returns the client address, 127.0.0.1:PORT.
func (s *Server) Endpoint() string { return "127.0.0.1:" + strconv.Itoa(s.clientPort) }

// URL returns etcd://ENDPOINT/PREFIX; prefix has no leading '/'.
func (s *Server) URL(prefix string) string { return "etcd://" + s.Endpoint() + "/" + prefix }

// Pid returns the process id of the running etcd, or 0 when it is stopped.
func (s *Server) Pid() int {
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Exited is closed when the running etcd exits, for whatever reason.
func (s *Server) Exited() <-chan struct{} { return s.exited }

func (s *Server) start(ctx context.Context) error {
	peer := "http://127.0.0.1:" + strconv.Itoa(s.peerPort)
	client := "http://" + s.Endpoint()
	logf, err := os.OpenFile(s.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = logf.Close() }() // the child holds its own descriptor
	cmd := exec.Command(s.bin,
		"--name", "gather",
		"--data-dir", s.data,
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "gather="+peer,
		"--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = s.opts.SysProcAttr
	// etcd 3.4 refuses to start on most architectures other than amd64 unless told which it is.
	cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH="+runtime.GOARCH)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	s.cmd, s.exited = cmd, exited
	go func() { _ = cmd.Wait(); close(exited) }() // joined by Stop
	if err := s.waitHealthy(ctx); err != nil {
		s.kill()
		s.cmd = nil
		return err
	}
	return nil
}

// waitHealthy polls /health until etcd says it is healthy, it exits, ctx ends or startTimeout
// passes.
func (s *Server) waitHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	url := "http://" + s.Endpoint() + "/health"
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"true"`)) {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited before it was healthy", s.bin)
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy at %s: %w", s.bin, url, ctx.Err())
		case <-tick.C:
		}
	}
}

// Stop stops etcd (SIGTERM, then SIGKILL after 10 s) and waits for it. Its data stays for
// Resume. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(stopGrace):
		s.kill()
	}
	s.cmd = nil
}

// Resume starts a stopped etcd again on the same ports with the same data.
func (s *Server) Resume(ctx context.Context) error {
	if s.cmd != nil {
		return errors.New("etcdrun: etcd is running")
	}
	if err := s.start(ctx); err != nil {
		return fmt.Errorf("%w\n%s", err, s.LogTail())
	}
	return nil
}

// RemoveData deletes a stopped server's data, so that Resume starts a cluster with a new
// history.
func (s *Server) RemoveData() error {
	if s.cmd != nil {
		return errors.New("etcdrun: etcd is running")
	}
	return os.RemoveAll(s.data)
}

func (s *Server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// LogTail returns the end of etcd's log, for a failure message.
func (s *Server) LogTail() string {
	b, _ := os.ReadFile(s.logFile)
	if len(b) > 4<<10 {
		b = b[len(b)-4<<10:]
	}
	return string(b)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}
