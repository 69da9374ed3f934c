package discovery

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/gatherproxy/gather/internal/corpus"
)

// Registration is the value of one replica's key: what a proxy needs to route to it.
type Registration struct {
	// Shard names the partition the replica serves, as the proxy names shards ("shard-0"): the
	// key's first segment under the prefix.
	Shard string `json:"shard"`
	// Partition is the partition as I/N (corpus.Partition), when the registrant knows it. All
	// registrations under a prefix must agree on N, and a shard name maps to one partition.
	Partition string `json:"partition,omitempty"`
	// ReplicaID tells the replicas of a shard apart: the key's second segment. It is unique
	// under the prefix.
	ReplicaID string `json:"replica_id"`
	// Address is where the replica serves gather.shard.v1.ShardService, HOST:PORT.
	Address string `json:"address"`
	// Version is the registrant's build, for operators; the proxy does not use it.
	Version string `json:"version,omitempty"`
}

// Bounds of a registration. A value or segment beyond them is rejected, so a stray writer cannot
// make a watcher hold much memory.
const (
	// MaxValueBytes bounds a key's JSON value.
	MaxValueBytes = 4 << 10
	// maxSegmentBytes bounds a shard name or replica id.
	maxSegmentBytes = 128
	// maxVersionBytes bounds Version.
	maxVersionBytes = 128
)

// ShardName is the name under which a shard serving p registers: "shard-I", the name `gather
// demo` and the examples give shards.
func ShardName(p corpus.Partition) string { return "shard-" + strconv.Itoa(p.Index) }

// Key returns the registration's key under prefix (a Target's Prefix).
func (r Registration) Key(prefix string) string { return prefix + "/" + r.Shard + "/" + r.ReplicaID }

// Validate checks every field and names the one that is wrong.
func (r Registration) Validate() error {
	var errs []error
	if err := checkSegment(r.Shard); err != nil {
		errs = append(errs, fmt.Errorf("shard: %w", err))
	}
	if err := checkSegment(r.ReplicaID); err != nil {
		errs = append(errs, fmt.Errorf("replica_id: %w", err))
	}
	if r.Partition != "" {
		if _, err := corpus.ParsePartition(r.Partition); err != nil {
			errs = append(errs, fmt.Errorf("partition: %w", err))
		}
	}
	if err := CheckAddress(r.Address); err != nil {
		errs = append(errs, fmt.Errorf("address: %w", err))
	}
	if len(r.Version) > maxVersionBytes {
		errs = append(errs, fmt.Errorf("version: %d bytes, more than %d", len(r.Version), maxVersionBytes))
	}
	return errors.Join(errs...)
}

// checkSegment accepts a key segment: 1 to maxSegmentBytes printable ASCII bytes, no '/' and no
// space.
func checkSegment(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > maxSegmentBytes:
		return fmt.Errorf("%d bytes, more than %d", len(s), maxSegmentBytes)
	case s == "." || s == "..":
		return fmt.Errorf("%q is not a name", s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '/' {
			return fmt.Errorf("%q: only printable ASCII without '/' or spaces", s)
		}
	}
	return nil
}

// CheckAddress accepts an address a proxy can dial: HOST:PORT with a port from 1 to 65535 and a
// host that is an IP address other than a wildcard (0.0.0.0, ::) or multicast one, or a host
// name. A shard listening on a wildcard address must advertise one it is reachable at.
func CheckAddress(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT (an IPv6 host goes in brackets: [::1]:7071)", a)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", a, port)
	}
	if host == "" {
		return fmt.Errorf("%q has no host: a wildcard address cannot be dialled; give the address the shard is reachable at", a)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.IsUnspecified() || ip.IsMulticast() {
			return fmt.Errorf("%q: %s is a wildcard or multicast address, which cannot be dialled; give the address the shard is reachable at", a, host)
		}
		return nil
	}
	if len(host) > 253 || strings.IndexFunc(host, notHostRune) >= 0 {
		return fmt.Errorf("%q: host %q is neither an IP address nor a host name", a, host)
	}
	return nil
}

// encode returns r's JSON value.
func (r Registration) encode() string {
	b, _ := json.Marshal(r) // strings only: cannot fail
	return string(b)
}

// decodeRegistration parses and validates a key's value. Unknown fields are allowed, so that a
// newer registrant can add some without older watchers rejecting it.
func decodeRegistration(v []byte) (Registration, error) {
	if len(v) > MaxValueBytes {
		return Registration{}, fmt.Errorf("value is %d bytes, more than %d", len(v), MaxValueBytes)
	}
	var r Registration
	dec := json.NewDecoder(bytes.NewReader(v))
	if err := dec.Decode(&r); err != nil {
		return Registration{}, fmt.Errorf("value is not a JSON registration: %w", err)
	}
	if dec.More() {
		return Registration{}, errors.New("value has data after its JSON object")
	}
	if err := r.Validate(); err != nil {
		return Registration{}, err
	}
	return r, nil
}

// Advertised returns the address a replica listening on listen registers: advertise when it is
// given, else listen, whose host must then be one a proxy can dial: a wildcard (0.0.0.0, [::] or
// no host) is refused with an error that says to give --advertise. The port of listen is not
// checked (it may be 0 before the listener is bound): callers pass the bound address.
func Advertised(listen, advertise string) (string, error) {
	if advertise != "" {
		if err := CheckAddress(advertise); err != nil {
			return "", fmt.Errorf("--advertise: %w", err)
		}
		return advertise, nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("--listen %q is not HOST:PORT", listen)
	}
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
		return "", fmt.Errorf("--listen %s is a wildcard address, which a proxy cannot dial: give --advertise HOST:PORT, the address this shard is reachable at", listen)
	}
	return listen, nil
}

// notHostRune reports whether r cannot appear in a host name.
func notHostRune(r rune) bool {
	ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_'
	return !ok
}
