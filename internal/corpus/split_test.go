package corpus

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// split cuts text into passages as Passages does and returns each as its
// words joined by single spaces.
func split(text string) []string {
	words := strings.Fields(text)
	var passages []string
	start := 0
	for _, end := range passageEnds(words) {
		passages = append(passages, strings.Join(words[start:end], " "))
		start = end
	}
	return passages
}

// words returns n words, the i-th "w<i>", as one string.
func words(prefix string, n int) []string {
	w := make([]string, n)
	for i := range w {
		w[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return w
}

// sentence returns a sentence of n words: a capitalised first word, a full
// stop after the last.
func sentence(n int) string {
	w := words("w", n)
	w[0] = "S" + w[0]
	w[n-1] += "."
	return strings.Join(w, " ")
}

// sentences returns sentences of the given lengths, joined by spaces.
func sentences(lens ...int) string {
	s := make([]string, len(lens))
	for i, n := range lens {
		s[i] = sentence(n)
	}
	return strings.Join(s, " ")
}

func wordCounts(passages []string) []int {
	n := make([]int, len(passages))
	for i, p := range passages {
		n[i] = len(strings.Fields(p))
	}
	return n
}

func TestSplitWordCounts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		text string
		want []int
	}{
		{name: "empty", text: "", want: []int{}},
		{name: "blank", text: " \n\t ", want: []int{}},
		{name: "one short sentence", text: sentences(7), want: []int{7}},
		{name: "short document", text: sentences(20, 20), want: []int{40}},
		{name: "closes after target", text: sentences(60, 60, 60, 60), want: []int{120, 120}},
		{name: "exactly target", text: sentences(50, 50, 50, 50), want: []int{100, 100}},
		{name: "exactly max", text: sentences(99, 51, 99, 51), want: []int{150, 150}},
		{name: "tail joins previous", text: sentences(60, 60, 30), want: []int{150}},
		{name: "tail over max joins", text: sentences(120, 49), want: []int{169}},
		{name: "tail of min stands", text: sentences(120, 50), want: []int{120, 50}},
		{name: "closes early at min", text: sentences(50, 101), want: []int{50, 101}},
		{name: "closes early above min", text: sentences(30, 40, 120), want: []int{70, 120}},
		{name: "fills when too short", text: sentences(30, 130), want: []int{100, 60}},
		{name: "long sentence cut", text: sentences(400), want: []int{150, 150, 100}},
		{name: "long sentence tail joins", text: sentences(320), want: []int{150, 170}},
		{name: "long sentence after short", text: sentences(10, 200), want: []int{100, 110}},
		{name: "no sentence ends", text: strings.Join(words("x", 420), " "), want: []int{150, 150, 120}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := wordCounts(split(tt.text))
			if !slices.Equal(got, tt.want) {
				t.Errorf("word counts = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSplitNormalisesWhitespace(t *testing.T) {
	t.Parallel()
	got := split("  One\ttwo\n\nthree.   Four  five. \r\n")
	want := []string{"One two three. Four five."}
	if !slices.Equal(got, want) {
		t.Errorf("split = %q, want %q", got, want)
	}
}

func TestSplitAtSentenceEnds(t *testing.T) {
	t.Parallel()
	// 45 sentences of 7 words (315 words): passages close at the first
	// sentence end at or after 100 words, i.e. after 15 sentences.
	text := strings.Repeat("The quick fox jumps, Mr. Smith said. ", 45)
	got := split(text)
	if len(got) != 3 {
		t.Fatalf("got %d passages, want 3: %q", len(got), got)
	}
	for i, p := range got {
		if n := len(strings.Fields(p)); n != 105 {
			t.Errorf("passage %d has %d words, want 105", i, n)
		}
		if !strings.HasPrefix(p, "The quick") || !strings.HasSuffix(p, "said.") {
			t.Errorf("passage %d is not whole sentences: %q", i, p)
		}
	}
}

// TestSplitRandom checks the documented bounds on random documents, and that
// documents whose sentences are all short are cut at sentence ends only.
func TestSplitRandom(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 400 {
		maxSentence := []int{20, 50, 120, 400}[i%4]
		lens := make([]int, 1+rng.IntN(40))
		for j := range lens {
			lens[j] = 1 + rng.IntN(maxSentence)
		}
		text := sentences(lens...)
		got := split(text)
		checkPassages(t, text, got)
		if maxSentence <= minWords {
			for j, p := range got {
				if !strings.HasSuffix(p, ".") {
					t.Fatalf("sentence lengths %v: passage %d does not end a sentence: %q", lens, j, p)
				}
			}
		}
		if t.Failed() {
			t.Fatalf("sentence lengths %v", lens)
		}
	}
}

func FuzzSplit(f *testing.F) {
	f.Add(sentences(30, 130, 12, 7, 160, 3))
	f.Add("Mr. J. Smith of the U.S. Army said: \"Go!\" (And they went.) 3 days later.")
	f.Fuzz(func(t *testing.T, text string) {
		checkPassages(t, text, split(text))
	})
}

// checkPassages checks the documented bounds of split(text).
func checkPassages(t *testing.T, text string, passages []string) {
	t.Helper()
	all := strings.Fields(text)
	if got := strings.Fields(strings.Join(passages, " ")); !slices.Equal(got, all) {
		t.Errorf("passages do not join to the text's words")
	}
	for i, p := range passages {
		n := len(strings.Fields(p))
		if strings.Join(strings.Fields(p), " ") != p {
			t.Errorf("passage %d is not whitespace-normalised: %q", i, p)
		}
		lo, hi := minWords, maxWords
		if len(all) < minWords {
			lo = len(all)
		}
		if i == len(passages)-1 {
			hi = maxWords + minWords - 1
		}
		if n < lo || n > hi {
			t.Errorf("passage %d of %d has %d words, want %d to %d", i+1, len(passages), n, lo, hi)
		}
	}
}

func TestEndsSentence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		word, next string
		want       bool
	}{
		{"end.", "The", true},
		{"end!", "the", false},
		{"end?", "Why", true},
		{"end.", "1790", true},
		{`end."`, "Then", true},
		{"end.)", "Then", true},
		{"end.”", "“Then", true},
		{"end.", `"Then`, true},
		{"end.", "(Then", true},
		{"end", "The", false},
		{"end,", "The", false},
		{"end;", "The", false},
		{"Mr.", "Smith", false},
		{"Gen.", "Grant", false},
		{"Jan.", "1", false},
		{"J.", "Adams", false},
		{"U.S.", "Government", false},
		{"(U.S.)", "Government", false},
		{"D.C.", "The", false},
		{"...", "The", false},
		{"no.", "The", true},
		{".", "The", true},
		{`"`, "The", false},
	}
	for _, tt := range tests {
		if got := endsSentence(tt.word, tt.next); got != tt.want {
			t.Errorf("endsSentence(%q, %q) = %v, want %v", tt.word, tt.next, got, tt.want)
		}
	}
}
