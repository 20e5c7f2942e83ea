package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/engines"
)

// Control plane (SPEC §9, role control): pool health and drain, replica
// sets, capabilities.

// APIVersion is the OrchQueue API version reported by /v1/capabilities.
const APIVersion = "v1"

// ttftWindow keeps a pool's recent times to first token for the p50/p95/p99
// of /v1/replicasets (the histograms in /metrics are for Prometheus).
type ttftWindow struct {
	mu   sync.Mutex
	ring [1024]float64
	n    int // values written (ring index = n % len)
}

func (w *ttftWindow) add(ms float64) {
	w.mu.Lock()
	w.ring[w.n%len(w.ring)] = ms
	w.n++
	w.mu.Unlock()
}

// quantiles returns p50, p95, p99 of the window (zeros when empty).
func (w *ttftWindow) quantiles() (p50, p95, p99 float64) {
	w.mu.Lock()
	n := min(w.n, len(w.ring))
	vals := append([]float64(nil), w.ring[:n]...)
	w.mu.Unlock()
	if n == 0 {
		return 0, 0, 0
	}
	sort.Float64s(vals)
	q := func(p float64) float64 { return vals[min(int(p*float64(n)), n-1)] }
	return q(0.50), q(0.95), q(0.99)
}

type quantilesMs struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

type replicaView struct {
	ID         string         `json:"id"`
	URL        string         `json:"url"`
	State      string         `json:"state"`
	Breaker    string         `json:"breaker"`
	Inflight   int            `json:"inflight"`
	Slots      int            `json:"slots"`
	EngineLoad map[string]int `json:"engine_load"`
	LastError  string         `json:"last_error"`
	Version    string         `json:"engine_version"`
	// Placement as configured (SPEC §5: reported per replica).
	Devices     []int     `json:"devices,omitempty"`
	TensorSplit []float64 `json:"tensor_split,omitempty"`
	VRAMBytes   []int64   `json:"vram_bytes,omitempty"`
	KVBytesGPU  int64     `json:"kv_bytes_per_gpu,omitempty"`
}

type replicaSetView struct {
	PoolID        string        `json:"pool_id"`
	Engine        string        `json:"engine"`
	EngineVersion string        `json:"engine_version"`
	Model         string        `json:"model"`
	Ready         bool          `json:"ready"`
	Draining      bool          `json:"draining"`
	QueueDepth    int           `json:"queue_depth"`
	Replicas      []replicaView `json:"replicas"`
	SLO           struct {
		TTFTMs quantilesMs `json:"ttft_ms"`
	} `json:"slo"`
}

func (s *Server) replicaSet(p *pool) replicaSetView {
	v := replicaSetView{PoolID: p.id, Engine: p.engine, EngineVersion: p.engineVersion(), Model: p.model(),
		Ready: p.ready(), Draining: p.draining.Load(), QueueDepth: p.queue.Len()}
	for i, r := range p.replicas {
		st := p.states[i]
		rc := p.cfg.Replicas[i]
		rv := replicaView{ID: r.ID, URL: r.URL, Inflight: r.InFlight(), Slots: r.Slots(),
			Breaker: p.breakerState(i), EngineLoad: map[string]int{}, Version: p.replicaVersion(i),
			Devices: rc.Devices, TensorSplit: rc.TensorSplit, VRAMBytes: rc.VRAMBytes, KVBytesGPU: rc.KVBytesGPU}
		switch {
		case p.draining.Load():
			rv.State = "draining"
		case st.heldOut.Load():
			rv.State = "held_out"
		case r.Ready():
			rv.State = "ready"
		default:
			rv.State = "unready"
		}
		if e := st.lastError.Load(); e != nil {
			rv.LastError = *e
		}
		if proc, def, ok := r.EngineLoad(); ok {
			rv.EngineLoad["requests_processing"] = proc
			rv.EngineLoad["requests_deferred"] = def
		}
		v.Replicas = append(v.Replicas, rv)
	}
	v.SLO.TTFTMs.P50, v.SLO.TTFTMs.P95, v.SLO.TTFTMs.P99 = p.ttft.quantiles()
	return v
}

