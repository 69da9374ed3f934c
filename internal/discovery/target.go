package discovery

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Scheme is the URL scheme of an etcd registry: etcd://HOST:PORT[,HOST:PORT...]/PREFIX.
const Scheme = "etcd"

// Target is a parsed registry URL: the etcd endpoints to talk to and the key prefix under which
// registrations live.
type Target struct {
	// Endpoints are the etcd members' client addresses, HOST:PORT, in the URL's order.
	Endpoints []string
	// Prefix starts with "/" and does not end with one; registrations are the keys under
	// Prefix + "/".
	Prefix string
	// TLS, when set, is used to connect to etcd. ParseTarget never sets it: the URL form for a
	// TLS registry (and the flags for its certificates) are still to come; it is the hook for
	// them, so that Client need not change.
	TLS *tls.Config
}

// ErrTarget is wrapped by every error of ParseTarget.
var ErrTarget = errors.New("invalid registry URL")

// ParseTarget parses etcd://HOST:PORT[,HOST:PORT...]/PREFIX. Every endpoint needs a numeric port;
// an IPv6 host goes in brackets. PREFIX is one or more '/'-separated segments, none empty, "."
// or ".." (so that it cannot name the whole key space by accident); a trailing '/' is dropped.
func ParseTarget(s string) (Target, error) {
	bad := func(format string, args ...any) (Target, error) {
		return Target{}, fmt.Errorf("%w %q: %s", ErrTarget, s, fmt.Sprintf(format, args...))
	}
	const form = "want etcd://HOST:PORT[,HOST:PORT...]/PREFIX, e.g. etcd://127.0.0.1:2379/gather/prod"
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return bad("no scheme; %s", form)
	}
	switch strings.ToLower(scheme) {
	case Scheme:
	case "etcds", "https":
		return bad("TLS to etcd is not supported yet: use etcd:// on a trusted network")
	default:
		return bad("scheme %q is not %q; %s", scheme, Scheme, form)
	}
	if strings.ContainsAny(rest, "?#") {
		return bad("query strings and fragments are not supported; %s", form)
	}
	hosts, path, _ := strings.Cut(rest, "/")
	if hosts == "" {
		return bad("no etcd endpoint; %s", form)
	}
	var t Target
	for _, h := range strings.Split(hosts, ",") {
		if err := checkEndpoint(h); err != nil {
			return bad("%v", err)
		}
		t.Endpoints = append(t.Endpoints, h)
	}
	path = strings.TrimSuffix(path, "/")
	if path == "" {
		return bad("no key prefix: give one, so that gather's keys stay apart from the rest of etcd; %s", form)
	}
	for _, seg := range strings.Split(path, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return bad("prefix %q has an empty, '.' or '..' segment", "/"+path)
		}
		if strings.IndexFunc(seg, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
			return bad("prefix %q has a space or a control character", "/"+path)
		}
	}
	t.Prefix = "/" + path
	return t, nil
}

// String returns the URL form of t, which ParseTarget reads back.
func (t Target) String() string {
	return Scheme + "://" + strings.Join(t.Endpoints, ",") + t.Prefix
}

func checkEndpoint(h string) error {
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		return fmt.Errorf("endpoint %q is not HOST:PORT (an IPv6 host goes in brackets: [::1]:2379)", h)
	}
	if host == "" {
		return fmt.Errorf("endpoint %q has no host", h)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("endpoint %q: port %q is not a number from 1 to 65535", h, port)
	}
	return nil
}

// Limits of the client Client makes.
const (
	// dialTimeout bounds the first connection to etcd.
	dialTimeout = 5 * time.Second
	// maxRecvBytes bounds one answer from etcd: a Watcher's first read of the prefix is at most
	// DefaultMaxKeys values of at most MaxValueBytes, plus keys and framing.
	maxRecvBytes = 32 << 20
	// maxReconnectDelay caps the wait between two attempts to reconnect to etcd. grpc-go's
	// default grows to 1s, 1.6s, 2.6s and on to two minutes: an etcd restart of a second or two
	// could see the client's next attempt come after a lease of a few seconds had expired,
	// dropping a registration that the restart alone would not have.
	maxReconnectDelay = 500 * time.Millisecond
)

// Client returns an etcd client for t's endpoints. It does not wait for a connection: the first
// call made with it does. The client's own logging is off (gather logs what it does with it);
// the caller closes the client.
func (t Target) Client() (*clientv3.Client, error) {
	eps := make([]string, len(t.Endpoints))
	for i, e := range t.Endpoints {
		if t.TLS != nil {
			eps[i] = "https://" + e
		} else {
			eps[i] = "http://" + e
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            eps,
		TLS:                  t.TLS,
		DialTimeout:          dialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		MaxCallRecvMsgSize:   maxRecvBytes,
		Logger:               zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxReconnectDelay},
			MinConnectTimeout: dialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(t.Endpoints, ","), err)
	}
	return cli, nil
}
