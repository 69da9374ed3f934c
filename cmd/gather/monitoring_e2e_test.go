package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
	"github.com/gatherproxy/gather/internal/chaos"
)

// The operations kit under deploy/monitoring: Prometheus rules, their promtool tests and the
// Grafana dashboard. The tests need Debian's prometheus package (promtool and prometheus); .ci/run
// installs it, and without it they skip saying so.
var (
	monitoringDir = filepath.Join("..", "..", "deploy", "monitoring")
	rulesFile     = filepath.Join(monitoringDir, "rules.yml")
	rulesTestFile = filepath.Join(monitoringDir, "rules_test.yml")
	dashboardFile = filepath.Join(monitoringDir, "dashboard.json")
)

// lookTool returns the path of a Prometheus tool, or skips the test when it is not installed.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not found: install Debian's prometheus package (apt-get install prometheus; .ci/run does) to test deploy/monitoring", name)
	}
	return path
}

// TestMonitoringRules checks rules.yml with promtool and runs its unit tests, and checks that
// every alert has a test that fires it and one that does not.
func TestMonitoringRules(t *testing.T) {
	t.Parallel()
	promtool := lookTool(t, "promtool")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, args := range [][]string{{"check", "rules", "rules.yml"}, {"test", "rules", "rules_test.yml"}} {
		cmd := exec.CommandContext(ctx, promtool, args...)
		cmd.Dir = monitoringDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	rules := loadRules(t)
	var tests struct {
		Tests []struct {
			Name           string `yaml:"name"`
			AlertRuleTests []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, rulesTestFile, &tests)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, at := range tc.AlertRuleTests {
			if len(at.ExpAlerts) > 0 {
				fires[at.Alertname] = true
			} else {
				quiet[at.Alertname] = true
			}
		}
	}
	for _, r := range rules {
		if r.Alert == "" {
			continue
		}
		if !fires[r.Alert] {
			t.Errorf("alert %s: no test in %s fires it", r.Alert, rulesTestFile)
		}
		if !quiet[r.Alert] {
			t.Errorf("alert %s: no test in %s checks that it stays quiet", r.Alert, rulesTestFile)
		}
	}
}

// rule is one recording or alerting rule of rules.yml.
type rule struct {
	Record string `yaml:"record"`
	Alert  string `yaml:"alert"`
	Expr   string `yaml:"expr"`
}

func loadRules(t *testing.T) []rule {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, rulesFile, &f)
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s: no rules", rulesFile)
	}
	return rules
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// panelQuery is one target of a dashboard panel.
type panelQuery struct{ panel, expr string }

// dashboardQueries returns every panel target of dashboard.json, rows' panels included.
func dashboardQueries(t *testing.T) []panelQuery {
	t.Helper()
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var qs []panelQuery
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("%s: %v", dashboardFile, err)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %q has a target without a query", dashboardFile, p.Title)
					continue
				}
				qs = append(qs, panelQuery{p.Title, tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	if len(qs) == 0 {
		t.Fatalf("%s: no panel queries", dashboardFile)
	}
	return qs
}

// TestDashboardQueries runs a real gather demo (two replicas per shard) and a real Prometheus
// scraping it every second with rules.yml loaded, makes some traffic with faults (a failing
// replica, a slow shard cut by its deadline, a query its client abandons), then evaluates every
// query of dashboard.json through Prometheus' HTTP API. It fails on a query that returns nothing
// and on any metric name, in the dashboard or in rules.yml, that is neither exported by gather
// nor recorded by rules.yml.
func TestDashboardQueries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds indexes and runs processes")
	}
	t.Parallel()
	prometheus := lookTool(t, "prometheus")
	queries := dashboardQueries(t)
	rules := loadRules(t)
	demo := startGather(t, "demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--replicas", "2",
		"--corpus", smallCorpus(t, 8), "--data-dir", t.TempDir())
	addr := demo.await(t, demoProxy)
	admin := demo.await(t, demoAdmin)
	// From here on (the demo's index build is bounded by await): at most a minute.
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	// Prometheus takes no port 0 it would tell us about: take a free port and give it back.
	promAddr := freeAddr(t)
	dir := t.TempDir()
	rulesAbs, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: gather
    static_configs:
      - targets: [%q]
