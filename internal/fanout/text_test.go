package fanout

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestCleanText(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 200) // 400 bytes of 2-byte runes
	for _, tc := range []struct {
		name, in, want string
	}{
		{"clean", "index offline: retry later", "index offline: retry later"},
		{"empty", "", ""},
		{"newlines and tabs", "line 1\nline 2\r\n\tat x", "line 1 line 2   at x"},
		{"control characters", "a\x00b\x1bc\x7fd", "a\uFFFDb\uFFFDc\uFFFDd"},
		{"C1 control", "a\u0085b", "a\uFFFDb"},
		{"bidi override", "pay \u202Eevil", "pay \uFFFDevil"},
		{"line separator", "a\u2028b", "a\uFFFDb"},
		{"invalid UTF-8", "a\xffb\xc3", "a\uFFFDb\uFFFD"},
		{"encoded U+FFFD kept", "a\uFFFDb", "a\uFFFDb"},
		{"exactly the limit", strings.Repeat("x", MaxErrorTextBytes), strings.Repeat("x", MaxErrorTextBytes)},
		{"one over", strings.Repeat("x", MaxErrorTextBytes+1),
			strings.Repeat("x", MaxErrorTextBytes-len(truncatedMarker)) + truncatedMarker},
		{"cut between runes", long, long[:MaxErrorTextBytes-len(truncatedMarker)] + truncatedMarker},
	} {
		if got := CleanText(tc.in); got != tc.want {
			t.Errorf("%s: CleanText(%q) = %q, want %q", tc.name, tc.in, got, tc.want)
		}
	}
}

// TestCleanTextMegabyte: a megabyte of hostile text comes out short.
func TestCleanTextMegabyte(t *testing.T) {
	t.Parallel()
	in := strings.Repeat("\x00\xff\u202e€", 1<<18)
	got := CleanText(in)
	if len(got) > MaxErrorTextBytes || !strings.HasSuffix(got, truncatedMarker) || !utf8.ValidString(got) {
		t.Fatalf("got %d bytes %q, want at most %d, valid, marked", len(got), got, MaxErrorTextBytes)
	}
}

func TestCleanTextDoesNotAllocateWhenClean(t *testing.T) {
	s := strings.Repeat("shard answered Unavailable: index offline ", 5)[:200]
	if a := testing.AllocsPerRun(100, func() { _ = CleanText(s) }); a != 0 {
		t.Errorf("%v allocations for a clean text, want 0", a)
	}
}

// FuzzCleanText checks CleanText's promises on any input: valid UTF-8, at most
// MaxErrorTextBytes, no control or format character, unchanged when already clean and short.
func FuzzCleanText(f *testing.F) {
	for _, s := range []string{"", "ok", "a\x00b", "\xff\xfe", "\u202e", strings.Repeat("é", 300), strings.Repeat("\n", 400)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := CleanText(s)
		if !utf8.ValidString(got) || len(got) > MaxErrorTextBytes {
			t.Fatalf("CleanText(%q) = %q: invalid or %d bytes", s, got, len(got))
		}
		for _, r := range got {
			if unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) {
				t.Fatalf("CleanText(%q) = %q keeps %U", s, got, r)
			}
		}
		if len(s) <= MaxErrorTextBytes && isClean(s) && got != s {
			t.Fatalf("CleanText changed a clean text %q to %q", s, got)
		}
	})
}
