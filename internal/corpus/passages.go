package corpus

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/gatherproxy/gather/internal/bounds"
)

// Fields every passage has besides its source document's fields.
const (
	// FieldSourceID holds the id of the document the passage was cut from.
	FieldSourceID = "source_id"
	// FieldPassage holds the passage's 1-based number within its document,
	// in decimal.
	FieldPassage = "passage"
)

// Errors wrapped by a [*LineError].
var (
	ErrMissingID   = errors.New(`missing "id"`)
	ErrMissingText = errors.New(`missing "text"`)
	ErrDuplicateID = errors.New("duplicate id")
	// ErrLineTooLong: a line is longer than [Limits.MaxLineBytes].
	ErrLineTooLong = errors.New("line too long")
	// ErrTooLarge: the corpus holds more than [Limits.MaxBytes] after decompression.
	ErrTooLarge = errors.New("corpus too large")
)

// Defaults of [Limits].
const (
	// DefaultMaxLineBytes is about 20 times the longest document of the bundled corpus (217 KB)
	// and more than a long novel (War and Peace is 3.2 MB of text).
	DefaultMaxLineBytes = 4 << 20
	// DefaultMaxBytes is about 100 times the bundled corpus (10.8 MB decompressed).
	DefaultMaxBytes = 1 << 30
)

// Limits bound what reading a corpus may cost. The zero value of a field means its default.
type Limits struct {
	// MaxLineBytes is the longest line (one document) accepted, in bytes after decompression
	// and without its newline. A line is held in memory whole and parsing it takes several times
	// its size: one 40 MB line once took a shard to 911 MB. Default [DefaultMaxLineBytes].
	MaxLineBytes int
	// MaxBytes is the most bytes read after decompression, which stops a small gzip file that
	// expands to more than any index should hold. Default [DefaultMaxBytes].
	MaxBytes int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxLineBytes <= 0 {
		l.MaxLineBytes = DefaultMaxLineBytes
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	return l
}

// LineError reports a bad line of corpus input.
type LineError struct {
	Line int   // 1-based
	Err  error // what is wrong with it
}

func (e *LineError) Error() string { return "line " + strconv.Itoa(e.Line) + ": " + e.Err.Error() }

func (e *LineError) Unwrap() error { return e.Err }

// Passage is one indexed unit of a corpus.
type Passage struct {
	// ID is "<source id>#<nnn>"; see the package documentation.
	ID string
	// Text is the passage's words separated by single spaces.
	Text string
	// Fields are the source document's fields plus FieldSourceID and
	// FieldPassage. Every passage has its own map.
	Fields map[string]string
}

// Passages reads a corpus from r (JSON Lines, plain or gzip, as described in
// the package documentation), splits each document into passages and calls
// fn, in input order, with every passage that belongs to p.
//
// Passages stops at the first bad line and returns a [*LineError], or at the
// first error from fn and returns that error unchanged (so fn can stop the
// scan by returning ctx.Err()). A bad line is reported even if the passages of
// earlier lines have been handed to fn already. Only one document is held in
// memory at a time; ids are remembered to reject duplicates. The input is read within the
// default [Limits]; see [PassagesWithin].
//
// Passages splits a document into passages of minWords (50) to maxWords (150)
// words, closing a passage at the first sentence end after 100 words; a
// sentence longer than 150 words is cut, and so is a sentence that would
// otherwise leave a passage shorter than 50 words. A document's last passage
// may have up to 199 words, as a tail of fewer than 50 words joins the
// passage before it, and a document of fewer than 50 words is one passage.
func Passages(r io.Reader, p Partition, fn func(Passage) error) error {
	return PassagesWithin(r, p, Limits{}, fn)
}

// PassagesWithin is [Passages] within lim: a line longer than lim.MaxLineBytes, or input beyond
// lim.MaxBytes after decompression, stops the scan with a [*LineError] wrapping
// [ErrLineTooLong] or [ErrTooLarge] that names the line and the cap. Neither is read into memory
// past the cap.
func PassagesWithin(r io.Reader, p Partition, lim Limits, fn func(Passage) error) error {
	if err := p.Validate(); err != nil {
		return err
	}
	lim = lim.withDefaults()
	br := bufio.NewReaderSize(r, 1<<16)
	var in io.Reader = br
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		// Close only reports a decompression error, which reading has
		// already returned if it matters.
		defer func() { _ = zr.Close() }()
		in = zr
	}
	lines := bufio.NewReaderSize(&capReader{r: in, left: lim.MaxBytes}, 1<<16)

	firstLine := make(map[string]int) // id -> line it was first seen on
	var buf []byte
	for line := 1; ; line++ {
		var err error
		buf, err = readLine(lines, buf[:0], lim.MaxLineBytes)
		switch {
		case errors.Is(err, ErrLineTooLong):
			return &LineError{Line: line, Err: fmt.Errorf("%w: longer than the cap of %s per line: split the document into several lines, or raise the cap",
				ErrLineTooLong, bounds.Range{Unit: bounds.Bytes}.Format(int64(lim.MaxLineBytes)))}
		case errors.Is(err, ErrTooLarge):
			return &LineError{Line: line, Err: fmt.Errorf("%w: more than the cap of %s after decompression: split the corpus, or raise the cap",
				ErrTooLarge, bounds.Range{Unit: bounds.Bytes}.Format(lim.MaxBytes))}
		case err != nil && !errors.Is(err, io.EOF):
			return fmt.Errorf("reading line %d: %w", line, err)
		}
		b := buf
		if line == 1 {
			b = bytes.TrimPrefix(b, []byte("\uFEFF")) // a byte order mark
		}
		if len(bytes.TrimSpace(b)) > 0 {
			doc, derr := parseDocument(b)
			if derr == nil {
				if first, dup := firstLine[doc.id]; dup {
					derr = fmt.Errorf("%w %q (first seen on line %d)", ErrDuplicateID, doc.id, first)
				}
			}
			if derr != nil {
				return &LineError{Line: line, Err: derr}
			}
			firstLine[doc.id] = line
			if ferr := doc.passages(p, fn); ferr != nil {
				return ferr
			}
		}
		if err != nil { // io.EOF
			return nil
		}
	}
}

