package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/tlsconf"
)

var (
	demoGrpcurlTLS = regexp.MustCompile(`grpcurl (-cacert \S+ -cert \S+ -key \S+) -d`)
	demoShard0     = regexp.MustCompile(`shard-0\s+gather.shard.v1.ShardService\s+(\S+)`)
)

// tlsClient returns client credentials for a demo or test PKI in dir: the CA, and the client
// certificate NAME.pem with NAME-key.pem unless name is "".
func tlsClient(t *testing.T, dir, name string) credentials.TransportCredentials {
	t.Helper()
	c := tlsconf.Client{CAFile: filepath.Join(dir, tlsconf.CAFile)}
	if name != "" {
		c.CertFile, c.KeyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	}
	creds, err := c.Credentials("test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// searchWith makes one Search on a new connection and returns the server's certificate.
func searchWith(t *testing.T, ctx context.Context, addr string, creds credentials.TransportCredentials) (*x509.Certificate, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var p peer.Peer
	if _, err := queryv1.NewQueryServiceClient(conn).Search(ctx, &queryv1.SearchRequest{Query: "union", TopK: 3}, grpc.Peer(&p)); err != nil {
		return nil, err
	}
	info, _ := p.AuthInfo.(credentials.TLSInfo)
	if len(info.State.PeerCertificates) == 0 {
		return nil, nil
	}
	return info.State.PeerCertificates[0], nil
}

// TestDemoTLS runs `gather demo --tls`: the grpcurl line it prints answers, plaintext and
// certificate-less clients are refused, the QS certificate may not query a shard, and a
// certificate replaced on disk is served to the next connection.
func TestDemoTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds grpcurl and runs processes")
	}
	t.Parallel()
	grpcurl := grpcurlBin(t)
	data := t.TempDir()
	p := startGather(t, "demo", "--tls", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--corpus", smallCorpus(t, 8), "--data-dir", data)
	addr := p.await(t, demoProxy)
	admin := p.await(t, demoAdmin)
	shard0 := p.await(t, demoShard0)
	flags := strings.Fields(p.await(t, demoGrpcurlTLS))
	dir := filepath.Join(data, "tls")
	for _, f := range []string{tlsconf.CAFile, tlsconf.ClientCertFile, tlsconf.ClientKeyFile, "authz.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("the demo did not write %s: %v", f, err)
		}
	}

	// The printed grpcurl flags answer.
	out, err := exec.Command(grpcurl, append(flags, "-d", `{"query":"union constitution war","top_k":5}`, addr, "gather.query.v1.QueryService/Search")...).CombinedOutput()
	var resp struct {
		Hits []json.RawMessage `json:"hits"`
	}
	if err != nil || json.Unmarshal(out, &resp) != nil || len(resp.Hits) != 5 {
		t.Fatalf("grpcurl %v: %v\n%s", flags, err, out)
	}
	// Plaintext, and TLS without a client certificate, are refused.
	for _, args := range [][]string{{"-plaintext"}, {"-cacert", filepath.Join(dir, tlsconf.CAFile)}} {
		out, err := exec.Command(grpcurl, append(args, addr, "grpc.health.v1.Health/Check")...).CombinedOutput()
		if err == nil {
			t.Errorf("grpcurl %v was answered:\n%s", args, out)
		}
	}
	ctx := t.Context()
	if _, err := searchWith(t, ctx, addr, insecure.NewCredentials()); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext client: %v, want UNAVAILABLE", err)
	}
	if _, err := searchWith(t, ctx, addr, tlsClient(t, dir, "")); status.Code(err) != codes.Unavailable {
		t.Errorf("client without a certificate: %v, want UNAVAILABLE", err)
	}
	// The shards want the proxy's certificate: the QS certificate is refused by the policy.
	conn, err := grpc.NewClient(shard0, grpc.WithTransportCredentials(tlsClient(t, dir, "client")))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	err = func() error {
		st, err := shardv1.NewShardServiceClient(conn).Search(ctx, &shardv1.SearchRequest{Query: "union", TopK: 1})
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}()
	if want := `cert:spiffe://gather.demo/qs may not call /gather.shard.v1.ShardService/Search: authorization policy "gather-demo"`; status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), want) {
		t.Errorf("QS certificate at a shard: %v, want PERMISSION_DENIED saying %q", err, want)
	}

	// A new proxy certificate, written over the old files, is served to the next connection.
	before, err := searchWith(t, ctx, addr, tlsClient(t, dir, "client"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tlsconf.LoadCA(filepath.Join(dir, tlsconf.CAFile), filepath.Join(dir, tlsconf.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WritePair(filepath.Join(dir, tlsconf.ProxyCertFile), filepath.Join(dir, tlsconf.ProxyKeyFile), tlsconf.Leaf{
		CommonName: "gather proxy, rotated", URIs: []string{tlsconf.DemoProxyID}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
		Server: true, Client: true}); err != nil {
		t.Fatal(err)
	}
	poll(t, 20*time.Second, func() string {
		after, err := searchWith(t, ctx, addr, tlsClient(t, dir, "client"))
		switch {
		case err != nil:
			t.Fatalf("after the rotation: %v", err)
		case after.SerialNumber.Cmp(before.SerialNumber) == 0:
			return "the proxy still serves serial " + after.SerialNumber.Text(16)
		case after.Subject.CommonName != "gather proxy, rotated":
			return "the proxy serves " + after.Subject.CommonName
		}
		return ""
	})
	if out, err := exec.Command(grpcurl, append(flags, addr, "grpc.health.v1.Health/Check")...).CombinedOutput(); err != nil || !strings.Contains(string(out), "SERVING") {
		t.Errorf("grpcurl after the rotation: %v\n%s", err, out)
	}

	// The admin port: no pprof unless asked for; the fault control refuses a cross-origin POST.
	get(t, "http://"+admin+"/debug/pprof/", nil, http.StatusNotFound)
	post := func(body string, header map[string]string, want int) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+admin+"/debug/fault", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("POST /debug/fault %v: %s %s, want %d", header, resp.Status, answer, want)
		}
	}
	post("shard=all&spec=hang", map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site", "X-Gather-Control": "1"}, http.StatusForbidden)
	post("shard=all&spec=", map[string]string{"X-Gather-Control": "1"}, http.StatusOK) // what gather chaos sends
	p.stop(t)
}

// grep returns the lines of text that contain s.
func grep(text, s string) string {
	var out []string
	for line := range strings.SplitSeq(text, "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// get fetches url with client (nil: plain HTTP) and checks the status.
func get(t *testing.T, url string, client *http.Client, want int) string {
	t.Helper()
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != want {
		t.Errorf("GET %s: %s, want %d", url, resp.Status, want)
	}
	return string(body)
}

// TestSecureProcesses runs shards and the proxy as separate processes with every security
// option from their flags: mutual TLS on both hops, an authorization policy on each, bearer
// tokens on the proxy, and TLS on the admin port with pprof on.
func TestSecureProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds grpcurl and runs processes")
	}
	t.Parallel()
	grpcurl := grpcurlBin(t)
	dir := t.TempDir()
	if _, err := tlsconf.MintDemo(dir); err != nil {
		t.Fatal(err)
	}
	f := func(name string) string { return filepath.Join(dir, name) }
	policy := f("authz.json")
	if err := os.WriteFile(policy, []byte(demoPolicy()), 0o600); err != nil {
		t.Fatal(err)
	}
	// The frontend's token may search the proxy, too.
	var pol map[string]any
	if err := json.Unmarshal([]byte(demoPolicy()), &pol); err != nil {
		t.Fatal(err)
	}
	pol["allow_rules"] = append(pol["allow_rules"].([]any), map[string]any{"name": "frontend-token",
		"request": map[string]any{"paths": []string{"/gather.query.v1.QueryService/*"},
			"headers": []any{map[string]any{"key": "x-gather-token-name", "values": []string{"frontend"}}}}})
	b, _ := json.Marshal(pol)
	proxyPolicy := f("proxy-authz.json")
	if err := os.WriteFile(proxyPolicy, b, 0o600); err != nil {
		t.Fatal(err)
	}
	const token = "frontend-token-0123456789abcdef"
	if err := os.WriteFile(f("tokens"), []byte("frontend "+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var shardFlags []string
	for i := range 2 {
		s := startGather(t, "shard", "--synthetic", "--listen", "127.0.0.1:0", "--partition", fmt.Sprintf("%d/2", i),
			"--tls-cert", f(tlsconf.ShardCertFile), "--tls-key", f(tlsconf.ShardKeyFile), "--tls-client-ca", f(tlsconf.CAFile),
			"--authz-policy", policy)
		shardFlags = append(shardFlags, "--shard", fmt.Sprintf("s%d=%s", i, s.await(t, shardAddr)))
	}
	px := startGather(t, append([]string{"proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--pprof",
		"--tls-cert", f(tlsconf.ProxyCertFile), "--tls-key", f(tlsconf.ProxyKeyFile), "--tls-client-ca", f(tlsconf.CAFile),
		"--tls-client-auth", "optional",
		"--shard-tls-ca", f(tlsconf.CAFile), "--shard-tls-cert", f(tlsconf.ProxyCertFile), "--shard-tls-key", f(tlsconf.ProxyKeyFile),
		"--admin-tls-cert", f(tlsconf.ProxyCertFile), "--admin-tls-key", f(tlsconf.ProxyKeyFile),
		"--authz-policy", proxyPolicy, "--authz-tokens", f("tokens")}, shardFlags...)...)
	addr := px.await(t, proxyAddr)
	admin := px.await(t, regexp.MustCompile(`admin on https://(\S+),`))

	// gather query with the QS certificate: both hops work.
	out, err := exec.Command(gatherBin, "query", "--addr", addr, "--tls-ca", f(tlsconf.CAFile),
		"--tls-cert", f(tlsconf.ClientCertFile), "--tls-key", f(tlsconf.ClientKeyFile), "union").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "coverage: 2 of 2 shards (complete)") {
		t.Fatalf("gather query with a client certificate: %v\n%s", err, out)
	}
	// No certificate: a bearer token, or UNAUTHENTICATED.
	anon := tlsClient(t, dir, "")
	if _, err := searchWith(t, t.Context(), addr, anon); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "sent no bearer token") {
		t.Errorf("no certificate, no token: %v, want UNAUTHENTICATED", err)
	}
	withToken := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+token)
	if _, err := searchWith(t, withToken, addr, anon); err != nil {
		t.Errorf("with the frontend's token: %v", err)
	}
	if strings.Contains(px.errOut(), token) {
		t.Errorf("the proxy logged the token:\n%s", px.errOut())
	}

	// The admin port over TLS: metrics, pprof (asked for), and channelz for grpcurl.
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(f(tlsconf.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	roots.AppendCertsFromPEM(caPEM)
	https := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	defer https.CloseIdleConnections()
	m := get(t, "https://"+admin+"/metrics", https, http.StatusOK)
	if !strings.Contains(m, `gather_access_refused_total{code="Unauthenticated",service="gather.query.v1.QueryService"} 1`) {
		t.Errorf("the refusal is not counted in /metrics")
	}
	// Authorization comes before admission control: the refused call never asked for a slot.
	if !strings.Contains(m, "\ngather_admission_wait_seconds_count 2\n") {
		t.Errorf("admission control saw other than the 2 calls let in:\n%s", grep(m, "gather_admission_wait_seconds_count"))
	}
	get(t, "https://"+admin+"/debug/pprof/", https, http.StatusOK)
	ch, err := exec.Command(grpcurl, "-cacert", f(tlsconf.CAFile), admin, "grpc.channelz.v1.Channelz/GetTopChannels").CombinedOutput()
	if err != nil || strings.Count(string(ch), `"target"`) < 2 {
		t.Errorf("channelz over the admin port's TLS: %v\n%s", err, ch)
	}
	px.stop(t)
}
