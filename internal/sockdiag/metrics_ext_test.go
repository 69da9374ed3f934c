package sockdiag_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gatherproxy/gather/internal/sockdiag"
)

// scrape serves reg the way the admin port does and returns the page a client without an
// Accept header gets.
func scrape(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// TestParseMetricsRoundTrip checks that what the Collector exports, ParseMetrics reads back.
func TestParseMetricsRoundTrip(t *testing.T) {
	t.Parallel()
	skipIfBigEndian(t)
	files := fixtureFiles()
	noStats := fixtureFiles()
	delete(noStats, "net/netstat")
	tests := []struct {
		name string
		root string
	}{
		{"full", writeProc(t, files, fixtureFDs())},
		{"no listen stats", writeProc(t, noStats, fixtureFDs())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := sockdiag.New(tt.root)
			want, err := r.Read()
			if err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(sockdiag.NewCollector(r))
			got, err := sockdiag.ParseMetrics(strings.NewReader(scrape(t, reg)))
			if err != nil {
				t.Fatalf("ParseMetrics: %v", err)
			}
			want.Time = got.Time
			if got != want {
				t.Errorf("ParseMetrics:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseMetricsUnavailableRoundTrip(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	reg.MustRegister(sockdiag.NewCollector(sockdiag.New(filepath.Join(t.TempDir(), "none"))))
	got, err := sockdiag.ParseMetrics(strings.NewReader(scrape(t, reg)))
	if err != nil {
		t.Fatalf("ParseMetrics: %v", err)
	}
	if got.Available || !errors.Is(got.Err, sockdiag.ErrUnavailable) {
		t.Errorf("got Available %v, Err %v; want unavailable with ErrUnavailable", got.Available, got.Err)
	}
}

func TestParseMetrics(t *testing.T) {
	t.Parallel()
	const head = "# HELP gather_sockdiag_up whatever\n# TYPE gather_sockdiag_up gauge\ngather_sockdiag_up 1\n"
	tests := []struct {
		name    string
		in      string
		want    func(*sockdiag.Snapshot)
		wantErr error
	}{
		{
			name: "only up",
			in:   head,
			want: func(*sockdiag.Snapshot) {},
		},
		{
			name: "states, counters, other families, timestamps, extra labels",
			in: "go_goroutines 12\n" +
				`go_info{version="go1.26"} 1` + "\n" +
				head +
				`gather_tcp_sockets{state="close_wait"} 3e+06` + "\n" +
				`gather_tcp_sockets{instance="x",state="established", } 4 1700000000000` + "\n" +
				`gather_tcp_sockets { state = "listen" } 2` + "\n" +
				`gather_tcp_listener_unowned_sockets{job="a\"b\\c\nd",state="time_wait"} 40` + "\n" +
				`gather_tcp_sockets{state="new_syn_recv"} 9` + "\n" +
				"gather_tcp_listen_overflows_total 18446744073709549568\n" +
				"gather_tcp_listen_drops_total\t23\n",
			want: func(s *sockdiag.Snapshot) {
				s.Sockets[sockdiag.CloseWait] = 3000000
				s.Sockets[sockdiag.Established] = 4
				s.Sockets[sockdiag.Listen] = 2
				s.ListenerUnowned[sockdiag.TimeWait] = 40
				s.ListenStatsAvailable, s.ListenOverflows, s.ListenDrops = true, 18446744073709549568, 23
			},
		},
		{
			name: "one counter only",
			in:   head + "gather_tcp_listen_overflows_total 5\n",
			want: func(*sockdiag.Snapshot) {},
		},
		{
			name: "down",
			in:   "gather_sockdiag_up 0\n",
			want: func(s *sockdiag.Snapshot) { s.Available = false },
		},
		{name: "empty", in: "", wantErr: sockdiag.ErrMalformed},
		{name: "no up", in: `gather_tcp_sockets{state="close_wait"} 3` + "\n", wantErr: sockdiag.ErrMalformed},
		{name: "up is 2", in: "gather_sockdiag_up 2\n", wantErr: sockdiag.ErrMalformed},
		{name: "no value", in: "gather_sockdiag_up\n", wantErr: sockdiag.ErrMalformed},
		{name: "bad value", in: "gather_sockdiag_up one\n", wantErr: sockdiag.ErrMalformed},
		{name: "duplicate", in: head + head, wantErr: sockdiag.ErrMalformed},
		{
			name:    "duplicate state",
			in:      head + `gather_tcp_sockets{state="listen"} 1` + "\n" + `gather_tcp_sockets{state="listen"} 1` + "\n",
			wantErr: sockdiag.ErrMalformed,
		},
		{name: "no state", in: head + "gather_tcp_sockets 1\n", wantErr: sockdiag.ErrMalformed},
		{name: "negative", in: head + `gather_tcp_sockets{state="listen"} -1` + "\n", wantErr: sockdiag.ErrMalformed},
		{name: "fraction", in: head + `gather_tcp_sockets{state="listen"} 1.5` + "\n", wantErr: sockdiag.ErrMalformed},
		{name: "NaN", in: head + "gather_tcp_listen_drops_total NaN\n", wantErr: sockdiag.ErrMalformed},
		{name: "Inf", in: head + "gather_tcp_listen_drops_total +Inf\n", wantErr: sockdiag.ErrMalformed},
		{name: "unterminated labels", in: head + `gather_tcp_sockets{state="listen" 1` + "\n", wantErr: sockdiag.ErrMalformed},
		{name: "unquoted label", in: head + `gather_tcp_sockets{state=listen} 1` + "\n", wantErr: sockdiag.ErrMalformed},
		{name: "malformed elsewhere on the page", in: `weird_family{a="unterminated} 1` + "\n" + head, wantErr: sockdiag.ErrMalformed},
		{name: "trailing junk", in: head + `gather_tcp_sockets{state="listen"} 1 2 3` + "\n", wantErr: sockdiag.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := sockdiag.ParseMetrics(strings.NewReader(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				return
			}
			want := sockdiag.Snapshot{Available: true}
			tt.want(&want)
			if !want.Available {
				if !errors.Is(got.Err, sockdiag.ErrUnavailable) {
					t.Errorf("Err = %v, want ErrUnavailable", got.Err)
				}
				want.Err = got.Err
			}
			if got != want {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseMetricsReadError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	_, err := sockdiag.ParseMetrics(io.MultiReader(strings.NewReader("gather_sockdiag_up 1\n"), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) {
		t.Errorf("err = %v, want one wrapping %v", err, boom)
	}
}

// FuzzParseMetrics feeds ParseMetrics arbitrary pages: it reads input from the network, so it
// must not panic, and whatever it accepts must print.
func FuzzParseMetrics(f *testing.F) {
	f.Add("gather_sockdiag_up 1\n" + `gather_tcp_sockets{state="close_wait"} 3` + "\n")
	f.Add("gather_sockdiag_up 0\n")
	f.Add(`gather_tcp_sockets{a="\\\"",state="listen",} 1 2` + "\ngather_sockdiag_up 1\n")
	f.Add("gather_tcp_listen_drops_total 1e300\ngather_sockdiag_up 1\n")
	f.Fuzz(func(t *testing.T, page string) {
		snap, err := sockdiag.ParseMetrics(strings.NewReader(page))
		if err != nil {
			return
		}
		if snap.Available != (snap.Err == nil) {
			t.Errorf("Available %v with Err %v", snap.Available, snap.Err)
		}
		if err := snap.WriteTable(io.Discard); err != nil {
			t.Errorf("WriteTable: %v", err)
		}
	})
}
