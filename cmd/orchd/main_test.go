package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines/fake"

	"github.com/llama-orch/llama-orch/internal/syncbuf"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "orchd.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runCLI runs orchd's run in-process and returns exit code, stdout and
// stderr. Every use here must return by itself (validate, schema, refused
// flags or config); one that starts serving instead fails after 30 s.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	type result struct {
		code        int
		out, errOut string
	}
	done := make(chan result, 1)
	go func() {
		var out, errb bytes.Buffer
		code := run(args, &out, &errb)
		done <- result{code, out.String(), errb.String()}
	}()
	select {
	case r := <-done:
		return r.code, r.out, r.errOut
	case <-time.After(30 * time.Second):
		t.Fatalf("orchd %q did not return within 30s", args)
		return 0, "", ""
	}
}

// TestValidateListsEveryProblem: `orchd validate` names unknown fields and
// lists every problem with a non-zero exit (SPEC §13).
func TestValidateListsEveryProblem(t *testing.T) {
	p := writeFile(t, `
listen: 127.0.0.1:8090
shutdown_grace: 5
pools:
  - id: p
    engine: llamacpp
    model: m
    queue: { capacity: 0, full_policy: fifo }
    replicas:
      - { id: r0, url: "http://127.0.0.1:9001", slotz: 2 }
`)
	code, _, stderr := runCLI(t, "validate", "--config", p)
	if code == 0 {
		t.Fatalf("exit 0 for a bad file; stderr:\n%s", stderr)
	}
	for _, want := range []string{"shutdown_grace", "unknown field", "slotz", "queue.capacity", "full_policy"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

func TestValidateGoodFile(t *testing.T) {
	p := writeFile(t, `
auth: { keys: [ { key: sk-x, tenant: a, roles: [data] } ] }
pools:
  - { id: p, engine: llamacpp, model: m, replicas: [ { id: r0, url: "http://127.0.0.1:9001" } ] }
`)
	code, stdout, stderr := runCLI(t, "validate", "--config", p)
	if code != 0 || !strings.Contains(stdout, "ok") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	if code, _, _ := runCLI(t, "validate"); code != 2 {
		t.Fatalf("validate without --config: exit %d, want 2", code)
	}
	if code, _, _ := runCLI(t, "validate", "--config", filepath.Join(t.TempDir(), "missing.yaml")); code != 1 {
		t.Fatalf("missing file: exit %d, want 1", code)
	}
}

// TestSchema: `orchd schema` prints a JSON Schema documenting the keys.
func TestSchema(t *testing.T) {
	code, stdout, stderr := runCLI(t, "schema")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	for _, key := range []string{"shutdown_grace_ms", "task_retention_ms", "full_policy", "detach_grace_ms"} {
		if !strings.Contains(stdout, key) {
			t.Errorf("schema lacks %s", key)
		}
	}
}

func TestBadFlags(t *testing.T) {
	if code, _, _ := runCLI(t, "--nope"); code != 2 {
		t.Fatalf("unknown flag: exit %d", code)
	}
	if code, _, _ := runCLI(t, "--listen", "nohostport"); code != 2 {
		t.Fatalf("bad --listen: exit %d", code)
	}
	if code, _, _ := runCLI(t, "--config", writeFile(t, "pools: []\n")); code != 1 {
		t.Fatalf("invalid config: exit %d", code)
	}
}

// TestServeAndSIGTERM builds orchd, runs it with --config and --listen in
// front of two fakes, streams a task and stops it with SIGTERM: exit 0.
// Every wait is bounded: the build, the process (killed when its context
// ends), each HTTP exchange and each poll.
func TestServeAndSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "orchd")
	// A cold build cache on 2 loaded cores took ~150 s: the build gets more
	// than the run.
	buildCtx, buildCancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer buildCancel()
	build := exec.CommandContext(buildCtx, "go", "build", "-o", bin, ".")
	build.WaitDelay = 5 * time.Second
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v (context: %v)\n%s", err, buildCtx.Err(), out)
	}
	var urls []string
	for i := 0; i < 2; i++ {
		f, err := fake.New(fake.Options{Slots: 2})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		urls = append(urls, f.URL())
	}
	cfg := writeFile(t, fmt.Sprintf(`
auth: { keys: [ { key: sk-x, tenant: a, roles: [data] } ] }
health: { interval_ms: 50 }
pools:
  - id: p
    engine: llamacpp
    model: m
    replicas:
      - { id: r0, url: %q }
      - { id: r1, url: %q }
`, urls[0], urls[1]))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--config", cfg, "--listen", addr)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr syncBuffer // read while orchd runs
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed when Wait has returned
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	// On every way out: orchd is gone before the test returns.
	defer func() {
		_ = cmd.Process.Kill() // ErrProcessDone once it exited
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Error("orchd still running 10s after SIGKILL")
		}
	}()
	// waitFor polls cond every 20 ms for up to d; false if orchd exited or
	// the time ran out first.
	waitFor := func(d time.Duration, cond func() bool) bool {
		for deadline := time.Now().Add(d); time.Now().Before(deadline); {
			if cond() {
				return true
			}
			select {
			case <-exited:
				return cond()
			case <-time.After(20 * time.Millisecond):
			}
		}
		return cond()
	}
	if !waitFor(30*time.Second, func() bool { return strings.Contains(stdout.String(), "\n") }) {
		t.Fatalf("no line on stdout within 30s (exited: %v)\nstdout: %q\nstderr:\n%s", exitedErr(exited, &waitErr), stdout.String(), stderr.String())
	}
	if line, _, _ := strings.Cut(stdout.String(), "\n"); !strings.Contains(line, addr) {
		t.Fatalf("first line %q does not name %s", line, addr)
	}
	client := &http.Client{Timeout: 15 * time.Second}
	base := "http://" + addr
	ready := waitFor(30*time.Second, func() bool {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/readyz", nil)
		res, err := client.Do(req)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	if !ready {
		t.Fatalf("orchd never ready (exited: %v); stderr:\n%s", exitedErr(exited, &waitErr), stderr.String())
	}
	body := `{"task_id":"0b8a8f4e-4c44-4a39-9d2e-3c0f5b9b1a01","session_id":"0b8a8f4e-4c44-4a39-9d2e-3c0f5b9b1a02","model_ref":"m","engine":"llamacpp","prompt":"Hi","max_tokens":16}`
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/tasks", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer sk-x")
	req.Header.Set("Accept", "text/event-stream")
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	_, readErr := all.ReadFrom(res.Body) // bounded by client.Timeout
	res.Body.Close()
	if n := strings.Count(all.String(), "event: token"); n != 16 || !strings.Contains(all.String(), "event: end") {
		t.Fatalf("stream had %d tokens (read error %v):\n%s", n, readErr, all.String())
	}
	// SIGHUP re-reads --config (the --listen override stands): a new
	// control key works once applied; an invalid file changes nothing.
	code := func(key string) int {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/replicasets", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := client.Do(req)
		if err != nil {
			return 0
		}
		res.Body.Close()
		return res.StatusCode
	}
	if c := code("sk-y"); c != 403 {
		t.Fatalf("unknown key before the reload: %d", c)
	}
	orig, _ := os.ReadFile(cfg)
	withKey := strings.Replace(string(orig), "keys: [ { key: sk-x, tenant: a, roles: [data] } ]",
		"keys: [ { key: sk-x, tenant: a, roles: [data] }, { key: sk-y, tenant: a, roles: [control] } ]", 1)
	if err := os.WriteFile(cfg, []byte(withKey), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(10*time.Second, func() bool { return code("sk-y") == 200 })
	if c := code("sk-y"); c != 200 {
		t.Fatalf("new key after SIGHUP: %d", c)
	}
	if err := os.WriteFile(cfg, []byte("pools: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// Wait for orchd to refuse the file before SIGTERM, which it might
	// otherwise take first.
	waitFor(10*time.Second, func() bool { return strings.Contains(stderr.String(), `SIGHUP: config not applied`) })
	if c := code("sk-y"); c != 200 {
		t.Fatalf("an invalid file changed the running config: %d", c)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("orchd exit: %v (context: %v)\nstderr:\n%s", waitErr, ctx.Err(), stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("orchd did not exit within 30s of SIGTERM; stderr:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), `SIGHUP: config reloaded`) || !strings.Contains(stderr.String(), `SIGHUP: config not applied`) {
		t.Fatalf("no SIGHUP logs:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), `"msg":"orchd stopped"`) {
		t.Fatalf("no stop log:\n%s", stderr.String())
	}
}

// exitedErr describes whether the process Wait watches has ended: its Wait
// error, or "no" while it runs.
func exitedErr(exited <-chan struct{}, waitErr *error) string {
	select {
	case <-exited:
		return fmt.Sprintf("yes, %v", *waitErr)
	default:
		return "no"
	}
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer = syncbuf.Buffer
