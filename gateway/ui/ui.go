// Package ui serves orchd's live ops page (SPEC §14 `GET /ui`): a static
// shell of HTML, CSS and JavaScript embedded in the binary. The shell holds no
// data and needs no key; the page's script exchanges the control key once for
// an HttpOnly session cookie (POST /v1/ui/session with the key in the
// Authorization header), then reads GET /v1/replicasets and the SSE feed
// GET /v1/events with that cookie.
//
// Routes (Register): GET /ui answers index.html; GET /ui/ is redirected to
// /ui by the router (fasthttp/router cannot hold both paths, and its
// RedirectTrailingSlash, on by default, answers 301; browsers keep the
// #fragment across it); GET /ui/{file} answers one embedded asset by its
// exact name (index.html, app.js, style.css) and 404 for anything else. Every answer carries a strict
// Content-Security-Policy (scripts, styles and connections to the page's own
// origin only, no framing), X-Content-Type-Options: nosniff and
// Referrer-Policy: no-referrer. The index is Cache-Control: no-store; the
// assets are revalidated with a content ETag.
//
// Key handling in the page: the key comes from the URL fragment
// `/ui#key=K` (removed from the address bar with history.replaceState before
// any request is made) or from a form shown when the session cookie does not
// work (GET /v1/replicasets answers 401 or 403). The key is only ever sent in
// the Authorization header of POST /v1/ui/session; it is never put in a URL,
// never stored (no localStorage, no sessionStorage, no cookie of the page's
// own) and dropped once exchanged.
//
// DOM contract (tests, including the lead's browser test against the real
// gateway, rely on these names):
//
//   - #conn: connection indicator. Its text and its data-state attribute are
//     "connecting", "live" (the EventSource on /v1/events is open),
//     "reconnecting" (the stream dropped; the browser or the page retries) or
//     "signed out" (the cookie no longer works).
//   - #login: the key form (hidden while signed in), with input #key and
//     message element #login-msg.
//   - #pools: one section.pool[data-pool=POOL_ID] per pool, holding a table
//     whose rows are tr[data-pool=POOL_ID][data-replica=REPLICA_ID]
//     [data-breaker=closed|open|half-open][data-state=STATE]; the breaker cell is
//     td.breaker.breaker-STATE.
//   - #events: the "Recent events" list, newest first, at most 50 li, each
//     li[data-type=TYPE] (and data-pool / data-replica when the event names
//     them; data-model for model events, data-to for model_state, data-ok
//     for model_verification).
//   - #trust-policy: the catalog's trust policy (data-policy strict or
//     permissive); #models: a tr[data-model=ID][data-state=STATE] per catalog
//     entry (class model-warn when Deprecated or Retired), with
//     td.verification[data-result=pass|fail|none], td.digest (the full digest
//     in its title) and td.sessions-until, or p.models-empty when the catalog
//     is empty; #models-error: the last catalog read error.
//   - #error: the last error talking to the API, empty when the last request
//     worked; #updated: the time of the last successful refresh.
//
// The page listens for the event types hello, breaker, replica, drain,
// reload, config, model_state, model_verification and unnamed messages; each
// one is listed. model_state and model_verification re-fetch GET
// /v1/catalog/models, all others /v1/replicasets (debounced by 200 ms). The
// page polls /v1/replicasets every 2 s, so state changes show even without
// the stream; the catalog is read at load and when the stream opens, and by
// the poll only while its last read failed.
package ui

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"path"
	"strings"

	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"
)

// CSP is the Content-Security-Policy sent with every /ui response: the page
// may load scripts, styles and connections from its own origin only (inline
// script and style are refused), images from its origin or data: URLs, and
// may not be framed.
const CSP = "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"

//go:embed static
var staticFS embed.FS

// asset is one embedded file, ready to answer.
type asset struct {
	body        []byte
	contentType string
	etag        string // quoted strong ETag of the content
	noStore     bool   // the index: never cached
}

// assets maps a file name (no directory) to its response; built once at init
// from the embedded static directory.
var assets = loadAssets()

// contentTypes lists the types of the file kinds the shell has; a fixed map
// (not the system MIME tables) so the answer is the same on every host.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

func loadAssets() map[string]*asset {
	entries, err := fs.ReadDir(staticFS, "static")
	if err != nil {
		panic("BUG: embedded ui/static unreadable: " + err.Error())
	}
	m := make(map[string]*asset, len(entries))
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		name := e.Name()
		ct, ok := contentTypes[path.Ext(name)]
		if !ok {
			panic("BUG: ui/static/" + name + " has no known content type")
		}
		b, err := staticFS.ReadFile("static/" + name)
		if err != nil {
			panic("BUG: embedded ui/static/" + name + " unreadable: " + err.Error())
		}
		sum := sha256.Sum256(b)
		m[name] = &asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, noStore: name == "index.html"}
	}
	if m["index.html"] == nil {
		panic("BUG: ui/static/index.html is not embedded")
	}
	return m
}

// Register adds GET /ui, GET /ui/ and GET /ui/{file} (static assets) to r.
// GET /ui/ is served by r's trailing-slash redirect to /ui (router.New turns
// it on): the router refuses a second handler for the same path with a
// trailing slash.
func Register(r *router.Router) {
	r.GET("/ui", serveIndex)
	r.GET("/ui/{file}", serveFile)
}

// setSecurityHeaders marks every /ui response, errors included.
func setSecurityHeaders(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

func serveIndex(ctx *fasthttp.RequestCtx) {
	serveAsset(ctx, assets["index.html"])
}

func serveFile(ctx *fasthttp.RequestCtx) {
	name, _ := ctx.UserValue("file").(string)
	// The lookup is by exact name in a fixed map, so no path (../, %2f,
	// backslashes) can reach anything but the embedded files; the checks
	// below only keep odd names out of the map lookup's way explicitly.
	var a *asset
	if name != "" && !strings.ContainsAny(name, "/\\\x00") && !strings.HasPrefix(name, ".") {
		a = assets[name]
	}
	if a == nil {
		setSecurityHeaders(ctx)
		ctx.Response.Header.Set("Cache-Control", "no-store")
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetStatusCode(fasthttp.StatusNotFound)
		ctx.SetBodyString("404 not found: the ops page has no such file\n")
		return
	}
	serveAsset(ctx, a)
}

func serveAsset(ctx *fasthttp.RequestCtx, a *asset) {
	setSecurityHeaders(ctx)
	if a.noStore {
		ctx.Response.Header.Set("Cache-Control", "no-store")
	} else {
		ctx.Response.Header.Set("Cache-Control", "no-cache")
		ctx.Response.Header.Set("ETag", a.etag)
		if inm := ctx.Request.Header.Peek("If-None-Match"); len(inm) > 0 && etagMatch(string(inm), a.etag) {
			ctx.SetStatusCode(fasthttp.StatusNotModified)
			return
		}
	}
	ctx.SetContentType(a.contentType)
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetBody(a.body)
}

// etagMatch reports whether an If-None-Match list names etag (or is "*").
func etagMatch(list, etag string) bool {
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimSpace(t)
		t = strings.TrimPrefix(t, "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}
