package access

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// MinTokenLength is the shortest token a tokens file may hold.
const MinTokenLength = 16

// tokenName is what a token's name may look like: it ends up in logs, in the caller's identity
// and in the header that policies match.
var tokenName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// tokens is a parsed tokens file: names and the SHA-256 digests of their tokens. The tokens
// themselves are not kept.
type tokens struct {
	names  []string
	sums   [][sha256.Size]byte
	source string // the file, for messages
}

// parseTokens parses "NAME TOKEN" lines. Errors give the line number, never the line.
func parseTokens(file string, data []byte) (tokens, error) {
	ts := tokens{source: file}
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		switch {
		case len(f) != 2:
			return tokens{}, fmt.Errorf("%s line %d: want NAME TOKEN, two fields", file, n)
		case !tokenName.MatchString(f[0]):
			return tokens{}, fmt.Errorf("%s line %d: name %q: use letters, digits and . _ @ -, at most 64", file, n, f[0])
		case len(f[1]) < MinTokenLength:
			return tokens{}, fmt.Errorf("%s line %d: the token of %s is shorter than %d characters", file, n, f[0], MinTokenLength)
		case seen[f[0]] != 0:
			return tokens{}, fmt.Errorf("%s line %d: name %s already given on line %d", file, n, f[0], seen[f[0]])
		}
		sum := sha256.Sum256([]byte(f[1]))
		for i, other := range ts.sums {
			if other == sum {
				return tokens{}, fmt.Errorf("%s line %d: %s has the same token as %s", file, n, f[0], ts.names[i])
			}
		}
		seen[f[0]] = n
		ts.names = append(ts.names, f[0])
		ts.sums = append(ts.sums, sum)
	}
	if err := sc.Err(); err != nil {
		return tokens{}, fmt.Errorf("%s: %w", file, err)
	}
	if len(ts.names) == 0 {
		return tokens{}, errors.New(file + ": no tokens in it")
	}
	return ts, nil
}

// lookup returns the name of token. Every entry is compared, in constant time, whatever
// matches: the time taken says nothing about which token, or how much of one, was right.
func (ts tokens) lookup(token string) (string, bool) {
	sum := sha256.Sum256([]byte(token))
	found := -1
	for i := range ts.sums {
		eq := subtle.ConstantTimeCompare(sum[:], ts.sums[i][:])
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	if found < 0 {
		return "", false
	}
	return ts.names[found], true
}
