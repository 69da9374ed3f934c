package corpus_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/gatherproxy/gather/internal/corpus"
)

// line returns a JSON Lines document whose line is exactly n bytes long (without the newline).
func line(t *testing.T, id string, n int) string {
	t.Helper()
	head := fmt.Sprintf(`{"id":%q,"text":"`, id)
	tail := `"}`
	if n < len(head)+len(tail)+1 {
		t.Fatalf("line of %d bytes is too short to hold a document", n)
	}
	return head + strings.Repeat("w ", (n-len(head)-len(tail))/2) + strings.Repeat("w", (n-len(head)-len(tail))%2) + tail
}

func TestLineCap(t *testing.T) {
	t.Parallel()
	const max = 4 << 10
	lim := corpus.Limits{MaxLineBytes: max}
	atCap := line(t, "a", max)
	if len(atCap) != max {
		t.Fatalf("test line is %d bytes", len(atCap))
	}
	overCap := line(t, "b", max+1)
	for _, tc := range []struct {
		name, in string
		wantLine int // 0: accepted
	}{
		{"at the cap", atCap + "\n" + line(t, "c", 100) + "\n", 0},
		{"at the cap, CRLF", line(t, "a", max-1) + "\r\n", 0},
		{"at the cap, no final newline", atCap, 0},
		{"one byte over, line 2", line(t, "c", 100) + "\n" + overCap + "\n", 2},
		{"one byte over, last line without newline", line(t, "c", 100) + "\n\n" + overCap, 3},
	} {
		for enc, data := range map[string][]byte{"plain": []byte(tc.in), "gzip": gzipped(t, []byte(tc.in))} {
			err := corpus.PassagesWithin(bytes.NewReader(data), all, lim, func(corpus.Passage) error { return nil })
			if tc.wantLine == 0 {
				if err != nil {
					t.Errorf("%s (%s): %v", tc.name, enc, err)
				}
				continue
			}
			var le *corpus.LineError
			if !errors.As(err, &le) || le.Line != tc.wantLine || !errors.Is(err, corpus.ErrLineTooLong) ||
				!strings.Contains(err.Error(), "longer than the cap of 4096 bytes (4 KiB) per line") {
				t.Errorf("%s (%s): got %v, want a line-too-long error on line %d naming the cap", tc.name, enc, err, tc.wantLine)
			}
		}
	}
}

func TestSizeCap(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	for i := range 50 {
		b.WriteString(line(t, fmt.Sprint("doc", i), 200) + "\n")
	}
	data := []byte(b.String()) // 50 lines of 201 bytes
	for _, tc := range []struct {
		max      int64
		wantLine int // 0: accepted
	}{
		{int64(len(data)), 0},
		{int64(len(data)) - 1, 50},
		{201*10 + 50, 11},
	} {
		for enc, in := range map[string][]byte{"plain": data, "gzip": gzipped(t, data)} {
			n := 0
			err := corpus.PassagesWithin(bytes.NewReader(in), all, corpus.Limits{MaxBytes: tc.max}, func(corpus.Passage) error { n++; return nil })
			if tc.wantLine == 0 {
				if err != nil || n != 50 {
					t.Errorf("cap %d (%s): %d passages, %v", tc.max, enc, n, err)
				}
				continue
			}
			var le *corpus.LineError
			if !errors.As(err, &le) || le.Line != tc.wantLine || !errors.Is(err, corpus.ErrTooLarge) ||
				!strings.Contains(err.Error(), fmt.Sprintf("more than the cap of %d bytes after decompression", tc.max)) {
				t.Errorf("cap %d (%s): got %v, want a too-large error on line %d naming the cap", tc.max, enc, err, tc.wantLine)
			}
		}
	}
}

// TestCapErrorsNameTheFile: what an operator sees from a Source.
func TestCapErrorsNameTheFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "big.jsonl.gz")
	in := line(t, "a", 100) + "\n" + line(t, "b", 2<<10) + "\n"
	if err := os.WriteFile(path, gzipped(t, []byte(in)), 0o600); err != nil {
		t.Fatal(err)
	}
	src := corpus.File(path).WithLimits(corpus.Limits{MaxLineBytes: 1 << 10})
	_, err := src.Passages(all, func(corpus.Passage) error { return nil })
	want := "corpus " + path + ": line 2: line too long: longer than the cap of 1024 bytes (1 KiB) per line"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %v, want %q...", err, want)
	}
	// The digest does not depend on the limits.
	d1, err1 := src.Digest()
	d2, err2 := corpus.File(path).Digest()
	if err1 != nil || err2 != nil || d1 != d2 {
		t.Errorf("digests %s, %s (%v, %v)", d1, d2, err1, err2)
	}
}

// endless yields n bytes of 'x'.
type endless struct{ n int64 }

func (e *endless) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), e.n)
	for i := range k {
		p[i] = 'x'
	}
	e.n -= k
	return int(k), nil
}

// TestLongLineIsNotRead: the cap bounds memory, not just the answer. A 40 MB line (which once
// took a shard to 911 MB) is refused after reading about the cap.
func TestLongLineIsNotRead(t *testing.T) {
	in := io.MultiReader(strings.NewReader(`{"id":"a","text":"`), &endless{n: 40 << 20}, strings.NewReader("\"}\n"))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := corpus.PassagesWithin(in, all, corpus.Limits{MaxLineBytes: 1 << 20}, func(corpus.Passage) error { return nil })
	runtime.ReadMemStats(&after)
	if !errors.Is(err, corpus.ErrLineTooLong) {
		t.Fatalf("got %v, want ErrLineTooLong", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("refusing a 40 MB line allocated %d MB; the cap is 1 MiB", alloc>>20)
	}
}
