package benchsuite

import (
	"fmt"
	"strings"

	"github.com/gatherproxy/gather/internal/loadgen"
)

// describe says what the tail scenario ran, in one paragraph.
func (t *TailResult) describe() string {
	rate := fmt.Sprintf("half the lower, %.0f/s", t.Rate)
	if t.RateGiven {
		rate = fmt.Sprintf("%.0f/s (given, not half of saturation)", t.Rate)
	}
	return fmt.Sprintf("%d shards × %d replicas, each `gather shard --synthetic --latency %s`; saturation (closed loop, %d workers) "+
		"%.0f q/s with hedging off, %.0f q/s with hedging on; open loops at %s, top_k 10, "+
		"%d rounds of %.3gs per setting, each round every setting in turn (the order rotating by one each round); "+
		"one proxy per setting, the hung setting's over the first replicas and %d `--fault hang` ones, the floor's over %d shards of its own with `--latency %s`",
		t.Shards, t.Replicas, t.Latency, t.Workers, t.SaturationOff, t.SaturationOn, rate, t.Rounds, t.RoundSeconds,
		t.Shards, t.Shards*t.Replicas, TailFloorLatency)
}

// tailTable is the table of the settings.
func (t *TailResult) tailTable() (header []string, rows [][]string) {
	header = []string{"setting", "queries", "p50", "p90", "p99", "p99.9", "max", "shard calls/query", "extra shard calls",
		"hedges won / lost / failed", "hedges denied: budget / slow shard / other", "hedge delay", "load avg", "not ok"}
	for i := range t.Settings {
		s := &t.Settings[i]
		l := s.Latency
		extra := "-"
		if x, ok := t.Extra(s.Key); ok && s.Key != TailOff && s.Key != TailFloor {
			extra = fmt.Sprintf("%+.2f%%", 100*x)
		}
		hedges, denied, delay := "-", "-", "-"
		if s.Key == TailOn || s.Key == TailHung {
			hedges = fmt.Sprintf("%.0f / %.0f / %.0f", s.Hedges["won"], s.Hedges["lost"], s.Hedges["failed"])
			denied = fmt.Sprintf("%.0f / %.0f / %.0f", s.Denied["budget"], s.Denied["slow_shard"], s.Denied["no_candidate"]+s.Denied["deadline"])
			lo, hi := s.HedgeDelayRange()
			delay = loadgen.FormatMicros(lo) + "–" + loadgen.FormatMicros(hi)
		}
		lo, hi := loadRange(s.Rounds)
		notOK := fmt.Sprint(s.Counts.Completed - s.Counts.OK)
		if s.Counts.Dropped > 0 {
			notOK += fmt.Sprintf(" (+%d dropped)", s.Counts.Dropped)
		}
		rows = append(rows, []string{s.Label, fmt.Sprint(l.Count),
			loadgen.FormatMicros(l.P50US), loadgen.FormatMicros(l.P90US), loadgen.FormatMicros(l.P99US), loadgen.FormatMicros(l.P999US),
			loadgen.FormatMicros(l.MaxUS), fmt.Sprintf("%.3f", s.CallsPerQuery()), extra, hedges, denied, delay,
			fmt.Sprintf("%.1f–%.1f", lo, hi), notOK})
	}
	return header, rows
}

