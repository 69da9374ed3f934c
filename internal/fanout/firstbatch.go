package fanout

import "math"

// FirstBatch is the first_batch_hits the fan-out asks of each of n shards for a query of top_k k:
// one more than the median of X ~ Binomial(k, 1/n), the number of the global top k one shard
// holds when documents are spread over the shards by hash. 0 (no hint) when that is k or more,
// as with one shard.
//
// The merge needs X+1 hits of a shard (the last to see that the next ranks below the answer;
// X when the k-th hit is the shard's own), so at least half of the shards never need a second
// message. Vespa picks its per-partition count at a high quantile (p = 0.99999 gives 45 hits per
// partition for k 200 over 10) because a partition that runs short costs another round trip;
// here the rest of a shard's stream is already on its way (the stream continues: the proxy just
// does not decode it until the merge asks), so running short costs one more message decoded, and
// the median keeps the hits decoded low: at fan-out 64 and top_k 100 the hint is 2, and the
// batches that follow double (shardsvc.Pace), so a shard holding x hits of the answer costs at
// most about 2(x+1) + 2 hits decoded.
func FirstBatch(n int, k uint32) uint32 {
	if n <= 1 || k <= 1 {
		return 0
	}
	first := binomialMedian(int(k), 1/float64(n)) + 1
	if first >= int(k) {
		return 0
	}
	return uint32(first)
}

// binomialMedian is the smallest m with P(X <= m) >= 1/2 for X ~ Binomial(k, p), 0 < p < 1. It is
// floor(kp) or ceil(kp) (Kaas & Buhrman, 1980), so one CDF decides: P(X <= floor(kp)), summed
// down from floor(kp), whose probability is taken from lgamma so that no term underflows first;
// the sum stops once its terms no longer count. That is O(sqrt(kp)) steps.
func binomialMedian(k int, p float64) int {
	m := int(math.Floor(float64(k) * p))
	lk, _ := math.Lgamma(float64(k) + 1)
	lm, _ := math.Lgamma(float64(m) + 1)
	lr, _ := math.Lgamma(float64(k-m) + 1)
	term := math.Exp(lk - lm - lr + float64(m)*math.Log(p) + float64(k-m)*math.Log1p(-p))
	cdf := 0.0
	for i := m; i >= 0 && term > cdf*1e-17; i-- {
		cdf += term
		term *= float64(i) / float64(k-i+1) * (1 - p) / p // P(X = i-1) from P(X = i)
	}
	if cdf >= 0.5-1e-9 { // exactly 1/2 (k odd, p = 1/2) must not round below it
		return m
	}
	return m + 1
}
