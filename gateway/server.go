// Package gateway is orchd's server: authentication, admission, the task event
// log and its SSE readers, dispatch to the balancer and engine adapters, the
// session store, metrics and logs (SPEC §3, §4, §7, §8).
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/balancer"
	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/gateway/catalog"
	"github.com/llama-orch/llama-orch/gateway/config"
	"github.com/llama-orch/llama-orch/gateway/ui"
)

// Options wire a Server to its surroundings.
type Options struct {
	// NewAdapter makes each replica's engine adapter (required).
	NewAdapter AdapterFactory
	// Logger receives structured logs (default: no logs).
	Logger *zap.Logger
	// DemoKeysLoopbackOnly accepts API keys only from loopback clients (the
	// embedded default's sk-demo, SPEC §13).
	DemoKeysLoopbackOnly bool
	// FileListen is the config file's listen address when the command line
	// overrode it (orchd --listen): a reloaded file naming that address
	// keeps the override instead of asking for a restart.
	FileListen string
	// KeepAliveInterval is the SSE keep-alive period (default 10 s, below
	// the 15 s SPEC §3.2 requires).
	KeepAliveInterval time.Duration
}

// Server is orchd.
type Server struct {
	cfg        *config.Config
	log        *zap.Logger
	auth       atomic.Pointer[Authenticator]
	demoKeys   bool
	fileListen string
	deps       poolDeps
	pools      atomic.Pointer[[]*pool] // replaced whole by a config apply
	applyMu    sync.Mutex              // one config apply at a time
	running    atomic.Pointer[config.Config]
	tasks      *registry
	sessions   *sessionStore
	catalog    *catalog.Catalog // models' artifacts and lifecycle states (SPEC §9)
	quotas     *quotas
	shares     *shareTracker
	deadlines  *deadlineTracker
	metrics    *gwMetrics
	http       *fasthttp.Server
	keep       time.Duration
	events     *eventHub
	slo        *sloTracker
	uiSess     *uiSessions

	stop     chan struct{} // closed at shutdown: stops dispatchers, health, janitor
	draining atomic.Bool
	// admitMu makes "not draining" and "pushed to a queue" one step, so no
	// task is admitted after Shutdown's final sweep.
	admitMu   sync.RWMutex
	wg        sync.WaitGroup // task goroutines
	bgWG      sync.WaitGroup // dispatchers, health loops, watchdogs, janitor
	eraseWG   sync.WaitGroup // session KV evictions (waited after the HTTP server)
	closeOnce sync.Once

	// listeners are the ones Serve was given; Shutdown closes them itself,
	// since fasthttp's Shutdown only closes those its Serve already
	// registered (a Serve that had not started yet would serve for ever).
	lnMu      sync.Mutex
	listeners []net.Listener
	lnClosed  bool
}

