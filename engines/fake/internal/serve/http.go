package serve

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// HTTP runs a fake's net/http server on a Group: Start binds once, every
// handler is counted, Close drops every connection (a stream ends without
// its last chunk) and waits for every handler.
type HTTP struct {
	*Group
	srv          *http.Server
	handler      http.Handler
	closedStatus int

	// mu guards started, addr and res; it is taken before Group's.
	mu        sync.Mutex
	started   bool
	addr      string
	res       reservation
	listening atomic.Bool
}

// NewHTTP returns an unstarted runner of srv, which carries the engine's
// timeouts and, as its Handler, the fake's router. A panic in the router
// drops the connection (and is logged unless it is http.ErrAbortHandler).
// A request that arrives while Close runs gets closedStatus with an empty
// body, or, with 0, a dropped connection.
func NewHTTP(g *Group, srv *http.Server, closedStatus int) *HTTP {
	h := &HTTP{Group: g, srv: srv, handler: srv.Handler, closedStatus: closedStatus}
	srv.Handler = h
	if srv.ErrorLog == nil {
		srv.ErrorLog = log.New(logWriter{g}, "", 0)
	}
	return h
}

// Start binds addr ("127.0.0.1:0" picks a free port) and serves in the
// background until Close. bound (if not nil) runs with the bound address
// before any request is served. With load > 0 the port is bound at once
// but refuses connections for that long, as an engine whose HTTP server
// starts only once its model is loaded. Calls out of order return errors
// that wrap invalid.
func (h *HTTP) Start(addr string, load time.Duration, invalid error, bound func(addr string)) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.Closed() {
		return fmt.Errorf("%w: server closed", invalid)
	}
	if h.started {
		return fmt.Errorf("%w: server already started", invalid)
	}
	if load <= 0 {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("cannot listen on %s: %w", addr, err)
		}
		h.started, h.addr = true, ln.Addr().String()
		if bound != nil {
			bound(h.addr)
		}
		h.serve(ln)
		return nil
	}
	res, a, err := reserve(addr)
	if err != nil {
		return fmt.Errorf("cannot bind %s: %w", addr, err)
	}
	h.started, h.addr, h.res = true, a, res
	if bound != nil {
		bound(a)
	}
	h.Go("loader", func() {
		t := time.NewTimer(load)
		defer t.Stop()
		select {
		case <-t.C:
			h.loaded()
		case <-h.Done():
		}
	})
	h.log.Debug(h.name+" loading", zap.String("addr", a), zap.Duration("load", load))
	return nil
}

// loaded turns the reserved port into a listener.
func (h *HTTP) loaded() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.Closed() || h.res == nil {
		return
	}
	ln, err := h.res.listen()
	h.res = nil
	if err != nil {
		h.log.Error(h.name+" cannot listen after loading", zap.String("addr", h.addr), zap.Error(err))
		return
	}
	h.serve(ln)
}

// serve runs the server on ln; h.mu is held.
func (h *HTTP) serve(ln net.Listener) {
	h.listening.Store(true)
	ok := h.Go("serve loop", func() {
		h.log.Debug(h.name+" listening", zap.String("addr", ln.Addr().String()))
		if err := h.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error(h.name+" stopped serving", zap.Error(err))
		}
	})
	if !ok { // closed meanwhile
		h.listening.Store(false)
		ln.Close()
	}
}

// Addr returns the bound address ("127.0.0.1:PORT"), "" before Start.
func (h *HTTP) Addr() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addr
}

// Listening reports whether the port accepts connections: false before
// Start, while loading and after Close.
func (h *HTTP) Listening() bool { return h.listening.Load() }

// Close stops serving, drops every connection and waits for every handler.
// It is safe to call twice.
func (h *HTTP) Close() error {
	return h.Group.Close(func() error {
		h.mu.Lock()
		h.listening.Store(false)
		var err error
		if h.res != nil {
			err = h.res.close()
			h.res = nil
		}
		h.mu.Unlock()
		if cerr := h.srv.Close(); cerr != nil && err == nil {
			err = cerr
		}
		return err
	})
}

// ServeHTTP serves one request with the fake's router, counted for Close.
func (h *HTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.Enter() {
		if h.closedStatus == 0 {
			panic(http.ErrAbortHandler)
		}
		w.WriteHeader(h.closedStatus)
		return
	}
	defer h.Exit()
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler { //nolint:errorlint // the sentinel panic value, compared as net/http does
				h.log.Error("BUG: "+h.name+" handler panicked", zap.Any("panic", v), zap.String("path", r.URL.Path), zap.Stack("stack"))
			}
			// Drop the connection without ending the body.
			panic(http.ErrAbortHandler)
		}
	}()
	h.handler.ServeHTTP(w, r)
}

// logWriter sends net/http's own log lines to the group's logger.
type logWriter struct{ g *Group }

func (w logWriter) Write(p []byte) (int, error) {
	w.g.log.Debug(w.g.name+" http", zap.String("msg", strings.TrimSpace(string(p))))
	return len(p), nil
}
