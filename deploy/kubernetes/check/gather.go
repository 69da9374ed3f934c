package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Gather is what the manifests must agree with, taken from the gather binary and its source.
type Gather struct {
	// Flags maps a subcommand (proxy, shard) to its flags, each to whether it is a bool flag
	// (given as --name alone; the others need --name=value).
	Flags map[string]map[string]bool
	// Pending maps a subcommand to flags announced but not in the binary yet: a manifest may use
	// them. Once the binary has one, Check says to delete it from here.
	Pending map[string][]string
	// Drain is how long each subcommand may take from SIGTERM to exit, tracing aside.
	Drain map[string]time.Duration
	// TracingFlush is how long either may then spend flushing spans, when tracing is configured
	// (OTEL_EXPORTER_OTLP_ENDPOINT).
	TracingFlush time.Duration
}

// subcommands are those the manifests run, each with the function of cmd/gather that runs it
// (and drains it on SIGTERM) and its file.
func subcommands() map[string]struct{ file, fn string } {
	return map[string]struct{ file, fn string }{
		"proxy": {"proxy.go", "runProxy"},
		"shard": {"shard.go", "runShard"},
	}
}

// pendingFlags are flags that were being added to gather when the manifests that use them were
// written (issue 11: gather proxy --discover etcd://HOST:PORT/PREFIX). Once the binary has one,
// Check says to delete it from here; an empty map is fine.
func pendingFlags() map[string][]string {
	return map[string][]string{}
}

// LoadGather reads the flags of bin's subcommands from their -h output and the drain deadlines
// from the source in srcDir (cmd/gather).
func LoadGather(ctx context.Context, bin, srcDir string) (*Gather, error) {
	g := &Gather{Flags: map[string]map[string]bool{}, Pending: pendingFlags(), Drain: map[string]time.Duration{}}
	for sub, src := range subcommands() {
		flags, err := helpFlags(ctx, bin, sub)
		if err != nil {
			return nil, err
		}
		g.Flags[sub] = flags
		if g.Drain[sub], err = graceOf(filepath.Join(srcDir, src.file), src.fn); err != nil {
			return nil, err
		}
	}
	var err error
	g.TracingFlush, err = graceOf(filepath.Join(srcDir, "observe.go"), "shutdownTracing")
	return g, err
}

// helpLine is a flag's line in flag.PrintDefaults output: "  -name" for a bool, "  -name type"
// (type from the usage's backquotes, or the value's type) for the others.
var helpLine = regexp.MustCompile(`^  -([A-Za-z0-9][A-Za-z0-9_.-]*)( \S+)?$`)

// helpFlags runs `bin sub -h` and parses its flags.
func helpFlags(ctx context.Context, bin, sub string) (map[string]bool, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, sub, "-h")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil { // -h exits 0
		return nil, fmt.Errorf("%s %s -h: %w\n%s", bin, sub, err, out.String())
	}
	flags := map[string]bool{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if m := helpLine.FindStringSubmatch(sc.Text()); m != nil {
			flags[m[1]] = m[2] == ""
		}
	}
	if len(flags) == 0 {
		return nil, fmt.Errorf("%s %s -h printed no flags:\n%s", bin, sub, out.String())
	}
	return flags, nil
}

// graceOf returns the longest grace given to graceContext(ctx, N*time.Second) in function fn of
// file: the drain deadlines that start together at the signal.
func graceOf(file, fn string) (time.Duration, error) {
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		return 0, err
	}
	var graces []time.Duration
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != fn {
			continue
		}
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 2 {
				return true
			}
			if id, ok := call.Fun.(*ast.Ident); !ok || id.Name != "graceContext" {
				return true
			}
			if g, ok := seconds(call.Args[1]); ok {
				graces = append(graces, g)
			} else {
				err = fmt.Errorf("%s: %s: graceContext's grace is not N*time.Second: teach graceOf to read it", file, fn)
			}
			return true
		})
	}
	if err != nil {
		return 0, err
	}
	if len(graces) == 0 {
		return 0, fmt.Errorf("%s: no graceContext(ctx, N*time.Second) in %s: where does it drain now?", file, fn)
	}
	return slices.Max(graces), nil
}

// seconds reads N*time.Second.
func seconds(e ast.Expr) (time.Duration, bool) {
	b, ok := e.(*ast.BinaryExpr)
	if !ok || b.Op != token.MUL {
		return 0, false
	}
	lit, ok := b.X.(*ast.BasicLit)
	sel, ok2 := b.Y.(*ast.SelectorExpr)
	if !ok || !ok2 || lit.Kind != token.INT || sel.Sel.Name != "Second" {
		return 0, false
	}
	n, err := strconv.Atoi(lit.Value)
	if err != nil {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// flagArg splits "--name=value" or "--name" into name and value.
func flagArg(arg string) (name, value string, hasValue, ok bool) {
	if !strings.HasPrefix(arg, "--") || len(arg) < 3 {
		return "", "", false, false
	}
	name, value, hasValue = strings.Cut(arg[2:], "=")
	return name, value, hasValue, true
}
