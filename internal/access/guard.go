package access

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/authz"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/gatherproxy/gather/internal/peerid"
	"github.com/gatherproxy/gather/internal/watchfile"
)

// TokenHeader carries, on the server side only, the name of the bearer token a call was
// authenticated with, for policies to match; see the package comment.
const TokenHeader = "x-gather-token-name"

// healthService is exempt from bearer tokens: load balancers probe it without one.
const healthService = "/grpc.health.v1.Health/"

// Metrics counts refused calls. Create it once per registry with NewMetrics.
type Metrics struct {
	refused *prometheus.CounterVec
}

// NewMetrics registers gather_access_refused_total{service,code} with reg, or returns the
// counter already registered there: every server of a process (the demo's proxy and shards)
// counts into one.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gather_access_refused_total",
		Help: "Calls refused by authentication or authorization, by gRPC service and status code.",
	}, []string{"service", "code"})
	if err := reg.Register(refused); err != nil {
		var dup prometheus.AlreadyRegisteredError
		if !errors.As(err, &dup) {
			panic(err) // a programming error, as with promauto
		}
		refused = dup.ExistingCollector.(*prometheus.CounterVec)
	}
	return &Metrics{refused: refused}
}

// Guard authenticates and authorizes the calls of a server. Create it with New, take its
// interceptors, and Close it when the server has stopped.
type Guard struct {
	policy  *watchfile.Set[policy] // nil: no authorization
	tokens  *watchfile.Set[tokens] // nil: no bearer tokens
	log     *slog.Logger
	metrics *Metrics
	stop    chan struct{}
	done    chan struct{}
}

// policy is a parsed authorization policy.
type policy struct {
	name   string
	engine *authz.StaticInterceptor
}

func parsePolicy(file string, data []byte) (policy, error) {
	in, err := authz.NewStatic(string(data))
	if err != nil {
		return policy{}, fmt.Errorf("%s: %w", file, err)
	}
	var head struct {
		Name string `json:"name"`
	}
	_ = json.Unmarshal(data, &head) // authz.NewStatic has parsed it already
	return policy{name: head.Name, engine: in}, nil
}

// New loads cfg's files and starts checking them for changes every cfg.Refresh. It returns nil
// (a Guard that lets every call through) when cfg is not Enabled. log gets refusals, reloads
// and refused files; m may be nil.
func New(cfg Config, log *slog.Logger, m *Metrics) (*Guard, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	g := &Guard{log: log, metrics: m}
	var err error
	if cfg.PolicyFile != "" {
		g.policy, err = watchfile.New("authz.policy_file", []string{cfg.PolicyFile},
			func(b [][]byte) (policy, error) { return parsePolicy(cfg.PolicyFile, b[0]) },
			watchfile.WithLogger[policy](log),
			watchfile.WithDescribe(func(p policy) []any { return []any{"policy", p.name} }))
		if err != nil {
			return nil, err
		}
		log.Info("authorization policy loaded", "policy", g.policy.Current().name, "file", cfg.PolicyFile)
	}
	if cfg.TokensFile != "" {
		g.tokens, err = watchfile.New("authz.tokens_file", []string{cfg.TokensFile},
			func(b [][]byte) (tokens, error) { return parseTokens(cfg.TokensFile, b[0]) },
			watchfile.WithLogger[tokens](log),
			watchfile.WithDescribe(func(ts tokens) []any { return []any{"tokens", len(ts.names)} }))
		if err != nil {
			return nil, err
		}
		warnIfShared(log, "authz.tokens_file", cfg.TokensFile)
		log.Info("bearer tokens loaded", "names", strings.Join(g.tokens.Current().names, ","), "file", cfg.TokensFile)
	}
	g.stop, g.done = make(chan struct{}), make(chan struct{})
	go g.refresh(cfg.refresh())
	return g, nil
}

// refresh looks at the files every interval until Close.
func (g *Guard) refresh(interval time.Duration) {
	defer close(g.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		if g.policy != nil {
			g.policy.Get()
		}
		if g.tokens != nil {
			g.tokens.Get()
		}
	}
}

// Close stops watching the files and waits until that has stopped. Nil-safe.
func (g *Guard) Close() {
	if g == nil {
		return
	}
	close(g.stop)
	<-g.done
}

// UnaryServerInterceptors returns authentication, then authorization; nil for a nil Guard.
func (g *Guard) UnaryServerInterceptors() []grpc.UnaryServerInterceptor {
	if g == nil {
		return nil
	}
	return []grpc.UnaryServerInterceptor{auth.UnaryServerInterceptor(g.authenticate), g.authorizeUnary}
}

// StreamServerInterceptors returns authentication, then authorization; nil for a nil Guard.
func (g *Guard) StreamServerInterceptors() []grpc.StreamServerInterceptor {
	if g == nil {
		return nil
	}
	return []grpc.StreamServerInterceptor{auth.StreamServerInterceptor(g.authenticate), g.authorizeStream}
}

