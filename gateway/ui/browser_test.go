package ui_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"

	"github.com/llama-orch/llama-orch/gateway/gatewaytest"
	"github.com/llama-orch/llama-orch/gateway/ui"
)

// The browser test drives the real page in headless Chromium against
// fakeOrchd, a test double of the four endpoints the page uses
// (POST /v1/ui/session, GET /v1/replicasets, GET /v1/catalog/models,
// GET /v1/events) that follows the ops API contract: the session POST checks
// the Bearer key and sets the HttpOnly orchd_ui cookie; the GETs accept that
// cookie only. It is an
// external test (package ui_test) because gatewaytest, which starts the
// browser, imports the gateway, which imports this package.

const testKey = "sk-test"

// fakeOrchd is the test double. Its replica set is a value the test changes;
// its event feed sends what the test pushes.
type fakeOrchd struct {
	done chan struct{} // closed at cleanup: ends open event streams

	mu       sync.Mutex
	sets     map[string]any // the /v1/replicasets body
	catalog  map[string]any // the /v1/catalog/models body
	catGets  int            // GET /v1/catalog/models answered 200
	tokens   map[string]bool
	uris     []string // every request URI and Referer seen
	sessions int      // POST /v1/ui/session answered 204
	subs     map[chan string]struct{}
	seq      int
}

// replica and replicaSet build a body as the real gateway writes it.
func replica(id, state, breaker, lastErr string, inflight int) map[string]any {
	return map[string]any{
		"id": id, "url": "http://127.0.0.1:1809" + id[len(id)-1:], "state": state, "breaker": breaker,
		"inflight": inflight, "slots": 4, "engine_version": "llamacpp-b4000",
		"engine_load": map[string]int{"requests_processing": inflight, "requests_deferred": 0},
		"last_error":  lastErr,
	}
}

func replicaSet(replicas ...map[string]any) map[string]any {
	return map[string]any{"replicasets": []any{map[string]any{
		"pool_id": "llama-demo", "engine": "llamacpp", "engine_version": "llamacpp-b4000", "model": "llama-3-8b-q4",
		"ready": true, "draining": false, "queue_depth": 3,
		"queue":    map[string]any{"capacity": 100, "by_priority": map[string]int{"interactive": 2, "batch": 1}},
		"replicas": replicas,
		"slo":      map[string]any{"ttft_ms": map[string]float64{"p50": 41.5, "p95": 120, "p99": 180.25}},
	}}}
}

// catalogBody and model build a GET /v1/catalog/models body as the real
// gateway writes it (catalog.Entry); verification and sessionsUntil are
// optional.
func catalogBody(policy string, models ...map[string]any) map[string]any {
	if models == nil {
		models = []map[string]any{}
	}
	return map[string]any{"trust_policy": policy, "models": models}
}

func model(id, state, digest string, verification map[string]any, sessionsUntil string) map[string]any {
	created := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)
	m := map[string]any{
		"id": id, "ref": "https://models.example.internal/" + id + ".gguf?X-Amz-Signature=secret-sig", "state": state,
		"history":    []any{map[string]any{"from": "Draft", "to": state, "at": created}},
		"created_at": created, "updated_at": time.Now().UTC().Format(time.RFC3339Nano),
	}
	if digest != "" {
		m["digest"] = digest
	}
	if verification != nil {
		m["verification"] = verification
	}
	if sessionsUntil != "" {
		m["sessions_until"] = sessionsUntil
	}
	return m
}

func verification(result, reason, message string) map[string]any {
	return map[string]any{"at": time.Now().UTC().Format(time.RFC3339Nano), "result": result, "reason": reason,
		"resolved_digest": digestB, "bytes": 4_404_019_200, "message": message}
}

func (f *fakeOrchd) setCatalog(v map[string]any) {
	f.mu.Lock()
	f.catalog = v
	f.mu.Unlock()
}

func (f *fakeOrchd) catalogGets() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.catGets
}

func (f *fakeOrchd) setState(v map[string]any) {
	f.mu.Lock()
	f.sets = v
	f.mu.Unlock()
}