// New builds a Server from a validated config. It starts health checks and
// dispatchers at once; call Serve to accept connections and Shutdown to stop.
func New(cfg *config.Config, o Options) (*Server, error) {
	if o.NewAdapter == nil {
		return nil, errors.New("gateway: Options.NewAdapter is required")
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	auth, err := NewAuthenticator(cfg.Auth.Keys, o.DemoKeysLoopbackOnly)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	cat, err := catalog.Open(catalog.Options{Path: cfg.Catalog.Path, Policy: cfg.Catalog.TrustPolicy, TrustedKeys: cfg.Catalog.TrustedKeys})
	if err != nil {
		return nil, fmt.Errorf("gateway: catalog: %w", err)
	}
	s := &Server{
		catalog:    cat,
		cfg:        cfg,
		log:        log,
		demoKeys:   o.DemoKeysLoopbackOnly,
		fileListen: o.FileListen,
		tasks:      newRegistry(time.Duration(cfg.TaskIDTTLMs) * time.Millisecond),
		sessions:   newSessionStore(cfg.Sessions),
		quotas:     newQuotas(cfg.Tenants),
		shares:     newShareTracker(),
		deadlines:  &deadlineTracker{},
		events:     newEventHub(),
		slo:        newSLOTracker(cfg.SLO),
		uiSess:     newUISessions(),
		metrics:    newMetrics(),
		keep:       o.KeepAliveInterval,
		stop:       make(chan struct{}),
	}
	if s.keep <= 0 {
		s.keep = 10 * time.Second
	}
	s.auth.Store(auth)
	deps := poolDeps{
		weights: cfg.Admission.Weights, breaker: cfg.Breaker, affinity: cfg.Balancer.AffinityLoadFactor,
		ttftSLOMs: cfg.SLO.Interactive.TTFTP95Ms, factory: o.NewAdapter, log: log, onTransition: s.breakerTransition,
		onReady: func(p *pool, r *balancer.Replica, ready bool, cause string) { s.replicaEvent(p, r.ID, ready, cause) },
	}
	var list []*pool
	for _, pc := range cfg.Pools {
		p, err := newPool(pc, deps)
		if err != nil {
			for _, q := range list {
				q.close()
			}
			return nil, fmt.Errorf("gateway: %w", err)
		}
		list = append(list, p)
	}
	s.deps = deps
	s.pools.Store(&list)
	s.running.Store(cfg)
	s.metrics.registerPoolGauges(s.poolList)
	s.metrics.registerSchedGauges(s.shares, s.deadlines)
	s.metrics.registerSLOGauges(s.slo)
	s.metrics.registerCatalogGauges(s.catalog)
	s.http = s.newHTTPServer()

	for _, p := range s.poolList() {
		s.startPool(p)
	}
	s.bgWG.Add(1)
	go s.janitor()
	return s, nil
}

func (s *Server) janitor() {
	defer s.bgWG.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.tasks.sweep()
			s.sessions.sweep()
		}
	}
}

func (s *Server) newHTTPServer() *fasthttp.Server {
	r := router.New()
	r.POST("/v1/tasks", s.handleEnqueue)
	r.GET("/v1/tasks/{id}/stream", s.handleStream)
	r.POST("/v1/tasks/{id}/cancel", s.handleCancel)
	r.GET("/v1/sessions/{id}", s.handleSessionGet)
	r.DELETE("/v1/sessions/{id}", s.handleSessionDelete)
	r.GET("/healthz", s.handleHealthz)
	r.GET("/readyz", s.handleReadyz)
	r.GET("/metrics", s.handleMetrics)
	r.GET("/v1/replicasets", s.handleReplicaSets)
	r.GET("/v1/capabilities", s.handleCapabilities)
	r.GET("/v1/pools/{id}/health", s.handlePoolHealth)
	r.POST("/v1/pools/{id}/drain", s.handleDrain)
	r.POST("/v1/pools/{id}/reload", s.handleReload)
	r.GET("/v1/events", s.handleEvents)
	r.GET("/v1/catalog/models", s.handleCatalogList)
	r.POST("/v1/catalog/models", s.handleCatalogRegister)
	r.GET("/v1/catalog/models/{rest:*}", s.handleCatalogModel)
	r.POST("/v1/catalog/models/{rest:*}", s.handleCatalogModel)
	r.GET("/v1/config", s.handleConfigGet)
	ui.Register(r)
	if s.cfg.OpenAICompat {
		r.POST("/v1/completions", s.handleOpenAI(false))
		r.POST("/v1/chat/completions", s.handleOpenAI(true))
	}
	r.POST("/v1/config", s.handleConfigPost)
	r.POST("/v1/ui/session", s.handleUISession)
	r.NotFound = func(ctx *fasthttp.RequestCtx) {
		writeError(ctx, &APIError{Code: CodeNotFound, Message: "no such endpoint: " + string(ctx.Method()) + " " + string(ctx.Path())})
	}
	r.MethodNotAllowed = func(ctx *fasthttp.RequestCtx) {
		writeError(ctx, &APIError{Code: CodeMethodNotAllowed, Message: "method " + string(ctx.Method()) + " not allowed on " + string(ctx.Path())})
	}
	r.PanicHandler = func(ctx *fasthttp.RequestCtx, v any) {
		s.log.Error("recovered from panic in handler", zap.Any("panic", v), zap.ByteString("path", ctx.Path()), zap.Stack("stack"))
		ctx.ResetBody()
		writeError(ctx, &APIError{Code: CodeInternal, Message: "internal error; see the server log (correlation id " + string(ctx.Response.Header.Peek(headerCorrelation)) + ")"})
	}
	h := r.Handler
	return &fasthttp.Server{
		Handler:               s.withCorrelation(h),
		Name:                  "orchd",
		MaxRequestBodySize:    2 << 20,
		ReadBufferSize:        8 << 10, // bounds request headers (held per open stream)
		ReadTimeout:           30 * time.Second,
		IdleTimeout:           90 * time.Second,
		NoDefaultServerHeader: false,
		NoDefaultDate:         true,
		CloseOnShutdown:       true,
		SecureErrorLogMessage: true, // parse errors must not echo headers (API keys)
		Logger:                zapPrintf{s.log},
		ErrorHandler:          s.handleParseError,
	}
}

