package synthetic

import (
	"slices"
	"strconv"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
)

// poolSize is the number of distinct passages (text and fields) a server has; hits share them.
const poolSize = 1024

// words make up the synthetic passages.
var words = [...]string{
	"the", "union", "congress", "people", "nation", "government", "states", "year", "war",
	"peace", "law", "public", "country", "power", "world", "trade", "treaty", "tariff", "labor",
	"industry", "commerce", "revenue", "debt", "army", "navy", "citizens", "freedom", "justice",
	"constitution", "policy", "reform", "economy", "budget", "tax", "farm", "education", "health",
	"security", "energy", "rights", "of", "and", "to", "in", "for", "our", "with", "by", "we",
	"must", "will", "have", "that", "this", "which", "upon", "all", "new", "great", "present",
}

// generator derives hits from a seed. It is read-only after newGenerator, so safe for concurrent
// use.
type generator struct {
	seed   uint64
	prefix string // of every doc_id: "syn<seed>-"
	texts  [poolSize]string
	fields [poolSize]map[string]string
}

func newGenerator(seed uint64, textBytes int) *generator {
	g := &generator{seed: seed, prefix: "syn" + strconv.FormatUint(seed, 10) + "-"}
	// All texts are slices of one string: one allocation for the whole pool.
	buf := make([]byte, 0, poolSize*textBytes+32)
	for i := range poolSize {
		st := mix(seed, uint64(i))
		start := len(buf)
		for len(buf)-start < textBytes {
			if len(buf) > start {
				buf = append(buf, ' ')
			}
			buf = append(buf, words[splitmix(&st)%uint64(len(words))]...)
		}
		buf = buf[:start+textBytes] // cut the last word if it overshot
	}
	all := string(buf)
	source := "synthetic-" + strconv.FormatUint(seed, 10)
	for i := range poolSize {
		g.texts[i] = all[i*textBytes : (i+1)*textBytes]
		g.fields[i] = map[string]string{"source_id": source, "passage": strconv.Itoa(i)}
	}
	return g
}

// hits returns the first n hits for query, correctly ordered. The hits are generated in runs of
// equal score (usually one hit, sometimes two to four), each run sorted by doc_id, with scores
// strictly falling from run to run; the runs do not depend on n, so a smaller n gives a prefix.
// Doc ids are the prefix and 8 hex digits of a*i + b mod 2^32 for the i-th hit, which is unique
// for every i because a is odd, and sorts byte-wise as it sorts numerically.
func (g *generator) hits(query string, n int) []*shardv1.Hit {
	st := mix(g.seed, fnv1a(query))
	score := 60 + float64(splitmix(&st)%4000)/100 // in [60, 100)
	a := uint32(splitmix(&st)) | 1
	b := uint32(splitmix(&st))

	idLen := len(g.prefix) + 8
	ids := make([]byte, 0, n*idLen)
	structs := make([]shardv1.Hit, n)
	out := make([]*shardv1.Hit, n)
	var run [4]uint32
	nums := make([]uint32, 0, n)
	scores := make([]float64, 0, n)
	for i := 0; i < n; {
		r := splitmix(&st)
		size := 1
		if r%4 == 0 {
			size = 2 + int((r>>8)%3)
		}
		for k := range size {
			run[k] = a*uint32(i+k) + b
		}
		slices.Sort(run[:size])
		for k := 0; k < size && i+k < n; k++ {
			nums = append(nums, run[k])
			scores = append(scores, score)
		}
		i += size
		score *= 1 - float64(1+(r>>16)%16)/2000
	}
	for _, num := range nums {
		ids = append(ids, g.prefix...)
		ids = appendHex8(ids, num)
	}
	all := string(ids) // one allocation for every doc_id
	for i := range out {
		p := nums[i] % poolSize
		h := &structs[i]
		h.DocId = all[i*idLen : (i+1)*idLen]
		h.Score = scores[i]
		h.Text = g.texts[p]
		h.Fields = g.fields[p]
		out[i] = h
	}
	return out
}

// totalMatches is what the server reports as the query's match count: query-derived, in
// [100000, 200000), and never below the number of hits sent.
func (g *generator) totalMatches(query string, hits int) uint64 {
	return max(100000+mix(g.seed^0x5bd1e995, fnv1a(query))%100000, uint64(hits))
}

func appendHex8(b []byte, v uint32) []byte {
	const digits = "0123456789abcdef"
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, digits[(v>>uint(shift))&0xf])
	}
	return b
}

// fnv1a is the 64-bit FNV-1a hash of s.
func fnv1a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := range len(s) {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix combines two values into a well-spread 64-bit state.
func mix(a, b uint64) uint64 {
	st := a
	x := splitmix(&st) ^ b
	return splitmix(&x)
}

// splitmix advances the SplitMix64 state st and returns the next value.
func splitmix(st *uint64) uint64 {
	*st += 0x9e3779b97f4a7c15
	z := *st
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
