package corpus

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Passage sizes, in words (runs of non-space characters).
const (
	// targetWords is the length at which a passage is closed at the next
	// sentence end.
	targetWords = 100
	// maxWords is the longest passage, except a document's last one, which
	// may also hold a tail of fewer than minWords words.
	maxWords = 150
	// minWords is the shortest passage, except when a whole document is
	// shorter.
	minWords = 50
)

// passageEnds cuts words, the words of a document, into passages and
// returns the exclusive end index of each.
//
// It first splits the words into sentences (see endsSentence), cutting any
// sentence longer than maxWords into maxWords-word pieces, then packs whole
// sentences into passages, closing a passage as soon as it reaches
// targetWords. When the next sentence does not fit under maxWords, the
// passage is closed early if it has at least minWords words, and otherwise
// filled to targetWords with the start of that sentence. A tail shorter than
// minWords joins the previous passage. So every passage has minWords to
// maxWords words, except that the last one may have up to
// maxWords+minWords-1, and a document shorter than minWords words is one
// passage.
func passageEnds(words []string) []int {
	var ends []int
	start := 0 // the current passage is words[start:sentenceStart]
	emit := func(end int) {
		ends = append(ends, end)
		start = end
	}
	forEachSentence(words, func(ss, se int) {
		switch {
		case se-start <= maxWords:
			// The sentence fits.
		case ss-start >= minWords:
			// It does not fit, but what we have is long enough to stand
			// alone.
			emit(ss)
		default:
			// It does not fit and what we have is too short: cut the
			// sentence. The rest has more than minWords words, since
			// se-start > maxWords = targetWords+minWords.
			emit(start + targetWords)
		}
		if se-start >= targetWords {
			emit(se)
		}
	})
	switch {
	case start == len(words):
	case len(words)-start < minWords && len(ends) > 0:
		ends[len(ends)-1] = len(words)
	default:
		ends = append(ends, len(words))
	}
	return ends
}

// forEachSentence calls fn with the bounds [start, end) of each sentence of
// words, in order, cutting sentences longer than maxWords into pieces of
// maxWords words (and a shorter remainder).
func forEachSentence(words []string, fn func(start, end int)) {
	start := 0
	for i := range words {
		if i < len(words)-1 && !endsSentence(words[i], words[i+1]) {
			continue
		}
		for i+1-start > maxWords {
			fn(start, start+maxWords)
			start += maxWords
		}
		fn(start, i+1)
		start = i + 1
	}
}

const (
	// closers may follow a sentence's final punctuation.
	closers = `"')]}’”»`
	// openers may precede a sentence's first letter.
	openers = `"'([{‘“«`
)

// endsSentence reports whether a sentence ends with word, given the word
// after it. It is a heuristic for English prose: the word must end in '.',
// '!' or '?' (before any closing quotes or brackets), the next word must
// start with an upper-case letter or a digit (after any opening quotes or
// brackets), and a word ending in '.' must not look like an abbreviation.
func endsSentence(word, next string) bool {
	w := strings.TrimRight(word, closers)
	if w == "" {
		return false
	}
	switch w[len(w)-1] {
	case '!', '?':
	case '.':
		if isAbbreviation(w[:len(w)-1]) {
			return false
		}
	default:
		return false
	}
	r, _ := utf8.DecodeRuneInString(strings.TrimLeft(next, openers))
	return unicode.IsUpper(r) || unicode.IsDigit(r)
}

// isAbbreviation reports whether stem+"." is more likely an abbreviation than
// the end of a sentence: an initial ("J."), a dotted abbreviation ("U.S.",
// "D.C."), or a common title or short form ("Mr.", "Gen.", "Jan.").
func isAbbreviation(stem string) bool {
	stem = strings.TrimLeft(stem, openers)
	if strings.Contains(stem, ".") {
		return true
	}
	if r, n := utf8.DecodeRuneInString(stem); n == len(stem) && unicode.IsUpper(r) {
		return true
	}
	_, ok := abbreviations[stem]
	return ok
}

// abbreviations are common in the default corpus and rarely end a sentence.
var abbreviations = map[string]struct{}{
	"Mr": {}, "Mrs": {}, "Ms": {}, "Messrs": {}, "Dr": {}, "Prof": {}, "Rev": {}, "Hon": {},
	"Jr": {}, "Sr": {}, "St": {}, "Mt": {}, "Ft": {},
	"Gen": {}, "Col": {}, "Maj": {}, "Capt": {}, "Lieut": {}, "Lt": {}, "Adm": {}, "Sgt": {},
	"Gov": {}, "Sen": {}, "Rep": {}, "Pres": {},
	"No": {}, "Nos": {}, "Art": {}, "Sec": {}, "Vol": {}, "vs": {}, "viz": {},
	"Jan": {}, "Feb": {}, "Mar": {}, "Apr": {}, "Jun": {}, "Jul": {}, "Aug": {},
	"Sep": {}, "Sept": {}, "Oct": {}, "Nov": {}, "Dec": {},
}