// authenticate checks the bearer token, when tokens are configured, and always removes
// TokenHeader from what the client sent.
func (g *Guard) authenticate(ctx context.Context) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	method, _ := grpc.Method(ctx)
	forged := len(md.Get(TokenHeader)) > 0
	if g.tokens == nil || len(md.Get("authorization")) == 0 {
		if g.tokens != nil && !strings.HasPrefix(method, healthService) && !verifiedCertificate(ctx) {
			return nil, g.refuse(ctx, method, codes.Unauthenticated, fmt.Sprintf(
				"%s sent no bearer token and no client certificate for %s: send \"authorization: Bearer TOKEN\" with a token of %s",
				peerid.FromContext(ctx), method, g.tokens.Current().source))
		}
		if forged {
			md = md.Copy()
			delete(md, TokenHeader)
			ctx = metadata.NewIncomingContext(ctx, md)
		}
		return ctx, nil
	}
	token, err := auth.AuthFromMD(ctx, "bearer")
	if err != nil {
		return nil, g.refuse(ctx, method, codes.Unauthenticated, fmt.Sprintf(
			"%s sent an authorization header that is not \"Bearer TOKEN\" for %s", peerid.FromContext(ctx), method))
	}
	ts := g.tokens.Current()
	name, ok := ts.lookup(token)
	if !ok {
		return nil, g.refuse(ctx, method, codes.Unauthenticated, fmt.Sprintf(
			"%s sent a bearer token for %s that is none of %s", peerid.FromContext(ctx), method, ts.source))
	}
	md = md.Copy()
	delete(md, "authorization") // no one after this needs it, or could log it
	md.Set(TokenHeader, name)
	return peerid.NewContext(metadata.NewIncomingContext(ctx, md), "token:"+name), nil
}

// verifiedCertificate reports whether the call's connection has a verified client certificate.
func verifiedCertificate(ctx context.Context) bool {
	return peerid.FromContext(ctx).Kind == peerid.Certificate
}

func (g *Guard) authorizeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if g.policy == nil {
		return handler(ctx, req)
	}
	p := g.policy.Current()
	reached := false
	resp, err := p.engine.UnaryInterceptor(ctx, req, info, func(ctx context.Context, req any) (any, error) {
		reached = true
		return handler(ctx, req)
	})
	if err != nil && !reached {
		return nil, g.denied(ctx, info.FullMethod, p, err)
	}
	return resp, err
}

func (g *Guard) authorizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if g.policy == nil {
		return handler(srv, ss)
	}
	p := g.policy.Current()
	reached := false
	err := p.engine.StreamInterceptor(srv, ss, info, func(srv any, ss grpc.ServerStream) error {
		reached = true
		return handler(srv, ss)
	})
	if err != nil && !reached {
		return g.denied(ss.Context(), info.FullMethod, p, err)
	}
	return err
}

// denied rewrites grpc-go's terse refusal into one that says who was refused for what.
func (g *Guard) denied(ctx context.Context, method string, p policy, err error) error {
	if status.Code(err) != codes.PermissionDenied {
		return err // the engine could not look at the call at all (INTERNAL): pass it on
	}
	who := peerid.FromContext(ctx)
	if who.Kind == peerid.Connection || who.Kind == peerid.Unknown {
		how := "no verified client certificate"
		if g.tokens != nil {
			how += " and no bearer token"
		}
		if !overTLS(ctx) {
			how += ", over plaintext"
		}
		return g.refuse(ctx, method, codes.Unauthenticated, fmt.Sprintf(
			"%s is not authenticated (%s), and authorization policy %q lets no unauthenticated caller call %s",
			who, how, p.name, method))
	}
	return g.refuse(ctx, method, codes.PermissionDenied, fmt.Sprintf(
		"%s may not call %s: authorization policy %q has no allow rule for it, or a deny rule matches", who, method, p.name))
}

// overTLS reports whether the call came over TLS.
func overTLS(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	_, ok = p.AuthInfo.(credentials.TLSInfo)
	return ok
}

// refuse logs and counts a refusal and returns its status error.
func (g *Guard) refuse(ctx context.Context, method string, code codes.Code, msg string) error {
	service := strings.TrimPrefix(method, "/")
	if i := strings.LastIndexByte(service, '/'); i >= 0 {
		service = service[:i]
	}
	if g.metrics != nil {
		g.metrics.refused.WithLabelValues(service, code.String()).Inc()
	}
	g.log.LogAttrs(ctx, slog.LevelInfo, "refused", slog.String("caller", peerid.FromContext(ctx).String()),
		slog.String("method", method), slog.String("code", code.String()))
	return status.Error(code, msg)
}
