package chaos

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	queryv1 "github.com/gatherproxy/gather/gen/gather/query/v1"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("the defaults do not validate: %v", err)
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Addr: "10.0.0.1:7070"}, "addr: \"10.0.0.1:7070\" is not a loopback address"},
		{Config{Admin: "example.com:9090"}, "admin: \"example.com:9090\" is not a loopback address"},
		{Config{Addr: "127.0.0.1"}, "is not HOST:PORT"},
		{Config{Duration: 2 * time.Second}, "give at least 5s"},
		{Config{Timeout: 5 * time.Second}, "slower than the QS timeout"},
		{Config{Workers: -1}, "workers -1: negative"},
		{Config{Hog: -1}, "hog -1: negative"},
		{Config{Hog: 5001}, "5001 hog streams"},
		{Config{SlowShards: []string{}}, "name at least one shard"},
		{Config{ProbeEvery: 2 * time.Second}, "shorter than the longest allowed gap"},
		{Config{Replicas: 9}, "replicas 9: give 1 to 8"},
		{Config{Replicas: -1}, "replicas -1: give 1 to 8"},
		{Config{Cluster: "127.0.0.1:1", SlowShards: []string{"shard-0"}}, "a cluster has no fault control"},
		{Config{Cluster: "10.0.0.1:1"}, "cluster: \"10.0.0.1:1\" is not a loopback address"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want an error saying %q", tc.cfg, err, tc.want)
		}
	}
	if err := (Config{Cluster: "127.0.0.1:7072"}).Validate(); err != nil {
		t.Errorf("the cluster scenario's defaults do not validate: %v", err)
	}
	if c := (Config{Cluster: "127.0.0.1:7072"}).Defaults(); c.Workers >= 256 || len(c.SlowShards) != 0 || c.ReplaceShard != "shard-1" {
		t.Errorf("cluster defaults: %d workers, slow shards %v, replace %q; want fewer workers than the proxy admits, none slowed, shard-1",
			c.Workers, c.SlowShards, c.ReplaceShard)
	}
	for _, ok := range []string{"127.0.0.1:7070", "[::1]:7070", "localhost:7070", "127.1.2.3:1"} {
		if err := (Config{Addr: ok}).Validate(); err != nil {
			t.Errorf("addr %s: %v", ok, err)
		}
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	shed, err := status.New(codes.ResourceExhausted, "proxy at capacity").
		WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(250 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	degraded := &queryv1.SearchResponse{Coverage: &queryv1.Coverage{ShardsTotal: 4, ShardsSucceeded: 2, Degraded: true}}
	for _, tc := range []struct {
		name  string
		resp  *queryv1.SearchResponse
		err   error
		want  outcome
		delay time.Duration
	}{
		{"ok", &queryv1.SearchResponse{Coverage: &queryv1.Coverage{ShardsTotal: 4, ShardsSucceeded: 4}}, nil, outOK, 0},
		{"degraded", degraded, nil, outDegraded, 0},
		{"shed with a hint", nil, shed.Err(), outShed, 250 * time.Millisecond},
		{"shed without a hint", nil, status.Error(codes.ResourceExhausted, "full"), outShed, 100 * time.Millisecond},
		{"qs timeout", nil, status.Error(codes.DeadlineExceeded, "context deadline exceeded"), outQSTimeout, 0},
		{"no shard answered", nil, status.Error(codes.Unavailable, "4 of 4 shards did not answer"), outUnavailable, 0},
		{"internal", nil, status.Error(codes.Internal, "boom"), outOther, 0},
	} {
		got, delay := classify(tc.resp, tc.err)
		if got != tc.want || delay != tc.delay {
			t.Errorf("%s: got %d, %s; want %d, %s", tc.name, got, delay, tc.want, tc.delay)
		}
	}
}