`, rulesAbs, admin)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	prom := &process{cmd: exec.Command(prometheus, "--config.file", filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path", filepath.Join(dir, "data"), "--web.listen-address", promAddr, "--log.level", "warn")}
	startProcess(t, prom)
	api := &promAPI{base: "http://" + promAddr}
	poll(t, 20*time.Second, func() string {
		if !api.ready(ctx) {
			return "prometheus not ready on " + promAddr
		}
		return ""
	})

	traffic(ctx, t, addr, admin)

	// Every name the queries use must be exported by gather (its own /metrics) or recorded by
	// rules.yml; Prometheus' own series (up, scrape_*) do not count.
	known := scrapedNames(ctx, t, admin)
	for _, r := range rules {
		if r.Record != "" {
			known[r.Record] = true
		}
	}
	for _, r := range rules {
		for _, n := range metricNames(r.Expr) {
			if !known[n] {
				t.Errorf("%s: rule %s%s names %s, which gather does not export", rulesFile, r.Record, r.Alert, n)
			}
		}
	}
	for _, q := range queries {
		for _, n := range metricNames(q.expr) {
			if !known[n] {
				t.Errorf("%s: panel %q names %s, which gather does not export: %s", dashboardFile, q.panel, n, q.expr)
			}
		}
	}

	// Scrapes and rule evaluations catch up within seconds; a query still empty after 15s shows
	// nothing on its panel.
	empty := queries
	settle := time.Now().Add(15 * time.Second)
	for len(empty) > 0 {
		var still []panelQuery
		for _, q := range empty {
			n, err := api.query(ctx, q.expr)
			if err != nil {
				t.Fatalf("panel %q: %v", q.panel, err)
			}
			if n == 0 {
				still = append(still, q)
			}
		}
		empty = still
		if len(empty) == 0 || time.Now().After(settle) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%v while waiting for Prometheus to have a result for every panel", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	for _, q := range empty {
		t.Errorf("%s: panel %q: query returns nothing after traffic with faults: %s", dashboardFile, q.panel, q.expr)
	}
	prom.stop(t)
	demo.stop(t)
}

// traffic sends queries through the demo at addr while its admin port breaks shards: replica 0 of
// shard-1 fails (retries, hedges), shard-2 is slower than the queries' shard timeout (deadline
// cuts, degraded answers), and one query is abandoned by its client while shard-2 holds it.
func traffic(ctx context.Context, t *testing.T, addr, admin string) {
	t.Helper()
	setFault(ctx, t, admin, "shard-1", "0", "code=unavailable")
	setFault(ctx, t, admin, "shard-2", "", "delay=2s")
	client := queryv1.NewQueryServiceClient(dial(t, addr))
	degraded := 0
	for i := range 12 {
		req := &queryv1.SearchRequest{Query: "union constitution war", TopK: 5, ShardTimeout: durationpb.New(500 * time.Millisecond)}
		if i%2 == 1 {
			req.Query = "congress people"
		}
		// An error is an outcome too (on a loaded machine every shard may miss 500ms); the
		// degraded-answer panel needs one degraded answer.
		resp, err := client.Search(ctx, req)
		if err != nil {
			t.Logf("search %d: %v", i, err)
		} else if resp.GetCoverage().GetDegraded() {
			degraded++
		}
	}
	if degraded == 0 {
		t.Fatal("no degraded answer while shard-2 is slower than the shard timeout")
	}
	// Cancelled, not a deadline: a deadline reaches the proxy, which answers before it.
	abandon, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := time.AfterFunc(100*time.Millisecond, cancel)
	defer stop.Stop()
	if _, err := client.Search(abandon, &queryv1.SearchRequest{Query: "union", TopK: 5}); err == nil {
		t.Fatal("a query its client cancelled after 100ms while shard-2 delays 2s was answered")
	}
	setFault(ctx, t, admin, "all", "", "")
	for range 4 {
		if _, err := client.Search(ctx, &queryv1.SearchRequest{Query: "tariff", TopK: 3}); err != nil {
			t.Logf("search after healing: %v", err)
		}
	}
}

// setFault sets a fault on the demo's shards through its admin port (replica "": every replica;
// spec "": heal).
func setFault(ctx context.Context, t *testing.T, admin, shard, replica, spec string) {
	t.Helper()
	form := url.Values{"shard": {shard}, "spec": {spec}}
	if replica != "" {
		form.Set("replica", replica)
	}
	if code, body := postControl(ctx, t, "http://"+admin+chaos.FaultPath, form); code != http.StatusOK {
		t.Fatalf("fault %s %s: %d %s", shard, spec, code, body)
	}
}

// postControl posts form to one of the demo's or the cluster's control endpoints, with the
// header they require, and returns the status code and the body.
func postControl(ctx context.Context, t *testing.T, url string, form url.Values) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(chaos.ControlHeader, "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// scrapedNames returns the metric names on admin's /metrics.
func scrapedNames(ctx context.Context, t *testing.T, admin string) map[string]bool {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

var (
	// What metricNames strips before it looks for names: strings, label matchers, range and
	// subquery brackets, numbers and durations, and the label lists of grouping and vector
	// matching.
	promStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promMatchers = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promNumbers  = regexp.MustCompile(`(^|[^a-zA-Z0-9_:])[0-9.][0-9a-zA-Z_.]*`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
		"bool", "offset", "inf", "nan", "atan2"}
)

// metricNames returns the metric names a PromQL expression selects: identifiers that are not
// functions, aggregations, keywords, label names or numbers. It is a scanner, not a parser, and
// good enough for the expressions of deploy/monitoring.
func metricNames(expr string) []string {
	e := promStrings.ReplaceAllString(expr, `""`)
	e = promMatchers.ReplaceAllString(e, " ")
	e = promNumbers.ReplaceAllString(e, "$1 ")
	e = promGrouping.ReplaceAllString(e, " ")
	var names []string
	for _, m := range promIdent.FindAllStringSubmatch(e, -1) {
		if m[1] != "" || slices.Contains(promKeywords, strings.ToLower(m[0])) {
			continue // a function or aggregation call, or a keyword
		}
		if !slices.Contains(names, m[0]) {
			names = append(names, m[0])
		}
	}
	return names
}

func TestMetricNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (job) (rate(gather_queries_total{outcome="degraded"}[5m])) / sum by (job) (rate(gather_queries_total[5m]))`, []string{"gather_queries_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(grpc_server_handling_seconds_bucket{grpc_service="a.b"}[1m])))`, []string{"grpc_server_handling_seconds_bucket"}},
		{`job:gather_x:ratio_rate5m > 0.05`, []string{"job:gather_x:ratio_rate5m"}},
		{`a + on (shard) group_left (replica) b or vector(1e3) unless c offset 5m`, []string{"a", "b", "c"}},
		{`{__name__="x"}`, nil},
	} {
		if got := metricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

// promAPI is Prometheus' HTTP API.
type promAPI struct{ base string }

func (p *promAPI) ready(ctx context.Context) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/-/ready", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// query evaluates expr now and returns how many series or samples it gave.
func (p *promAPI) query(ctx context.Context, expr string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/api/v1/query?"+url.Values{"query": {expr}}.Encode(), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	var r struct {
		Status    string `json:"status"`
		Error     string `json:"error"`
		ErrorType string `json:"errorType"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, fmt.Errorf("query %s: %s: %w", expr, resp.Status, err)
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("query %s: %s: %s", expr, r.ErrorType, r.Error)
	}
	if r.Data.ResultType == "scalar" || r.Data.ResultType == "string" {
		return 1, nil
	}
	var series []json.RawMessage
	if err := json.Unmarshal(r.Data.Result, &series); err != nil {
		return 0, fmt.Errorf("query %s: %w", expr, err)
	}
	return len(series), nil
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}