// drainBody reads and drops what is left of an oversized body (bounded in
// bytes and time) before the error is answered: closing a socket with unread
// data makes the kernel send a reset, and the client would lose the 413.
func drainBody(ctx *fasthttp.RequestCtx) {
	conn := ctx.Conn()
	left := int64(ctx.Request.Header.ContentLength())
	if conn == nil || left <= 0 {
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.CopyN(io.Discard, conn, min(left, 16<<20))
	_ = conn.SetReadDeadline(time.Time{})
}

// handleParseError answers requests fasthttp could not parse (oversized
// body or headers, malformed request line) with the JSON envelope.
func (s *Server) handleParseError(ctx *fasthttp.RequestCtx, err error) {
	ctx.Response.Header.Set(headerCorrelation, newCorrelationID())
	// A fixed message per kind: fasthttp's error text can quote the request,
	// headers (and so API keys) included.
	ae := &APIError{Code: CodeInvalidParams, Message: "malformed HTTP request"}
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		ae.status = fasthttp.StatusRequestEntityTooLarge
		ae.Message = "request body exceeds the limit of " + strconv.Itoa(s.http.MaxRequestBodySize) + " bytes"
		drainBody(ctx)
	case errors.As(err, &small):
		ae.status = fasthttp.StatusRequestHeaderFieldsTooLarge
		ae.Message = "request headers exceed the limit of " + strconv.Itoa(s.http.ReadBufferSize) + " bytes"
	}
	ctx.Response.SetConnectionClose()
	writeError(ctx, ae)
}

type zapPrintf struct{ l *zap.Logger }

func (z zapPrintf) Printf(format string, args ...any) { z.l.Debug(fmt.Sprintf(format, args...)) }

const headerCorrelation = "X-Correlation-Id"

// withCorrelation echoes X-Correlation-Id or makes one, on every response but
// 204 (OC-CTRL-2052).
func (s *Server) withCorrelation(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		id := ctx.Request.Header.Peek(headerCorrelation)
		if len(id) == 0 || len(id) > 128 {
			ctx.Response.Header.Set(headerCorrelation, newCorrelationID())
		} else {
			ctx.Response.Header.SetBytesV(headerCorrelation, id)
		}
		next(ctx)
		if ctx.Response.StatusCode() == fasthttp.StatusNoContent {
			ctx.Response.Header.Del(headerCorrelation)
		}
	}
}

func newCorrelationID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.lnMu.Lock()
	if s.lnClosed {
		s.lnMu.Unlock()
		_ = ln.Close()
		return nil // shut down already
	}
	s.listeners = append(s.listeners, ln)
	s.lnMu.Unlock()
	err := s.http.Serve(ln)
	if s.draining.Load() {
		return nil
	}
	return err
}

// Ready reports whether at least one pool is Ready.
func (s *Server) Ready() bool {
	for _, p := range s.poolList() {
		if p.ready() {
			return true
		}
	}
	return false
}

