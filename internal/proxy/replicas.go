package proxy

import (
	"net"
	"regexp"
	"strings"

	"github.com/gatherproxy/gather/internal/fanout"
)

// masks hides replica addresses from answers (Config.HideReplicas): a replica is named by its
// ordinal in its shard's configured list, and its address is masked in the shard's error text.
type masks struct {
	shards [][]mask // by shard index (the topology's Shards order), then replica index
	// ip matches the IP literals that transport errors carry ("dial tcp 10.0.0.7:7071: ..."),
	// for addresses resolved from a configured host name.
	ip *regexp.Regexp
}

type mask struct{ addr, host, ordinal string }

func newMasks(replicas [][]string) *masks {
	m := &masks{
		shards: make([][]mask, len(replicas)),
		ip:     regexp.MustCompile(`(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?|\[[0-9A-Fa-f:.]+(?:%[^\]]*)?\](?::\d+)?`),
	}
	for i, addrs := range replicas {
		for j, addr := range addrs {
			host, _, _ := net.SplitHostPort(addr)
			m.shards[i] = append(m.shards[i], mask{addr: addr, host: host, ordinal: ordinal(j)})
		}
	}
	return m
}

// hide returns the ordinal of replica r of shard s, and text with the addresses of the shard's
// replicas replaced by their ordinals and any other IP literal by "[address]", made safe again
// (fanout.CleanText), as the replacements may lengthen it.
func (m *masks) hide(s, r int, text string) (string, string) {
	replicas := m.shards[s]
	name := "" // no replica (fanout.ErrNoReplica)
	if r >= 0 && r < len(replicas) {
		name = replicas[r].ordinal
	}
	if text == "" {
		return name, ""
	}
	for _, rm := range replicas {
		text = strings.ReplaceAll(text, rm.addr, rm.ordinal)
	}
	text = m.ip.ReplaceAllString(text, "[address]")
	for _, rm := range replicas {
		if rm.host != "" && net.ParseIP(rm.host) == nil { // a name, which the patterns above miss
			text = strings.ReplaceAll(text, rm.host, rm.ordinal)
		}
	}
	return name, fanout.CleanText(text)
}
