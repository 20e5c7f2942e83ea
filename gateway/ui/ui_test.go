package ui

import (
	"bufio"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// serveUI runs Register's routes on an in-memory listener and returns a
// function that sends one raw request line (path as given, unnormalised by
// any client) and returns the parsed response.
func serveUI(t *testing.T) func(method, uri string, hdr ...string) *fasthttp.Response {
	t.Helper()
	r := router.New()
	Register(r)
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: r.Handler, ReadTimeout: 5 * time.Second, NoDefaultDate: true}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return func(method, uri string, hdr ...string) *fasthttp.Response {
		t.Helper()
		c, err := ln.Dial()
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		req := method + " " + uri + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
		for _, h := range hdr {
			req += h + "\r\n"
		}
		if _, err := c.Write([]byte(req + "\r\n")); err != nil {
			t.Fatalf("write: %v", err)
		}
		resp := &fasthttp.Response{}
		if method == "HEAD" {
			resp.SkipBody = true
		}
		if err := resp.Read(bufio.NewReader(c)); err != nil {
			t.Fatalf("%s %s: read response: %v", method, uri, err)
		}
		return resp
	}
}

func checkSecurityHeaders(t *testing.T, uri string, resp *fasthttp.Response) {
	t.Helper()
	want := map[string]string{
		"Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
	}
	for k, v := range want {
		if got := string(resp.Header.Peek(k)); got != v {
			t.Errorf("%s: %s = %q, want %q", uri, k, got, v)
		}
	}
}

func TestRoutes(t *testing.T) {
	get := serveUI(t)
	index, _ := staticFS.ReadFile("static/index.html")
	appJS, _ := staticFS.ReadFile("static/app.js")
	css, _ := staticFS.ReadFile("static/style.css")
	cases := []struct {
		name, uri    string
		status       int
		contentType  string
		cacheControl string
		body         []byte
	}{
		// The shell itself, with and without the trailing slash.
		{"index", "/ui", 200, "text/html; charset=utf-8", "no-store", index},
		{"index by name", "/ui/index.html", 200, "text/html; charset=utf-8", "no-store", index},
		// A fragment is never sent, but a query string must not matter.
		{"index with query", "/ui?x=1", 200, "text/html; charset=utf-8", "no-store", index},
		// Assets, with their own types and revalidation.
		{"script", "/ui/app.js", 200, "text/javascript; charset=utf-8", "no-cache", appJS},
		{"stylesheet", "/ui/style.css", 200, "text/css; charset=utf-8", "no-cache", css},
		// Unknown files: 404, still with the security headers.
		{"unknown file", "/ui/nope.js", 404, "text/plain; charset=utf-8", "no-store", nil},
		{"source file of the package", "/ui/ui.go", 404, "text/plain; charset=utf-8", "no-store", nil},
		{"dot file", "/ui/.hidden", 404, "text/plain; charset=utf-8", "no-store", nil},
		{"encoded traversal", "/ui/..%2fui.go", 404, "", "", nil},
		{"encoded dots", "/ui/%2e%2e%2f%2e%2e%2fgo.mod", 404, "", "", nil},
		{"backslash traversal", "/ui/..%5c..%5cgo.mod", 404, "text/plain; charset=utf-8", "no-store", nil},
		{"nul byte", "/ui/app.js%00.html", 404, "text/plain; charset=utf-8", "no-store", nil},
		{"embedded dir prefix", "/ui/static/app.js", 404, "", "", nil},
		{"dot-dot out of /ui", "/ui/../../../etc/passwd", 404, "", "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := get("GET", c.uri)
			if resp.StatusCode() != c.status {
				t.Fatalf("GET %s: status %d, want %d (body %q)", c.uri, resp.StatusCode(), c.status, resp.Body())
			}
			if c.status == 404 {
				// Nothing of the package's sources or the host's files leaks.
				for _, leak := range []string{"package ui", "module github.com", "root:"} {
					if strings.Contains(string(resp.Body()), leak) {
						t.Fatalf("GET %s: body leaks %q", c.uri, leak)
					}
				}
			}
			if c.contentType != "" {
				if got := string(resp.Header.ContentType()); got != c.contentType {
					t.Errorf("GET %s: Content-Type %q, want %q", c.uri, got, c.contentType)
				}
				checkSecurityHeaders(t, c.uri, resp)
			}
			if c.cacheControl != "" {
				if got := string(resp.Header.Peek("Cache-Control")); got != c.cacheControl {
					t.Errorf("GET %s: Cache-Control %q, want %q", c.uri, got, c.cacheControl)
				}
			}
			if c.body != nil && string(resp.Body()) != string(c.body) {
				t.Errorf("GET %s: body differs from the embedded file (%d bytes, want %d)", c.uri, len(resp.Body()), len(c.body))
			}
		})
	}
}

// TestTrailingSlash: /ui/ reaches the page through the router's redirect,
// keeping the query string (the fragment stays in the browser).
func TestTrailingSlash(t *testing.T) {
	get := serveUI(t)
	f := func(uri, wantLoc string) {
		t.Helper()
		resp := get("GET", uri)
		if resp.StatusCode() != fasthttp.StatusMovedPermanently {
			t.Fatalf("GET %s: status %d, want 301", uri, resp.StatusCode())
		}
		if loc := string(resp.Header.Peek("Location")); loc != wantLoc {
			t.Fatalf("GET %s: Location %q, want %q", uri, loc, wantLoc)
		}
	}
	f("/ui/", "http://127.0.0.1/ui")
	f("/ui/?x=1", "http://127.0.0.1/ui?x=1")
}

