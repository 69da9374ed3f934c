package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
)

// okFrom is how answeredBy names a shard answered in full by the replica at addr.
func okFrom(shard, addr string) string { return shard + "=" + addr + ":SHARD_STATUS_OK" }

// answeredBy returns a poll condition: a query through client is answered, by the shards and
// replicas of want ("SHARD=REPLICA:STATUS ...", in the answer's order; see okFrom).
func answeredBy(t *testing.T, client queryv1.QueryServiceClient, want string) func() string {
	return func() string {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		resp, err := client.Search(ctx, &queryv1.SearchRequest{Query: "q", TopK: 3})
		if err != nil {
			return fmt.Sprintf("query: %v", err)
		}
		var got []string
		for _, sr := range resp.GetShards() {
			got = append(got, sr.GetShard()+"="+sr.GetReplica()+":"+sr.GetStatus().String())
		}
		if g := strings.Join(got, " "); g != want {
			return fmt.Sprintf("answers from %s, want %s", g, want)
		}
		return ""
	}
}

// TestConfigReload: gather proxy --config re-reads its file when it changes (a rename over it,
// as editors and Kubernetes ConfigMaps do) and on SIGHUP, and swaps the shards live; a file that
// does not parse is refused and the loaded topology stays; other settings that changed are
// logged as needing a restart.
func TestConfigReload(t *testing.T) {
	t.Parallel()
	a := startGather(t, "shard", "--synthetic", "--latency", "none", "--listen", "127.0.0.1:0", "--partition", "0/2")
	b := startGather(t, "shard", "--synthetic", "--latency", "none", "--listen", "127.0.0.1:0", "--partition", "1/2")
	addrA, addrB := a.await(t, shardAddr), b.await(t, shardAddr)
	if len(addrA) != len(addrB) {
		t.Skipf("the shards' addresses differ in length (%s, %s): the SIGHUP step needs them equal", addrA, addrB)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "proxy.yaml")
	write := func(contents string) { // replaced by a rename, as an editor saves
		t.Helper()
		tmp := filepath.Join(dir, "proxy.yaml.tmp")
		if err := os.WriteFile(tmp, []byte(contents), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	shards := func(s0, s1 string) string {
		c := "shard_timeout: 2000ms\nshards:\n  - {name: s0, replicas: [" + s0 + "]}\n"
		if s1 != "" {
			c += "  - {name: s1, replicas: [" + s1 + "]}\n"
		}
		return c
	}
	write(shards(addrA, ""))
	px := startGather(t, "proxy", "--config", path, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
	client := queryv1.NewQueryServiceClient(dial(t, px.await(t, proxyAddr)))
	serving := func(want string) func() string { return answeredBy(t, client, want) }
	poll(t, 10*time.Second, serving(okFrom("s0", addrA)))

	write(shards(addrA, addrB))
	poll(t, 10*time.Second, serving(okFrom("s0", addrA)+" "+okFrom("s1", addrB)))

	write("shards: [\n")
	poll(t, 10*time.Second, func() string {
		if !strings.Contains(px.errOut(), "refused new contents") {
			return "no log line refusing the broken file"
		}
		return ""
	})
	if why := serving(okFrom("s0", addrA) + " " + okFrom("s1", addrB))(); why != "" {
		t.Errorf("after a broken file: %s", why)
	}

	// SIGHUP: the file is rewritten in place, same size and modification time, so that only
	// the signal can make the proxy read it.
	write(shards(addrA, addrB))
	poll(t, 10*time.Second, func() string {
		if n := strings.Count(px.errOut(), "msg=reloaded"); n != 2 {
			return fmt.Sprintf("%d reloads logged, want 2: the proxy has not read the repaired file", n)
		}
		return ""
	})
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	swapped := strings.Replace(shards(addrB, addrA), "2000ms", "1500ms", 1)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(swapped); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := px.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, serving(okFrom("s0", addrB)+" "+okFrom("s1", addrA)))
	poll(t, 5*time.Second, func() string {
		if e := px.errOut(); !strings.Contains(e, "take effect only on restart") || !strings.Contains(e, "keys=shard_timeout") {
			return "no log line saying shard_timeout needs a restart"
		}
		if n := strings.Count(px.errOut(), `msg="topology changed"`); n != 2 {
			return fmt.Sprintf("%d topology change log lines, want 2", n)
		}
		return ""
	})
	// The polls after the signal compare with what the signal read: they neither undo it nor
	// repeat the warning.
	time.Sleep(3 * configPoll)
	if why := serving(okFrom("s0", addrB) + " " + okFrom("s1", addrA))(); why != "" {
		t.Errorf("after the polls that followed SIGHUP: %s", why)
	}
	if n := strings.Count(px.errOut(), "take effect only on restart"); n != 1 {
		t.Errorf("%d restart warnings for one change, want 1", n)
	}
	px.stop(t)
	a.stop(t)
	b.stop(t)
}
