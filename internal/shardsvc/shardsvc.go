// Package shardsvc holds what every gather.shard.v1.ShardService implementation shares: request
// validation with the same answers everywhere, and a context-aware wait for the ones that delay
// their answer on purpose (the synthetic shard, fault injection, test doubles).
package shardsvc

import (
	"context"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
)

// Validate returns an INVALID_ARGUMENT status error for a request a shard with the given largest
// top_k cannot serve, saying what to change; nil otherwise.
func Validate(req *shardv1.SearchRequest, maxTopK int) error {
	switch {
	case strings.TrimSpace(req.GetQuery()) == "":
		return status.Error(codes.InvalidArgument, "query is blank: send at least one word to search for")
	case req.GetTopK() == 0:
		return status.Error(codes.InvalidArgument, "top_k is 0: ask for at least 1 hit")
	case uint64(req.GetTopK()) > uint64(maxTopK):
		return status.Errorf(codes.InvalidArgument, "top_k %d is above this shard's maximum of %d: ask for at most %d hits",
			req.GetTopK(), maxTopK, maxTopK)
	}
	return nil
}

// Wait waits for d, or until ctx ends, in which case it returns ctx's error as a CANCELED or
// DEADLINE_EXCEEDED status error. A d of zero or less returns at once.
func Wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}