// push sends one ops event to every open stream.
func (f *fakeOrchd) push(typ string, fields map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	ev := map[string]any{"type": typ, "at": time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00")}
	for k, v := range fields {
		ev[k] = v
	}
	b, _ := json.Marshal(ev)
	frame := fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", f.seq, typ, b)
	for ch := range f.subs {
		select {
		case ch <- frame:
		default: // a stuck reader loses events, as with the real feed
		}
	}
}

func writeErr(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b, _ := json.Marshal(map[string]any{"code": code, "message": msg, "retriable": false})
	ctx.SetBody(b)
}

// authed reports whether the request carries a cookie the double issued,
// answering 401 when not.
func (f *fakeOrchd) authed(ctx *fasthttp.RequestCtx) bool {
	tok := string(ctx.Request.Header.Cookie("orchd_ui"))
	f.mu.Lock()
	ok := tok != "" && f.tokens[tok]
	f.mu.Unlock()
	if !ok {
		writeErr(ctx, fasthttp.StatusUnauthorized, "UNAUTHORIZED", "missing API key or session cookie")
	}
	return ok
}

func (f *fakeOrchd) handleSession(ctx *fasthttp.RequestCtx) {
	auth := string(ctx.Request.Header.Peek("Authorization"))
	switch {
	case auth == "":
		writeErr(ctx, fasthttp.StatusUnauthorized, "UNAUTHORIZED", "missing API key")
		return
	case auth != "Bearer "+testKey:
		writeErr(ctx, fasthttp.StatusForbidden, "FORBIDDEN", "unknown API key or missing control role")
		return
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	f.mu.Lock()
	f.tokens[tok] = true
	f.sessions++
	f.mu.Unlock()
	c := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(c)
	c.SetKey("orchd_ui")
	c.SetValue(tok)
	c.SetPath("/")
	c.SetHTTPOnly(true)
	c.SetSameSite(fasthttp.CookieSameSiteStrictMode)
	c.SetMaxAge(43200)
	ctx.Response.Header.SetCookie(c)
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

func (f *fakeOrchd) handleSets(ctx *fasthttp.RequestCtx) {
	if !f.authed(ctx) {
		return
	}
	f.mu.Lock()
	b, err := json.Marshal(f.sets)
	f.mu.Unlock()
	if err != nil {
		writeErr(ctx, 500, "INTERNAL", err.Error())
		return
	}
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetBody(b)
}

func (f *fakeOrchd) handleCatalog(ctx *fasthttp.RequestCtx) {
	if !f.authed(ctx) {
		return
	}
	f.mu.Lock()
	body := f.catalog
	if body == nil {
		body = catalogBody("permissive")
	}
	b, err := json.Marshal(body)
	f.catGets++
	f.mu.Unlock()
	if err != nil {
		writeErr(ctx, 500, "INTERNAL", err.Error())
		return
	}
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetBody(b)
}

func (f *fakeOrchd) handleEvents(ctx *fasthttp.RequestCtx) {
	if !f.authed(ctx) {
		return
	}
	ch := make(chan string, 128)
	f.mu.Lock()
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	ctx.SetContentType("text/event-stream")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer func() {
			f.mu.Lock()
			delete(f.subs, ch)
			f.mu.Unlock()
		}()
		hello, _ := json.Marshal(map[string]any{"type": "hello", "at": time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00")})
		if _, err := fmt.Fprintf(w, "event: hello\ndata: %s\n\n", hello); err != nil || w.Flush() != nil {
			return
		}
		ping := time.NewTicker(15 * time.Second)
		defer ping.Stop()
		for {
			var frame string
			select {
			case <-f.done:
				return
			case frame = <-ch:
			case <-ping.C:
				frame = ": ping\n\n"
			}
			if _, err := w.WriteString(frame); err != nil || w.Flush() != nil {
				return
			}
		}
	})
}

// startFakeOrchd serves Register's routes and the double on 127.0.0.1.
func startFakeOrchd(t *testing.T) (*fakeOrchd, string) {
	t.Helper()
	f := &fakeOrchd{done: make(chan struct{}), tokens: map[string]bool{}, subs: map[chan string]struct{}{}}
	r := router.New()
	ui.Register(r)
	r.POST("/v1/ui/session", f.handleSession)
	r.GET("/v1/replicasets", f.handleSets)
	r.GET("/v1/catalog/models", f.handleCatalog)
	r.GET("/v1/events", f.handleEvents)
	handler := func(ctx *fasthttp.RequestCtx) {
		f.mu.Lock()
		f.uris = append(f.uris, string(ctx.RequestURI()), string(ctx.Referer()))
		f.mu.Unlock()
		r.Handler(ctx)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := &fasthttp.Server{Handler: handler, ReadTimeout: 30 * time.Second, IdleTimeout: 5 * time.Second, NoDefaultDate: true, CloseOnShutdown: true}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		close(f.done)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.ShutdownWithContext(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		// fasthttp closes only the listeners its Serve registered: a Serve
		// that had not started yet would serve for ever.
		_ = ln.Close()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve still running 10 s after Shutdown")
		}
	})
	return f, "http://" + ln.Addr().String()
}

// authRefusal admits the console errors the scenario provokes on purpose:
// the network 401/403 answers to a wrong key.
func authRefusal(m chromedp.ConsoleMessage) bool {
	return m.Source == "network" && (strings.Contains(m.Text, "401") || strings.Contains(m.Text, "403"))
}

// run runs actions with a per-step bound, naming the step on failure.
func run(t *testing.T, ctx context.Context, step string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v", step, err)
	}
}

// waitJS waits until the expression is truthy.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	gatewaytest.WaitJS(t, ctx, what, expr, 15*time.Second)
}

