package corpus_test

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gatherproxy/gather/internal/corpus"
)

var all = corpus.Partition{Index: 0, Count: 1}

// prose returns n words of sentences of 10 words each.
func prose(n int) string {
	var b strings.Builder
	for i := range n {
		switch i % 10 {
		case 0:
			b.WriteString("Word")
		case 9:
			b.WriteString(" word.")
		default:
			b.WriteString(" word")
		}
		if i%10 == 9 && i < n-1 {
			b.WriteByte(' ')
		}
	}
	return b.String()
}

// collect returns every passage of data in p.
func collect(t *testing.T, data []byte, p corpus.Partition) []corpus.Passage {
	t.Helper()
	var got []corpus.Passage
	err := corpus.Passages(bytes.NewReader(data), p, func(pg corpus.Passage) error {
		got = append(got, pg)
		return nil
	})
	if err != nil {
		t.Fatalf("Passages: %v", err)
	}
	return got
}

func gzipped(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestPassagesIDsAndFields(t *testing.T) {
	t.Parallel()
	data := fmt.Appendf(nil, `{"id": "a", "year": 1790, "ok": true, "ratio": -1.5e3, "president": "George Washington", "note": null, "text": %q}
{"text": "Short  text.\n", "id": "b"}

{"id":"c","text":%q}
`, prose(200), prose(1234*100))
	got := collect(t, data, all)

	var ids []string
	for _, p := range got {
		ids = append(ids, p.ID)
	}
	if len(ids) != 2+1+1234 {
		t.Fatalf("got %d passages, want %d", len(ids), 2+1+1234)
	}
	for i, want := range map[int]string{0: "a#001", 1: "a#002", 2: "b#001", 3: "c#001", 12: "c#010", 1001: "c#999", 1002: "c#1000", 1236: "c#1234"} {
		if ids[i] != want {
			t.Errorf("passage %d id = %q, want %q", i, ids[i], want)
		}
	}

	wantA2 := map[string]string{
		"year": "1790", "ok": "true", "ratio": "-1.5e3", "president": "George Washington",
		corpus.FieldSourceID: "a", corpus.FieldPassage: "2",
	}
	if !maps.Equal(got[1].Fields, wantA2) {
		t.Errorf("a#002 fields = %v, want %v", got[1].Fields, wantA2)
	}
	wantB := map[string]string{corpus.FieldSourceID: "b", corpus.FieldPassage: "1"}
	if !maps.Equal(got[2].Fields, wantB) || got[2].Text != "Short text." {
		t.Errorf("b#001 = %+v, want text %q and fields %v", got[2], "Short text.", wantB)
	}
	got[0].Fields["year"] = "changed"
	if got[1].Fields["year"] != "1790" {
		t.Errorf("passages share a fields map")
	}
}

func TestPassagesGzipAndLongLines(t *testing.T) {
	t.Parallel()
	// One line of about 600 KB, far beyond bufio.Scanner's default 64 KiB,
	// with no newline at the end.
	plain := fmt.Appendf(nil, "{\"id\": \"long\", \"text\": %q}\r\n{\"id\": \"last\", \"text\": \"The end.\"}", prose(120000))
	if len(plain) < 500_000 {
		t.Fatalf("test line too short: %d bytes", len(plain))
	}
	fromPlain := collect(t, plain, all)
	fromGzip := collect(t, gzipped(t, plain), all)
	if len(fromPlain) != 1201 { // 1200 of 100 words, and "The end."
		t.Errorf("got %d passages, want 1201", len(fromPlain))
	}
	if len(fromPlain) != len(fromGzip) {
		t.Fatalf("plain gave %d passages, gzip %d", len(fromPlain), len(fromGzip))
	}
	for i := range fromPlain {
		if fromPlain[i].ID != fromGzip[i].ID || fromPlain[i].Text != fromGzip[i].Text {
			t.Fatalf("passage %d differs: plain %q, gzip %q", i, fromPlain[i].ID, fromGzip[i].ID)
		}
	}
}

// TestPassagesPartitions checks that every passage lands in exactly one
// partition, for several partition counts.
func TestPassagesPartitions(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	for i := range 40 {
		fmt.Fprintf(&b, "{\"id\": \"doc%d\", \"text\": %q}\n", i, prose(50+i*37))
	}
	whole := collect(t, b.Bytes(), all)
	if len(whole) < 100 {
		t.Fatalf("only %d passages; want a bigger test corpus", len(whole))
	}
	for _, n := range []int{1, 2, 3, 4, 7, 16} {
		seen := make(map[string]int)
		for i := range n {
			p := corpus.Partition{Index: i, Count: n}
			for _, pg := range collect(t, b.Bytes(), p) {
				if got := corpus.PartitionOf(pg.ID, n); got != i {
					t.Errorf("partition %v yielded %s, which belongs to %d/%d", p, pg.ID, got, n)
				}
				seen[pg.ID]++
			}
		}
		if len(seen) != len(whole) {
			t.Errorf("N=%d: partitions hold %d distinct passages, want %d", n, len(seen), len(whole))
		}
		for id, c := range seen {
			if c != 1 {
				t.Errorf("N=%d: %s is in %d partitions", n, id, c)
			}
		}
	}
}

func TestPassagesBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       string
		wantLine int
		wantIs   error  // errors.Is target, or nil
		wantMsg  string // substring of the message
	}{
		{name: "invalid JSON", in: "{\"id\":\"a\",\"text\":\"x\"}\n{\"id\": \"b\", \"text\": \"x\"\n", wantLine: 2, wantMsg: "invalid JSON"},
		{name: "not an object", in: `["a", "b"]`, wantLine: 1, wantMsg: "want a JSON object, got array"},
		{name: "null line", in: "\n\nnull\n", wantLine: 3, wantMsg: "want a JSON object, got null"},
		{name: "missing id", in: `{"text": "x"}`, wantLine: 1, wantIs: corpus.ErrMissingID, wantMsg: `line 1: missing "id"`},
		{name: "null id", in: `{"id": null, "text": "x"}`, wantLine: 1, wantIs: corpus.ErrMissingID},
		{name: "empty id", in: `{"id": "", "text": "x"}`, wantLine: 1, wantIs: corpus.ErrMissingID, wantMsg: "empty"},
		{name: "numeric id", in: `{"id": 7, "text": "x"}`, wantLine: 1, wantMsg: `"id" must be a string, got number`},
		{name: "hash in id", in: `{"id": "a#1", "text": "x"}`, wantLine: 1, wantMsg: `contains '#'`},
		{name: "missing text", in: "{\"id\":\"a\",\"text\":\"x\"}\n{\"id\": \"b\"}", wantLine: 2, wantIs: corpus.ErrMissingText, wantMsg: `line 2: missing "text"`},
		{name: "blank text", in: `{"id": "a", "text": " \n "}`, wantLine: 1, wantIs: corpus.ErrMissingText, wantMsg: "blank"},
		{name: "text not a string", in: `{"id": "a", "text": ["x"]}`, wantLine: 1, wantMsg: `"text" must be a string, got array`},
		{name: "duplicate id", in: "{\"id\":\"a\",\"text\":\"x\"}\n\n{\"id\":\"b\",\"text\":\"x\"}\n{\"id\":\"a\",\"text\":\"y\"}\n", wantLine: 4, wantIs: corpus.ErrDuplicateID, wantMsg: `duplicate id "a" (first seen on line 1)`},
		{name: "object field", in: `{"id": "a", "text": "x", "meta": {"k": 1}}`, wantLine: 1, wantMsg: `field "meta": want a string, number or boolean, got object`},
		{name: "reserved field", in: `{"id": "a", "text": "x", "passage": 3}`, wantLine: 1, wantMsg: `field "passage" is reserved`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, data := range map[string][]byte{"plain": []byte(tt.in), "gzip": gzipped(t, []byte(tt.in))} {
				err := corpus.Passages(bytes.NewReader(data), all, func(corpus.Passage) error { return nil })
				var lineErr *corpus.LineError
				if !errors.As(err, &lineErr) {
					t.Fatalf("error = %v, want a *LineError", err)
				}
				if lineErr.Line != tt.wantLine {
					t.Errorf("error %q is on line %d, want %d", err, lineErr.Line, tt.wantLine)
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("error %q is not %v", err, tt.wantIs)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("error %q does not contain %q", err, tt.wantMsg)
				}
			}
		})
	}
}

