package sockdiag

import (
	"fmt"
	"strings"
)

// State is a TCP state as the kernel numbers it in the st column of /proc/net/tcp.
type State uint8

// The TCP states, with the kernel's values (include/net/tcp_states.h). The kernel's internal
// TCP_NEW_SYN_RECV (12) is printed as SynRecv, so it never appears.
const (
	Established State = iota + 1
	SynSent
	SynRecv
	FinWait1
	FinWait2
	TimeWait
	Close
	CloseWait
	LastAck
	Listen
	Closing
)

// States returns every State in the kernel's order, Established first.
func States() []State {
	return []State{
		Established, SynSent, SynRecv, FinWait1, FinWait2, TimeWait, Close, CloseWait, LastAck,
		Listen, Closing,
	}
}

// String returns the name netstat prints, e.g. "CLOSE_WAIT".
func (s State) String() string {
	switch s {
	case Established:
		return "ESTABLISHED"
	case SynSent:
		return "SYN_SENT"
	case SynRecv:
		return "SYN_RECV"
	case FinWait1:
		return "FIN_WAIT1"
	case FinWait2:
		return "FIN_WAIT2"
	case TimeWait:
		return "TIME_WAIT"
	case Close:
		return "CLOSE"
	case CloseWait:
		return "CLOSE_WAIT"
	case LastAck:
		return "LAST_ACK"
	case Listen:
		return "LISTEN"
	case Closing:
		return "CLOSING"
	}
	return fmt.Sprintf("State(%#x)", uint8(s))
}

// Label returns the value of the metrics' state label: the lower-case String, e.g. "close_wait".
func (s State) Label() string { return strings.ToLower(s.String()) }

// valid reports whether s is one of the eleven states the kernel prints.
func (s State) valid() bool { return s >= Established && s <= Closing }

// stateFromLabel is the inverse of Label.
func stateFromLabel(label string) (State, bool) {
	for _, s := range States() {
		if s.Label() == label {
			return s, true
		}
	}
	return 0, false
}

// StateCounts holds a count per State, indexed by the State itself (counts[CloseWait]); index 0
// is unused because the kernel has no state 0.
type StateCounts [Closing + 1]int

// Total returns the sum over all states.
func (c *StateCounts) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}
