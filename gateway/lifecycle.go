package gateway

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/gateway/catalog"
)

// The model catalog and lifecycle (SPEC §9): operators register a model's
// artifact (where its bytes are, its digest, signature and SBOM), verify it
// and move it through Draft → Active → Canary → Deprecated → Retired. The
// store, trust policy and verification are package catalog; this file is its
// HTTP surface (control role), its admission check and its metrics.
//
// A catalog entry's id is the model name pools serve (a pool's `model`): a
// model with no entry is not subject to lifecycle. Deprecated refuses new
// sessions of the model with MODEL_DEPRECATED (a session whose earlier turns
// ran on it continues, until the state change's deadline_ms when one was
// given); Retired refuses every request of it and, after deadline_ms, ends
// its queued and running tasks with MODEL_DEPRECATED.

// maxVerifyTime bounds one verification (hashing a large artifact).
const maxVerifyTime = 30 * time.Minute

// lifecycle is the pre-admission lifecycle check of SPEC §3.1 for a task of
// tenant's session sessionID on pool p.
func (s *Server) lifecycle(p *pool, tenant, sessionID string) *APIError {
	model := p.model()
	st, until, ok := s.catalog.Lookup(model)
	if !ok {
		return nil
	}
	switch st {
	case catalog.Retired:
		return &APIError{Code: CodeModelDeprecated, Engine: p.engine, PoolID: p.id, Message: "model " + model + " is retired"}
	case catalog.Deprecated:
		if !s.sessions.servedModel(tenant, sessionID, model) || !until.IsZero() && !time.Now().Before(until) {
			msg := "model " + model + " is deprecated: new sessions are refused"
			if !until.IsZero() {
				msg += "; existing sessions may continue until " + until.UTC().Format(time.RFC3339)
				if !time.Now().Before(until) {
					msg = "model " + model + " is deprecated and its sessions' deadline has passed"
				}
			}
			return &APIError{Code: CodeModelDeprecated, Engine: p.engine, PoolID: p.id, Message: msg}
		}
	}
	// Under the strict policy a catalog model serves only while its latest
	// verification passed with a trusted signature (a Draft never verified,
	// or an artifact found tampered, does not).
	if s.catalog.Policy() == catalog.PolicyStrict {
		if trusted, _ := s.catalog.Trusted(model); !trusted {
			return &APIError{Code: CodeUntrustedArtifact, Engine: p.engine, PoolID: p.id,
				Message: "model " + model + " is not trusted: its artifact has no passing, signed verification (trust_policy strict)"}
		}
	}
	return nil
}

// catalogError maps a catalog error to the API envelope.
func catalogError(err error) *APIError {
	var ce *catalog.Error
	if !errors.As(err, &ce) {
		return &APIError{Code: CodeInternal, Message: "catalog: " + err.Error()}
	}
	switch ce.Kind {
	case catalog.KindInvalid:
		return errInvalid(ce.Msg)
	case catalog.KindNotFound:
		return &APIError{Code: CodeNotFound, Message: ce.Msg}
	case catalog.KindExists, catalog.KindConflict:
		return &APIError{Code: CodeInvalidParams, Message: ce.Msg, status: fasthttp.StatusConflict}
	case catalog.KindUntrusted:
		return &APIError{Code: CodeUntrustedArtifact, Message: ce.Msg}
	case catalog.KindInterrupted:
		return &APIError{Code: CodeInternal, Message: ce.Msg, status: fasthttp.StatusServiceUnavailable, RetryAfterMs: 1000}
	}
	return &APIError{Code: CodeInternal, Message: ce.Msg}
}

// handleCatalogList is GET /v1/catalog/models: every entry, by id.
func (s *Server) handleCatalogList(ctx *fasthttp.RequestCtx) {
	if _, ok := s.requireControlRead(ctx); !ok {
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"trust_policy": s.catalog.Policy(), "models": s.catalog.List()})
}

