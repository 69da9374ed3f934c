package discovery

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gatherproxy/gather/internal/discovery/etcdtest"
)

// TestFollowReportsCompaction checks that a watch from a compacted revision ends with
// errCompacted, on which Run reads the prefix again rather than wait for events that are gone.
func TestFollowReportsCompaction(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	tg, err := ParseTarget(srv.URL("gather/test"))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := tg.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cli.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rev int64
	for i := range 3 {
		resp, err := cli.Put(ctx, fmt.Sprintf("%s/shard-0/r%d", tg.Prefix, i), "{}")
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	if _, err := cli.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	w := NewWatcher(cli, tg, func(Topology) {}, WithResync(0))
	w.keys = map[string]entry{}
	if err := w.follow(ctx, 1); !errors.Is(err, errCompacted) {
		t.Errorf("follow from revision 1 after compacting at %d = %v, want errCompacted", rev, err)
	}
}
