package shard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	shardv1 "github.com/gatherproxy/gather/gen/gather/shard/v1"
	"github.com/gatherproxy/gather/internal/corpus"
	"github.com/gatherproxy/gather/internal/shard"
	"github.com/gatherproxy/gather/internal/shardtest"
)

var whole = corpus.Partition{Index: 0, Count: 1}

// testDoc is a document of the test corpus.
type testDoc struct {
	ID   string `json:"id"`
	Year int    `json:"year"`
	Text string `json:"text"`
}

// vocabulary holds words that the English analyzer keeps as one term each
// and that are no stop words, so a test can tell which documents match.
var vocabulary = []string{"apple", "banana", "cherry", "river", "mountain", "forest", "harbor", "meadow", "valley", "canyon"}

// testDocs returns a small corpus: docs whose texts are random sentences
// over vocabulary (each shorter than 50 words, so one passage each), and a
// dozen identical "tie" documents that score the same for any query, with
// ids whose byte order differs from their numeric order.
func testDocs() []testDoc {
	rng := rand.New(rand.NewPCG(7, 11))
	var docs []testDoc
	for i := range 30 {
		words := make([]string, 3+rng.IntN(25))
		for j := range words {
			words[j] = vocabulary[rng.IntN(len(vocabulary))]
		}
		docs = append(docs, testDoc{ID: fmt.Sprintf("doc%02d", i), Year: 1900 + i, Text: "The " + strings.Join(words, " ") + "."})
	}
	for _, id := range []string{"tie0", "tie1", "tie10", "tie11", "tie2", "tie3", "Tie", "tie-a", "tie_b", "tie9", "tie99", "tie100"} {
		docs = append(docs, testDoc{ID: id, Year: 2000, Text: "An apple and a banana by the river."})
	}
	return docs
}

// jsonl encodes docs as JSON Lines.
func jsonl(t testing.TB, docs []testDoc) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, d := range docs {
		if err := enc.Encode(d); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func testSource(t testing.TB) corpus.Source {
	return corpus.FromBytes("test corpus", jsonl(t, testDocs()))
}

// openIndex builds the test corpus's whole index in a fresh directory.
func openIndex(t testing.TB, opts ...shard.OpenOption) *shard.Index {
	t.Helper()
	ix, err := shard.Open(context.Background(), t.TempDir()+"/index", testSource(t), whole, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := ix.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return ix
}

// matching returns the passage ids of the docs that contain any of words.
func matching(docs []testDoc, words ...string) []string {
	var ids []string
	for _, d := range docs {
		for _, w := range strings.Fields(strings.TrimSuffix(d.Text, ".")) {
			if slices.Contains(words, w) {
				ids = append(ids, d.ID+"#001")
				break
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// checkContract checks a Search stream against the ordering contract of
// gather.shard.v1: counts on the first message only, at most topK hits in
// all, scores descending and never NaN, ties by doc_id ascending, no doc_id
// repeated. It returns the hits.
func checkContract(t *testing.T, msgs []*shardv1.SearchResponse, topK int) []*shardv1.Hit {
	t.Helper()
	if len(msgs) == 0 {
		t.Fatal("no messages")
	}
	var hits []*shardv1.Hit
	for i, m := range msgs {
		if i > 0 && (m.GetTotalMatches() != 0 || m.GetDocuments() != 0) {
			t.Errorf("message %d carries counts (%d, %d); only the first may", i, m.GetTotalMatches(), m.GetDocuments())
		}
		hits = append(hits, m.GetHits()...)
	}
	if why := shardtest.ContractViolation(hits, topK); why != "" {
		t.Errorf("ordering contract broken: %s", why)
	}
	return hits
}

func ids(hits []*shardv1.Hit) []string {
	out := make([]string, len(hits))
	for i, h := range hits {
		out[i] = h.GetDocId()
	}
	return out
}
