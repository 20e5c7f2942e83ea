package gateway

import (
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
	v := replicaSetView{PoolID: p.id, Engine: p.engine, EngineVersion: p.engineVersion(), Model: p.cfg.Model,
		Ready: p.ready(), Draining: p.draining.Load(), QueueDepth: p.queue.Len()}
	for i, r := range p.replicas {
		st := p.states[i]
		rv := replicaView{ID: r.ID, URL: r.URL, Inflight: r.InFlight(), Slots: r.Slots(),
			Breaker: p.breakerState(i), EngineLoad: map[string]int{}, Version: p.replicaVersion(i)}
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
