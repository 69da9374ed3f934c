package proxy

import (
	"testing"

	"github.com/gatherproxy/gather/internal/fanout"
)

// TestMissing: the access log names each shard that did not answer, with its status, the replica
// of its last attempt and how many attempts the call made.
func TestMissing(t *testing.T) {
	got := missing([]fanout.Result{
		{Shard: "shard-0", Status: fanout.StatusOK, ReplicaIndex: 0, Attempts: 1},
		{Shard: "shard-1", Status: fanout.StatusDeadlineExceeded, ReplicaIndex: 1, Attempts: 1},
		{Shard: "shard-2", Status: fanout.StatusUnavailable, ReplicaIndex: -1},
		{Shard: "shard-3", Status: fanout.StatusDeadlineExceeded, ReplicaIndex: 0, Attempts: 2},
	})
	if want := "shard-1:DEADLINE_EXCEEDED:r1:1 shard-2:UNAVAILABLE:r-1:0 shard-3:DEADLINE_EXCEEDED:r0:2"; got != want {
		t.Errorf("missing\n got %q\nwant %q", got, want)
	}
}
