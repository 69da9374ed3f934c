package shard

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestStatusOf(t *testing.T) {
	t.Parallel()
	live := context.Background()
	canceled, cancel := context.WithCancel(live)
	cancel()
	expired, cancel2 := context.WithTimeout(live, 0)
	defer cancel2()

	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want codes.Code
	}{
		{"canceled call", canceled, errors.New("anything"), codes.Canceled},
		{"expired call", expired, errors.New("anything"), codes.DeadlineExceeded},
		{"wrapped Canceled", live, fmt.Errorf("partition 0/1: search: %w", context.Canceled), codes.Canceled},
		{"wrapped DeadlineExceeded", live, fmt.Errorf("search: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{"status error kept", live, status.Error(codes.Unavailable, "transport closing"), codes.Unavailable},
		{"other error", live, errors.New("index damaged"), codes.Internal},
	}
	for _, tt := range tests {
		got := status.Code(statusOf(tt.ctx, tt.err))
		if got != tt.want {
			t.Errorf("%s: code %v, want %v", tt.name, got, tt.want)
		}
	}
}
