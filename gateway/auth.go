package gateway

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net"

	"github.com/valyala/fasthttp"

	"github.com/llama-orch/llama-orch/gateway/config"
)

// Roles (SPEC §7).
const (
	RoleData    = "data"
	RoleControl = "control"
)

// Principal is who a request acts as.
type Principal struct {
	Tenant  string
	data    bool
	control bool
}

// Has reports whether the principal holds role.
func (p *Principal) Has(role string) bool {
	switch role {
	case RoleData:
		return p.data
	case RoleControl:
		return p.control
	}
	return false
}

type keyEntry struct {
	sum          [sha256.Size]byte
	principal    Principal
	loopbackOnly bool
}

// Authenticator maps API keys to principals. Keys are kept only as SHA-256
// sums and compared in constant time against every entry, so neither the key
// nor which entry matched leaks through timing (SPEC §7).
type Authenticator struct {
	keys []keyEntry
}

// NewAuthenticator builds an Authenticator from config. With loopbackOnly,
// every key is accepted only from loopback clients (the embedded demo's
// sk-demo, SPEC §13).
func NewAuthenticator(keys []config.Key, loopbackOnly bool) (*Authenticator, error) {
	a := &Authenticator{}
	for i, k := range keys {
		e := keyEntry{loopbackOnly: loopbackOnly, principal: Principal{Tenant: k.Tenant}}
		switch {
		case k.Key != "":
			e.sum = sha256.Sum256([]byte(k.Key))
		case k.KeySHA256 != "":
			b, err := hex.DecodeString(k.KeySHA256)
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("auth.keys[%d].key_sha256: want 64 hex digits", i)
			}
			copy(e.sum[:], b)
		default:
			return nil, fmt.Errorf("auth.keys[%d]: needs key or key_sha256", i)
		}
		for _, r := range k.Roles {
			switch r {
			case RoleData:
				e.principal.data = true
			case RoleControl:
				e.principal.control = true
			}
		}
		a.keys = append(a.keys, e)
	}
	return a, nil
}

// authResult says why a request was or was not authenticated.
type authResult uint8

const (
	authOK authResult = iota
	authMissing
	authUnknown
)

var bearerPrefix = []byte("Bearer ")

// presentedKey returns the key from `Authorization: Bearer` or `X-API-Key`.
func presentedKey(ctx *fasthttp.RequestCtx) []byte {
	if h := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization); len(h) > 0 {
		if len(h) > len(bearerPrefix) && bytes.EqualFold(h[:len(bearerPrefix)], bearerPrefix) {
			return bytes.TrimSpace(h[len(bearerPrefix):])
		}
		return nil
	}
	return bytes.TrimSpace(ctx.Request.Header.Peek("X-API-Key"))
}

// Authenticate finds the request's principal.
func (a *Authenticator) Authenticate(ctx *fasthttp.RequestCtx) (Principal, authResult) {
	key := presentedKey(ctx)
	if len(key) == 0 {
		return Principal{}, authMissing
	}
	sum := sha256.Sum256(key)
	found := -1
	for i := range a.keys {
		if subtle.ConstantTimeCompare(sum[:], a.keys[i].sum[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Principal{}, authUnknown
	}
	e := &a.keys[found]
	if e.loopbackOnly && !isLoopback(ctx.RemoteAddr()) {
		return Principal{}, authUnknown
	}
	return e.principal, authOK
}

func isLoopback(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case nil:
		return false
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		// In-memory listeners (tests) have no IP: treat as local.
		return true
	}
	ip := net.ParseIP(host)
	return ip == nil || ip.IsLoopback()
}

// require authenticates ctx for role, writing 401/403 on failure.
func (s *Server) require(ctx *fasthttp.RequestCtx, role string) (Principal, bool) {
	p, res := s.auth.Load().Authenticate(ctx)
	switch res {
	case authMissing:
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="orchd"`)
		writeError(ctx, &APIError{Code: CodeUnauthorized, Message: "missing API key: send Authorization: Bearer <key> or X-API-Key: <key>"})
		return p, false
	case authUnknown:
		writeError(ctx, &APIError{Code: CodeForbidden, Message: "API key not recognised"})
		return p, false
	}
	if !p.Has(role) {
		writeError(ctx, &APIError{Code: CodeForbidden, Message: "API key lacks the " + role + " role"})
		return p, false
	}
	return p, true
}
