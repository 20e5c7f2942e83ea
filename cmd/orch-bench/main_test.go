package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/llama-orch/llama-orch/engines/fake"
)

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e, false)
	return code, o.String(), e.String()
}

func TestUsageErrors(t *testing.T) {
	f := func(name string, args []string, wantCode int, wantErr string) {
		t.Helper()
		code, _, stderr := runCmd(args...)
		if code != wantCode || !strings.Contains(stderr, wantErr) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", name, code, stderr, wantCode, wantErr)
		}
	}
	f("no command", nil, exitUsage, "Usage:")
	f("unknown command", []string{"bogus"}, exitUsage, `unknown command "bogus"`)
	f("missing flags", []string{"run"}, exitUsage, "--gateway is required")
	f("missing out", []string{"run", "--gateway", "http://127.0.0.1:1"}, exitUsage, "--out is required")
	// Non-loopback targets are refused with a clear message, before any traffic.
	f("remote gateway", []string{"run", "--gateway", "http://203.0.113.7:8090", "--direct", "http://127.0.0.1:1",
		"--model", "m", "--engine", "llamacpp", "-c", "1", "-d", "1s", "--tokens", "1", "--out", t.TempDir()},
		exitUsage, "only loopback targets are allowed")
	f("bad pid", []string{"run", "--gateway-pid", "x"}, exitUsage, `--gateway-pid: "x" is not a PID`)
	f("summary without reports", []string{"summary"}, exitUsage, "name at least one report.json")
	if code, out, _ := runCmd("help"); code != exitOK || !strings.Contains(out, "orch-bench run") {
		t.Errorf("help: %d %q", code, out)
	}
}

// TestRunAndSummary runs a tiny bench against an in-process fake (its own API
// on both sides) and summarises the report.
func TestRunAndSummary(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	f, err := fake.New(fake.Options{Slots: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	out := filepath.Join(dir, "a")
	code, stdout, stderr := runCmd("run", "--gateway", f.URL(), "--gateway-api", "engine", "--direct", f.URL(),
		"--model", "m", "--engine", "llamacpp", "-c", "2", "-d", "200ms", "--tokens", "4",
		"--gateway-pid", itoa(os.Getpid()), "--scenario", "tiny", "--out", out)
	if code != exitOK {
		t.Fatalf("run: exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stdout, "tiny: c=2") || !strings.Contains(stdout, "report.{json,md,svg}") {
		t.Errorf("run output: %q", stdout)
	}
	for _, name := range []string{"report.json", "report.md", "report.svg"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Error(err)
		}
	}
	sum := filepath.Join(dir, "summary.md")
	code, _, stderr = runCmd("summary", "--out", sum, filepath.Join(out, "report.json"))
	if code != exitOK {
		t.Fatalf("summary: exit %d\n%s", code, stderr)
	}
	b, err := os.ReadFile(sum)
	if err != nil || !bytes.Contains(b, []byte("| tiny | orchd (engine-api) | 2 | 4, unpaced |")) {
		t.Errorf("summary: %v\n%s", err, b)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