// roundTable is the table of every setting in every round, in the order they ran.
func (t *TailResult) roundTable() (header []string, rows [][]string) {
	header = []string{"round", "setting", "started", "load avg", "busy (others) cores", "p50", "p99", "p99.9", "max", "shard calls/query", "hedge delay"}
	for round := 1; round <= t.Rounds; round++ {
		var in []*TailSetting
		for i := range t.Settings {
			in = append(in, &t.Settings[i])
		}
		for j := range in {
			s := in[(round-1+j)%len(in)]
			if round > len(s.Rounds) {
				continue
			}
			r := s.Rounds[round-1]
			calls, delay := "-", "-"
			if r.Queries > 0 {
				calls = fmt.Sprintf("%.3f", r.ShardCalls/r.Queries)
			}
			if r.HedgeDelayUS > 0 {
				delay = loadgen.FormatMicros(r.HedgeDelayUS)
			}
			rows = append(rows, []string{fmt.Sprint(r.Round), s.Label, r.Start.UTC().Format("15:04:05"), fmt.Sprintf("%.2f", r.LoadAvg),
				fmt.Sprintf("%.2f (%.2f)", r.BusyCores, r.OtherCores), loadgen.FormatMicros(r.Latency.P50US), loadgen.FormatMicros(r.Latency.P99US),
				loadgen.FormatMicros(r.Latency.P999US), loadgen.FormatMicros(r.Latency.MaxUS), calls, delay})
		}
	}
	return header, rows
}

// loadRange is the least and the largest load average of rounds.
func loadRange(rounds []TailRound) (lo, hi float64) {
	for i, r := range rounds {
		if i == 0 || r.LoadAvg < lo {
			lo = r.LoadAvg
		}
		hi = max(hi, r.LoadAvg)
	}
	return lo, hi
}

// tailLegend explains the tail tables.
const tailLegend = `p50 to max: every query of every round of the setting, latency from its scheduled start (open loop).
shard calls/query: attempts the proxy sent (gather_replica_selections_total: first attempts, hedges, retries) per query it answered (gather_queries_total), over the rounds; extra shard calls: that against hedging off's.
hedges: gather_shard_hedges_total by outcome and gather_shard_hedges_denied_total by reason over the rounds; hedge delay: the largest of the 4 shards' gather_shard_hedge_delay_seconds at the end of each round, least and largest over the rounds.
load avg: the machine's 1-minute load average at the end of each round (the suite's own processes count in it), least and largest; busy (others): the cores busy during the round, and how many of them with processes outside the suite. not ok: degraded, shed or failed answers.
floor: the same shards without their slow calls (--latency fixed:2ms), hedging off: the least latency any hedging could reach on this machine at this rate.`

// writeTailText writes the tail section of the text report.
func (t *TailResult) writeText(b *strings.Builder) error {
	fmt.Fprintf(b, "\ntail (issue 9): %s\n\n", t.describe())
	if err := writeAligned(b, t.tailTable); err != nil {
		return err
	}
	b.WriteString("\n")
	if err := writeAligned(b, t.roundTable); err != nil {
		return err
	}
	b.WriteString("\n" + tailLegend + "\n")
	if s := t.Setting(TailHung); s != nil {
		fmt.Fprintf(b, "hung setting: %.0f attempts on the hung replicas, %.2f%% of its shard calls\n", s.HungAttempt, 100*s.HungAttempt/max(s.ShardCalls, 1))
	}
	if t.Plot != "" {
		fmt.Fprintf(b, "percentile plot: %s\n", t.Plot)
	}
	return nil
}

// writeMarkdown writes the tail section of the Markdown report.
func (t *TailResult) writeMarkdown(b *strings.Builder) {
	fmt.Fprintf(b, "\n**Tail** (issue 9): %s.\n\n", t.describe())
	writeMarkdownTable(b, t.tailTable, 1)
	if link := t.PlotLink; link != "" || t.Plot != "" {
		if link == "" {
			link = t.Plot
		}
		fmt.Fprintf(b, "\n![latency against percentile, hedging off and on, and with a hung replica per shard](%s)\n", link)
	}
	b.WriteString("\n" + strings.ReplaceAll(tailLegend, "\n", "  \n") + "\n")
	if s := t.Setting(TailHung); s != nil {
		fmt.Fprintf(b, "\nHung setting: %.0f attempts on the hung replicas, %.2f%% of its shard calls.\n", s.HungAttempt, 100*s.HungAttempt/max(s.ShardCalls, 1))
	}
	b.WriteString("\n<details><summary>Every round</summary>\n\n")
	writeMarkdownTable(b, t.roundTable, 2)
	b.WriteString("\n</details>\n")
}