func (s *Server) handleReplicaSets(ctx *fasthttp.RequestCtx) {
	if _, ok := s.require(ctx, RoleControl); !ok {
		return
	}
	out := struct {
		ReplicaSets []replicaSetView `json:"replicasets"`
	}{ReplicaSets: []replicaSetView{}}
	for _, p := range s.pools {
		out.ReplicaSets = append(out.ReplicaSets, s.replicaSet(p))
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

// poolByPath finds the pool named by the {id} path value, answering 404.
func (s *Server) poolByPath(ctx *fasthttp.RequestCtx) *pool {
	id, _ := ctx.UserValue("id").(string)
	for _, p := range s.pools {
		if p.id == id {
			return p
		}
	}
	writeError(ctx, &APIError{Code: CodeNotFound, Message: "no pool " + strconv.Quote(id)})
	return nil
}

func (s *Server) handlePoolHealth(ctx *fasthttp.RequestCtx) {
	if _, ok := s.require(ctx, RoleControl); !ok {
		return
	}
	p := s.poolByPath(ctx)
	if p == nil {
		return
	}
	total, free := p.capacity()
	ready := 0
	for _, r := range p.replicas {
		if r.Ready() {
			ready++
		}
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{
		"live":       true,
		"ready":      p.ready(),
		"draining":   p.draining.Load(),
		"last_error": p.lastError(),
		"metrics": map[string]any{
			"queue_depth":    p.queue.Len(),
			"slots":          total,
			"slots_free":     free,
			"replicas":       len(p.replicas),
			"replicas_ready": ready,
			"engine_version": p.engineVersion(),
		},
	})
}

// handleDrain is POST /v1/pools/{id}/drain {deadline_ms}: no new admissions
// (POOL_UNREADY), queued and running work may finish until the deadline,
// then what is left is ended with an error and its engine requests aborted.
func (s *Server) handleDrain(ctx *fasthttp.RequestCtx) {
	if _, ok := s.require(ctx, RoleControl); !ok {
		return
	}
	p := s.poolByPath(ctx)
	if p == nil {
		return
	}
	var body struct {
		DeadlineMs *int64 `json:"deadline_ms"`
	}
	if b := ctx.PostBody(); len(b) > 0 {
		if err := json.Unmarshal(b, &body); err != nil {
			writeError(ctx, errInvalid("body must be {\"deadline_ms\": N}: "+err.Error()))
			return
		}
	}
	deadline := int64(30000)
	if body.DeadlineMs != nil {
		if *body.DeadlineMs < 0 {
			writeError(ctx, errInvalid("deadline_ms must be >= 0"))
			return
		}
		deadline = *body.DeadlineMs
	}
	if p.draining.Swap(true) {
		writeJSON(ctx, fasthttp.StatusAccepted, map[string]any{"pool_id": p.id, "draining": true, "already": true})
		return
	}
	s.log.Info("pool draining", zap.String("pool_id", p.id), zap.Int64("deadline_ms", deadline))
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		timer := time.NewTimer(time.Duration(deadline) * time.Millisecond)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-s.stop:
			return
		}
		n := 0
		for _, t := range s.tasks.live() {
			if t.pool == p && s.terminate(t, &APIError{Code: CodePoolUnready, Engine: p.engine, PoolID: p.id, Retriable: true,
				Message: "pool " + p.id + " drained: the drain deadline passed"}, "drained") {
				n++
			}
		}
		s.log.Info("pool drained", zap.String("pool_id", p.id), zap.Int("ended", n))
	}()
	writeJSON(ctx, fasthttp.StatusAccepted, map[string]any{"pool_id": p.id, "draining": true, "deadline_ms": deadline})
}

// handleCapabilities is GET /v1/capabilities (SPEC §9).
func (s *Server) handleCapabilities(ctx *fasthttp.RequestCtx) {
	if _, ok := s.require(ctx, RoleControl); !ok {
		return
	}
	type engineCaps struct {
		CtxMax     int             `json:"ctx_max"`
		Workloads  []string        `json:"workloads"`
		RateLimits map[string]any  `json:"rate_limits"`
		Features   map[string]bool `json:"features"`
		Pools      []string        `json:"pools"`
	}
	caps := map[string]*engineCaps{}
	for _, p := range s.pools {
		c := caps[p.engine]
		if c == nil {
			c = &engineCaps{Workloads: []string{"completion"}, RateLimits: map[string]any{}, Features: map[string]bool{
				"streaming": true, "interruptible_decode": p.interruptible(), "session_affinity": true,
				"failover_resume": true, "deadlines": true, "cancel": true,
			}}
			caps[p.engine] = c
		}
		c.CtxMax = max(c.CtxMax, p.ctxLimit())
		c.Pools = append(c.Pools, p.id)
		c.RateLimits[p.id] = map[string]any{"queue_capacity": p.queue.Capacity(), "full_policy": p.queue.Policy(),
			"max_tokens_limit": s.cfg.Admission.MaxTokensLimit}
		_, tok := p.states[0].adapter.(engines.Tokenizer)
		c.Features["engine_tokenizer"] = tok
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"api_version": APIVersion, "engines": caps})
}

