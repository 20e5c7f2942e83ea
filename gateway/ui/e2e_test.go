package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/llamacpp"
	"github.com/llama-orch/llama-orch/gateway"
	"github.com/llama-orch/llama-orch/gateway/config"
)

// The end-to-end check of the ops page (the "Done means"): the real
// gateway in front of two llama.cpp fakes, the real page in headless
// Chromium. r1's breaker is tripped for real — r1 is restarted on its port
// answering every completion with 500 while its health stays good, tasks are
// submitted until two of them failed on it — and the page must show the
// breaker open without a reload, list the breaker event, then show it closed
// again once a healthy r1 is back on the same port.
//
// Why not simply stop r1 and submit tasks: with health probes every 50 ms the
// gateway marks a stopped replica unready before a task reaches it, so no
// request fails there and the breaker never trips. The failing-but-healthy r1
// trips it deterministically; r1 is then stopped at once (well within
// open_ms), so the half-open trials (health probes) fail and the breaker
// stays open until the healthy restart.

const (
	e2eKey  = "sk-e2e-control"
	e2ePool = "llama-e2e"
	e2eOpen = time.Second // breaker.open_ms below
)

// e2eConfig is the gateway config; %s are the two replica URLs.
const e2eConfig = `
auth:
  keys:
    - { key: ` + e2eKey + `, tenant: ops, roles: [data, control] }
shutdown_grace_ms: 1000
breaker: { consecutive_failures: 2, open_ms: 1000 }
health: { interval_ms: 50, timeout_ms: 1000, healthy_after: 1, unhealthy_after: 2 }
pools:
  - id: ` + e2ePool + `
    engine: llamacpp
    model: tiny-llama
    ctx: 4096
    queue: { capacity: 16, full_policy: reject }
    timeouts: { first_token_ms: 5000, idle_ms: 5000, wall_ms: 20000 }
    replicas:
      - { id: r0, url: %q }
      - { id: r1, url: %q }
`

// e2eEnv is a running gateway and its two fake replicas.
type e2eEnv struct {
	t    *testing.T
	base string // gateway base URL
	hc   *http.Client

	mu     sync.Mutex
	engine map[string]*fake.Server // current fake per replica id
	addr   map[string]string       // fixed loopback address per replica id
}

// startE2E starts the fakes and the gateway and waits until both replicas
// are ready; cleanup shuts the gateway down, then closes the fakes.
func startE2E(t *testing.T) *e2eEnv {
	t.Helper()
	e := &e2eEnv{t: t, engine: map[string]*fake.Server{}, addr: map[string]string{},
		hc: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}}
	t.Cleanup(func() {
		e.hc.CloseIdleConnections()
		e.mu.Lock()
		defer e.mu.Unlock()
		for id, f := range e.engine {
			if err := f.Close(); err != nil {
				t.Errorf("close fake %s: %v", id, err)
			}
		}
	})
	for _, id := range []string{"r0", "r1"} {
		e.startEngine(id, "127.0.0.1:0", fake.Options{})
	}
	cfg, problems, err := config.Check([]byte(fmt.Sprintf(e2eConfig, "http://"+e.addr["r0"], "http://"+e.addr["r1"])), config.ValidateOptions{})
	if err != nil || config.HasErrors(problems) {
		t.Fatalf("config: %v %v", err, problems)
	}
	srv, err := gateway.New(cfg, gateway.Options{
		NewAdapter: func(_ config.Pool, rc config.Replica) (engines.Adapter, error) {
			return llamacpp.New(rc.URL, llamacpp.Options{})
		},
		Logger:            zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)),
		KeepAliveInterval: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	e.base = "http://" + ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() { // runs before the fakes close
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("gateway Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("gateway Serve: %v", err)
		}
	})
	e.waitReplica("both replicas ready and closed", 10*time.Second, func(r map[string]e2eReplica) bool {
		return r["r0"].State == "ready" && r["r0"].Breaker == "closed" && r["r1"].State == "ready" && r["r1"].Breaker == "closed"
	})
	return e
}

