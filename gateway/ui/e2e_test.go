package ui_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/gatewaytest"
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
)

// startE2E starts the fakes (named after the replica ids) and the gateway
// and waits until both replicas are ready; cleanup shuts the gateway down,
// then closes the fakes.
func startE2E(t *testing.T) (*gatewaytest.Env, *gatewaytest.Fakes) {
	t.Helper()
	fakes := gatewaytest.NewFakes(t) // first, so its cleanup runs last
	for _, id := range []string{"r0", "r1"} {
		fakes.Start(id, fake.Options{})
	}
	yaml := gatewaytest.PoolYAML(e2eKey, e2ePool, fakes.URL("r0"), fakes.URL("r1")) // health every 50 ms, breaker after 2 failures
	env := gatewaytest.Start(t, yaml, gatewaytest.Options{Key: e2eKey, Fakes: fakes})
	env.WaitHealthy(e2ePool, "r0", "r1")
	return env, fakes
}

// row is the selector of replica id's row in the e2e pool.
func row(id string) string {
	return `tr[data-pool="` + e2ePool + `"][data-replica="` + id + `"]`
}

func TestE2EBreakerOnOpsPage(t *testing.T) {
	gatewaytest.Chromium(t) // skip or fail before starting anything
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	env, fakes := startE2E(t)
	browser, closeBrowser := gatewaytest.Browser(t, ctx)
	defer closeBrowser()
	tab, console, closeTab := gatewaytest.Tab(t, browser)
	defer closeTab()

	// Sign in through the fragment; both replicas ready and closed.
	if err := chromedp.Do(tab, chromedp.Navigate(env.URL+"/ui#key="+e2eKey)); err != nil {
		t.Fatalf("open /ui: %v", err)
	}
	gatewaytest.WaitJS(t, tab, "both rows ready and closed",
		`!!document.querySelector('`+row("r0")+`[data-state="ready"][data-breaker="closed"]') &&
		 !!document.querySelector('`+row("r1")+`[data-state="ready"][data-breaker="closed"]')`, 20*time.Second)
	// Live means the event stream is open, so the breaker event is not missed.
	gatewaytest.WaitJS(t, tab, "#conn live", `document.getElementById('conn').dataset.state === 'live'`, 15*time.Second)
	if href := gatewaytest.Eval[string](t, tab, `location.href`); strings.Contains(href, e2eKey) {
		t.Errorf("the key is still in the address bar: %q", href)
	}
	if _, err := chromedp.Run(tab, chromedp.Evaluate[bool](`window.__e2eMarker = 'kept'; true`)); err != nil {
		t.Fatalf("set the window marker: %v", err)
	}

	// Trip r1's breaker for real.
	n := env.TripBreaker(ctx, e2ePool, "r1")
	t.Logf("r1's breaker opened after %d tasks", n)

	// The page follows without a reload.
	gatewaytest.WaitJS(t, tab, "r1 shown with its breaker open", `!!document.querySelector('[data-replica="r1"][data-breaker="open"]')`, 15*time.Second)
	gatewaytest.WaitJS(t, tab, "the breaker event in the list",
		`(() => { const li = document.querySelector('#events li[data-type="breaker"][data-replica="r1"][data-to="open"]');
		  return !!li && li.dataset.pool === '`+e2ePool+`' && li.textContent.includes('closed → open'); })()`, 15*time.Second)
	if got := gatewaytest.Eval[string](t, tab, `window.__e2eMarker`); got != "kept" {
		t.Fatalf("window marker = %q: the page was reloaded", got)
	}
	if got := gatewaytest.Eval[string](t, tab, `document.querySelector('`+row("r0")+`').dataset.breaker`); got != "closed" {
		t.Errorf("r0's breaker shows %q, want closed (only r1 failed)", got)
	}
	gatewaytest.Screenshot(t, tab, "ui-e2e-breaker-open.png")

	// r1 is down: the half-open trials fail, the breaker stays out of closed.
	// Give it at least one open period to prove it.
	time.Sleep(gatewaytest.BreakerOpen + 200*time.Millisecond)
	if r, err := env.Replicas(e2ePool); err != nil {
		t.Fatal(err)
	} else if r["r1"].Breaker == "closed" {
		t.Fatalf("r1's breaker closed while r1 is down: %+v", r["r1"])
	}

	// A healthy r1 on the same port: the next trial (a health probe after
	// open_ms) closes the breaker, and the page shows it.
	fakes.Start("r1", fake.Options{})
	gatewaytest.WaitJS(t, tab, "r1 shown closed and ready again",
		`!!document.querySelector('`+row("r1")+`[data-breaker="closed"][data-state="ready"]')`, 15*time.Second)
	gatewaytest.WaitJS(t, tab, "the closing breaker event in the list",
		`!!document.querySelector('#events li[data-type="breaker"][data-replica="r1"][data-to="closed"]')`, 15*time.Second)
	if got := gatewaytest.Eval[string](t, tab, `window.__e2eMarker`); got != "kept" {
		t.Errorf("window marker = %q at the end: the page was reloaded", got)
	}
	if got := gatewaytest.Eval[string](t, tab, `document.getElementById('conn').dataset.state`); got != "live" {
		t.Errorf("#conn = %q at the end, want live", got)
	}
	if r, err := env.Replicas(e2ePool); err != nil || r["r1"].Breaker != "closed" {
		t.Errorf("the API disagrees with the page: r1 = %+v (err %v)", r["r1"], err)
	}
	gatewaytest.CheckConsole(t, console(), nil)
}