const xssError = `<img src=x onerror="window.__xss=1"> refused`

// Two artifact digests of the models panel's scenario.
const (
	digestA = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	digestB = "sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
)

// quiet waits until the page has stopped reading the catalog (no new
// GET /v1/catalog/models for 800 ms, four debounce periods) and returns how
// many reads it made, so that a later read is known to have a later cause.
func (f *fakeOrchd) quiet(t *testing.T) int {
	t.Helper()
	n, since := f.catalogGets(), time.Now()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if m := f.catalogGets(); m != n {
			n, since = m, time.Now()
		} else if n > 0 && time.Since(since) >= 800*time.Millisecond {
			return n
		}
	}
	t.Fatalf("the page kept reading the catalog (or never did): %d reads", n)
	return 0
}

func TestBrowserOpsPage(t *testing.T) {
	api, base := startFakeOrchd(t)
	api.setState(replicaSet(
		replica("r0", "ready", "closed", xssError, 1),
		replica("r1", "ready", "closed", "", 0),
	))
	browser, closeBrowser := gatewaytest.Browser(t, context.Background())
	defer closeBrowser()

	t.Run("key form", func(t *testing.T) {
		ctx, console, closeTab := gatewaytest.Tab(t, browser)
		defer closeTab()
		// No cookie yet: the page asks for the key.
		run(t, ctx, "open /ui without a key", chromedp.Navigate(base+"/ui"), chromedp.WaitVisible("#login"))
		if got := gatewaytest.Eval[string](t, ctx, `document.getElementById('conn').textContent`); got != "signed out" {
			t.Errorf("#conn = %q before sign-in, want %q", got, "signed out")
		}
		// A wrong key is refused and the form stays.
		run(t, ctx, "submit a wrong key", chromedp.SendKeys("#key", "sk-wrong"), chromedp.Click("#login button"))
		waitJS(t, ctx, "the refusal message", `document.getElementById('login-msg').textContent.includes('key rejected')`)
		if gatewaytest.Eval[bool](t, ctx, `!document.getElementById('main').hidden`) {
			t.Error("#main shown after a refused key")
		}
		// The right key signs in; the input is emptied at once.
		run(t, ctx, "submit the key", chromedp.SendKeys("#key", testKey), chromedp.Click("#login button"),
			chromedp.WaitVisible(`tr[data-pool="llama-demo"][data-replica="r0"]`))
		waitJS(t, ctx, "#conn live", `document.getElementById('conn').textContent === 'live'`)
		if v := gatewaytest.Eval[string](t, ctx, `document.getElementById('key').value`); v != "" {
			t.Errorf("key input still holds %q after sign-in", v)
		}
		// The catalog is empty: the Models panel says so.
		waitJS(t, ctx, "the models empty-state line",
			`(() => { const p = document.querySelector('#models .models-empty');
			  return !!p && p.textContent === 'no models in the catalog' && !document.querySelector('#models tr'); })()`)
		if got := gatewaytest.Eval[string](t, ctx, `document.getElementById('trust-policy').dataset.policy`); got != "permissive" {
			t.Errorf("#trust-policy data-policy = %q, want permissive", got)
		}
		gatewaytest.CheckConsole(t, console(), authRefusal)
	})

	t.Run("fragment key, live breaker change", func(t *testing.T) {
		ctx, console, closeTab := gatewaytest.Tab(t, browser)
		defer closeTab()
		run(t, ctx, "open /ui#key=", chromedp.Navigate(base+"/ui#key="+testKey),
			chromedp.WaitVisible(`tr[data-pool="llama-demo"][data-replica="r1"][data-breaker="closed"]`))
		waitJS(t, ctx, "#conn live", `document.getElementById('conn').textContent === 'live'`)
		// "live" means the stream's headers arrived, and the double
		// subscribes it before it answers, so no pushed event is lost.
		// The key left the address bar before anything else happened.
		if href := gatewaytest.Eval[string](t, ctx, `location.href`); strings.Contains(href, testKey) || strings.Contains(href, "#") {
			t.Errorf("location still holds the key: %q", href)
		}
		// Not readable by script, not stored.
		if gatewaytest.Eval[bool](t, ctx, `document.cookie.includes('orchd_ui') || localStorage.length > 0 || sessionStorage.length > 0`) {
			t.Error("the session is visible to script or something was stored")
		}
		// Data is text, never markup.
		if got := gatewaytest.Eval[string](t, ctx, `document.querySelector('tr[data-replica="r0"] td.last-error').textContent`); got != xssError {
			t.Errorf("r0 last error shows %q, want the literal %q", got, xssError)
		}
		if gatewaytest.Eval[bool](t, ctx, `window.__xss === 1 || document.querySelector('#pools img') !== null`) {
			t.Error("replica data was rendered as HTML")
		}
		// The pool card shows the set's figures.
		card := gatewaytest.Eval[string](t, ctx, `document.querySelector('section.pool[data-pool="llama-demo"]').textContent`)
		for _, want := range []string{"llamacpp", "llama-3-8b-q4", "llamacpp-b4000", "3 / 100", "interactive 2", "41.5 / 120 / 180 ms", "1 / 4"} {
			if !strings.Contains(card, want) {
				t.Errorf("pool card lacks %q: %q", want, card)
			}
		}

		// The breaker opens: the state changes and an event is pushed; the
		// row must follow without a reload.
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__noReload = 'kept'; true`)); err != nil {
			t.Fatalf("set marker: %v", err)
		}
		api.setState(replicaSet(
			replica("r0", "ready", "closed", xssError, 1),
			replica("r1", "unready", "open", "connect: connection refused", 0),
		))
		api.push("breaker", map[string]any{"pool_id": "llama-demo", "replica_id": "r1", "from": "closed", "to": "open"})
		run(t, ctx, "breaker shows open", chromedp.WaitVisible(`[data-replica="r1"][data-breaker="open"]`))
		waitJS(t, ctx, "the breaker event in the list",
			`(() => { const li = document.querySelector('#events li[data-type="breaker"]');
			  return li && li.dataset.replica === 'r1' && li.textContent.includes('closed → open'); })()`)
		if got := gatewaytest.Eval[string](t, ctx, `window.__noReload`); got != "kept" {
			t.Errorf("window marker = %q: the page was reloaded", got)
		}
		if got := gatewaytest.Eval[string](t, ctx, `document.querySelector('tr[data-replica="r1"] td.breaker').className`); got != "breaker breaker-open" {
			t.Errorf("breaker cell class = %q, want %q", got, "breaker breaker-open")
		}

		gatewaytest.Screenshot(t, ctx, "ui.png")

		// Without any event, the 2 s poll still brings changes in.
		api.setState(replicaSet(
			replica("r0", "draining", "closed", "", 0),
			replica("r1", "unready", "open", "connect: connection refused", 0),
		))
		run(t, ctx, "polled change shows", chromedp.WaitVisible(`tr[data-replica="r0"][data-state="draining"]`))

		// The list keeps the 50 newest events, newest first.
		for i := range 60 {
			api.push("replica", map[string]any{"pool_id": "llama-demo", "replica_id": "r0", "state": "unready", "last_error": fmt.Sprintf("probe %02d failed", i)})
		}
		waitJS(t, ctx, "the 60th event", `(document.querySelector('#events li') || {textContent: ''}).textContent.includes('probe 59 failed')`)
		if n := gatewaytest.Eval[int](t, ctx, `document.querySelectorAll('#events li').length`); n != 50 {
			t.Errorf("#events holds %d items, want 50", n)
		}
		if got := gatewaytest.Eval[string](t, ctx, `document.querySelector('#events li:last-child').textContent`); !strings.Contains(got, "probe 10 failed") {
			t.Errorf("oldest kept event = %q, want the one of probe 10", got)
		}
		if got := gatewaytest.Eval[string](t, ctx, `window.__noReload`); got != "kept" {
			t.Errorf("window marker = %q after the events: the page was reloaded", got)
		}
		gatewaytest.CheckConsole(t, console(), authRefusal)
	})

	t.Run("models panel, live lifecycle change", func(t *testing.T) {
		api.setCatalog(catalogBody("strict",
			model("llama-3-8b-q4", "Active", digestA, verification("pass", "ok", "digest matches; signed by key 0123456789abcdef"), ""),
			model("org/old-model", "Deprecated", digestB, verification("fail", "digest_mismatch", xssError), "2031-05-04T10:20:30Z"),
			model("new-draft", "Draft", "", nil, ""),
		))
		ctx, console, closeTab := gatewaytest.Tab(t, browser)
		defer closeTab()
		const active = `tr[data-model="llama-3-8b-q4"]`
		run(t, ctx, "open /ui#key=", chromedp.Navigate(base+"/ui#key="+testKey),
			chromedp.WaitVisible(active+`[data-state="Active"]`))
		waitJS(t, ctx, "#conn live", `document.getElementById('conn').textContent === 'live'`)

		tp := gatewaytest.Eval[string](t, ctx, `(() => { const e = document.getElementById('trust-policy'); return e.dataset.policy + '|' + e.textContent; })()`)
		if !strings.HasPrefix(tp, "strict|") || !strings.Contains(tp, "trust policy strict") {
			t.Errorf("#trust-policy = %q, want policy strict shown", tp)
		}
		// One row per model, in the catalog's order, each styled by its state.
		rows := gatewaytest.Eval[[]string](t, ctx, `[...document.querySelectorAll('#models tbody tr')].map(
			(r) => [r.dataset.model, r.dataset.state, r.querySelector('td.state .badge').className, r.classList.contains('model-warn')].join('|'))`)
		wantRows := []string{
			"llama-3-8b-q4|Active|badge mstate-active|false",
			"org/old-model|Deprecated|badge mstate-deprecated|true",
			"new-draft|Draft|badge mstate-draft|false",
		}
		if strings.Join(rows, "\n") != strings.Join(wantRows, "\n") {
			t.Errorf("model rows:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(wantRows, "\n"))
		}
		// Digest: 12 hex digits shown, the whole value in the title.
		for sel, want := range map[string][2]string{
			active:                           {digestA[7:19], digestA},
			`tr[data-model="org/old-model"]`: {digestB[7:19], digestB},
			`tr[data-model="new-draft"]`:     {"—", ""},
		} {
			got := gatewaytest.Eval[[]string](t, ctx, `(() => { const td = document.querySelector('`+sel+` td.digest'); return [td.textContent, td.title]; })()`)
			if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
				t.Errorf("%s digest cell = %q, want text %q title %q", sel, got, want[0], want[1])
			}
		}
		// Latest verification: result, reason and time; data is text.
		ver := gatewaytest.Eval[[]string](t, ctx, `[...document.querySelectorAll('#models td.verification')].map(
			(td) => td.dataset.result + '|' + td.textContent + '|' + (td.querySelector('time') ? td.querySelector('time').dateTime : ''))`)
		if len(ver) != 3 || !strings.HasPrefix(ver[0], "pass|pass ok ") || !strings.HasPrefix(ver[1], "fail|fail digest_mismatch ") ||
			!strings.HasPrefix(ver[2], "none|never verified|") {
			t.Errorf("verification cells = %q", ver)
		}
		if !strings.HasSuffix(ver[0], "Z") {
			t.Errorf("verification time missing: %q", ver[0])
		}
		if got := gatewaytest.Eval[string](t, ctx, `document.querySelector('tr[data-model="org/old-model"] td.verification').title`); !strings.Contains(got, xssError) {
			t.Errorf("failed verification's title = %q, want its message as text", got)
		}
		if gatewaytest.Eval[bool](t, ctx, `window.__xss === 1 || document.querySelector('#models img') !== null`) {
			t.Error("catalog data was rendered as HTML")
		}
		// The ref's query (a presigned credential) is not shown.
		if got := gatewaytest.Eval[string](t, ctx, `document.querySelector('`+active+` td.id').title`); strings.Contains(got, "secret-sig") || !strings.Contains(got, "llama-3-8b-q4.gguf") {
			t.Errorf("model id title = %q: want the ref without its query", got)
		}
		// sessions_until only where set.
		until := gatewaytest.Eval[[]string](t, ctx, `[...document.querySelectorAll('#models td.sessions-until')].map(
			(td) => td.textContent + '|' + (td.querySelector('time') ? td.querySelector('time').dateTime : ''))`)
		if len(until) != 3 || until[0] != "—|" || !strings.HasSuffix(until[1], "|2031-05-04T10:20:30Z") || !strings.Contains(until[1], "2031-05-04") || until[2] != "—|" {
			t.Errorf("sessions-until cells = %q", until)
		}
		gatewaytest.Screenshot(t, ctx, "ui-models.png")

		// The model is deprecated: the catalog changes and the event is
		// pushed. The page has no catalog poll while its last read worked,
		// so only the event can bring the change in, without a reload.
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__noReload = 'kept'; true`)); err != nil {
			t.Fatalf("set marker: %v", err)
		}
		before := api.quiet(t)
		api.setCatalog(catalogBody("strict",
			model("llama-3-8b-q4", "Deprecated", digestA, verification("pass", "ok", "digest matches"), "2031-06-01T00:00:00Z"),
			model("org/old-model", "Deprecated", digestB, verification("fail", "digest_mismatch", xssError), "2031-05-04T10:20:30Z"),
			model("new-draft", "Draft", "", nil, ""),
		))
		api.push("model_state", map[string]any{"model": "llama-3-8b-q4", "from": "Active", "to": "Deprecated", "deadline_ms": 600000})
		run(t, ctx, "the row shows Deprecated", chromedp.WaitVisible(active+`[data-state="Deprecated"].model-warn`))
		if got := gatewaytest.Eval[string](t, ctx, `document.querySelector('`+active+` td.state').textContent`); got != "Deprecatednew sessions refused" {
			t.Errorf("deprecated state cell = %q", got)
		}
		if got := gatewaytest.Eval[string](t, ctx, `document.querySelector('`+active+` td.sessions-until time').dateTime`); got != "2031-06-01T00:00:00Z" {
			t.Errorf("sessions_until after the change = %q", got)
		}
		waitJS(t, ctx, "the model_state event in the list",
			`(() => { const li = document.querySelector('#events li[data-type="model_state"]');
			  return !!li && li.dataset.model === 'llama-3-8b-q4' && li.dataset.to === 'Deprecated' &&
			    li.querySelector('.ev-what').textContent === 'llama-3-8b-q4: Active → Deprecated, sessions may continue for 10 min'; })()`)
		if after := api.catalogGets(); after <= before {
			t.Errorf("catalog reads %d after the event, %d before: the change did not come from a re-fetch", after, before)
		}

		// A failed verification: the event is listed and the row follows.
		before = api.quiet(t)
		api.setCatalog(catalogBody("strict",
			model("llama-3-8b-q4", "Deprecated", digestA, verification("fail", "digest_mismatch", "declared "+digestA+", read "+digestB), "2031-06-01T00:00:00Z"),
			model("org/old-model", "Deprecated", digestB, verification("fail", "digest_mismatch", xssError), "2031-05-04T10:20:30Z"),
			model("new-draft", "Draft", "", nil, ""),
		))
		api.push("model_verification", map[string]any{"model": "llama-3-8b-q4", "ok": false, "reason": "digest_mismatch"})
		run(t, ctx, "the row shows the failed verification", chromedp.WaitVisible(active+` td.verification[data-result="fail"]`))
		waitJS(t, ctx, "the model_verification event in the list",
			`(() => { const li = document.querySelector('#events li[data-type="model_verification"]');
			  return !!li && li.dataset.model === 'llama-3-8b-q4' && li.dataset.ok === 'false' &&
			    li.querySelector('.ev-what').textContent === 'llama-3-8b-q4: verification failed (digest_mismatch)'; })()`)
		if after := api.catalogGets(); after <= before {
			t.Errorf("catalog reads %d after the verification event, %d before", after, before)
		}
		if got := gatewaytest.Eval[string](t, ctx, `window.__noReload`); got != "kept" {
			t.Errorf("window marker = %q: the page was reloaded", got)
		}
		gatewaytest.CheckConsole(t, console(), authRefusal)
	})

	// The key reached the server in headers only: never in a request line or
	// a Referer. Three sign-ins succeeded (one per tab), the wrong key none.
	api.mu.Lock()
	defer api.mu.Unlock()
	for _, u := range api.uris {
		if strings.Contains(u, testKey) || strings.Contains(u, "sk-wrong") {
			t.Errorf("a key travelled in a URL or Referer: %q", u)
		}
	}
	if api.sessions != 3 {
		t.Errorf("POST /v1/ui/session succeeded %d times, want 3 (one per tab)", api.sessions)
	}
}