// startEngine (re)starts replica id's fake on addr ("127.0.0.1:0" the first
// time, then the same address), closing the one it replaces.
func (e *e2eEnv) startEngine(id, addr string, o fake.Options) {
	e.t.Helper()
	e.stopEngine(id)
	f, err := fake.New(o)
	if err != nil {
		e.t.Fatalf("fake.New: %v", err)
	}
	// The port was just freed by this process; retry briefly in case the
	// kernel has not released it yet.
	for i := 0; ; i++ {
		if err = f.Start(addr); err == nil || i == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		e.t.Fatalf("start fake %s on %s: %v", id, addr, err)
	}
	e.mu.Lock()
	e.engine[id], e.addr[id] = f, f.Addr()
	e.mu.Unlock()
}

// stopEngine closes replica id's fake (its address stays reserved for a restart).
func (e *e2eEnv) stopEngine(id string) {
	e.t.Helper()
	e.mu.Lock()
	f := e.engine[id]
	delete(e.engine, id)
	e.mu.Unlock()
	if f != nil {
		if err := f.Close(); err != nil {
			e.t.Errorf("close fake %s: %v", id, err)
		}
	}
}

// e2eReplica is the part of a /v1/replicasets replica the test reads.
type e2eReplica struct {
	ID      string `json:"id"`
	URL     string `json:"url"`
	State   string `json:"state"`
	Breaker string `json:"breaker"`
}

