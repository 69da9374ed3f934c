package fault

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"google.golang.org/grpc/codes"
)

// Spec describes the faults applied to a faulted Search call. The zero Spec injects nothing.
//
// Delay and BatchDelay slow a call down. Hang, Code, Close and Reset end it; each is enabled by its
// own field (Hang true, Code not OK, Close true, Reset true) and comes due after its own count of
// messages (HangAfter, CodeAfter, CloseAfter, ResetAfter; 0 means before the first message). An
// ending due after n messages fires when the handler tries to send message n+1, or, if the handler
// returns having sent n or fewer, when it returns (before the call's status is written, and
// whatever the handler returned, unless the call's context has already ended). So a faulted call
// always shows its fault, even on a stream shorter than the count. The first ending to come due
// wins; at the same count Reset goes first, then Close, Hang and Code.
type Spec struct {
	// Delay is waited before the handler is called. If the call's context ends first, the call
	// fails with Canceled or DeadlineExceeded and the handler is not called.
	Delay time.Duration
	// BatchDelay is waited before every message the handler sends, the first one included. If the
	// call's context ends first, that send fails with Canceled or DeadlineExceeded.
	BatchDelay time.Duration

	// Hang stops the call after HangAfter messages: nothing more is sent, and the handler is
	// blocked in its send until the call's context ends (the client cancels, its deadline passes,
	// or the server stops); then the call fails with Canceled or DeadlineExceeded. The connection
	// stays healthy: this is a stuck shard, not a dead one. A GracefulStop waits for hung calls.
	Hang      bool
	HangAfter int

	// Code, unless OK, fails the call with this status code after CodeAfter messages. Message is
	// the status message (default "fault: injected CODE").
	Code      codes.Code
	Message   string
	CodeAfter int

	// Close, after CloseAfter messages, closes the TCP connection the call arrived on, as the
	// kernel does for a process that crashes: the peer gets a FIN after the data already sent
	// (or, as close(2) does whenever unread data is waiting, an RST). Every other call on that
	// connection dies with it. The messages before the cut reach the peer (see Injector).
	Close      bool
	CloseAfter int

	// Reset is Close with SO_LINGER 0: the peer gets an RST, and data still in the kernel's send
	// queue is dropped.
	Reset      bool
	ResetAfter int

	// Every applies the spec to one call in Every: the Every-th, 2*Every-th, ... Search call since
	// the spec was set. 0 and 1 apply it to every call.
	Every int
}

// IsZero reports whether s injects no fault at all (Every and the ...After counts alone do
// nothing).
func (s Spec) IsZero() bool {
	return s.Delay == 0 && s.BatchDelay == 0 && !s.Hang && s.Code == codes.OK && !s.Close && !s.Reset
}

// ErrBadSpec is wrapped by every error ParseSpec returns.
var ErrBadSpec = errors.New("bad fault spec")

