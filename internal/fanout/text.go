package fanout

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxErrorTextBytes is the most a text from a shard (its status message, or a doc_id quoted in a
// violation) takes in what leaves the fan-out: a shard's error reaches QS, the access log and a
// span, and a hostile or broken shard may send a megabyte of it.
const MaxErrorTextBytes = 256

// truncatedMarker ends a text that CleanText cut.
const truncatedMarker = "...[truncated]"

// CleanText makes text that came from a shard safe to pass on, as the single place where that
// is done: invalid UTF-8 and control or format characters (which could forge log lines or reorder
// what a reader sees) become U+FFFD, except tab, CR and LF, which become spaces; a text that is
// then longer than MaxErrorTextBytes is cut at a rune boundary and ends with "...[truncated]". The
// result is valid UTF-8 of at most MaxErrorTextBytes bytes. Clean short texts are returned as they
// are, without allocating.
func CleanText(s string) string {
	if len(s) <= MaxErrorTextBytes && isClean(s) {
		return s
	}
	var b strings.Builder
	b.Grow(min(len(s), MaxErrorTextBytes) + utf8.UTFMax)
	whole := true
	for i, r := range s {
		if b.Len() > MaxErrorTextBytes {
			whole = false
			break
		}
		switch {
		case r == utf8.RuneError && isInvalidAt(s, i):
			r = utf8.RuneError
		case r == '\t' || r == '\n' || r == '\r':
			r = ' '
		case unsafeRune(r):
			r = utf8.RuneError
		}
		b.WriteRune(r)
	}
	out := b.String()
	if whole && len(out) <= MaxErrorTextBytes {
		return out
	}
	cut := MaxErrorTextBytes - len(truncatedMarker)
	for cut > 0 && !utf8.RuneStart(out[cut]) {
		cut--
	}
	return out[:cut] + truncatedMarker
}

// isClean reports whether s is valid UTF-8 without a rune CleanText would replace.
func isClean(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c < 0x7f {
			continue // the common case: printable ASCII
		}
		if c < utf8.RuneSelf {
			return false // an ASCII control character, DEL included
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || unsafeRune(r) {
			return false
		}
		i += size - 1
	}
	return true
}

// unsafeRune reports control characters (Cc), format characters such as bidirectional
// overrides (Cf) and the Unicode line and paragraph separators.
func unsafeRune(r rune) bool {
	return unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029'
}

// isInvalidAt reports whether the RuneError that ranging over s yields at i stands for an invalid
// byte rather than an encoded U+FFFD.
func isInvalidAt(s string, i int) bool {
	_, size := utf8.DecodeRuneInString(s[i:])
	return size == 1
}
