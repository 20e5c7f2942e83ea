package ui_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
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

// post sends a control request with the env's key and returns the status
// and body.
func post(t *testing.T, env *gatewaytest.Env, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, env.URL+path, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+env.Key)
	req.Header.Set("Content-Type", "application/json")
	res, err := env.Client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("POST %s: read body: %v", path, err)
	}
	return res.StatusCode, string(b)
}

// TestE2EModelsOnOpsPage registers the pool's model in the real gateway's
// catalog while the page is open, verifies its artifact and moves it
// through its lifecycle; the Models panel follows each step from the event
// feed, without a reload.
func TestE2EModelsOnOpsPage(t *testing.T) {
	gatewaytest.Chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fakes := gatewaytest.NewFakes(t)
	fakes.Start("r0", fake.Options{})
	env := gatewaytest.Start(t, gatewaytest.PoolYAML(e2eKey, e2ePool, fakes.URL("r0")), gatewaytest.Options{Key: e2eKey, Fakes: fakes})
	modelID := env.Config.Pools[0].Model

	artifact := []byte("GGUF fake weights of " + modelID + "\n")
	ref := filepath.Join(t.TempDir(), "model.gguf")
	if err := os.WriteFile(ref, artifact, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(artifact)
	digest := "sha256:" + hex.EncodeToString(sum[:])

	browser, closeBrowser := gatewaytest.Browser(t, ctx)
	defer closeBrowser()
	tab, console, closeTab := gatewaytest.Tab(t, browser)
	defer closeTab()
	if err := chromedp.Do(tab, chromedp.Navigate(env.URL+"/ui#key="+e2eKey)); err != nil {
		t.Fatalf("open /ui: %v", err)
	}
	gatewaytest.WaitJS(t, tab, "#conn live", `document.getElementById('conn').dataset.state === 'live'`, 15*time.Second)
	gatewaytest.WaitJS(t, tab, "the empty catalog",
		`!!document.querySelector('#models .models-empty') && document.getElementById('trust-policy').dataset.policy === 'permissive'`, 15*time.Second)
	if _, err := chromedp.Run(tab, chromedp.Evaluate[bool](`window.__e2eMarker = 'kept'; true`)); err != nil {
		t.Fatalf("set the window marker: %v", err)
	}

	rowSel := `#models tr[data-model="` + modelID + `"]`
	if code, body := post(t, env, "/v1/catalog/models", fmt.Sprintf(`{"id": %q, "ref": %q, "digest": %q}`, modelID, ref, digest)); code != http.StatusCreated {
		t.Fatalf("register: %d %s", code, body)
	}
	gatewaytest.WaitJS(t, tab, "the registered model in Draft",
		`!!document.querySelector('`+rowSel+`[data-state="Draft"] td.verification[data-result="none"]')`, 15*time.Second)
	if got := gatewaytest.Eval[[]string](t, tab, `(() => { const td = document.querySelector('`+rowSel+` td.digest'); return [td.textContent, td.title]; })()`); len(got) != 2 || got[0] != digest[7:19] || got[1] != digest {
		t.Errorf("digest cell = %q, want %q titled %q", got, digest[7:19], digest)
	}

	if code, body := post(t, env, "/v1/catalog/models/"+modelID+"/verify", ""); code != http.StatusOK {
		t.Fatalf("verify: %d %s", code, body)
	}
	gatewaytest.WaitJS(t, tab, "the passed verification",
		`(() => { const td = document.querySelector('`+rowSel+` td.verification[data-result="pass"]');
		  return !!td && td.textContent.startsWith('pass ok') && !!td.querySelector('time'); })()`, 15*time.Second)

	for _, step := range []struct{ body, state string }{
		{`{"state": "Active"}`, "Active"},
		{`{"state": "Deprecated", "deadline_ms": 3600000}`, "Deprecated"},
	} {
		if code, body := post(t, env, "/v1/catalog/models/"+modelID+"/state", step.body); code != http.StatusOK {
			t.Fatalf("state %s: %d %s", step.state, code, body)
		}
		gatewaytest.WaitJS(t, tab, "the model shown "+step.state,
			`!!document.querySelector('`+rowSel+`[data-state="`+step.state+`"]')`, 15*time.Second)
	}
	if !gatewaytest.Eval[bool](t, tab, `document.querySelector('`+rowSel+`').classList.contains('model-warn') &&
		!!document.querySelector('`+rowSel+` td.sessions-until time')`) {
		t.Error("the deprecated model is not warned or lacks its sessions deadline")
	}
	evs := gatewaytest.Eval[[]string](t, tab, `[...document.querySelectorAll('#events li[data-model]')].map((li) => li.dataset.type + ' ' + li.querySelector('.ev-what').textContent).reverse()`)
	want := []string{
		"model_state " + modelID + ": registered (Draft)",
		"model_verification " + modelID + ": verified (ok)",
		"model_state " + modelID + ": Draft → Active",
		"model_state " + modelID + ": Active → Deprecated, sessions may continue for 1 h",
	}
	if strings.Join(evs, "\n") != strings.Join(want, "\n") {
		t.Errorf("model events listed:\n%s\nwant:\n%s", strings.Join(evs, "\n"), strings.Join(want, "\n"))
	}
	if got := gatewaytest.Eval[string](t, tab, `window.__e2eMarker`); got != "kept" {
		t.Errorf("window marker = %q: the page was reloaded", got)
	}
	gatewaytest.Screenshot(t, tab, "ui-e2e-models.png")
	gatewaytest.CheckConsole(t, console(), nil)
}
