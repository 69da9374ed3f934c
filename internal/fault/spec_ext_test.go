package fault_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/gatherproxy/gather/internal/fault"
)

func TestParseSpec(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want fault.Spec
		str  string // want String(); "" means in
	}{
		{in: "", want: fault.Spec{}, str: "none"},
		{in: "none", want: fault.Spec{}},
		{in: "delay=200ms", want: fault.Spec{Delay: 200 * time.Millisecond}},
		{in: "delay=1.5s,batch-delay=50ms", want: fault.Spec{Delay: 1500 * time.Millisecond, BatchDelay: 50 * time.Millisecond}},
		{in: "hang", want: fault.Spec{Hang: true}},
		{in: "hang-after=2", want: fault.Spec{Hang: true, HangAfter: 2}},
		{in: "hang-after=0", want: fault.Spec{Hang: true}, str: "hang"},
		{in: "code=unavailable", want: fault.Spec{Code: codes.Unavailable}},
		{in: "code=RESOURCE_EXHAUSTED,code-after=3,message=shed load", want: fault.Spec{Code: codes.ResourceExhausted, CodeAfter: 3, Message: "shed load"},
			str: "code=resource_exhausted,code-after=3,message=shed load"},
		{in: "code=deadline-exceeded", want: fault.Spec{Code: codes.DeadlineExceeded}, str: "code=deadline_exceeded"},
		{in: "code=DeadlineExceeded", want: fault.Spec{Code: codes.DeadlineExceeded}, str: "code=deadline_exceeded"},
		{in: "close", want: fault.Spec{Close: true}},
		{in: "close-after=1", want: fault.Spec{Close: true, CloseAfter: 1}},
		{in: "reset", want: fault.Spec{Reset: true}},
		{in: "reset-after=4", want: fault.Spec{Reset: true, ResetAfter: 4}},
		{in: "code=internal,every=3", want: fault.Spec{Code: codes.Internal, Every: 3}},
		{in: " every=2 , close ", want: fault.Spec{Close: true, Every: 2}, str: "close,every=2"},
		{
			in:   "delay=200ms,batch-delay=50ms,hang,hang-after=2,code=unavailable,close-after=1,reset-after=1,every=3",
			want: fault.Spec{Delay: 200 * time.Millisecond, BatchDelay: 50 * time.Millisecond, Hang: true, HangAfter: 2, Code: codes.Unavailable, Close: true, CloseAfter: 1, Reset: true, ResetAfter: 1, Every: 3},
			str:  "delay=200ms,batch-delay=50ms,hang-after=2,code=unavailable,close-after=1,reset-after=1,every=3",
		},
	}
	for _, tt := range tests {
		got, err := fault.ParseSpec(tt.in)
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseSpec(%q) = %#v, want %#v", tt.in, got, tt.want)
		}
		wantStr := tt.str
		if wantStr == "" {
			wantStr = tt.in
		}
		if s := got.String(); s != wantStr {
			t.Errorf("ParseSpec(%q).String() = %q, want %q", tt.in, s, wantStr)
		}
		if back, err := fault.ParseSpec(got.String()); err != nil || back != got {
			t.Errorf("ParseSpec(%q) = %#v, %v; want %#v", got.String(), back, err, got)
		}
	}
}

func TestParseSpecErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string // in the error message
	}{
		{"delay", "delay: want a duration"},
		{"delay=abc", `delay=abc: time: invalid duration "abc"`},
		{"delay=-1s", "delay=-1s: negative duration"},
		{"batch-delay=7", "batch-delay=7: time: missing unit"},
		{"hang=true", "hang=true: takes no value"},
		{"hang-after=-1", "hang-after=-1: want a whole number of at least 0"},
		{"hang-after", "hang-after: want a whole number"},
		{"code=nope", "code=nope: want a gRPC status code name"},
		{"code=ok", "code=ok: want a gRPC status code name other than ok"},
		{"code", "code: want a gRPC status code name"},
		{"code=internal,message", "message: want message=TEXT"},
		{"message=x", "message without code"},
		{"code-after=2", "code-after without code"},
		{"close=1", "close=1: takes no value"},
		{"reset-after=x", "reset-after=x: want a whole number"},
		{"every=0,hang", "every=0: want a whole number of at least 1"},
		{"every=3", "every=3 with no fault to apply"},
		{"delay=1s,delay=2s", "delay: key given twice"},
		{"delay=1s,,hang", "empty item"},
		{"slow=1s", `slow=1s: unknown key "slow" (keys: delay,`},
	}
	for _, tt := range tests {
		got, err := fault.ParseSpec(tt.in)
		if err == nil {
			t.Errorf("ParseSpec(%q) = %v, want an error", tt.in, got)
			continue
		}
		if !errors.Is(err, fault.ErrBadSpec) {
			t.Errorf("ParseSpec(%q) error %v does not wrap ErrBadSpec", tt.in, err)
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseSpec(%q) error = %q, want it to contain %q", tt.in, err, tt.want)
		}
	}
}

func TestSpecIsZero(t *testing.T) {
	t.Parallel()
	tests := []struct {
		spec fault.Spec
		want bool
	}{
		{fault.Spec{}, true},
		{fault.Spec{Every: 3, HangAfter: 2, CloseAfter: 1}, true}, // counts without their switches
		{fault.Spec{Delay: time.Millisecond}, false},
		{fault.Spec{BatchDelay: time.Millisecond}, false},
		{fault.Spec{Hang: true}, false},
		{fault.Spec{Code: codes.Unavailable}, false},
		{fault.Spec{Close: true}, false},
		{fault.Spec{Reset: true}, false},
	}
	for _, tt := range tests {
		if got := tt.spec.IsZero(); got != tt.want {
			t.Errorf("%#v.IsZero() = %v, want %v", tt.spec, got, tt.want)
		}
		if got := tt.spec.String(); (got == "none") != tt.want {
			t.Errorf("%#v.String() = %q, want \"none\" only for a spec that injects nothing", tt.spec, got)
		}
	}
}