// handleCatalogRegister is POST /v1/catalog/models: a new entry in Draft
// (201), or 400 (INVALID_PARAMS, UNTRUSTED_ARTIFACT under strict policy) or
// 409 (the id is taken), changing nothing.
func (s *Server) handleCatalogRegister(ctx *fasthttp.RequestCtx) {
	if _, ok := s.require(ctx, RoleControl); !ok {
		return
	}
	var reg catalog.Registration
	if msg := decodeStrict(ctx.PostBody(), &reg); msg != "" {
		writeError(ctx, errInvalid("body must be {\"id\", \"ref\", \"digest\"?, \"signature\"?, \"sbom\"?, \"engine\"?}: "+msg))
		return
	}
	e, err := s.catalog.Register(reg)
	if err != nil {
		ae := catalogError(err)
		s.log.Warn("catalog registration refused", zap.String("model_id", reg.ID), zap.String("code", ae.Code), zap.String("error", ae.Message))
		writeError(ctx, ae)
		return
	}
	s.log.Info("model registered", zap.String("model_id", e.ID), zap.String("ref", logRef(e.Ref)), zap.String("digest", e.Digest), zap.String("state", string(e.State)))
	s.events.publish(opsEvent{Type: "model_state", Model: e.ID, To: string(e.State)})
	writeJSON(ctx, fasthttp.StatusCreated, e)
}

// handleCatalogModel serves /v1/catalog/models/{id…}: GET the entry, POST
// …/verify, POST …/state. Model ids may hold '/' (org/name), so the route
// is a catch-all and the action is the last path segment.
func (s *Server) handleCatalogModel(ctx *fasthttp.RequestCtx) {
	raw, _ := ctx.UserValue("rest").(string)
	// The router matches the raw path: org%2Fname is the id org/name.
	rest, err := url.PathUnescape(strings.TrimPrefix(raw, "/"))
	if err != nil {
		writeError(ctx, errInvalid("bad model id in the path: "+err.Error()))
		return
	}
	switch {
	case ctx.IsGet():
		if _, ok := s.requireControlRead(ctx); !ok {
			return
		}
		e, ok := s.catalog.Get(rest)
		if !ok {
			writeError(ctx, &APIError{Code: CodeNotFound, Message: "no model " + strconv.Quote(rest) + " in the catalog"})
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, e)
	case ctx.IsPost() && strings.HasSuffix(rest, "/verify"):
		s.handleCatalogVerify(ctx, strings.TrimSuffix(rest, "/verify"))
	case ctx.IsPost() && strings.HasSuffix(rest, "/state"):
		s.handleCatalogState(ctx, strings.TrimSuffix(rest, "/state"))
	default:
		writeError(ctx, &APIError{Code: CodeNotFound, Message: "no such catalog endpoint: " + string(ctx.Method()) + " " + string(ctx.Path()) +
			" (GET /v1/catalog/models/{id}, POST /v1/catalog/models/{id}/verify, POST /v1/catalog/models/{id}/state; ids may be URL-escaped)"})
	}
}

// handleCatalogVerify reads the artifact, checks its digest and signature
// and records the result (200 with the entry and the verification). Under
// the strict policy a failed verification answers 400 UNTRUSTED_ARTIFACT
// (still recorded).
func (s *Server) handleCatalogVerify(ctx *fasthttp.RequestCtx, id string) {
	if _, ok := s.require(ctx, RoleControl); !ok {
		return
	}
	before, ok := s.catalog.Get(id)
	if !ok {
		writeError(ctx, &APIError{Code: CodeNotFound, Message: "no model " + strconv.Quote(id) + " in the catalog"})
		return
	}
	// Bounded in time; shutdown cancels it too. (Not the request's context:
	// fasthttp's RequestCtx is not canceled when the client leaves.)
	vctx, cancel := context.WithTimeout(context.Background(), maxVerifyTime)
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-vctx.Done():
		}
	}()
	e, v, err := s.catalog.Verify(vctx, id)
	var ce *catalog.Error
	if err != nil && (!errors.As(err, &ce) || ce.Kind != catalog.KindUntrusted) {
		writeError(ctx, catalogError(err))
		return
	}
	engine := before.Engine
	if engine == "" {
		engine = s.engineOfModel(id)
	}
	s.metrics.verification(v.Result, v.Reason, engine)
	fields := []zap.Field{zap.String("model_id", id), zap.String("result", v.Result), zap.String("reason", v.Reason),
		zap.String("resolved_digest", v.ResolvedDigest), zap.Int64("bytes", v.Bytes)}
	if v.Result == "pass" {
		s.log.Info("model verified", fields...)
	} else {
		s.log.Warn("model verification failed", fields...)
	}
	s.events.publish(opsEvent{Type: "model_verification", Model: id, OK: ptr(v.Result == "pass"), Reason: v.Reason})
	if err != nil {
		writeError(ctx, catalogError(err))
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"model": e, "verification": v})
}

