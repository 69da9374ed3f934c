package benchsuite

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// GoBench is one result line of `go test -bench`.
type GoBench struct {
	// Pkg is the import path from the preceding "pkg:" line.
	Pkg string `json:"pkg"`
	// Name is the benchmark's full name without the -GOMAXPROCS suffix, e.g.
	// "BenchmarkMerge/N=64/K=1000/impl=losertree".
	Name       string `json:"name"`
	Procs      int    `json:"procs"`
	Iterations int64  `json:"iterations"`
	// Metrics are the measurements by unit: "ns/op", "B/op", "allocs/op", custom ones.
	Metrics map[string]float64 `json:"metrics"`
}

// String formats g like its go test line, with the package's last element in front.
func (g GoBench) String() string {
	var b strings.Builder
	pkg := g.Pkg[strings.LastIndexByte(g.Pkg, '/')+1:]
	fmt.Fprintf(&b, "%s %s", pkg, g.Name)
	units := make([]string, 0, len(g.Metrics))
	for u := range g.Metrics {
		units = append(units, u)
	}
	// ns/op first, then the rest by name: the order go test prints is lost in the map.
	slices.SortFunc(units, func(a, b string) int {
		switch {
		case a == "ns/op":
			return -1
		case b == "ns/op":
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, u := range units {
		fmt.Fprintf(&b, "  %s %s", strconv.FormatFloat(g.Metrics[u], 'f', -1, 64), u)
	}
	return b.String()
}

// ParseGoBench reads the output of `go test -bench` (any number of packages) and returns its
// result lines in order. Lines that are not results (PASS, ok, logs) are skipped.
func ParseGoBench(r io.Reader) ([]GoBench, error) {
	var out []GoBench
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		if g, ok := parseBenchLine(line); ok {
			g.Pkg = pkg
			out = append(out, g)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read go test output: %w", err)
	}
	return out, nil
}

// parseBenchLine parses "BenchmarkName-P  N  V unit  V unit ...".
func parseBenchLine(line string) (GoBench, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || len(f)%2 != 0 || !strings.HasPrefix(f[0], "Benchmark") {
		return GoBench{}, false
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return GoBench{}, false
	}
	g := GoBench{Name: f[0], Iterations: n, Metrics: map[string]float64{}}
	if i := strings.LastIndexByte(g.Name, '-'); i > 0 {
		if p, err := strconv.Atoi(g.Name[i+1:]); err == nil {
			g.Name, g.Procs = g.Name[:i], p
		}
	}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return GoBench{}, false
		}
		g.Metrics[f[i+1]] = v
	}
	return g, true
}

// mergePkg is the package whose BenchmarkMerge compares the loser tree with sorting.
const mergePkg = "/internal/merge"

// findBench returns the result of the benchmark called name in a package whose path ends with
// pkgSuffix.
func findBench(gb []GoBench, pkgSuffix, name string) (GoBench, bool) {
	for _, g := range gb {
		if strings.HasSuffix(g.Pkg, pkgSuffix) && g.Name == name {
			return g, true
		}
	}
	return GoBench{}, false
}

func mergeBench(gb []GoBench, n, k int, impl string) (GoBench, bool) {
	return findBench(gb, mergePkg, fmt.Sprintf("BenchmarkMerge/N=%d/K=%d/impl=%s", n, k, impl))
}

// writeMergeTable writes the loser tree against sorting at every N and K present, as text or as
// Markdown.
func writeMergeTable(b *strings.Builder, gb []GoBench, markdown bool) {
	header := []string{"merge N", "K", "losertree ns/op", "sort ns/op", "speed-up", "losertree allocs/op", "sort allocs/op"}
	var rows [][]string
	for _, n := range []int{4, 16, 64} {
		for _, k := range []int{10, 100, 1000} {
			lt, ok1 := mergeBench(gb, n, k, "losertree")
			so, ok2 := mergeBench(gb, n, k, "sort")
			if !ok1 || !ok2 {
				continue
			}
			rows = append(rows, []string{
				fmt.Sprint(n), fmt.Sprint(k),
				fmt.Sprintf("%.0f", lt.Metrics["ns/op"]), fmt.Sprintf("%.0f", so.Metrics["ns/op"]),
				fmt.Sprintf("%.1f×", so.Metrics["ns/op"]/lt.Metrics["ns/op"]),
				fmt.Sprintf("%.0f", lt.Metrics["allocs/op"]), fmt.Sprintf("%.0f", so.Metrics["allocs/op"]),
			})
		}
	}
	if len(rows) == 0 {
		return
	}
	if markdown {
		b.WriteString("| " + strings.Join(header, " | ") + " |\n|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, r := range rows {
			b.WriteString("| " + strings.Join(r, " | ") + " |\n")
		}
		return
	}
	fmt.Fprintf(b, "  %7s %5s %16s %12s %9s %20s %15s\n", header[0], header[1], header[2], header[3], header[4], header[5], header[6])
	for _, r := range rows {
		fmt.Fprintf(b, "  %7s %5s %16s %12s %9s %20s %15s\n", r[0], r[1], r[2], r[3], r[4], r[5], r[6])
	}
}

// otherBenchmarks are the results that are not in the merge table.
func otherBenchmarks(gb []GoBench) []GoBench {
	var out []GoBench
	for _, g := range gb {
		if strings.HasSuffix(g.Pkg, mergePkg) && strings.HasPrefix(g.Name, "BenchmarkMerge/") {
			continue
		}
		out = append(out, g)
	}
	return out
}
