package gateway

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// The ops page (GET /ui, SPEC §14) exchanges the control key once for an
// HttpOnly, SameSite=Strict cookie; the cookie then authenticates GET
// requests to the control-role read endpoints only — never data endpoints
// and never a state change, so a stolen page context cannot drain a pool.

const (
	uiCookie     = "orchd_ui"
	uiSessionTTL = 12 * time.Hour
	maxUISession = 1024
)

type uiSession struct {
	principal Principal
	expires   time.Time
}

// uiSessions holds live ops-page sessions by the SHA-256 of their token.
type uiSessions struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]uiSession
}

func newUISessions() *uiSessions { return &uiSessions{m: make(map[[sha256.Size]byte]uiSession)} }

func (u *uiSessions) create(p Principal, now time.Time) (string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, s := range u.m {
		if now.After(s.expires) {
			delete(u.m, k)
		}
	}
	if len(u.m) >= maxUISession {
		// Evict the session closest to expiry: bounded memory whatever the
		// number of logins.
		var oldest [sha256.Size]byte
		first := true
		for k, s := range u.m {
			if first || s.expires.Before(u.m[oldest].expires) {
				oldest, first = k, false
			}
		}
		delete(u.m, oldest)
	}
	u.m[sha256.Sum256([]byte(tok))] = uiSession{principal: p, expires: now.Add(uiSessionTTL)}
	return tok, nil
}

func (u *uiSessions) lookup(tok []byte, now time.Time) (Principal, bool) {
	if len(tok) == 0 || len(tok) > 128 {
		return Principal{}, false
	}
	k := sha256.Sum256(tok)
	u.mu.Lock()
	defer u.mu.Unlock()
	s, ok := u.m[k]
	if !ok || now.After(s.expires) {
		delete(u.m, k)
		return Principal{}, false
	}
	return s.principal, true
}

// revokeAll ends every session (the key set changed in a config reload).
func (u *uiSessions) revokeAll() {
	u.mu.Lock()
	clear(u.m)
	u.mu.Unlock()
}

// handleUISession is POST /v1/ui/session: header auth, control role → 204
// with the session cookie.
func (s *Server) handleUISession(ctx *fasthttp.RequestCtx) {
	p, ok := s.require(ctx, RoleControl)
	if !ok {
		return
	}
	tok, err := s.uiSess.create(p, time.Now())
	if err != nil {
		writeError(ctx, &APIError{Code: CodeInternal, Message: "cannot create a session: " + err.Error()})
		return
	}
	c := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(c)
	c.SetKey(uiCookie)
	c.SetValue(tok)
	c.SetPath("/")
	c.SetHTTPOnly(true)
	c.SetSameSite(fasthttp.CookieSameSiteStrictMode)
	c.SetMaxAge(int(uiSessionTTL / time.Second))
	ctx.Response.Header.SetCookie(c)
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// requireControlRead authenticates a read of a control endpoint: the key
// headers as usual, or — for GET without any key header — the ops-page
// cookie.
func (s *Server) requireControlRead(ctx *fasthttp.RequestCtx) (Principal, bool) {
	if ctx.IsGet() && len(presentedKey(ctx)) == 0 {
		if tok := ctx.Request.Header.Cookie(uiCookie); len(tok) > 0 {
			if p, ok := s.uiSess.lookup(tok, time.Now()); ok && p.Has(RoleControl) {
				return p, true
			}
		}
	}
	return s.require(ctx, RoleControl)
}