// handleCatalogState moves a model to another lifecycle state: POST
// {"state", "deadline_ms"?}. Deprecated: new sessions are refused at once,
// existing ones until deadline_ms (absent or 0: until Retired). Retired:
// every request is refused at once and, after deadline_ms (default 0), the
// model's queued and running tasks end with MODEL_DEPRECATED.
func (s *Server) handleCatalogState(ctx *fasthttp.RequestCtx, id string) {
	if _, ok := s.require(ctx, RoleControl); !ok {
		return
	}
	var body struct {
		State      string `json:"state"`
		DeadlineMs *int64 `json:"deadline_ms"`
	}
	if msg := decodeStrict(ctx.PostBody(), &body); msg != "" {
		writeError(ctx, errInvalid("body must be {\"state\", \"deadline_ms\"?}: "+msg))
		return
	}
	to, ok := catalog.ParseState(body.State)
	if !ok {
		names := make([]string, len(catalog.States))
		for i, st := range catalog.States {
			names[i] = string(st)
		}
		writeError(ctx, errInvalid("state must be one of "+strings.Join(names, ", ")+", got "+strconv.Quote(body.State)))
		return
	}
	var deadline time.Duration
	if body.DeadlineMs != nil {
		if *body.DeadlineMs < 0 || *body.DeadlineMs > int64(30*24*time.Hour/time.Millisecond) {
			writeError(ctx, errInvalid("deadline_ms must be between 0 and 30 days"))
			return
		}
		deadline = time.Duration(*body.DeadlineMs) * time.Millisecond
	}
	before, _ := s.catalog.Get(id)
	e, err := s.catalog.SetState(id, to, deadline)
	if err != nil {
		writeError(ctx, catalogError(err))
		return
	}
	s.log.Info("model state changed", zap.String("model_id", id), zap.String("from", string(before.State)), zap.String("to", string(e.State)),
		zap.Int64("deadline_ms", deadline.Milliseconds()))
	s.events.publish(opsEvent{Type: "model_state", Model: id, From: string(before.State), To: string(e.State), DeadlineMs: ptr(deadline.Milliseconds())})
	switch {
	case e.State == catalog.Retired:
		s.endModelTasks(id, deadline, "was retired")
	case e.State == catalog.Deprecated && deadline > 0:
		// Its sessions may go on until the deadline; then, like a pool
		// drain, what still runs ends.
		s.endModelTasks(id, deadline, "is deprecated and the deadline for its sessions passed")
	}
	writeJSON(ctx, fasthttp.StatusOK, e)
}

// endModelTasks ends the queued and running tasks of the pools serving
// model with MODEL_DEPRECATED once deadline has passed — if the model is
// still Deprecated or Retired then (an operator may have reactivated it).
// New admissions are refused already (lifecycle).
func (s *Server) endModelTasks(model string, deadline time.Duration, why string) {
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		defer recoverLog(s.log, "end model tasks")
		timer := time.NewTimer(deadline)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-s.stop:
			return
		}
		if st, _, ok := s.catalog.Lookup(model); !ok || st != catalog.Deprecated && st != catalog.Retired {
			return
		}
		// A task admitted just before the state changed is in the registry
		// once admission's read lock is released.
		s.admitMu.Lock()
		live := s.tasks.live()
		s.admitMu.Unlock()
		n := 0
		for _, t := range live {
			if t.pool.model() != model {
				continue
			}
			if s.terminate(t, &APIError{Code: CodeModelDeprecated, Engine: t.pool.engine, PoolID: t.pool.id,
				Message: "model " + model + " " + why}, "retired") {
				n++
			}
		}
		s.log.Info("model tasks ended", zap.String("model_id", model), zap.String("why", why), zap.Int("ended", n))
	}()
}

// logRef is an artifact ref fit for the logs: a URL's query (which may hold
// a presigned credential) and user info are dropped.
func logRef(ref string) string {
	u, err := url.Parse(ref)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return ref
	}
	u.RawQuery, u.User, u.Fragment = "", nil, ""
	return u.String()
}

// engineOfModel is the engine of the pool serving model ("-" if none).
func (s *Server) engineOfModel(model string) string {
	for _, p := range s.poolList() {
		if p.model() == model {
			return p.engine
		}
	}
	return unknownLabel
}