// ParseSpec parses the flag syntax of a Spec: comma-separated items, each a key or key=value, in
// any order, each key at most once. "" and "none" are the zero Spec.
//
//	delay=DURATION        Delay (Go duration syntax: 200ms, 1.5s)
//	batch-delay=DURATION  BatchDelay
//	hang                  Hang before the first message
//	hang-after=N          Hang after N messages
//	code=NAME             Code, by gRPC name in any case, with _ or - or neither: unavailable,
//	                      RESOURCE_EXHAUSTED, deadline-exceeded
//	code-after=N          CodeAfter (needs code)
//	message=TEXT          Message (needs code; TEXT cannot hold a comma)
//	close                 Close before the first message
//	close-after=N         Close after N messages
//	reset                 Reset before the first message
//	reset-after=N         Reset after N messages
//	every=N               Every (N >= 1; needs some fault)
//
// For example "delay=200ms,batch-delay=50ms" is a slow shard, "code=unavailable,every=3" fails
// one call in three, and "reset-after=1" dies after its first batch. Errors wrap ErrBadSpec and
// name the offending item.
func ParseSpec(text string) (Spec, error) {
	var s Spec
	text = strings.TrimSpace(text)
	if text == "" || text == "none" {
		return s, nil
	}
	seen := make(map[string]bool)
	for item := range strings.SplitSeq(text, ",") {
		item = strings.TrimSpace(item)
		key, val, hasVal := strings.Cut(item, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if key == "" {
			return Spec{}, fmt.Errorf("%w %q: empty item", ErrBadSpec, text)
		}
		if seen[key] {
			return Spec{}, fmt.Errorf("%w: %s: key given twice", ErrBadSpec, key)
		}
		seen[key] = true
		if err := s.set(key, val, hasVal); err != nil {
			return Spec{}, fmt.Errorf("%w: %s: %w", ErrBadSpec, item, err)
		}
	}
	if err := s.validate(); err != nil {
		return Spec{}, fmt.Errorf("%w: %w", ErrBadSpec, err)
	}
	return s, nil
}

// keys lists ParseSpec's keys for error messages.
const keys = "delay, batch-delay, hang, hang-after, code, code-after, message, close, close-after, reset, reset-after, every"

// set applies one key=value item to s.
func (s *Spec) set(key, val string, hasVal bool) error {
	var err error
	switch key {
	case "delay":
		s.Delay, err = parseDuration(val, hasVal)
	case "batch-delay":
		s.BatchDelay, err = parseDuration(val, hasVal)
	case "hang":
		s.Hang, err = true, noValue(hasVal)
	case "hang-after":
		s.Hang = true
		s.HangAfter, err = parseCount(val, hasVal, 0)
	case "code":
		s.Code, err = parseCode(val, hasVal)
	case "code-after":
		s.CodeAfter, err = parseCount(val, hasVal, 0)
	case "message":
		if !hasVal || val == "" {
			return errors.New("want message=TEXT")
		}
		s.Message = val
	case "close":
		s.Close, err = true, noValue(hasVal)
	case "close-after":
		s.Close = true
		s.CloseAfter, err = parseCount(val, hasVal, 0)
	case "reset":
		s.Reset, err = true, noValue(hasVal)
	case "reset-after":
		s.Reset = true
		s.ResetAfter, err = parseCount(val, hasVal, 0)
	case "every":
		s.Every, err = parseCount(val, hasVal, 1)
	default:
		return fmt.Errorf("unknown key %q (keys: %s)", key, keys)
	}
	return err
}

// validate checks what no single item can: keys that need another key.
func (s Spec) validate() error {
	switch {
	case s.Code == codes.OK && s.Message != "":
		return errors.New("message without code")
	case s.Code == codes.OK && s.CodeAfter != 0:
		return errors.New("code-after without code")
	case s.IsZero() && s.Every != 0:
		return fmt.Errorf("every=%d with no fault to apply", s.Every)
	}
	return nil
}

func noValue(hasVal bool) error {
	if hasVal {
		return errors.New("takes no value")
	}
	return nil
}

func parseDuration(val string, hasVal bool) (time.Duration, error) {
	if !hasVal {
		return 0, errors.New("want a duration, such as 200ms")
	}
	d, err := time.ParseDuration(val)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, errors.New("negative duration")
	}
	return d, nil
}

func parseCount(val string, hasVal bool, least int) (int, error) {
	n, err := strconv.Atoi(val)
	if !hasVal || err != nil || n < least {
		return 0, fmt.Errorf("want a whole number of at least %d", least)
	}
	return n, nil
}

// parseCode reads a gRPC code name other than OK.
func parseCode(val string, hasVal bool) (codes.Code, error) {
	want := foldCode(val)
	for c := codes.Canceled; c <= codes.Unauthenticated; c++ {
		if hasVal && foldCode(c.String()) == want {
			return c, nil
		}
	}
	return codes.OK, errors.New("want a gRPC status code name other than ok, such as unavailable or deadline_exceeded")
}

// foldCode lowercases a code name and drops its separators: "DEADLINE_EXCEEDED",
// "deadline-exceeded" and "DeadlineExceeded" all fold to "deadlineexceeded".
func foldCode(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '-' {
			return -1
		}
		return unicode.ToLower(r)
	}, name)
}

// codeName is c's name in ParseSpec's syntax: "deadline_exceeded".
func codeName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if unicode.IsUpper(r) && i > 0 {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// String returns s in ParseSpec's syntax, keys in a fixed order, or "none" if s.IsZero().
// ParseSpec(s.String()) gives s back for any s that ParseSpec returned.
func (s Spec) String() string {
	if s.IsZero() {
		return "none"
	}
	var items []string
	add := func(format string, args ...any) { items = append(items, fmt.Sprintf(format, args...)) }
	if s.Delay != 0 {
		add("delay=%s", s.Delay)
	}
	if s.BatchDelay != 0 {
		add("batch-delay=%s", s.BatchDelay)
	}
	ending := func(on bool, key string, after int) {
		switch {
		case on && after == 0:
			add("%s", key)
		case on:
			add("%s-after=%d", key, after)
		}
	}
	ending(s.Hang, "hang", s.HangAfter)
	if s.Code != codes.OK {
		add("code=%s", codeName(s.Code))
	}
	if s.CodeAfter != 0 {
		add("code-after=%d", s.CodeAfter)
	}
	if s.Message != "" {
		add("message=%s", s.Message)
	}
	ending(s.Close, "close", s.CloseAfter)
	ending(s.Reset, "reset", s.ResetAfter)
	if s.Every != 0 {
		add("every=%d", s.Every)
	}
	return strings.Join(items, ",")
}