// replicas reads GET /v1/replicasets with the control key.
func (e *e2eEnv) replicas() (map[string]e2eReplica, error) {
	req, err := http.NewRequest(http.MethodGet, e.base+"/v1/replicasets", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+e2eKey)
	res, err := e.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/replicasets: %d %s", res.StatusCode, body)
	}
	var v struct {
		ReplicaSets []struct {
			PoolID   string       `json:"pool_id"`
			Replicas []e2eReplica `json:"replicas"`
		} `json:"replicasets"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("GET /v1/replicasets: %w: %s", err, body)
	}
	out := map[string]e2eReplica{}
	for _, s := range v.ReplicaSets {
		if s.PoolID == e2ePool {
			for _, r := range s.Replicas {
				out[r.ID] = r
			}
		}
	}
	return out, nil
}

// waitReplica polls /v1/replicasets until cond holds (bounded by within).
func (e *e2eEnv) waitReplica(what string, within time.Duration, cond func(map[string]e2eReplica) bool) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	var last map[string]e2eReplica
	for time.Now().Before(deadline) {
		r, err := e.replicas()
		if err == nil && cond(r) {
			return
		}
		last = r
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("timed out after %s waiting for %s; last replicas: %+v", within, what, last)
}

// submit runs one small task to its end (POST /v1/tasks, streamed).
func (e *e2eEnv) submit(ctx context.Context) error {
	body, _ := json.Marshal(map[string]any{"task_id": uuid.NewString(), "session_id": uuid.NewString(),
		"model_ref": "tiny-llama", "engine": "llamacpp", "prompt": "Hello there", "max_tokens": 4})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.base+"/v1/tasks", strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+e2eKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	res, err := e.hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode != http.StatusOK {
		err = fmt.Errorf("POST /v1/tasks: %d %s", res.StatusCode, b)
	}
	return err
}

// tripR1 opens r1's breaker through real failed requests: r1 comes back on
// its port failing every completion (FailStart500) but passing health;
// tasks are submitted until /v1/replicasets shows the breaker open; then r1
// is stopped, so the breaker's half-open trials fail and it stays open.
// It returns how many tasks it took.
func (e *e2eEnv) tripR1(ctx context.Context) int {
	e.t.Helper()
	e.startEngine("r1", e.addr["r1"], fake.Options{Fail: fake.FailStart500})
	e.waitReplica("r1 ready while failing completions", 10*time.Second, func(r map[string]e2eReplica) bool {
		return r["r1"].State == "ready" && r["r1"].Breaker == "closed"
	})
	for n := 1; n <= 100; n++ {
		if err := e.submit(ctx); err != nil {
			e.t.Fatalf("task %d: %v", n, err)
		}
		r, err := e.replicas()
		if err != nil {
			e.t.Fatalf("after task %d: %v", n, err)
		}
		if r["r1"].Breaker == "open" {
			e.stopEngine("r1")
			return n
		}
	}
	e.t.Fatal("r1's breaker did not open after 100 tasks (each has about even odds of going to r1)")
	return 0
}

// e2eChromium finds the browser under the same rules as the package's own
// browser test: ORCH_SKIP_BROWSER=1 skips, a missing browser fails.
func e2eChromium(t *testing.T) string {
	t.Helper()
	if os.Getenv("ORCH_SKIP_BROWSER") == "1" {
		t.Skip("ORCH_SKIP_BROWSER=1: headless browser test skipped")
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	t.Fatal("chromium not found (neither `chromium` in PATH nor /usr/bin/chromium): the headless ops-page test needs it. " +
		"`make test` installs it (apt-get install -y chromium); or set ORCH_SKIP_BROWSER=1 to skip this test")
	return ""
}

// e2eBrowser starts headless Chromium (the options of browser_test.go) under
// parent and opens one tab collecting its console. closeAll closes the tab
// and the browser and waits for the process to exit.
func e2eBrowser(t *testing.T, parent context.Context) (tab context.Context, console func() []chromedp.ConsoleMessage, closeAll func()) {
	t.Helper()
	exe := e2eChromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(parent, opts...)
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	if err := chromedp.Do(browser); err != nil {
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("start chromium %s: %v", exe, err)
	}
	tab, cancelTab := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	if err := chromedp.Do(tab); err != nil {
		cancelTab()
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("open tab: %v", err)
	}
	var (
		mu   sync.Mutex
		msgs []chromedp.ConsoleMessage
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range chromedp.Console(tab) {
			if err != nil {
				return
			}
			mu.Lock()
			msgs = append(msgs, m)
			mu.Unlock()
		}
	}()
	console = func() []chromedp.ConsoleMessage {
		mu.Lock()
		defer mu.Unlock()
		return append([]chromedp.ConsoleMessage(nil), msgs...)
	}
	return tab, console, func() {
		cancelTab()
		<-done
		cancelBrowser()
		cancelAlloc() // waits for the process to exit
	}
}

// e2eWait polls a JavaScript expression in the page until it is truthy.
func e2eWait(t *testing.T, ctx context.Context, what, expr string, within time.Duration) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(within))); err != nil {
		t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

func e2eEval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// e2eSavePNG writes the screenshot into the test's temp dir and, when
// UI_SCREENSHOT_DIR is set, there too.
func e2eSavePNG(t *testing.T, name string, png []byte) {
	t.Helper()
	if len(png) < 8 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	if err := os.WriteFile(filepath.Join(t.TempDir(), name), png, 0o644); err != nil {
		t.Fatalf("write screenshot: %v", err)
	}
	if dir := os.Getenv("UI_SCREENSHOT_DIR"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("UI_SCREENSHOT_DIR: %v", err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatalf("copy screenshot to UI_SCREENSHOT_DIR: %v", err)
		}
		t.Logf("screenshot: %s", p)
	}
}

// row is the selector of replica id's row in the e2e pool.
func row(id string) string {
	return `tr[data-pool="` + e2ePool + `"][data-replica="` + id + `"]`
}

func TestE2EBreakerOnOpsPage(t *testing.T) {
	e2eChromium(t) // skip or fail before starting anything
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	env := startE2E(t)
	tab, console, closeBrowser := e2eBrowser(t, ctx)
	defer closeBrowser()

	// Sign in through the fragment; both replicas ready and closed.
	if err := chromedp.Do(tab, chromedp.Navigate(env.base+"/ui#key="+e2eKey)); err != nil {
		t.Fatalf("open /ui: %v", err)
	}
	e2eWait(t, tab, "both rows ready and closed",
		`!!document.querySelector('`+row("r0")+`[data-state="ready"][data-breaker="closed"]') &&
		 !!document.querySelector('`+row("r1")+`[data-state="ready"][data-breaker="closed"]')`, 20*time.Second)
	// Live means the event stream is open, so the breaker event is not missed.
	e2eWait(t, tab, "#conn live", `document.getElementById('conn').dataset.state === 'live'`, 15*time.Second)
	if href := e2eEval[string](t, tab, `location.href`); strings.Contains(href, e2eKey) {
		t.Errorf("the key is still in the address bar: %q", href)
	}
	if _, err := chromedp.Run(tab, chromedp.Evaluate[bool](`window.__e2eMarker = 'kept'; true`)); err != nil {
		t.Fatalf("set the window marker: %v", err)
	}

	// Trip r1's breaker for real.
	n := env.tripR1(ctx)
	t.Logf("r1's breaker opened after %d tasks", n)

	// The page follows without a reload.
	e2eWait(t, tab, "r1 shown with its breaker open", `!!document.querySelector('[data-replica="r1"][data-breaker="open"]')`, 15*time.Second)
	e2eWait(t, tab, "the breaker event in the list",
		`(() => { const li = document.querySelector('#events li[data-type="breaker"][data-replica="r1"][data-to="open"]');
		  return !!li && li.dataset.pool === '`+e2ePool+`' && li.textContent.includes('closed → open'); })()`, 15*time.Second)
	if got := e2eEval[string](t, tab, `window.__e2eMarker`); got != "kept" {
		t.Fatalf("window marker = %q: the page was reloaded", got)
	}
	if got := e2eEval[string](t, tab, `document.querySelector('`+row("r0")+`').dataset.breaker`); got != "closed" {
		t.Errorf("r0's breaker shows %q, want closed (only r1 failed)", got)
	}
	shot, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	e2eSavePNG(t, "ui-e2e-breaker-open.png", shot)

	// r1 is down: the half-open trials fail, the breaker stays out of closed.
	// Give it at least one open period to prove it.
	time.Sleep(e2eOpen + 200*time.Millisecond)
	if r, err := env.replicas(); err != nil {
		t.Fatal(err)
	} else if r["r1"].Breaker == "closed" {
		t.Fatalf("r1's breaker closed while r1 is down: %+v", r["r1"])
	}

	// A healthy r1 on the same port: the next trial (a health probe after
	// open_ms) closes the breaker, and the page shows it.
	env.startEngine("r1", env.addr["r1"], fake.Options{})
	e2eWait(t, tab, "r1 shown closed and ready again",
		`!!document.querySelector('`+row("r1")+`[data-breaker="closed"][data-state="ready"]')`, 15*time.Second)
	e2eWait(t, tab, "the closing breaker event in the list",
		`!!document.querySelector('#events li[data-type="breaker"][data-replica="r1"][data-to="closed"]')`, 15*time.Second)
	if got := e2eEval[string](t, tab, `window.__e2eMarker`); got != "kept" {
		t.Errorf("window marker = %q at the end: the page was reloaded", got)
	}
	if got := e2eEval[string](t, tab, `document.getElementById('conn').dataset.state`); got != "live" {
		t.Errorf("#conn = %q at the end, want live", got)
	}
	if r, err := env.replicas(); err != nil || r["r1"].Breaker != "closed" {
		t.Errorf("the API disagrees with the page: r1 = %+v (err %v)", r["r1"], err)
	}
	for _, m := range console() {
		if m.IsException() || m.Type == chromedp.ConsoleError {
			t.Errorf("browser console: %s (source %q, %s:%d)", m, m.Source, m.URL, m.Line)
		}
	}
}