// Shutdown stops admitting, lets running and queued tasks finish for the
// grace period, then ends the rest with an error and aborts their engine
// requests; it returns once every connection and goroutine is done (SPEC §13)
// or, at the latest, when ctx ends (with an error that says what still ran).
func (s *Server) Shutdown(ctx context.Context) error {
	s.admitMu.Lock()
	s.draining.Store(true)
	s.admitMu.Unlock()
	grace := time.Duration(s.cfg.ShutdownGraceMs) * time.Millisecond
	deadline := time.Now().Add(grace)
	tick := time.NewTicker(20 * time.Millisecond)
	for time.Now().Before(deadline) && s.busy() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			deadline = time.Now()
		}
	}
	tick.Stop()
	// Stop dispatching first, so nothing starts after the sweep below.
	s.closeOnce.Do(func() { close(s.stop) })
	errBg := waitCtx(ctx, &s.bgWG)
	for _, t := range s.tasks.live() {
		s.terminate(t, shutdownError(t), reasonShutdown)
	}
	errTasks := waitCtx(ctx, &s.wg)
	s.lnMu.Lock()
	s.lnClosed = true
	lns := s.listeners
	s.lnMu.Unlock()
	err := s.http.ShutdownWithContext(ctx)
	for _, ln := range lns {
		_ = ln.Close() // a Serve that had not reached fasthttp's yet returns now
	}
	errErase := waitCtx(ctx, &s.eraseWG)
	for _, p := range s.poolList() {
		p.close()
	}
	// Which wait ran out of time, for the log of a shutdown that did.
	var stuck error
	switch {
	case errBg != nil:
		stuck = fmt.Errorf("background loops still running: %w", errBg)
	case errTasks != nil:
		stuck = fmt.Errorf("task goroutines still running: %w", errTasks)
	case errErase != nil:
		stuck = fmt.Errorf("session KV evictions still running: %w", errErase)
	}
	if err != nil && stuck != nil {
		return errors.Join(stuck, fmt.Errorf("connections still open: %w", err))
	}
	if stuck != nil {
		return stuck
	}
	return err
}

// shutdownError is the terminal event of a task Shutdown ends.
func shutdownError(t *task) *APIError {
	return &APIError{Code: CodePoolUnavailable, Message: "orchd is shutting down", Engine: t.pool.engine, PoolID: t.pool.id, Retriable: true}
}

