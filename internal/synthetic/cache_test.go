package synthetic

import (
	"fmt"
	"testing"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
)

func TestCacheStaysWithinLimit(t *testing.T) {
	t.Parallel()
	c := cache{limit: 100, m: make(map[cacheKey]*answer)}
	mk := func(n int) *answer { return &answer{hits: make([]*shardv1.Hit, n)} }
	for i := range 50 {
		n := 1 + i*7%60
		k := cacheKey{query: fmt.Sprint(i), topK: uint32(n)}
		c.put(k, mk(n))
		if c.get(k) == nil {
			t.Fatalf("entry %d of %d hits not cached", i, n)
		}
		sum := 0
		for _, a := range c.m {
			sum += len(a.hits)
		}
		if sum != c.hits || c.hits > c.limit {
			t.Fatalf("after entry %d: %d hits cached, counted %d, limit %d", i, sum, c.hits, c.limit)
		}
	}
	big := cacheKey{query: "big", topK: 101}
	c.put(big, mk(101))
	if c.get(big) != nil {
		t.Error("an entry above the limit was cached")
	}
}