// handleReload is POST /v1/pools/{id}/reload {"new_model_ref", "replicas"?,
// "timeout_ms"?} (SPEC §9): synchronous. Every replica must pass health and
// report new_model_ref as its model within timeout_ms (default 30 s); then the
// pool serves new_model_ref (routing and the engine_model check switch
// atomically) and the answer is 200 with the new set. Otherwise nothing
// changes: 409 with the reason. This build reloads the replicas it has (the
// default: the operator restarted them with the new model); a different list
// of replica URLs is refused with 409 — restart orchd with the new config.
func (s *Server) handleReload(ctx *fasthttp.RequestCtx) {
	if _, ok := s.require(ctx, RoleControl); !ok {
		return
	}
	p := s.poolByPath(ctx)
	if p == nil {
		return
	}
	var body struct {
		NewModelRef string `json:"new_model_ref"`
		Replicas    []struct {
			ID  string `json:"id"`
			URL string `json:"url"`
		} `json:"replicas"`
		TimeoutMs *int64 `json:"timeout_ms"`
	}
	dec := json.NewDecoder(bytes.NewReader(ctx.PostBody()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.NewModelRef == "" {
		writeError(ctx, errInvalid(`body must be {"new_model_ref": "...", "replicas"?: [{"id","url"}], "timeout_ms"?: N}`))
		return
	}
	timeout := 30 * time.Second
	if body.TimeoutMs != nil {
		if *body.TimeoutMs <= 0 {
			writeError(ctx, errInvalid("timeout_ms must be > 0"))
			return
		}
		timeout = time.Duration(*body.TimeoutMs) * time.Millisecond
	}
	conflict := func(reason string) {
		s.log.Warn("pool reload refused", zap.String("pool_id", p.id), zap.String("new_model_ref", body.NewModelRef), zap.String("reason", reason))
		writeJSON(ctx, fasthttp.StatusConflict, &APIError{Code: "RELOAD_FAILED", PoolID: p.id, Engine: p.engine, Message: reason})
	}
	if len(body.Replicas) > 0 {
		same := len(body.Replicas) == len(p.replicas)
		for i := 0; same && i < len(body.Replicas); i++ {
			same = body.Replicas[i].URL == p.replicas[i].URL
		}
		if !same {
			conflict("this build reloads a pool's current replicas only; a new replica list needs a restart with the new config")
			return
		}
	}
	deadline := time.Now().Add(timeout)
	var why string
	for {
		why = p.verifyModel(body.NewModelRef, time.Until(deadline))
		if why == "" || time.Now().After(deadline) {
			break
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-s.stop:
			conflict("orchd is shutting down")
			return
		}
	}
	if why != "" {
		conflict("new replica set not verified within " + time.Duration(timeout).String() + ": " + why)
		return
	}
	old := p.model()
	p.models.Store(&poolModels{model: body.NewModelRef, engineModel: body.NewModelRef})
	s.log.Info("pool reloaded", zap.String("pool_id", p.id), zap.String("from_model", old), zap.String("to_model", body.NewModelRef))
	writeJSON(ctx, fasthttp.StatusOK, s.replicaSet(p))
}

// verifyModel checks that every replica is healthy and reports model; "" when
// all do, else the first reason one does not.
func (p *pool) verifyModel(model string, within time.Duration) string {
	for i, r := range p.replicas {
		prober, ok := p.states[i].adapter.(engines.Prober)
		if !ok {
			return "replica " + r.ID + ": its engine cannot report a model, so it cannot be verified"
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(min(within, 5*time.Second), 100*time.Millisecond))
		err := prober.Health(ctx)
		var props engines.Props
		if err == nil {
			props, err = prober.Props(ctx)
		}
		cancel()
		switch {
		case err != nil:
			return "replica " + r.ID + ": " + err.Error()
		case props.Model == "":
			return "replica " + r.ID + ": its engine reports no model, so it cannot be verified"
		case props.Model != model:
			return "replica " + r.ID + " reports model " + strconv.Quote(props.Model) + ", not " + strconv.Quote(model)
		}
	}
	return ""
}
