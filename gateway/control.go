package gateway

import (
	"context"
	"encoding/json"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/gateway/admission"
	"github.com/llama-orch/llama-orch/gateway/config"
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
	ID         string             `json:"id"`
	URL        string             `json:"url"`
	State      string             `json:"state"`
	Breaker    string             `json:"breaker"`
	Inflight   int                `json:"inflight"`
	Slots      int                `json:"slots"`
	EngineLoad map[string]float64 `json:"engine_load"`
	LastError  string             `json:"last_error"`
	Version    string             `json:"engine_version"`
	// Placement as configured (SPEC §5: reported per replica).
	Devices     []int     `json:"devices,omitempty"`
	TensorSplit []float64 `json:"tensor_split,omitempty"`
	VRAMBytes   []int64   `json:"vram_bytes,omitempty"`
	KVBytesGPU  int64     `json:"kv_bytes_per_gpu,omitempty"`
}

type replicaSetView struct {
	PoolID        string `json:"pool_id"`
	Engine        string `json:"engine"`
	EngineVersion string `json:"engine_version"`
	Model         string `json:"model"`
	Ready         bool   `json:"ready"`
	Draining      bool   `json:"draining"`
	QueueDepth    int    `json:"queue_depth"`
	Queue         struct {
		Capacity   int            `json:"capacity"`
		ByPriority map[string]int `json:"by_priority"`
	} `json:"queue"`
	Replicas []replicaView `json:"replicas"`
	SLO      struct {
		TTFTMs quantilesMs `json:"ttft_ms"`
	} `json:"slo"`
}

