// Command check renders gather's Kubernetes manifests (deploy/kubernetes) with kustomize, from the
// filesystem alone, and prints them: `go run . dns` prints the dns overlay as kubectl kustomize
// would. Its tests (go test, run by make lint) decode every object strictly into the k8s.io/api
// types and check the manifests against the gather binary and against themselves; see
// docs/kubernetes.md.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "check:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "..", "the `directory` that holds base/ and overlays/")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: go run . [--root DIR] OVERLAY|DIR ...   (OVERLAY: a directory name under DIR/overlays: dns, etcd)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("name an overlay")
	}
	for i, a := range fs.Args() {
		dir := a
		if _, err := os.Stat(filepath.Join(*root, "overlays", a)); err == nil {
			dir = filepath.Join(*root, "overlays", a)
		}
		docs, err := Render(dir)
		if err != nil {
			return err
		}
		if _, err := Decode(docs); err != nil {
			return err
		}
		for j, d := range docs {
			if i > 0 || j > 0 {
				fmt.Fprintln(stdout, "---")
			}
			if _, err := stdout.Write(d); err != nil {
				return err
			}
		}
	}
	return nil
}
