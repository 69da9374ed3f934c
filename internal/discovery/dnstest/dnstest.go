// Package dnstest runs a real DNS server on loopback for tests: it answers A and AAAA queries
// for the names a test sets, over UDP and TCP on the same port, and can be made to fail or to
// stay silent. Point a resolver at it with a dns://127.0.0.1:PORT/NAME:PORT replica entry.
package dnstest

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Mode is how the server answers.
type Mode int

const (
	// Answer answers from the records set: NXDOMAIN for a name with none, no data for a type
	// the name has no record of.
	Answer Mode = iota
	// Fail answers every query with SERVFAIL.
	Fail
	// Silent reads queries and answers none, like a server that is down behind a firewall.
	Silent
)

// MaxUDPAnswers is the most records the server sends over UDP: a bigger answer goes out
// truncated (TC set, no records), and a resolver asks again over TCP.
const MaxUDPAnswers = 8

// Server is a DNS server on 127.0.0.1. Its methods are safe for concurrent use.
type Server struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server
	done sync.WaitGroup

	mu      sync.Mutex
	records map[string][]netip.Addr // fully qualified lower-case name -> addresses
	mode    Mode
	queries map[string]int // "udp" or "tcp" -> queries seen
	times   []time.Time    // when each query of a name, in any transport, arrived
}

// Start starts a server on 127.0.0.1 on a free port, UDP and TCP. The test's cleanup stops it.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{records: map[string][]netip.Addr{}, queries: map[string]int{}}
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	// The TCP port must be the UDP one; another process may hold it, so try a few.
	for range 20 {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		_ = pc.Close()
	}
	if err != nil {
		tb.Fatalf("dnstest: no free port for both UDP and TCP: %v", err)
	}
	s.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	s.udp = &dns.Server{PacketConn: pc, Handler: h}
	s.tcp = &dns.Server{Listener: ln, Handler: h}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		s.done.Add(1)
		go func() {
			defer s.done.Done()
			_ = srv.ActivateAndServe()
		}()
		<-started
	}
	tb.Cleanup(s.Close)
	return s
}

// Close stops the server and waits for its goroutines. Later calls do nothing.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.udp.ShutdownContext(ctx) // an error: already shut down
	_ = s.tcp.ShutdownContext(ctx)
	s.done.Wait()
}

// Addr returns the server's address, 127.0.0.1:PORT, for UDP and TCP alike.
func (s *Server) Addr() string { return s.addr }

// Set makes name resolve to addrs (IPv4 ones as A records, IPv6 ones as AAAA), replacing its
// records; no addrs removes the name (NXDOMAIN). name is case-insensitive, with or without its
// final dot.
func (s *Server) Set(name string, addrs ...string) {
	var as []netip.Addr
	for _, a := range addrs {
		as = append(as, netip.MustParseAddr(a))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(as) == 0 {
		delete(s.records, canonical(name))
		return
	}
	s.records[canonical(name)] = as
}

// SetMode sets how the server answers from now on.
func (s *Server) SetMode(m Mode) {
	s.mu.Lock()
	s.mode = m
	s.mu.Unlock()
}

// Queries returns how many queries arrived over network ("udp" or "tcp").
func (s *Server) Queries(network string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[network]
}

// Times returns when each query for A records arrived, oldest first (a lookup of a name asks
// for A and AAAA at once: counting A queries counts lookups). Only UDP queries count, so that a
// truncated answer retried over TCP is one lookup.
func (s *Server) Times() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.times...)
}

func canonical(name string) string { return dns.CanonicalName(strings.TrimSpace(name)) }

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	network := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	s.mu.Lock()
	s.queries[network]++
	mode := s.mode
	var q dns.Question
	if len(req.Question) == 1 {
		q = req.Question[0]
	}
	if network == "udp" && q.Qtype == dns.TypeA {
		s.times = append(s.times, time.Now())
	}
	addrs := s.records[canonical(q.Name)]
	s.mu.Unlock()

	m := new(dns.Msg)
	switch {
	case mode == Silent:
		return
	case mode == Fail || len(req.Question) != 1:
		m.SetRcode(req, dns.RcodeServerFailure)
	case len(addrs) == 0:
		m.SetRcode(req, dns.RcodeNameError)
		m.Authoritative = true
	default:
		m.SetReply(req)
		m.Authoritative = true
		for _, a := range addrs {
			hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 5}
			switch {
			case a.Is4() && q.Qtype == dns.TypeA:
				hdr.Rrtype = dns.TypeA
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
			case a.Is6() && q.Qtype == dns.TypeAAAA:
				hdr.Rrtype = dns.TypeAAAA
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
			}
		}
		if network == "udp" && len(m.Answer) > MaxUDPAnswers {
			m.Answer, m.Truncated = nil, true
		}
	}
	_ = w.WriteMsg(m) // an error: the client went away, and asks again if it cares
}