func (s *Server) replicaSet(p *pool) replicaSetView {
	v := replicaSetView{PoolID: p.id, Engine: p.engine, EngineVersion: p.engineVersion(), Model: p.model(),
		Ready: p.ready(), Draining: p.draining.Load(), QueueDepth: p.queue.Len()}
	v.Queue.Capacity = p.queue.Capacity()
	v.Queue.ByPriority = map[string]int{}
	for prio := admission.Priority(0); prio < admission.NumPriorities; prio++ {
		v.Queue.ByPriority[prio.String()] = p.queue.LenPriority(prio)
	}
	rs := p.set()
	for i, r := range rs.replicas {
		st := rs.states[i]
		rc := rs.cfgs[i]
		rv := replicaView{ID: r.ID, URL: r.URL, Inflight: r.InFlight(), Slots: r.Slots(),
			Breaker: r.BreakerState().String(), EngineLoad: map[string]float64{}, Version: p.replicaVersion(r),
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
		if l := st.load.Load(); l != nil {
			rv.EngineLoad["requests_processing"] = float64(l.Processing)
			rv.EngineLoad["requests_deferred"] = float64(l.Deferred)
			if l.HasKVCacheUsage {
				rv.EngineLoad["kv_cache_usage_ratio"] = l.KVCacheUsage
			}
		}
		v.Replicas = append(v.Replicas, rv)
	}
	v.SLO.TTFTMs.P50, v.SLO.TTFTMs.P95, v.SLO.TTFTMs.P99 = p.ttft.quantiles()
	return v
}

func (s *Server) handleReplicaSets(ctx *fasthttp.RequestCtx) {
	if _, ok := s.requireControlRead(ctx); !ok {
		return
	}
	out := struct {
		ReplicaSets []replicaSetView `json:"replicasets"`
		// SLOAttainment is per priority over recent tasks (all pools).
		SLOAttainment []sloStatus `json:"slo_attainment"`
	}{ReplicaSets: []replicaSetView{}, SLOAttainment: s.slo.status()}
	for _, p := range s.poolList() {
		out.ReplicaSets = append(out.ReplicaSets, s.replicaSet(p))
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

// poolByPath finds the pool named by the {id} path value, answering 404.
func (s *Server) poolByPath(ctx *fasthttp.RequestCtx) *pool {
	id, _ := ctx.UserValue("id").(string)
	for _, p := range s.poolList() {
		if p.id == id {
			return p
		}
	}
	writeError(ctx, &APIError{Code: CodeNotFound, Message: "no pool " + strconv.Quote(id)})
	return nil
}

func (s *Server) handlePoolHealth(ctx *fasthttp.RequestCtx) {
	if _, ok := s.requireControlRead(ctx); !ok {
		return
	}
	p := s.poolByPath(ctx)
	if p == nil {
		return
	}
	total, free := p.capacity()
	ready := 0
	rs := p.set()
	for _, r := range rs.replicas {
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
			"replicas":       len(rs.replicas),
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
	s.log.Info("pool draining", zap.String("pool_id", p.id), zap.String("engine", p.engine), zap.String("model_id", p.model()), zap.Int64("deadline_ms", deadline))
	s.events.publish(opsEvent{Type: "drain", PoolID: p.id, DeadlineMs: ptr(deadline)})
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		defer recoverLog(p.log, "drain")
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
		s.log.Info("pool drained", zap.String("pool_id", p.id), zap.String("engine", p.engine), zap.String("model_id", p.model()), zap.Int("ended", n))
	}()
	writeJSON(ctx, fasthttp.StatusAccepted, map[string]any{"pool_id": p.id, "draining": true, "deadline_ms": deadline})
}

// handleCapabilities is GET /v1/capabilities (SPEC §9).
func (s *Server) handleCapabilities(ctx *fasthttp.RequestCtx) {
	if _, ok := s.requireControlRead(ctx); !ok {
		return
	}
	// replicaCaps is what one replica's adapter and engine report
	// (OC-ADAPT-5011): "" / 0 where the engine does not say.
	type replicaCaps struct {
		PoolID              string `json:"pool_id"`
		ReplicaID           string `json:"replica_id"`
		InterruptibleDecode bool   `json:"interruptible_decode"`
		Slots               int    `json:"slots"`
		CtxMax              int    `json:"ctx_max"`
		EngineVersion       string `json:"engine_version"`
		Model               string `json:"model"`
		ModelDigest         string `json:"model_digest,omitempty"`
	}
	type engineCaps struct {
		CtxMax     int             `json:"ctx_max"`
		Workloads  []string        `json:"workloads"`
		RateLimits map[string]any  `json:"rate_limits"`
		Features   map[string]bool `json:"features"`
		Pools      []string        `json:"pools"`
		Replicas   []replicaCaps   `json:"replicas"`
	}
	caps := map[string]*engineCaps{}
	for _, p := range s.poolList() {
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
		rs := p.set()
		_, tok := rs.states[0].adapter.(engines.Tokenizer)
		c.Features["engine_tokenizer"] = tok
		for i, r := range rs.replicas {
			st := rs.states[i]
			rc := replicaCaps{PoolID: p.id, ReplicaID: r.ID, Slots: r.Slots(), EngineVersion: p.replicaVersion(r)}
			if in, ok := st.adapter.(engines.Interruptible); ok {
				rc.InterruptibleDecode = in.InterruptibleDecode()
			}
			if pr := st.props.Load(); pr != nil {
				rc.CtxMax, rc.Model, rc.ModelDigest = pr.CtxMax, pr.Model, pr.ModelDigest
			}
			c.Replicas = append(c.Replicas, rc)
		}
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"api_version": APIVersion, "engines": caps})
}

// maxReloadTimeoutMs bounds a reload's wait (it holds off config applies).
const maxReloadTimeoutMs = 300000

// hasPool reports whether p is still one of the server's pools.
func (s *Server) hasPool(p *pool) bool {
	for _, q := range s.poolList() {
		if q == p {
			return true
		}
	}
	return false
}

// reloadReplica is one entry of a reload's replica list.
type reloadReplica struct {
	ID    string `json:"id"`
	URL   string `json:"url"`
	Slots *int   `json:"slots"`
}

// handleReload is POST /v1/pools/{id}/reload {"new_model_ref", "replicas"?,
// "timeout_ms"?} (SPEC §9): synchronous. Every replica must pass health and
// report new_model_ref as its model within timeout_ms (default 30 s); then the
// pool serves new_model_ref (routing and the engine_model check switch
// atomically) and the answer is 200 with the new set. Otherwise nothing
// changes: 409 with the reason. Without "replicas" (or with the current
// list) the pool's replicas are re-verified in place (the operator restarted
// them with the new model); a different list builds a new replica set with
// its own health checks, which must all pass before the pool switches to it;
// tasks running on the old set finish there, then it is closed.
func (s *Server) handleReload(ctx *fasthttp.RequestCtx) {
	if _, ok := s.require(ctx, RoleControl); !ok {
		return
	}
	p := s.poolByPath(ctx)
	if p == nil {
		return
	}
	var body struct {
		NewModelRef string          `json:"new_model_ref"`
		Replicas    []reloadReplica `json:"replicas"`
		TimeoutMs   *int64          `json:"timeout_ms"`
	}
	if decodeStrict(ctx.PostBody(), &body) != "" || body.NewModelRef == "" {
		writeError(ctx, errInvalid(`body must be {"new_model_ref": "...", "replicas"?: [{"id","url"}], "timeout_ms"?: N}`))
		return
	}
	timeout := 30 * time.Second
	if body.TimeoutMs != nil {
		if *body.TimeoutMs <= 0 || *body.TimeoutMs > maxReloadTimeoutMs {
			writeError(ctx, errInvalid("timeout_ms must be > 0 and at most "+strconv.Itoa(maxReloadTimeoutMs)))
			return
		}
		timeout = time.Duration(*body.TimeoutMs) * time.Millisecond
	}
	// One reload or config apply at a time: both replace replica sets and
	// the running config.
	if !s.applyMu.TryLock() {
		writeJSON(ctx, fasthttp.StatusConflict, &APIError{Code: "RELOAD_FAILED", PoolID: p.id, Engine: p.engine, Message: "another reload or config apply is in progress"})
		return
	}
	defer s.applyMu.Unlock()
	if !s.hasPool(p) {
		writeError(ctx, &APIError{Code: CodeNotFound, Message: "pool " + p.id + " was removed by a config apply"})
		return
	}
	conflict := func(reason string) {
		s.log.Warn("pool reload refused", zap.String("pool_id", p.id), zap.String("new_model_ref", body.NewModelRef), zap.String("reason", reason))
		s.events.publish(opsEvent{Type: "reload", PoolID: p.id, Model: body.NewModelRef, OK: ptr(false), Reason: reason})
		writeJSON(ctx, fasthttp.StatusConflict, &APIError{Code: "RELOAD_FAILED", PoolID: p.id, Engine: p.engine, Message: reason})
	}
	cur := p.set()
	target, fresh := cur, (*replicaSet)(nil)
	newList := len(body.Replicas) > 0 && !sameReplicas(body.Replicas, cur.cfgs)
	if newList || body.NewModelRef != p.engineModel() {
		// A new list, or a new model on the same replicas: a new set, whose
		// adapters name the new model (vLLM and Triton requests carry it).
		cfgs := cur.cfgs
		if newList {
			var msg string
			if cfgs, msg = reloadReplicas(body.Replicas, cur.cfgs); msg != "" {
				writeError(ctx, errInvalid(msg))
				return
			}
		}
		var err error
		if fresh, err = p.newSet(cfgs, body.NewModelRef, body.NewModelRef, p.tuning()); err != nil {
			writeError(ctx, errInvalid(err.Error()))
			return
		}
		fresh.expect = body.NewModelRef
		p.healthLoop(fresh, s.stop, s.cfg.Health, &s.bgWG)
		target = fresh
	}
	deadline := time.Now().Add(timeout)
	var why string
	for {
		why = p.verifyModel(target, body.NewModelRef, time.Until(deadline))
		if why == "" && fresh != nil {
			// The set's own health loop must have admitted every replica too
			// (same version, model): dispatch picks ready replicas only.
			for _, r := range fresh.replicas {
				if !r.Ready() {
					why = "replica " + r.ID + " has not passed its health check"
					if e := fresh.states[r.Index].lastError.Load(); e != nil && *e != "" {
						why += ": " + *e
					}
					break
				}
			}
		}
		if why == "" || time.Now().After(deadline) {
			break
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-s.stop:
			why = "orchd is shutting down"
			deadline = time.Now()
		}
	}
	if why != "" {
		if fresh != nil {
			fresh.close()
		}
		conflict("new replica set not verified within " + timeout.String() + ": " + why)
		return
	}
	old := p.model()
	p.models.Store(&poolModels{model: body.NewModelRef, engineModel: body.NewModelRef})
	s.recordReload(p.id, body.NewModelRef, fresh)
	if fresh != nil {
		p.everReady.Store(true)
		p.cur.Store(fresh) // the atomic switch: dispatch picks from here on
		s.bgWG.Add(1)
		go func() {
			defer s.bgWG.Done()
			defer recoverLog(p.log, "retire replica set")
			p.retire(cur, s.stop)
		}()
		p.signal()
	}
	s.log.Info("pool reloaded", zap.String("pool_id", p.id), zap.String("engine", p.engine), zap.String("model_id", body.NewModelRef),
		zap.String("from_model", old), zap.String("to_model", body.NewModelRef),
		zap.Int("replicas", len(target.replicas)), zap.Bool("new_replicas", fresh != nil))
	s.events.publish(opsEvent{Type: "reload", PoolID: p.id, Model: body.NewModelRef, OK: ptr(true)})
	writeJSON(ctx, fasthttp.StatusOK, s.replicaSet(p))
}

// sameReplicas reports whether a reload names exactly the current replicas.
func sameReplicas(want []reloadReplica, cur []config.Replica) bool {
	if len(want) != len(cur) {
		return false
	}
	for i := range want {
		if want[i].URL != cur[i].URL || (want[i].ID != "" && want[i].ID != cur[i].ID) {
			return false
		}
	}
	return true
}

// reloadReplicas builds the new set's replica configs; a replica keeping an
// id keeps its configured slots and placement. msg explains a bad list.
func reloadReplicas(want []reloadReplica, cur []config.Replica) ([]config.Replica, string) {
	byID := make(map[string]config.Replica, len(cur))
	for _, rc := range cur {
		byID[rc.ID] = rc
	}
	seen := make(map[string]bool, len(want))
	out := make([]config.Replica, 0, len(want))
	for i, w := range want {
		id := w.ID
		if id == "" {
			id = "r" + strconv.Itoa(i)
		}
		if seen[id] {
			return nil, "replicas[" + strconv.Itoa(i) + "]: duplicate id " + strconv.Quote(id)
		}
		seen[id] = true
		if w.URL == "" {
			return nil, "replicas[" + strconv.Itoa(i) + "]: url is required"
		}
		rc := config.Replica{ID: id, URL: w.URL}
		if old, ok := byID[id]; ok {
			rc = old
			rc.URL = w.URL
		}
		if w.Slots != nil {
			if *w.Slots <= 0 {
				return nil, "replicas[" + strconv.Itoa(i) + "]: slots must be > 0"
			}
			rc.Slots = *w.Slots
		}
		out = append(out, rc)
	}
	return out, ""
}

// verifyModel checks that every replica of rs is healthy and reports model;
// "" when all do, else the first reason one does not.
func (p *pool) verifyModel(rs *replicaSet, model string, within time.Duration) string {
	for i, r := range rs.replicas {
		prober, ok := rs.states[i].adapter.(engines.Prober)
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

// recordReload writes a successful reload into the running config (applyMu
// held), so GET /v1/config shows it and a later apply compares against it.
func (s *Server) recordReload(poolID, model string, fresh *replicaSet) {
	next := *s.running.Load()
	next.Pools = append([]config.Pool(nil), next.Pools...)
	for i := range next.Pools {
		if next.Pools[i].ID != poolID {
			continue
		}
		next.Pools[i].Model, next.Pools[i].EngineModel = model, model
		if fresh != nil {
			next.Pools[i].Replicas = fresh.cfgs
		}
	}
	s.running.Store(&next)
}
