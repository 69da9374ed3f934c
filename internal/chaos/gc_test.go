package chaos

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestCollectGarbageKeepsTheConnection: asking for a GC and then scraping must not close and
// reopen chaos's admin connection, or the scrape sees the demo's side of the old one in
// CLOSE_WAIT and blames the proxy for chaos's own doing.
func TestCollectGarbageKeepsTheConnection(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.Handle("POST "+GCPath, GCHandler())
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("go_goroutines 7\ngo_memstats_heap_inuse_bytes 1024\ngather_sockdiag_up 0\n"))
	})
	srv := httptest.NewUnstartedServer(mux)
	var conns atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	transport := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
	defer transport.CloseIdleConnections()
	sc := scraper{client: &http.Client{Transport: transport}, admin: strings.TrimPrefix(srv.URL, "http://")}
	for range 3 {
		st, err := sc.scrape(t.Context(), 5*time.Second, true)
		if err != nil {
			t.Fatal(err)
		}
		if !st.HeapCollected || st.Goroutines != 7 || st.HeapInuse != 1024 {
			t.Errorf("scrape after GC: %+v", st)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("3 GCs and 3 scrapes took %d connections, want 1", n)
	}
}
