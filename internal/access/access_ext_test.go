package access_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/access"
	"github.com/gatherproxy/gather/internal/peerid"
	"github.com/gatherproxy/gather/internal/tlsconf"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// logs is a concurrency-safe log sink.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// env is a CA, certificates for a few identities, and a server that serves the QueryService,
// the ShardService and health behind a Guard, over TLS.
type env struct {
	t       *testing.T
	dir     string
	ca      *tlsconf.CA
	addr    string
	logs    *logs
	reg     *prometheus.Registry
	mu      sync.Mutex
	callers []string // peerid of each call that reached a service, and what it called
}

const (
	qsID    = "spiffe://test/qs"
	proxyID = "spiffe://test/proxy"
	otherID = "spiffe://test/intruder"
)

func newEnv(t *testing.T, clientAuth tlsconf.ClientAuth, cfg access.Config) *env {
	t.Helper()
	ca, err := tlsconf.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: t.TempDir(), ca: ca, logs: &logs{}, reg: prometheus.NewRegistry()}
	if err := tlsconf.WriteFileAtomic(e.path("ca.pem"), ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ca.WritePair(e.path("server.pem"), e.path("server-key.pem"), tlsconf.Leaf{
		CommonName: "server", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{qsID, proxyID, otherID} {
		name := filepath.Base(id)
		if err := ca.WritePair(e.path(name+".pem"), e.path(name+"-key.pem"), tlsconf.Leaf{CommonName: name, URIs: []string{id}, Client: true}); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(e.logs, nil))
	guard, err := access.New(cfg, log, access.NewMetrics(e.reg))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := tlsconf.Server{CertFile: e.path("server.pem"), KeyFile: e.path("server-key.pem"),
		ClientCAFile: e.path("ca.pem"), ClientAuth: clientAuth}.ServerCredentials("tls", log)
	if err != nil {
		t.Fatal(err)
	}
	record := func(ctx context.Context, method string) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.callers = append(e.callers, peerid.FromContext(ctx).String()+" "+method)
	}
	srv := grpc.NewServer(grpc.Creds(creds),
		grpc.ChainUnaryInterceptor(append(guard.UnaryServerInterceptors(),
			func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				record(ctx, info.FullMethod)
				return h(ctx, req)
			})...),
		grpc.ChainStreamInterceptor(append(guard.StreamServerInterceptors(),
			func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				record(ss.Context(), info.FullMethod)
				return h(srv, ss)
			})...))
	queryv1.RegisterQueryServiceServer(srv, querySvc{})
	shardv1.RegisterShardServiceServer(srv, shardSvc{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
		guard.Close()
	})
	e.addr = lis.Addr().String()
	return e
}

func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

// reached returns what reached the services so far and forgets it.
func (e *env) reached() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.callers
	e.callers = nil
	return out
}

type querySvc struct {
	queryv1.UnimplementedQueryServiceServer
}

func (querySvc) Search(context.Context, *queryv1.SearchRequest) (*queryv1.SearchResponse, error) {
	return &queryv1.SearchResponse{}, nil
}

func (querySvc) SearchStream(_ *queryv1.SearchStreamRequest, ss grpc.ServerStreamingServer[queryv1.SearchStreamResponse]) error {
	return ss.Send(&queryv1.SearchStreamResponse{})
}

type shardSvc struct {
	shardv1.UnimplementedShardServiceServer
}

func (shardSvc) Search(_ *shardv1.SearchRequest, ss grpc.ServerStreamingServer[shardv1.SearchResponse]) error {
	return ss.Send(&shardv1.SearchResponse{})
}

