package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines/fake"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "orchd.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
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
	code, _, stderr := runCLI("validate", "--config", p)
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
	code, stdout, stderr := runCLI("validate", "--config", p)
	if code != 0 || !strings.Contains(stdout, "ok") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	if code, _, _ := runCLI("validate"); code != 2 {
		t.Fatalf("validate without --config: exit %d, want 2", code)
	}
	if code, _, _ := runCLI("validate", "--config", filepath.Join(t.TempDir(), "missing.yaml")); code != 1 {
		t.Fatalf("missing file: exit %d, want 1", code)
	}
}

// TestSchema: `orchd schema` prints a JSON Schema documenting the keys.
func TestSchema(t *testing.T) {
	code, stdout, stderr := runCLI("schema")
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
	if code, _, _ := runCLI("--nope"); code != 2 {
		t.Fatalf("unknown flag: exit %d", code)
	}
	if code, _, _ := runCLI("--listen", "nohostport"); code != 2 {
		t.Fatalf("bad --listen: exit %d", code)
	}
	if code, _, _ := runCLI("--config", writeFile(t, "pools: []\n")); code != 1 {
		t.Fatalf("invalid config: exit %d", code)
	}
}

// TestServeAndSIGTERM builds orchd, runs it with --config and --listen in
// front of two fakes, streams a task and stops it with SIGTERM: exit 0.
func TestServeAndSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "orchd")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
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

	cmd := exec.Command(bin, "--config", cfg, "--listen", addr)
	var stderr syncBuffer // read while orchd runs
	cmd.Stderr = &stderr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() //nolint:errcheck
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if !strings.Contains(line, addr) {
		t.Fatalf("first line %q does not name %s", line, addr)
	}
	base := "http://" + addr
	ready := false
	for i := 0; i < 300 && !ready; i++ {
		if res, err := http.Get(base + "/readyz"); err == nil {
			ready = res.StatusCode == 200
			res.Body.Close()
		}
		if !ready {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if !ready {
		t.Fatalf("orchd never ready; stderr:\n%s", stderr.String())
	}
	body := `{"task_id":"0b8a8f4e-4c44-4a39-9d2e-3c0f5b9b1a01","session_id":"0b8a8f4e-4c44-4a39-9d2e-3c0f5b9b1a02","model_ref":"m","engine":"llamacpp","prompt":"Hi","max_tokens":16}`
	req, _ := http.NewRequest("POST", base+"/v1/tasks", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer sk-x")
	req.Header.Set("Accept", "text/event-stream")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	all.ReadFrom(res.Body) //nolint:errcheck
	res.Body.Close()
	if n := strings.Count(all.String(), "event: token"); n != 16 || !strings.Contains(all.String(), "event: end") {
		t.Fatalf("stream had %d tokens:\n%s", n, all.String())
	}
	// SIGHUP re-reads --config (the --listen override stands): a new
	// control key works once applied; an invalid file changes nothing.
	code := func(key string) int {
		req, _ := http.NewRequest("GET", base+"/v1/replicasets", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := http.DefaultClient.Do(req)
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
	for i := 0; i < 250 && code("sk-y") != 200; i++ {
		time.Sleep(20 * time.Millisecond)
	}
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
	for i := 0; i < 250 && !strings.Contains(stderr.String(), `SIGHUP: config not applied`); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if c := code("sk-y"); c != 200 {
		t.Fatalf("an invalid file changed the running config: %d", c)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("orchd exit: %v\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("orchd did not exit after SIGTERM")
	}
	if !strings.Contains(stderr.String(), `SIGHUP: config reloaded`) || !strings.Contains(stderr.String(), `SIGHUP: config not applied`) {
		t.Fatalf("no SIGHUP logs:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), `"msg":"orchd stopped"`) {
		t.Fatalf("no stop log:\n%s", stderr.String())
	}
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
