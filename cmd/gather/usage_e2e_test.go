package main

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// TestExitCodes: as the house style says, gather CMD -h prints the usage on stdout and exits 0;
// a bad flag exits 2 with a line that names it; no command or an unknown one exits 2.
func TestExitCodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string // in each
	}{
		{[]string{"proxy", "-h"}, 0, "usage: gather proxy", ""},
		{[]string{"shard", "--help"}, 0, "-partition", ""},
		{[]string{"-h"}, 0, "usage: gather COMMAND", ""},
		{[]string{"proxy", "--nope"}, 2, "", "flag provided but not defined: -nope"},
		{[]string{"chaos", "--workers", "many"}, 2, "", `invalid value "many" for flag -workers`},
		{nil, 2, "", "usage: gather COMMAND"},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"proxy"}, 1, "", "no shard configured"},
	} {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(gatherBin, tc.args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code || !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("gather %v: exit %d, stdout %q, stderr %q; want exit %d, %q on stdout, %q on stderr",
				tc.args, code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
		}
		if tc.code == 0 && stderr.Len() > 0 {
			t.Errorf("gather %v printed on stderr: %q", tc.args, stderr.String())
		}
	}
}