// conn dials the env's server as the identity with certificate NAME.pem ("" for none); a nil
// creds means plaintext.
func (e *env) conn(name string) *grpc.ClientConn {
	e.t.Helper()
	creds := insecure.NewCredentials()
	if name != "plaintext" {
		c := tlsconf.Client{CAFile: e.path("ca.pem")}
		if name != "" {
			c.CertFile, c.KeyFile = e.path(name+".pem"), e.path(name+"-key.pem")
		}
		var err error
		if creds, err = c.Credentials("client", slog.New(slog.DiscardHandler)); err != nil {
			e.t.Fatal(err)
		}
	}
	cc, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// call makes one call of kind ("query", "query-stream", "shard" or "health") on cc.
func call(ctx context.Context, cc *grpc.ClientConn, kind string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch kind {
	case "query":
		_, err := queryv1.NewQueryServiceClient(cc).Search(ctx, &queryv1.SearchRequest{Query: "q", TopK: 1})
		return err
	case "query-stream":
		st, err := queryv1.NewQueryServiceClient(cc).SearchStream(ctx, &queryv1.SearchStreamRequest{Query: "q", TopK: 1})
		if err != nil {
			return err
		}
		return drain(st.Recv)
	case "shard":
		st, err := shardv1.NewShardServiceClient(cc).Search(ctx, &shardv1.SearchRequest{Query: "q", TopK: 1})
		if err != nil {
			return err
		}
		return drain(st.Recv)
	case "health":
		_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	panic(kind)
}

func drain[T any](recv func() (T, error)) error {
	for {
		if _, err := recv(); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
	}
}

const demoPolicy = `{
  "name": "test-policy",
  "allow_rules": [
    {"name": "qs", "source": {"principals": ["spiffe://test/qs"]},
     "request": {"paths": ["/gather.query.v1.QueryService/*", "/grpc.health.v1.Health/*"]}},
    {"name": "proxy", "source": {"principals": ["spiffe://test/proxy"]},
     "request": {"paths": ["/gather.shard.v1.ShardService/*"]}},
    {"name": "frontend", "request": {"paths": ["/gather.query.v1.QueryService/Search"],
     "headers": [{"key": "x-gather-token-name", "values": ["frontend"]}]}}
  ]
}`

func writeFile(t *testing.T, path, data string) string {
	t.Helper()
	if err := tlsconf.WriteFileAtomic(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPolicy: each identity may call what the policy allows it and nothing else; a refusal
// says who was refused for what, reaches no service, and is counted.
func TestPolicy(t *testing.T) {
	t.Parallel()
	policy := writeFile(t, filepath.Join(t.TempDir(), "policy.json"), demoPolicy)
	e := newEnv(t, tlsconf.ClientAuthOptional, access.Config{PolicyFile: policy})
	ctx := t.Context()
	for _, tt := range []struct {
		who, kind string
		want      codes.Code
	}{
		{"qs", "query", codes.OK},
		{"qs", "query-stream", codes.OK},
		{"qs", "health", codes.OK},
		{"qs", "shard", codes.PermissionDenied},
		{"proxy", "shard", codes.OK},
		{"proxy", "query", codes.PermissionDenied},
		{"proxy", "health", codes.PermissionDenied},
		{"intruder", "query", codes.PermissionDenied},
		{"intruder", "shard", codes.PermissionDenied},
		{"", "query", codes.Unauthenticated},      // TLS, no certificate
		{"plaintext", "query", codes.Unavailable}, // the server speaks TLS only
	} {
		err := call(ctx, e.conn(tt.who), tt.kind)
		if got := status.Code(err); got != tt.want {
			t.Errorf("%q calls %s: %v, want %v", tt.who, tt.kind, err, tt.want)
		}
		reached := e.reached()
		if tt.want != codes.OK && len(reached) > 0 {
			t.Errorf("%q calls %s: refused, yet reached %v", tt.who, tt.kind, reached)
		}
	}

	// The header that carries a token's name cannot be forged, even with no tokens configured.
	forged := metadata.AppendToOutgoingContext(ctx, access.TokenHeader, "frontend")
	if err := call(forged, e.conn(""), "query"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("a forged %s: %v, want UNAUTHENTICATED", access.TokenHeader, err)
	}

	// The message names the caller, the method and the policy.
	err := call(ctx, e.conn("qs"), "shard")
	want := `cert:spiffe://test/qs may not call /gather.shard.v1.ShardService/Search: authorization policy "test-policy"`
	if !strings.Contains(status.Convert(err).Message(), want) {
		t.Errorf("refusal message %q, want it to say %q", status.Convert(err).Message(), want)
	}
	err = call(ctx, e.conn(""), "query")
	want = `is not authenticated (no verified client certificate), and authorization policy "test-policy" lets no unauthenticated caller call /gather.query.v1.QueryService/Search`
	if msg := status.Convert(err).Message(); !strings.HasPrefix(msg, "conn:127.0.0.1:") || !strings.Contains(msg, want) {
		t.Errorf("refusal message %q, want conn:ADDR %s", msg, want)
	}
	if !strings.Contains(e.logs.String(), `msg=refused caller=cert:spiffe://test/qs method=/gather.shard.v1.ShardService/Search code=PermissionDenied`) {
		t.Errorf("the refusal is not logged:\n%s", e.logs.String())
	}
	// qs and intruder above, qs again for the message
	if n := refused(t, e.reg, "gather.shard.v1.ShardService", "PermissionDenied"); n != 3 {
		t.Errorf("refused ShardService calls counted %v, want 3", n)
	}
}

// refused is gather_access_refused_total{service,code}.
func refused(t *testing.T, reg *prometheus.Registry, service, code string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "gather_access_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["service"] == service && labels["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no gather_access_refused_total{service=%q,code=%q}", service, code)
	return 0
}

// TestPolicyReload: a changed policy file is in force without a restart; a broken one is
// refused and the previous policy stays.
func TestPolicyReload(t *testing.T) {
	t.Parallel()
	policy := filepath.Join(t.TempDir(), "policy.json")
	onlyHealth := `{"name": "v1", "allow_rules": [{"name": "qs", "source": {"principals": ["spiffe://test/qs"]},
	  "request": {"paths": ["/grpc.health.v1.Health/*"]}}]}`
	writeFile(t, policy, onlyHealth)
	e := newEnv(t, tlsconf.ClientAuthRequire, access.Config{PolicyFile: policy, Refresh: 20 * time.Millisecond})
	qs := e.conn("qs")
	if err := call(t.Context(), qs, "query"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("under v1: %v, want PERMISSION_DENIED", err)
	}
	writeFile(t, policy, strings.ReplaceAll(strings.ReplaceAll(onlyHealth, `"v1"`, `"v2"`),
		`"/grpc.health.v1.Health/*"`, `"/grpc.health.v1.Health/*", "/gather.query.v1.QueryService/*"`))
	poll(t, "policy v2 in force", func() (bool, string) {
		err := call(t.Context(), qs, "query")
		return err == nil, fmt.Sprint(err)
	})
	writeFile(t, policy, `{"name": "v3", "allow_rules": [{"nme": "typo"}]}`)
	poll(t, "broken policy refused", func() (bool, string) {
		return strings.Contains(e.logs.String(), "refused new contents"), e.logs.String()
	})
	if err := call(t.Context(), qs, "query"); err != nil {
		t.Errorf("after a broken policy: %v, want v2 still in force", err)
	}
}

// poll checks cond until it holds, for at most 10s.
func poll(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s; last: %s", what, got)
		}
		time.Sleep(10 * time.Millisecond) // between two looks; the change comes from a ticker
	}
}

// TestTokens: without a client certificate a caller needs a valid bearer token; its name is
// the caller's identity, the policy can match it, and it cannot be forged with the header.
func TestTokens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const secret = "s3cret-frontend-token-0123456789"
	tokensFile := writeFile(t, filepath.Join(dir, "tokens"), "# name token\nfrontend "+secret+"\nbatch another-token-abcdefghijk\n")
	policy := writeFile(t, filepath.Join(dir, "policy.json"), demoPolicy)
	e := newEnv(t, tlsconf.ClientAuthOptional, access.Config{PolicyFile: policy, TokensFile: tokensFile})
	anon := e.conn("")
	bearer := func(md ...string) context.Context { return metadata.AppendToOutgoingContext(t.Context(), md...) }
	for _, tt := range []struct {
		name string
		ctx  context.Context
		kind string
		want codes.Code
		msg  string
	}{
		{"no token", t.Context(), "query", codes.Unauthenticated, "sent no bearer token and no client certificate for /gather.query.v1.QueryService/Search"},
		{"wrong token", bearer("authorization", "Bearer not-the-right-token-at-all"), "query", codes.Unauthenticated, "sent a bearer token for /gather.query.v1.QueryService/Search that is none of " + tokensFile},
		{"not bearer", bearer("authorization", "Basic Zm9vOmJhcg=="), "query", codes.Unauthenticated, "not \"Bearer TOKEN\""},
		{"forged header", bearer(access.TokenHeader, "frontend"), "query", codes.Unauthenticated, "sent no bearer token"},
		{"right token", bearer("authorization", "Bearer "+secret), "query", codes.OK, ""},
		{"right token, forged header too", bearer("authorization", "Bearer another-token-abcdefghijk", access.TokenHeader, "frontend"), "query", codes.PermissionDenied,
			`auth:token:batch may not call /gather.query.v1.QueryService/Search`},
		{"right token, a method the policy does not give it", bearer("authorization", "Bearer "+secret), "query-stream", codes.PermissionDenied,
			`auth:token:frontend may not call /gather.query.v1.QueryService/SearchStream`},
		{"health needs no token, but the policy still decides", t.Context(), "health", codes.Unauthenticated, "lets no unauthenticated caller call /grpc.health.v1.Health/Check"},
	} {
		err := call(tt.ctx, anon, tt.kind)
		if st := status.Convert(err); st.Code() != tt.want || !strings.Contains(st.Message(), tt.msg) {
			t.Errorf("%s: got %v, want %v saying %q", tt.name, err, tt.want, tt.msg)
		}
	}
	if got, want := e.reached(), []string{"auth:token:frontend /gather.query.v1.QueryService/Search"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reached the services: %v, want %v", got, want)
	}
	// A client certificate needs no token.
	if err := call(t.Context(), e.conn("qs"), "query"); err != nil {
		t.Errorf("with a client certificate and no token: %v", err)
	}
	if strings.Contains(e.logs.String(), secret) || strings.Contains(e.logs.String(), "not-the-right-token") {
		t.Errorf("a token was logged:\n%s", e.logs.String())
	}
	if !strings.Contains(e.logs.String(), "bearer tokens loaded") || !strings.Contains(e.logs.String(), "names=frontend,batch") {
		t.Errorf("the tokens' names are not logged at start:\n%s", e.logs.String())
	}
	if !strings.Contains(e.logs.String(), "readable by other users") == (mode(t, tokensFile)&0o077 != 0) {
		t.Errorf("the warning about a shared tokens file does not match its mode %v:\n%s", mode(t, tokensFile), e.logs.String())
	}
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestConfigErrors: bad files are found at start, with the key to fix, and never quote a token.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tt := range []struct {
		name   string
		cfg    access.Config
		want   string
		hidden string
	}{
		{"missing policy", access.Config{PolicyFile: filepath.Join(dir, "nope.json")}, "authz.policy_file: open ", ""},
		{"bad policy", access.Config{PolicyFile: writeFile(t, filepath.Join(dir, "bad.json"), `{"name": "x"}`)}, `authz.policy_file: ` + dir + `/bad.json: "allow_rules" is not present`, ""},
		{"short token", access.Config{TokensFile: writeFile(t, filepath.Join(dir, "t1"), "qs tooshort\n")}, "authz.tokens_file: " + dir + "/t1 line 1: the token of qs is shorter than 16 characters", "tooshort"},
		{"three fields", access.Config{TokensFile: writeFile(t, filepath.Join(dir, "t2"), "\nqs secret-secret-secret extra\n")}, "line 2: want NAME TOKEN", "secret-secret"},
		{"same token twice", access.Config{TokensFile: writeFile(t, filepath.Join(dir, "t3"), "a secret-secret-secret\nb secret-secret-secret\n")}, "line 2: b has the same token as a", "secret-secret"},
		{"no tokens", access.Config{TokensFile: writeFile(t, filepath.Join(dir, "t4"), "# nothing\n")}, "no tokens in it", ""},
		{"negative refresh", access.Config{Refresh: -time.Second}, "authz.refresh: negative", ""},
	} {
		err := tt.cfg.Validate("authz")
		if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.hidden != "" && strings.Contains(err.Error(), tt.hidden)) {
			t.Errorf("%s: got %v, want %q (without %q)", tt.name, err, tt.want, tt.hidden)
		}
	}
}

// TestMetricsShared: two servers of one process count refusals into one counter.
func TestMetricsShared(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	a, b := access.NewMetrics(reg), access.NewMetrics(reg)
	if a == nil || b == nil {
		t.Fatal("no metrics")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 0 { // a CounterVec with no children yet gathers nothing
		t.Errorf("gathered %d families before any refusal", len(mfs))
	}
}
