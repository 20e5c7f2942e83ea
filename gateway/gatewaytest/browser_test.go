package gatewaytest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

func TestChromium(t *testing.T) {
	// A stand-in executable called chromium, in a directory of its own.
	inPath := t.TempDir()
	exe := filepath.Join(inPath, "chromium")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	for _, tc := range []struct {
		name       string
		skip, path string
		fixed      string // fixedChromium
		want       string // the path returned, "" when none
		skipped    bool
		fatal      string // part of the fatal message
	}{
		// ORCH_SKIP_BROWSER=1 skips even with a browser at hand.
		{name: "skip", skip: "1", path: inPath, fixed: exe, skipped: true},
		// PATH comes first.
		{name: "in PATH", path: inPath, fixed: filepath.Join(empty, "none"), want: exe},
		// Then the fixed place.
		{name: "fixed place", path: empty, fixed: exe, want: exe},
		// Nowhere: the test fails and says how to get it or skip it.
		{name: "missing", path: empty, fixed: filepath.Join(empty, "none"), fatal: "`make test` installs it (apt-get install -y chromium); or set ORCH_SKIP_BROWSER=1"},
		// Only "1" skips.
		{name: "skip=0 and missing", skip: "0", path: empty, fixed: filepath.Join(empty, "none"), fatal: "chromium not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("ORCH_SKIP_BROWSER", tc.skip)
			t.Setenv("PATH", tc.path)
			defer func(old string) { fixedChromium = old }(fixedChromium)
			fixedChromium = tc.fixed
			rec := &recorder{TB: t}
			var got string
			rec.run(func(tb testing.TB) { got = Chromium(tb) })
			if got != tc.want || (rec.skipped != "") != tc.skipped || !strings.Contains(rec.fatal, tc.fatal) || (tc.fatal == "") != (rec.fatal == "") {
				t.Errorf("Chromium = %q, skipped %q, fatal %q; want %q, skipped %v, fatal with %q", got, rec.skipped, rec.fatal, tc.want, tc.skipped, tc.fatal)
			}
		})
	}
}

const testPage = `data:text/html,<!doctype html><title>gatewaytest</title><p id="p">hello</p>`

func TestBrowser(t *testing.T) {
	Chromium(t) // skip or fail before starting anything
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	browser, closeBrowser := Browser(t, ctx)
	defer closeBrowser()
	tab, console, closeTab := Tab(t, browser)
	defer closeTab()
	if err := chromedp.Do(tab, chromedp.Navigate(testPage)); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	WaitJS(t, tab, "the page loaded", `document.readyState === 'complete'`, 15*time.Second)
	if got := Eval[string](t, tab, `document.getElementById('p').textContent`); got != "hello" {
		t.Errorf("#p = %q, want hello", got)
	}
	if got := Eval[int](t, tab, `window.innerWidth`); got != 1280 {
		t.Errorf("window width %d, want 1280", got)
	}

	t.Run("WaitJS fails after within", func(t *testing.T) {
		rec := &recorder{TB: t}
		rec.run(func(tb testing.TB) { WaitJS(tb, tab, "never", `false`, 100*time.Millisecond) })
		if !strings.Contains(rec.fatal, "waiting for never (false)") {
			t.Errorf("fatal = %q", rec.fatal)
		}
	})

	t.Run("console", func(t *testing.T) {
		Eval[bool](t, tab, `console.log('gt-log'); console.error('gt-error'); setTimeout(() => { throw new Error('gt-throw') }); true`)
		var msgs []chromedp.ConsoleMessage
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			msgs = console()
			if n := len(msgs); n >= 3 || time.Now().After(deadline) {
				break
			}
		}
		// The error and the exception are reported; the log is not.
		rec := &recorder{TB: t}
		CheckConsole(rec, msgs, nil)
		if len(rec.errors) != 2 || !strings.Contains(rec.errors[0], "error: gt-error") || !strings.Contains(rec.errors[1], "gt-throw") {
			t.Errorf("CheckConsole(nil) reported %q from %v", rec.errors, msgs)
		}
		// expected admits errors, never exceptions.
		rec = &recorder{TB: t}
		CheckConsole(rec, msgs, func(m chromedp.ConsoleMessage) bool {
			return m.Text == "gt-error" || strings.Contains(m.Text, "gt-throw")
		})
		if len(rec.errors) != 1 || !strings.Contains(rec.errors[0], "gt-throw") {
			t.Errorf("CheckConsole(admit all) reported %q", rec.errors)
		}
	})

	t.Run("Screenshot", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "shots")
		t.Setenv("UI_SCREENSHOT_DIR", dir)
		png := Screenshot(t, tab, "page.png")
		saved, err := os.ReadFile(filepath.Join(dir, "page.png"))
		if err != nil || !bytes.Equal(saved, png) || !bytes.HasPrefix(png, []byte("\x89PNG")) {
			t.Errorf("UI_SCREENSHOT_DIR holds %d bytes (err %v); returned %d", len(saved), err, len(png))
		}
	})
}
