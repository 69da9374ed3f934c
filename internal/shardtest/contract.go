package shardtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
)

// Collect runs a Search call to its end and returns its messages and final error (nil for a
// clean end of stream).
func Collect(ctx context.Context, c shardv1.ShardServiceClient, query string, topK uint32) ([]*shardv1.SearchResponse, error) {
	stream, err := c.Search(ctx, &shardv1.SearchRequest{Query: query, TopK: topK})
	if err != nil {
		return nil, err
	}
	var msgs []*shardv1.SearchResponse
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return msgs, nil
		}
		if err != nil {
			return msgs, err
		}
		msgs = append(msgs, m)
	}
}

// HitsOf concatenates the hits of a stream's messages.
func HitsOf(msgs []*shardv1.SearchResponse) []*shardv1.Hit {
	var hits []*shardv1.Hit
	for _, m := range msgs {
		hits = append(hits, m.GetHits()...)
	}
	return hits
}

// ContractViolation returns what is wrong with a stream of hits under the ShardService ordering
// contract for topK (at most topK hits, scores descending and never NaN, ties by doc_id
// ascending, no doc_id repeated), or "" if nothing is. Shard implementations' tests check their
// streams with it.
func ContractViolation(hits []*shardv1.Hit, topK int) string {
	if len(hits) > topK {
		return fmt.Sprintf("%d hits for top_k %d", len(hits), topK)
	}
	seen := make(map[string]bool, len(hits))
	for i, h := range hits {
		if math.IsNaN(h.GetScore()) {
			return fmt.Sprintf("hit %d (%s): NaN score", i, h.GetDocId())
		}
		if seen[h.GetDocId()] {
			return fmt.Sprintf("hit %d: doc_id %s repeated", i, h.GetDocId())
		}
		seen[h.GetDocId()] = true
		if i == 0 {
			continue
		}
		p := hits[i-1]
		switch {
		case h.GetScore() > p.GetScore():
			return fmt.Sprintf("hit %d (%s): score %v after %v", i, h.GetDocId(), h.GetScore(), p.GetScore())
		case h.GetScore() == p.GetScore() && h.GetDocId() <= p.GetDocId():
			return fmt.Sprintf("hit %d: tie at score %v with doc_id %s after %s", i, h.GetScore(), h.GetDocId(), p.GetDocId())
		}
	}
	return ""
}