func TestETagRevalidation(t *testing.T) {
	get := serveUI(t)
	first := get("GET", "/ui/app.js")
	etag := string(first.Header.Peek("ETag"))
	if !regexp.MustCompile(`^"[0-9a-f]{24}"$`).MatchString(etag) {
		t.Fatalf("ETag %q is not a quoted content hash", etag)
	}
	cases := []struct {
		name   string
		inm    string
		status int
	}{
		{"same tag", etag, 304},
		{"weak form of the same tag", "W/" + etag, 304},
		{"one of a list", `"other", ` + etag, 304},
		{"star", "*", 304},
		{"other tag", `"0123"`, 200},
	}
	for _, c := range cases {
		resp := get("GET", "/ui/app.js", "If-None-Match: "+c.inm)
		if resp.StatusCode() != c.status {
			t.Errorf("%s: status %d, want %d", c.name, resp.StatusCode(), c.status)
		}
		checkSecurityHeaders(t, c.name, resp)
	}
	// The index is never cached, so it has no validator and always answers.
	idx := get("GET", "/ui", "If-None-Match: *")
	if idx.StatusCode() != 200 || len(idx.Header.Peek("ETag")) != 0 {
		t.Errorf("index: status %d ETag %q, want 200 without ETag", idx.StatusCode(), idx.Header.Peek("ETag"))
	}
}

func TestMethods(t *testing.T) {
	get := serveUI(t)
	// The shell is read-only: other methods are not routed to it.
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		if resp := get(m, "/ui"); resp.StatusCode() != fasthttp.StatusMethodNotAllowed {
			t.Errorf("%s /ui: status %d, want 405", m, resp.StatusCode())
		}
	}
}

// TestShellIsSelfContained checks the embedded files against the CSP and the
// key rules: nothing inline (the CSP would block it), nothing from another
// origin, no HTML built from data, no storage of the key.
func TestShellIsSelfContained(t *testing.T) {
	for name, a := range assets {
		body := string(a.body)
		for _, bad := range []string{"http://", "https://", "//cdn", "@import"} {
			if strings.Contains(body, bad) {
				t.Errorf("%s references %q: the shell must load nothing from elsewhere", name, bad)
			}
		}
	}
	html := string(assets["index.html"].body)
	if regexp.MustCompile(`<script(\s[^>]*)?>[^<\s]`).MatchString(html) || !strings.Contains(html, `<script src="/ui/app.js"`) {
		t.Error("index.html must load /ui/app.js and hold no inline script")
	}
	if regexp.MustCompile(`(?i)\sstyle=|<style|\son[a-z]+=`).MatchString(html) {
		t.Error("index.html has an inline style or event handler attribute, which the CSP blocks")
	}
	for _, id := range []string{`id="conn"`, `id="events"`, `id="pools"`, `id="login"`, `id="key"`, `id="error"`, `id="models"`, `id="trust-policy"`, `id="models-error"`} {
		if !strings.Contains(html, id) {
			t.Errorf("index.html lacks %s of the DOM contract", id)
		}
	}
	// A nameless input: if the script failed, a native form submit would
	// put named fields in the query string.
	if !regexp.MustCompile(`<input id="key" type="password"`).MatchString(html) || strings.Contains(html, `name="key"`) {
		t.Error(`index.html: input#key must be a password field without a name`)
	}
	js := string(assets["app.js"].body)
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
		"localStorage", "sessionStorage", "document.cookie", "indexedDB", "setAttribute('style'", ".style."} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %q", bad)
		}
	}
	// The key may travel in the Authorization header only.
	if !strings.Contains(js, `'Authorization': 'Bearer ' + key`) {
		t.Error("app.js does not send the key as a Bearer header")
	}
	if regexp.MustCompile(`[?&]key=`).MatchString(js) {
		t.Error("app.js builds a URL with the key in it")
	}
}

func TestEtagMatch(t *testing.T) {
	f := func(list string, want bool) {
		t.Helper()
		if got := etagMatch(list, `"abc"`); got != want {
			t.Errorf("etagMatch(%q) = %v, want %v", list, got, want)
		}
	}
	f(`"abc"`, true)
	f(` W/"abc" `, true)
	f(`"x","abc"`, true)
	f(`*`, true)
	f(`"abcd"`, false)
	f(`abc`, false)
	f(``, false)
}

// FuzzEtagMatch: If-None-Match parsing never panics, and a list that names
// the tag (strong or weak) always matches.
func FuzzEtagMatch(f *testing.F) {
	for _, seed := range []string{`"abc"`, `W/"abc"`, `"x", "abc"`, `*`, ``, `,,,`, `W/`, `"a\"b"`} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, list string) {
		_ = etagMatch(list, `"abc"`)
		if !etagMatch(list+`, "abc"`, `"abc"`) || !etagMatch(`W/"abc",`+list, `"abc"`) {
			t.Fatalf("list %q plus the tag does not match", list)
		}
	})
}

// Compile-time check that the in-memory listener satisfies net.Listener
// (serveUI relies on it).
var _ net.Listener = (*fasthttputil.InmemoryListener)(nil)