func TestPassagesCorruptGzip(t *testing.T) {
	t.Parallel()
	data := gzipped(t, []byte(`{"id": "a", "text": "x"}`))
	data = data[:len(data)-6] // cut into the trailer
	err := corpus.Passages(bytes.NewReader(data), all, func(corpus.Passage) error { return nil })
	if err == nil {
		t.Fatal("Passages of a truncated gzip stream: no error")
	}
}

func TestPassagesStopsOnCallbackError(t *testing.T) {
	t.Parallel()
	data := fmt.Appendf(nil, "{\"id\": \"a\", \"text\": %q}\n{\"id\": \"b\", \"text\": \"x\"}", prose(1000))
	stop := errors.New("stop")
	calls := 0
	err := corpus.Passages(bytes.NewReader(data), all, func(corpus.Passage) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if err != stop { //nolint:errorlint // identity is the point: the error must come back unwrapped
		t.Errorf("error = %v, want the callback's error unchanged", err)
	}
	if calls != 3 {
		t.Errorf("callback called %d times, want 3", calls)
	}

	// The same through a Source, which must not wrap it either.
	calls = 0
	_, err = corpus.FromBytes("test", data).Passages(all, func(corpus.Passage) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if err != stop { //nolint:errorlint // identity is the point: the error must come back unwrapped
		t.Errorf("Source.Passages error = %v, want the callback's error unchanged", err)
	}
}

func TestPassagesInvalidPartition(t *testing.T) {
	t.Parallel()
	err := corpus.Passages(strings.NewReader(`{"id":"a","text":"x"}`), corpus.Partition{}, func(corpus.Passage) error { return nil })
	if !errors.Is(err, corpus.ErrInvalidPartition) {
		t.Errorf("error = %v, want ErrInvalidPartition", err)
	}
}

func TestSourceDigest(t *testing.T) {
	t.Parallel()
	data := []byte("{\"id\": \"a\", \"text\": \"One. Two.\"}\n")
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])

	path := filepath.Join(t.TempDir(), "c.jsonl")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, src := range []corpus.Source{corpus.FromBytes("mem", data), corpus.File(path)} {
		got, err := src.Digest()
		if err != nil || got != want {
			t.Errorf("%s: Digest() = %q, %v; want %q", src.Name(), got, err, want)
		}
		n := 0
		got, err = src.Passages(all, func(corpus.Passage) error { n++; return nil })
		if err != nil || got != want || n != 1 {
			t.Errorf("%s: Passages() = %q, %v after %d passages; want %q after 1", src.Name(), got, err, n, want)
		}
	}

	missing := corpus.File(filepath.Join(t.TempDir(), "missing.jsonl"))
	if _, err := missing.Digest(); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.jsonl") {
		t.Errorf("Digest of a missing file: error = %v, want ErrNotExist naming the file", err)
	}
	bad := corpus.FromBytes("bad.jsonl", []byte("{}"))
	if _, err := bad.Passages(all, func(corpus.Passage) error { return nil }); !errors.Is(err, corpus.ErrMissingID) ||
		!strings.HasPrefix(err.Error(), "corpus bad.jsonl: line 1: ") {
		t.Errorf("Passages of bad input: error = %v, want one naming the source and line", err)
	}
	if _, err := (corpus.Source{}).Open(); err == nil {
		t.Error("zero Source opened without error")
	}
}

