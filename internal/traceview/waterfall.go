package traceview

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// The marks drawn over a bar, and the bars themselves.
const (
	markHedge    = 'H' // a hedge started (gather.hedge.start)
	markRetry    = 'R' // a retry started (gather.retry)
	markCancel   = 'x' // an attempt or the call was cancelled
	markDeadline = '!' // the call was cut by its per-shard deadline or idle timeout
	barPlain     = '='
	barSlowest   = '#'
	barAttempt   = '-'
)

// Legend explains the marks; Draw prints it under every waterfall.
const Legend = "H hedge started   R retry   x cancelled   ! cut by deadline   # slowest shard call   - attempt"

// Options shape a waterfall. The zero value draws 100 columns.
type Options struct {
	// Width is the whole line's width in columns (at least 60; default 100).
	Width int
}

// row is one line of the waterfall.
type row struct {
	label      string
	start, end time.Time
	bar        rune
	marks      []mark
	note       string
}

type mark struct {
	at time.Time
	r  rune
}

// Draw writes trace t as a waterfall: a header, the time axis, one row for the query's span (the
// QueryService server span, or else the earliest span without a parent in the trace), then one row
// per shard call (spans with a gather.shard tag) in the order they started, each followed by its
// attempts (its child spans), and the legend. Spans deeper than attempts (the shards' own server
// spans) are counted, not drawn. Bars share one time axis from the query span's start to the last
// end; the slowest shard call is drawn with '#' and marked "<- slowest".
func Draw(w io.Writer, t *Trace, opt Options) error {
	width := opt.Width
	if width == 0 {
		width = 100
	}
	width = max(width, 60)
	if len(t.Spans) == 0 {
		return fmt.Errorf("trace %s has no spans", t.TraceID)
	}
	byID := make(map[string]*Span, len(t.Spans))
	children := make(map[string][]*Span)
	for i := range t.Spans {
		byID[t.Spans[i].SpanID] = &t.Spans[i]
	}
	for i := range t.Spans {
		s := &t.Spans[i]
		if p := s.parent(); p != "" && byID[p] != nil {
			children[p] = append(children[p], s)
		}
	}
	for _, c := range children {
		slices.SortStableFunc(c, func(a, b *Span) int {
			return cmp.Or(cmp.Compare(a.StartTime, b.StartTime), strings.Compare(a.OperationName, b.OperationName))
		})
	}
	root := findRoot(t, byID)

	// The shard calls: spans tagged gather.shard under the root, however deep.
	var calls []*Span
	var walk func(s *Span)
	walk = func(s *Span) {
		for _, c := range children[s.SpanID] {
			if c.tag("gather.shard") != nil {
				calls = append(calls, c)
				continue
			}
			walk(c)
		}
	}
	walk(root)
	var slowest *Span
	for _, c := range calls {
		if slowest == nil || c.Duration > slowest.Duration {
			slowest = c
		}
	}

	rows := []row{{label: root.OperationName, start: root.start(), end: root.end(), bar: barPlain, note: rootNote(root)}}
	drawn := 1
	for _, c := range calls {
		rows = append(rows, callRow(c, c == slowest && len(calls) > 1))
		drawn++
		for _, a := range children[c.SpanID] {
			rows = append(rows, attemptRow(a))
			drawn++
		}
	}
	t0, t1 := root.start(), root.end()
	for _, r := range rows {
		t1 = later(t1, r.end)
		if r.start.Before(t0) {
			t0 = r.start
		}
	}

	labelW := 0
	for _, r := range rows {
		labelW = max(labelW, utf8.RuneCountInString(r.label))
	}
	labelW = min(labelW, width/3)
	const durW = 10
	barW := width - labelW - durW - 3

	service := ""
	if p, ok := t.Processes[root.ProcessID]; ok {
		service = p.ServiceName + " "
	}
	fmt.Fprintf(w, "trace %s  %s%s  %s  %d spans, %d shard calls\n\n", t.TraceID, service, root.OperationName,
		fmtDur(root.end().Sub(root.start())), len(t.Spans), len(calls))
	fmt.Fprintf(w, "%-*s  %s\n", labelW, "", axis(barW, t1.Sub(t0)))
	for _, r := range rows {
		line := fmt.Sprintf("%-*s  %s %*s", labelW, clip(r.label, labelW), bar(r, t0, t1, barW), durW, fmtDur(r.end.Sub(r.start)))
		if r.note != "" {
			line += "  " + r.note
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
	if n := len(t.Spans) - drawn; n > 0 {
		fmt.Fprintf(w, "\n(%d more spans, the shards' own, not drawn)\n", n)
	}
	_, err := fmt.Fprintf(w, "\n%s\n", Legend)
	return err
}

// findRoot returns the query's span: the QueryService server span if there is one (the earliest),
// else the earliest span whose parent is not in the trace.
func findRoot(t *Trace, byID map[string]*Span) *Span {
	var root, orphan *Span
	for i := range t.Spans {
		s := &t.Spans[i]
		if s.isQuery() {
			if root == nil || s.StartTime < root.StartTime {
				root = s
			}
		}
		if byID[s.parent()] == nil && (orphan == nil || s.StartTime < orphan.StartTime) {
			orphan = s
		}
	}
	return cmp.Or(root, orphan)
}

func rootNote(s *Span) string {
	var parts []string
	if v := s.tagString("gather.coverage.shards_total"); v != "" {
		parts = append(parts, fmt.Sprintf("%s of %s shards", s.tagString("gather.coverage.shards_succeeded"), v))
	}
	if s.tagBool("gather.coverage.degraded") {
		parts = append(parts, "DEGRADED")
	}
	if v := s.tagString("gather.hits"); v != "" {
		parts = append(parts, v+" hits")
	}
	if c := s.statusCode(); c != "" && c != "OK" {
		parts = append(parts, c)
	}
	return strings.Join(parts, ", ")
}

// callRow is a shard call's row: its status, where the answer came from, and its events as marks.
func callRow(s *Span, slowest bool) row {
	r := row{label: "  " + cmp.Or(s.tagString("gather.shard"), s.OperationName), start: s.start(), end: s.end(), bar: barPlain}
	if slowest {
		r.bar = barSlowest
	}
	notes := []string{cmp.Or(s.tagString("gather.shard.status"), "?")}
	if src := s.tagString("gather.shard.source"); src != "" && src != "primary" {
		notes = append(notes, src)
	}
	if n := s.tagString("gather.shard.attempts"); n != "" && n != "1" && n != "0" {
		notes = append(notes, n+" attempts")
	}
	if rep := s.tagString("gather.replica"); rep != "" {
		notes = append(notes, "from "+rep)
	}
	for _, l := range s.Logs {
		at := time.UnixMicro(l.Timestamp)
		switch ev := l.event(); ev {
		case "gather.hedge.start":
			r.marks = append(r.marks, mark{at, markHedge})
		case "gather.retry":
			r.marks = append(r.marks, mark{at, markRetry})
		case "gather.attempt.cancelled", "cancelled":
			r.marks = append(r.marks, mark{at, markCancel})
		case "gather.hedge.denied":
			notes = append(notes, "hedge denied: "+l.field("gather.reason"))
		}
	}
	if s.tagBool("gather.shard.cut_by_deadline") {
		r.marks = append(r.marks, mark{r.end, markDeadline})
		notes = append(notes, "cut by deadline")
	}
	if s.tagBool("gather.shard.stopped_early") {
		notes = append(notes, "stopped early")
	}
	if slowest {
		notes = append(notes, "<- slowest")
	}
	r.note = strings.Join(notes, ", ")
	return r
}

// attemptRow is one attempt of a shard call: its gRPC client span.
func attemptRow(s *Span) row {
	label := "    " + cmp.Or(s.tagString("server.address"), s.tagString("net.peer.name"), s.OperationName)
	if p := s.tagString("server.port"); p != "" && !strings.Contains(label, ":") {
		label += ":" + p
	}
	r := row{label: label, start: s.start(), end: s.end(), bar: barAttempt}
	code := s.statusCode()
	if code == "" {
		return r // no status: the attempt had not ended when the trace was exported
	}
	r.note = code
	if code == "CANCELLED" {
		r.marks = append(r.marks, mark{r.end, markCancel})
	}
	return r
}

// bar draws r on a line of n columns spanning t0 to t1: spaces before and after, r.bar over the
// span (at least one column), and its marks over that at their times.
func bar(r row, t0, t1 time.Time, n int) string {
	total := t1.Sub(t0)
	col := func(t time.Time) int {
		if total <= 0 {
			return 0
		}
		return min(n-1, max(0, int(int64(n)*int64(t.Sub(t0))/int64(total))))
	}
	line := []rune(strings.Repeat(" ", n))
	from, to := col(r.start), col(r.end)
	for i := from; i <= max(from, to); i++ {
		line[i] = r.bar
	}
	for _, m := range r.marks {
		line[col(m.at)] = m.r
	}
	return string(line)
}

// axis is the time axis over n columns: a tick label at the start, a quarter, half, three
// quarters and the end of total.
func axis(n int, total time.Duration) string {
	line := []rune(strings.Repeat(" ", n))
	for q := range 5 {
		label := []rune(fmtDur(total * time.Duration(q) / 4))
		at := (n - 1) * q / 4
		if q == 4 {
			at = n - len(label)
		} else if q > 0 {
			at -= len(label) / 2
		}
		for i, c := range label {
			if at+i >= 0 && at+i < n {
				line[at+i] = c
			}
		}
	}
	return strings.TrimRight(string(line), " ")
}

// fmtDur prints a duration with about three significant digits: 850µs, 12.3ms, 1.25s.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