// waitCtx waits for wg, or until ctx ends and then returns its error (the
// goroutines still counted finish on their own; Shutdown does not hang on
// one that is stuck).
func waitCtx(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// busy reports whether any task is queued or running.
func (s *Server) busy() bool {
	for _, t := range s.tasks.live() {
		t.mu.Lock()
		done := t.state == stateDone
		t.mu.Unlock()
		if !done {
			return true
		}
	}
	return false
}

func (s *Server) handleHealthz(ctx *fasthttp.RequestCtx) {
	writeJSON(ctx, fasthttp.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleReadyz(ctx *fasthttp.RequestCtx) {
	type poolReady struct {
		ID    string `json:"id"`
		Ready bool   `json:"ready"`
		Cause string `json:"cause,omitempty"`
	}
	out := struct {
		Ready bool        `json:"ready"`
		Pools []poolReady `json:"pools"`
	}{}
	for _, p := range s.poolList() {
		pr := poolReady{ID: p.id, Ready: p.ready()}
		if e := p.readiness(); e != nil {
			pr.Cause = e.Message
		}
		out.Pools = append(out.Pools, pr)
		out.Ready = out.Ready || pr.Ready
	}
	status := fasthttp.StatusOK
	if !out.Ready || s.draining.Load() {
		status = fasthttp.StatusServiceUnavailable
		out.Ready = false
	}
	writeJSON(ctx, status, out)
}

func (s *Server) handleMetrics(ctx *fasthttp.RequestCtx) {
	if s.cfg.Metrics.RequireKey {
		if _, ok := s.require(ctx, RoleControl); !ok {
			return
		}
	}
	ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
	s.metrics.WritePrometheus(ctx)
}

// findPool routes a request to the pool serving its model_ref and engine.
func (s *Server) findPool(modelRef, engine string) (*pool, *APIError) {
	for _, p := range s.poolList() {
		if (p.model() == modelRef || p.id == modelRef) && (engine == "" || engine == p.engine) {
			return p, nil
		}
	}
	served := ""
	for i, p := range s.poolList() {
		if i > 0 {
			served += ", "
		}
		served += p.model() + " (" + p.engine + ")"
	}
	msg := fmt.Sprintf("no pool serves model_ref %q", modelRef)
	if engine != "" {
		msg += " on engine " + strconv.Quote(engine)
	}
	return nil, errInvalid(msg + "; served: " + served)
}

// taskByPath finds the caller's task named by the {id} path value, answering
// 404 for an unknown id or another tenant's (never revealing it exists).
func (s *Server) taskByPath(ctx *fasthttp.RequestCtx, pr Principal) *task {
	t, ok := s.tasks.get(taskKey{pr.Tenant, pathID(ctx)})
	if !ok {
		writeError(ctx, &APIError{Code: CodeNotFound, Message: "unknown task id (or its log was dropped after task_retention_ms)"})
		return nil
	}
	return t
}

func (s *Server) handleCancel(ctx *fasthttp.RequestCtx) {
	pr, ok := s.require(ctx, RoleData)
	if !ok {
		return
	}
	t := s.taskByPath(ctx, pr)
	if t == nil {
		return
	}
	s.terminate(t, &APIError{Code: CodeCanceled, Message: "canceled by the client", Engine: t.pool.engine, PoolID: t.pool.id}, reasonClient)
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

func (s *Server) handleSessionGet(ctx *fasthttp.RequestCtx) {
	pr, ok := s.require(ctx, RoleData)
	if !ok {
		return
	}
	v, ok := s.sessions.view(pr.Tenant, pathID(ctx))
	if !ok {
		writeError(ctx, &APIError{Code: CodeNotFound, Message: "unknown, expired or deleted session"})
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, v)
}

func (s *Server) handleSessionDelete(ctx *fasthttp.RequestCtx) {
	pr, ok := s.require(ctx, RoleData)
	if !ok {
		return
	}
	p, r, slot, ok := s.sessions.remove(pr.Tenant, pathID(ctx))
	if !ok {
		writeError(ctx, &APIError{Code: CodeNotFound, Message: "unknown, expired or deleted session"})
		return
	}
	s.admitMu.RLock()
	defer s.admitMu.RUnlock()
	if p != nil && r != nil && slot >= 0 && !s.draining.Load() {
		if eraser, ok := p.stateOf(r).adapter.(engines.SlotEraser); ok {
			// Best effort and off the request path: the session is gone for
			// the gateway either way.
			s.eraseWG.Add(1)
			go func() {
				defer s.eraseWG.Done()
				ectx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := eraser.EraseSlot(ectx, slot); err != nil {
					s.log.Warn("cannot evict session KV", zap.String("pool_id", p.id), zap.String("replica_id", r.ID), zap.Int("slot", slot), zap.Error(err))
				}
			}()
		}
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// poolList is the current pools (a config apply replaces the list whole).
func (s *Server) poolList() []*pool { return *s.pools.Load() }

// startPool starts p's health checks, dispatcher and watchdog.
func (s *Server) startPool(p *pool) {
	p.healthLoop(p.set(), s.stop, s.cfg.Health, &s.bgWG)
	s.startPoolRunners(p)
}

// startPoolRunners starts p's dispatcher and watchdog.
func (s *Server) startPoolRunners(p *pool) {
	prefer := func(t *task) *balancer.Replica { return s.sessions.lastReplica(t.key.tenant, t.sessionID, t.pool) }
	expire := func(t *task, ae *APIError, kind abortReason) {
		switch {
		case kind == abortFirstToken:
			// A first-token miss is a replica failure: retried elsewhere.
			s.abortRun(t, abortFirstToken)
		case kind == abortIdle && t.resumes():
			s.abortRun(t, abortIdle)
		default:
			if kind == abortIdle {
				t.mu.Lock()
				t.fault = true // a stall counts against the replica's breaker
				t.mu.Unlock()
			}
			s.terminate(t, ae, reasonWatchdog)
		}
	}
	s.bgWG.Add(2)
	go func() {
		defer s.bgWG.Done()
		p.dispatch(s.stop, prefer, s.startTask, s.exhaustQueued)
	}()
	go func() {
		defer s.bgWG.Done()
		p.watchdog(s.stop, expire, s.reportProgress)
	}()
}