// TestDefault checks that the embedded corpus parses, and logs its size.
func TestDefault(t *testing.T) {
	t.Parallel()
	var passages, sources int
	lastSource := ""
	seen := make(map[string]bool)
	digest, err := corpus.Default().Passages(all, func(p corpus.Passage) error {
		passages++
		if seen[p.ID] {
			return fmt.Errorf("duplicate passage id %s", p.ID)
		}
		seen[p.ID] = true
		if src := p.Fields[corpus.FieldSourceID]; src != lastSource {
			sources++
			lastSource = src
		}
		for _, f := range []string{"year", "president", "party"} {
			if p.Fields[f] == "" {
				return fmt.Errorf("%s has no field %q", p.ID, f)
			}
		}
		if _, err := strconv.Atoi(p.Fields["year"]); err != nil {
			return fmt.Errorf("%s: year: %w", p.ID, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("default corpus %s: %d addresses, %d passages", digest, sources, passages)
	if sources != 233 {
		t.Errorf("got %d addresses, want 233", sources)
	}
	if passages < 12000 || passages > 16000 {
		t.Errorf("got %d passages, want 12000 to 16000", passages)
	}
}

// FuzzPassages checks that no input makes Passages panic, and that what it
// accepts gives well-formed passages.
func FuzzPassages(f *testing.F) {
	f.Add([]byte("{\"id\": \"a\", \"year\": 1790, \"text\": \"One. Two three.\"}\n{\"id\": \"b\", \"text\": \"x\"}"))
	f.Add([]byte(`{"id": "a", "text": "x", "n": null, "m": [1]}`))
	f.Add([]byte("\x1f\x8b\x08\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = corpus.Passages(bytes.NewReader(data), corpus.Partition{Index: 0, Count: 1}, func(p corpus.Passage) error {
			src, num, ok := strings.Cut(p.ID, "#")
			if !ok || src == "" || len(num) < 3 || p.Fields[corpus.FieldSourceID] != src || strings.TrimLeft(num, "0") != p.Fields[corpus.FieldPassage] {
				t.Errorf("malformed passage %q, fields %v", p.ID, p.Fields)
			}
			if p.Text == "" || strings.Join(strings.Fields(p.Text), " ") != p.Text {
				t.Errorf("passage %q: text %q is empty or not normalised", p.ID, p.Text)
			}
			return nil
		})
	})
}