// readLine appends the next line of br to buf, without its newline, and returns it; io.EOF
// after the last line. A line longer than max is [ErrLineTooLong], found without reading more
// than max bytes of it into buf.
func readLine(br *bufio.Reader, buf []byte, max int) ([]byte, error) {
	for {
		chunk, err := br.ReadSlice('\n')
		chunk = bytes.TrimSuffix(chunk, []byte("\n"))
		if len(buf)+len(chunk) > max {
			return buf, ErrLineTooLong
		}
		buf = append(buf, chunk...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return buf, err
		}
	}
}

// capReader reads r and fails with [ErrTooLarge] once r holds more than left bytes.
type capReader struct {
	r    io.Reader
	left int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// At the cap: only the end of the input is still acceptable.
		var one [1]byte
		if n, err := io.ReadFull(c.r, one[:]); n == 0 {
			return 0, err // io.EOF, or the reader's own error
		}
		return 0, ErrTooLarge
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// document is one parsed input line.
type document struct {
	id, text string
	fields   map[string]string
}

func parseDocument(line []byte) (document, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return document{}, fmt.Errorf("want a JSON object, got %s", typeErr.Value)
		}
		return document{}, fmt.Errorf("invalid JSON: %w", err)
	}
	if obj == nil {
		return document{}, errors.New("want a JSON object, got null")
	}
	var doc document
	var err error
	if doc.id, err = requiredString(obj, "id", ErrMissingID); err != nil {
		return document{}, err
	}
	if strings.Contains(doc.id, "#") {
		return document{}, fmt.Errorf(`"id" %q contains '#', which passage ids reserve`, doc.id)
	}
	if doc.text, err = requiredString(obj, "text", ErrMissingText); err != nil {
		return document{}, err
	}
	if strings.TrimSpace(doc.text) == "" {
		return document{}, fmt.Errorf("%w (the text is blank)", ErrMissingText)
	}
	doc.fields = make(map[string]string, len(obj))
	for k, v := range obj {
		switch k {
		case "id", "text":
			continue
		case FieldSourceID, FieldPassage:
			return document{}, fmt.Errorf("field %q is reserved for passages; rename it", k)
		}
		s, ok, err := fieldValue(v)
		if err != nil {
			return document{}, fmt.Errorf("field %q: %w", k, err)
		}
		if ok {
			doc.fields[k] = s
		}
	}
	return doc, nil
}

// requiredString returns the non-empty string value of obj[key], or an error
// wrapping missing if there is none.
func requiredString(obj map[string]json.RawMessage, key string, missing error) (string, error) {
	v, ok := obj[key]
	if !ok || string(v) == "null" {
		return "", missing
	}
	if v[0] != '"' {
		return "", fmt.Errorf("%q must be a string, got %s", key, jsonKind(v))
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("%q: %w", key, err)
	}
	if s == "" {
		return "", fmt.Errorf("%w (the string is empty)", missing)
	}
	return s, nil
}

// fieldValue returns a field's value as text: a string as is, a number or a
// boolean as its JSON text. ok is false for null.
func fieldValue(v json.RawMessage) (s string, ok bool, err error) {
	switch v[0] {
	case '"':
		if err := json.Unmarshal(v, &s); err != nil {
			return "", false, err
		}
		return s, true, nil
	case 'n':
		return "", false, nil
	case '{', '[':
		return "", false, fmt.Errorf("want a string, number or boolean, got %s", jsonKind(v))
	default: // a number, true or false: json.Unmarshal has validated it
		return string(v), true, nil
	}
}

// jsonKind names the kind of a valid JSON value.
func jsonKind(v json.RawMessage) string {
	switch v[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// passages calls fn with each of doc's passages that belongs to p.
func (doc document) passages(p Partition, fn func(Passage) error) error {
	words := strings.Fields(doc.text)
	start := 0
	for i, end := range passageEnds(words) {
		first := start
		start = end
		n := strconv.Itoa(i + 1)
		id := doc.id + "#" + strings.Repeat("0", max(0, 3-len(n))) + n
		if !p.Contains(id) {
			continue
		}
		fields := make(map[string]string, len(doc.fields)+2)
		for k, v := range doc.fields {
			fields[k] = v
		}
		fields[FieldSourceID] = doc.id
		fields[FieldPassage] = n
		if err := fn(Passage{ID: id, Text: strings.Join(words[first:end], " "), Fields: fields}); err != nil {
			return err
		}
	}
	return nil
}
