package chaos

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestRunChecksReplicas: a run that slows one replica of each slow shard refuses, before it
// touches anything, a demo whose slow shards have fewer replicas than it asks for.
func TestRunChecksReplicas(t *testing.T) {
	t.Parallel()
	admin, inj := newFaultServer(t) // shard-0 of two replicas, shard-1 of one
	for _, tc := range []struct {
		name     string
		replicas int
		slow     []string
		want     string // in the error; "" for past the check
		tooFew   bool
	}{
		{"a shard of one replica", 2, []string{"shard-0", "shard-1"},
			"replicas 2: the demo's shard-1 has 1 replica: start the demo with --replicas 2", true},
		{"more replicas than any shard has", 3, []string{"shard-0"},
			"replicas 3: the demo's shard-0 has 2 replicas: start the demo with --replicas 3", true},
		{"unknown shard", 2, []string{"shard-9"}, "slow-shards: the demo has no shard shard-9 (it has shard-0, shard-1)", false},
		// Past the check the run reads /metrics, which this server lacks.
		{"enough replicas", 2, []string{"shard-0"}, "", false},
		{"the whole shards", 1, []string{"shard-0", "shard-1"}, "", false},
	} {
		_, err := Run(t.Context(), Config{Admin: admin, Replicas: tc.replicas, SlowShards: tc.slow, Duration: 5 * time.Second})
		if err == nil {
			t.Fatalf("%s: Run against a server without /metrics succeeded", tc.name)
		}
		if errors.Is(err, ErrTooFewReplicas) != tc.tooFew {
			t.Errorf("%s: got %v; ErrTooFewReplicas: want %v", tc.name, err, tc.tooFew)
		}
		switch {
		case tc.want != "" && !strings.Contains(err.Error(), tc.want):
			t.Errorf("%s: got %v, want an error saying %q", tc.name, err, tc.want)
		case tc.want == "" && (strings.Contains(err.Error(), "replicas") || strings.Contains(err.Error(), "slow-shards")):
			t.Errorf("%s: refused: %v", tc.name, err)
		}
	}
	for name, ins := range inj {
		for i, in := range ins {
			if !in.Spec().IsZero() {
				t.Errorf("%s replica %d: left with the fault %v", name, i, in.Spec())
			}
		}
	}
}

// TestSlowReplica: the incident slows whole shards, or only replica 0 of shards of several.
func TestSlowReplica(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ replicas, want int }{{0, allReplicas}, {1, allReplicas}, {2, 0}, {8, 0}} {
		if got := (Config{Replicas: tc.replicas}).withDefaults().slowReplica(); got != tc.want {
			t.Errorf("replicas %d: slows replica %d, want %d", tc.replicas, got, tc.want)
		}
	}
}
