package gatewaytest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// BrowserBound bounds a browser started by Browser.
const BrowserBound = 60 * time.Second

// fixedChromium is where Chromium is looked for when it is not in PATH.
var fixedChromium = "/usr/bin/chromium"

// Chromium returns the browser's path: `chromium` in PATH, else
// /usr/bin/chromium. With ORCH_SKIP_BROWSER=1 it skips the test; a missing
// browser fails it (the ops page is part of the product and `make test`
// installs Chromium). Call it first to skip or fail before starting
// anything.
func Chromium(t testing.TB) string {
	t.Helper()
	if os.Getenv("ORCH_SKIP_BROWSER") == "1" {
		t.Skip("ORCH_SKIP_BROWSER=1: headless browser test skipped")
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if _, err := os.Stat(fixedChromium); err == nil {
		return fixedChromium
	}
	t.Fatal("chromium not found (neither `chromium` in PATH nor " + fixedChromium + "): the headless ops-page test needs it. " +
		"`make test` installs it (apt-get install -y chromium); or set ORCH_SKIP_BROWSER=1 to skip this test")
	return ""
}

// Browser starts headless Chromium (see Chromium) with a fresh profile in
// a temp dir, under parent and bounded by BrowserBound. cancel closes the
// browser and waits for its process to exit.
func Browser(t testing.TB, parent context.Context) (browser context.Context, cancel context.CancelFunc) {
	t.Helper()
	exe := Chromium(t)
	bounded, cancelBound := context.WithTimeout(parent, BrowserBound)
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
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(bounded, opts...)
	ctx, cancelBrowser := chromedp.NewContext(allocCtx)
	cancel = func() {
		cancelBrowser()
		cancelAlloc() // waits for the process to exit
		cancelBound()
	}
	if err := chromedp.Do(ctx); err != nil { // start the browser now
		cancel()
		t.Fatalf("start chromium %s: %v", exe, err)
	}
	return ctx, cancel
}

// Tab opens a tab of browser in a fresh browser context (its own cookie
// jar) and collects its console: console returns the messages so far;
// closeTab closes the tab and waits for the collector to end.
func Tab(t testing.TB, browser context.Context) (tab context.Context, console func() []chromedp.ConsoleMessage, closeTab func()) {
	t.Helper()
	tab, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	if err := chromedp.Do(tab); err != nil {
		cancel()
		t.Fatalf("open tab: %v", err)
	}
	var (
		mu   sync.Mutex
		msgs []chromedp.ConsoleMessage
	)
	messages := chromedp.Console(tab)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
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
	return tab, console, func() { cancel(); <-done }
}

// CheckConsole reports every uncaught exception in msgs and every console
// error that expected (nil: none) does not admit.
func CheckConsole(t testing.TB, msgs []chromedp.ConsoleMessage, expected func(chromedp.ConsoleMessage) bool) {
	t.Helper()
	for _, m := range msgs {
		if m.IsException() || (m.Type == chromedp.ConsoleError && (expected == nil || !expected(m))) {
			t.Errorf("browser console: %s (source %q, %s:%d)", m, m.Source, m.URL, m.Line)
		}
	}
}

// WaitJS polls the JavaScript expression in the page every 25 ms until it
// is truthy, failing the test after within.
func WaitJS(t testing.TB, ctx context.Context, what, expr string, within time.Duration) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(within))); err != nil {
		t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

// Eval evaluates the JavaScript expression in the page.
func Eval[T any](t testing.TB, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// Screenshot takes a full-page PNG of the tab and writes it as name into
// the test's temp dir and, when UI_SCREENSHOT_DIR is set, there too. It
// returns the PNG.
func Screenshot(t testing.TB, tab context.Context, name string) []byte {
	t.Helper()
	png, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
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
	return png
}
