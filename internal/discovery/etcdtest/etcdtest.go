// Package etcdtest runs a real etcd server for tests: one member on 127.0.0.1, on free ports,
// with its data in a temporary directory, stopped when the test ends (see etcdrun, which runs
// it).
//
// It runs the etcd binary named by $GATHER_ETCD, or etcd on $PATH (Debian's etcd-server package:
// apt-get install etcd-server). Without one, Start skips the test and says so, unless
// $GATHER_REQUIRE_ETCD is set (CI sets it), in which case the test fails.
package etcdtest

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/gatherproxy/gather/internal/discovery/etcdrun"
)

// Server is a running etcd member. Its methods are not safe for concurrent use.
type Server struct {
	*etcdrun.Server
	tb testing.TB
}

// Binary returns the etcd binary to run, or "" if there is none.
func Binary() string { return etcdrun.Binary() }

// Skip skips the test, saying how to get etcd, when there is none to run; with
// $GATHER_REQUIRE_ETCD set it fails the test instead.
func Skip(tb testing.TB) {
	tb.Helper()
	if Binary() != "" {
		return
	}
	if os.Getenv("GATHER_REQUIRE_ETCD") != "" {
		tb.Fatal(etcdrun.ErrNoBinary.Error() + " ($GATHER_REQUIRE_ETCD is set)")
	}
	tb.Skip(etcdrun.ErrNoBinary.Error())
}

// Start starts etcd and waits until it is healthy. The test's cleanup stops it (its data
// directory is the test's temporary directory).
func Start(tb testing.TB) *Server {
	tb.Helper()
	Skip(tb)
	srv, err := etcdrun.Start(context.Background(), etcdrun.Options{Dir: tb.TempDir()})
	if errors.Is(err, etcdrun.ErrNoBinary) {
		Skip(tb)
	}
	if err != nil {
		tb.Fatalf("etcd: %v", err)
	}
	tb.Cleanup(srv.Stop)
	return &Server{Server: srv, tb: tb}
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
	if err := s.Server.Resume(context.Background()); err != nil {
		s.tb.Fatalf("etcd restart: %v", err)
	}
}

// RestartEmpty stops etcd, deletes its data and starts it again on the same ports: a cluster
// with a new history, as after a restore from an old backup. Revisions start again from 1.
func (s *Server) RestartEmpty() {
	s.tb.Helper()
	s.Stop()
	if err := s.RemoveData(); err != nil {
		s.tb.Fatal(err)
	}
	s.Resume()
}
