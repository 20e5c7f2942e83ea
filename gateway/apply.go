package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/pmezard/go-difflib/difflib"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/llama-orch/llama-orch/gateway/admission"
	"github.com/llama-orch/llama-orch/gateway/config"
)

// Hot reload (SPEC §9, issue 6): SIGHUP or POST /v1/config swaps the config
// atomically. What a running gateway can change in place: API keys, tenants
// and their quotas, SLO targets, and pools — added, removed (drained, then
// dropped), given a new replica list (a new replica set, switched in once
// its replicas pass health; running streams finish on the old set), or given
// new queue limits, timeouts, ctx, failover or preemption (see poolTuning
// for when each takes effect). A pool's model changes by a reload (its
// replicas must prove they serve it); its engine, only under a new pool id.
// Every other key needs a restart: an apply that changes one is refused
// whole, naming it, and changes nothing. So is an invalid file.

// applyTimeout bounds the wait for new replica sets to pass health.
const applyTimeout = 30 * time.Second

// removedPoolGrace is how long a pool removed by an apply lets its running
// tasks finish before they are ended.
const removedPoolGrace = 30 * time.Second

// ApplyResult describes an apply (or a dry run).
type ApplyResult struct {
	DryRun  bool     `json:"dry_run"`
	Applied bool     `json:"applied"`
	Diff    string   `json:"diff"`
	Changes []string `json:"changes"`
}

// ApplyError is a refused apply: problems found by validation, or a reason.
type ApplyError struct {
	Problems []config.Problem
	Reason   string
	// Busy: another apply or reload is running, or orchd is stopping (409).
	Busy bool
}

func (e *ApplyError) Error() string {
	if e.Reason != "" {
		return e.Reason
	}
	msgs := make([]string, 0, len(e.Problems))
	for _, p := range e.Problems {
		if !p.Warning {
			msgs = append(msgs, p.String())
		}
	}
	return "invalid config: " + strings.Join(msgs, "; ")
}

// Apply validates data (a whole config file) and, unless dryRun, switches
// the running gateway to it atomically. Errors are *ApplyError.
func (s *Server) Apply(data []byte, dryRun bool) (ApplyResult, error) {
	next, problems, err := config.Check(data, config.ValidateOptions{})
	if err != nil {
		return ApplyResult{}, &ApplyError{Reason: "cannot read the config: " + err.Error()}
	}
	if config.HasErrors(problems) {
		return ApplyResult{}, &ApplyError{Problems: problems}
	}
	if !dryRun {
		// One apply or reload at a time; a reload may wait minutes for its
		// replicas, so a concurrent apply is refused rather than queued.
		if !s.applyMu.TryLock() {
			return ApplyResult{}, &ApplyError{Reason: "another config apply or pool reload is in progress; retry when it ends", Busy: true}
		}
		defer s.applyMu.Unlock()
		if s.draining.Load() {
			return ApplyResult{}, &ApplyError{Reason: "orchd is shutting down", Busy: true}
		}
	}
	cur := s.running.Load()
	if s.fileListen != "" && next.Listen == s.fileListen {
		next.Listen = cur.Listen // the --listen override stands
	}
	res := ApplyResult{DryRun: dryRun, Diff: configDiff(cur, next)}
	changes, why := applicable(cur, next)
	res.Changes = changes
	if why != "" {
		s.refusedApply(why)
		return res, &ApplyError{Reason: why}
	}
	if dryRun || len(changes) == 0 {
		return res, nil
	}
	if err := s.commit(cur, next); err != nil {
		s.refusedApply(err.Error())
		return res, &ApplyError{Reason: err.Error()}
	}
	res.Applied = true
	s.log.Info("config applied", zap.Strings("changes", changes))
	s.events.publish(opsEvent{Type: "config", OK: ptr(true), Changes: changes})
	return res, nil
}

func (s *Server) refusedApply(why string) {
	s.log.Warn("config apply refused", zap.String("reason", why))
	s.events.publish(opsEvent{Type: "config", OK: ptr(false), Reason: why})
}

// applicable lists what next changes, or says why it cannot be applied live.
func applicable(cur, next *config.Config) (changes []string, why string) {
	// Compared as GET /v1/config shows them: a key and its key_sha256 are
	// the same key; an absent list and an empty one are the same list.
	a, b := redacted(cur), redacted(next)
	if !sameSlice(a.Auth.Keys, b.Auth.Keys) {
		changes = append(changes, "auth.keys")
	}
	if !sameSlice(a.Tenants, b.Tenants) {
		changes = append(changes, "tenants")
	}
	if !reflect.DeepEqual(a.SLO, b.SLO) {
		changes = append(changes, "slo")
	}
	// Everything else at the top level must be unchanged.
	a.Auth, b.Auth, a.Tenants, b.Tenants, a.SLO, b.SLO, a.Pools, b.Pools = config.Auth{}, config.Auth{}, nil, nil, config.SLO{}, config.SLO{}, nil, nil
	if !sameYAML(a, b) {
		return changes, "changing " + strings.Join(topLevelDiff(a, b), ", ") + " needs a restart of orchd (hot reload applies auth, tenants, slo and pools)"
	}
	old := map[string]config.Pool{}
	for _, p := range cur.Pools {
		old[p.ID] = p
	}
	seen := map[string]bool{}
	for _, p := range next.Pools {
		seen[p.ID] = true
		o, ok := old[p.ID]
		if !ok {
			changes = append(changes, "pools."+p.ID+" (added)")
			continue
		}
		if !sameYAML(o.Replicas, p.Replicas) {
			changes = append(changes, "pools."+p.ID+".replicas")
		}
		changes = append(changes, tuningChanges(o, p)...)
		switch {
		case o.Engine != p.Engine:
			return changes, "changing the engine of pool " + p.ID + " needs a new pool: remove it and add it under a new id"
		case (o.Model != p.Model || engineModelOf(o) != engineModelOf(p)) && reloadable(p):
			return changes, "changing the model of pool " + p.ID + " is a reload (POST /v1/pools/" + p.ID + "/reload, orchctl reload): its replicas must prove they serve the new model"
		case o.Model != p.Model || engineModelOf(o) != engineModelOf(p):
			// A reload sets model and engine_model to one name.
			return changes, "changing model or engine_model of pool " + p.ID + " to different names needs a restart of orchd (a reload serves one name as both)"
		}
		// Any other pool key (none today) needs a restart.
		if !sameYAML(restOfPool(o), restOfPool(p)) {
			return changes, "changing pool " + p.ID + " this way needs a restart of orchd"
		}
	}
	for _, p := range cur.Pools {
		if !seen[p.ID] {
			changes = append(changes, "pools."+p.ID+" (removed: drained)")
		}
	}
	return changes, ""
}

// engineModelOf is the name p's engines must report: engine_model, or the
// model when engine_model is empty (a reload records both as one name).
func engineModelOf(p config.Pool) string {
	if p.EngineModel != "" {
		return p.EngineModel
	}
	return p.Model
}

// reloadable: a reload to p.Model gives p (it sets engine_model to the same
// name, and an empty engine_model means the same).
func reloadable(p config.Pool) bool { return p.EngineModel == "" || p.EngineModel == p.Model }

// restOfPool is p without the keys an apply handles (replicas, tunable
// settings) or refuses by name (engine, model).
func restOfPool(p config.Pool) config.Pool {
	p.Replicas, p.Ctx, p.Queue, p.Timeouts, p.Failover, p.Preemption = nil, 0, config.Queue{}, config.Timeouts{}, "", ""
	p.Engine, p.Model, p.EngineModel = "", "", ""
	return p
}

// tuningChanges names the settings of pool o that p changes in place (queue,
// timeouts, ctx, failover, preemption).
func tuningChanges(o, p config.Pool) []string {
	var out []string
	for _, c := range []struct {
		key  string
		same bool
	}{
		{"ctx", o.Ctx == p.Ctx},
		{"queue", queueLimits(o) == queueLimits(p)}, // an absent per_priority and one of zeros are the same
		{"timeouts", o.Timeouts == p.Timeouts},
		{"failover", o.Failover == p.Failover},
		{"preemption", o.Preemption == p.Preemption},
	} {
		if !c.same {
			out = append(out, "pools."+p.ID+"."+c.key)
		}
	}
	return out
}

// topLevelDiff names the top-level keys that differ between a and b.
func topLevelDiff(a, b config.Config) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var out []string
	for i := 0; i < va.NumField(); i++ {
		f := va.Type().Field(i)
		if !f.IsExported() || reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			name = f.Name
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// commit switches to next: it prepares every new pool and replica set first
// (each must pass health within applyTimeout), then swaps all at once.
func (s *Server) commit(cur, next *config.Config) error {
	auth, err := NewAuthenticator(next.Auth.Keys, s.demoKeys)
	if err != nil {
		return err
	}
	byID := map[string]*pool{}
	for _, p := range s.poolList() {
		byID[p.id] = p
	}
	type swap struct {
		p  *pool
		rs *replicaSet
	}
	type retune struct {
		p  *pool
		pc config.Pool
	}
	var (
		added    []*pool
		swaps    []swap
		retunes  []retune
		prepared []*replicaSet
	)
	abort := func(e error) error {
		for _, rs := range prepared {
			rs.close()
		}
		for _, p := range added {
			p.close()
		}
		return e
	}
	newList := make([]*pool, 0, len(next.Pools))
	for _, pc := range next.Pools {
		p, ok := byID[pc.ID]
		if !ok {
			np, err := newPool(pc, s.deps)
			if err != nil {
				return abort(err)
			}
			np.healthLoop(np.set(), s.stop, s.cfg.Health, &s.bgWG)
			added = append(added, np)
			newList = append(newList, np)
			continue
		}
		newList = append(newList, p)
		if cur := poolConfig(cur, pc.ID); len(tuningChanges(cur, pc)) > 0 {
			// Checked now, so the switch below cannot fail half-way.
			l := queueLimits(pc)
			if _, err := admission.NewQueue[struct{}](admission.Config{Capacity: l.capacity, Policy: l.policy, PerPriority: l.caps}); err != nil {
				return abort(fmt.Errorf("pool %s: %w", pc.ID, err))
			}
			retunes = append(retunes, retune{p, pc})
		}
		if !sameYAML(p.set().cfgs, pc.Replicas) {
			rs, err := p.newSet(pc.Replicas, p.model(), p.engineModel(), tuningOf(pc))
			if err != nil {
				return abort(err)
			}
			prepared = append(prepared, rs)
			p.healthLoop(rs, s.stop, s.cfg.Health, &s.bgWG)
			swaps = append(swaps, swap{p, rs})
		}
	}
	// Every new set must have all its replicas ready before anything switches.
	deadline := time.Now().Add(applyTimeout)
	for {
		var waiting []string
		for _, sw := range swaps {
			waiting = append(waiting, unready(sw.p.id, sw.rs)...)
		}
		for _, p := range added {
			waiting = append(waiting, unready(p.id, p.set())...)
		}
		if len(waiting) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return abort(errors.New("new replicas did not pass health within " + applyTimeout.String() + ": " + strings.Join(waiting, "; ")))
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-s.stop:
			return abort(errors.New("orchd is shutting down"))
		}
	}
	// The switch.
	s.admitMu.Lock()
	if ra, rb := redacted(cur), redacted(next); !sameSlice(ra.Auth.Keys, rb.Auth.Keys) {
		s.auth.Store(auth)
		s.uiSess.revokeAll()
	}
	s.quotas.update(next.Tenants)
	s.slo.setTargets(next.SLO)
	s.deps.ttftSLOMs = next.SLO.Interactive.TTFTP95Ms
	for _, p := range newList {
		p.ttftSLO.Store(int64(time.Duration(next.SLO.Interactive.TTFTP95Ms) * time.Millisecond))
	}
	for _, rt := range retunes {
		if err := rt.p.retune(rt.pc); err != nil {
			s.log.Error("BUG: a checked pool setting was refused", zap.Error(err))
		}
	}
	for _, sw := range swaps {
		old := sw.p.set()
		sw.p.cur.Store(sw.rs)
		s.bgWG.Add(1)
		go func(p *pool) {
			defer s.bgWG.Done()
			defer recoverLog(p.log, "retire replica set")
			p.retire(old, s.stop)
		}(sw.p)
		sw.p.signal()
	}
	var removed []*pool
	keep := map[*pool]bool{}
	for _, p := range newList {
		keep[p] = true
	}
	for _, p := range s.poolList() {
		if !keep[p] {
			removed = append(removed, p)
			p.draining.Store(true) // under admitMu: no admission gets past its re-check
		}
	}
	s.pools.Store(&newList)
	s.running.Store(next)
	s.admitMu.Unlock()
	for _, p := range added {
		p.everReady.Store(true)
		s.startPoolRunners(p)
	}
	for _, p := range removed {
		s.dropPool(p)
	}
	return nil
}

// poolConfig returns pool id's config in c (zero if absent).
func poolConfig(c *config.Config, id string) config.Pool {
	for _, p := range c.Pools {
		if p.ID == id {
			return p
		}
	}
	return config.Pool{}
}

// unready lists rs's replicas that have not passed health yet.
func unready(poolID string, rs *replicaSet) []string {
	var out []string
	for i, r := range rs.replicas {
		if !r.Ready() {
			msg := poolID + "/" + r.ID
			if e := rs.states[i].lastError.Load(); e != nil && *e != "" {
				msg += ": " + *e
			}
			out = append(out, msg)
		}
	}
	return out
}

// dropPool drains a pool an apply removed: it admits nothing (it is no
// longer routed to), queued and running tasks may finish for
// removedPoolGrace, then the rest end with POOL_UNREADY; then it closes.
func (s *Server) dropPool(p *pool) {
	p.draining.Store(true)
	s.events.publish(opsEvent{Type: "drain", PoolID: p.id, DeadlineMs: ptr(removedPoolGrace.Milliseconds())})
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		defer recoverLog(p.log, "drop pool")
		deadline := time.NewTimer(removedPoolGrace)
		defer deadline.Stop()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			busy := p.queue.Len() > 0
			for _, t := range s.tasks.live() {
				busy = busy || t.pool == p && !t.log.Closed() // finished ones are only kept for late readers
			}
			if !busy {
				break
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
				continue
			case <-deadline.C:
				for _, t := range s.tasks.live() {
					if t.pool == p {
						s.terminate(t, &APIError{Code: CodePoolUnready, Engine: p.engine, PoolID: p.id, Retriable: true,
							Message: "pool " + p.id + " was removed from the config"}, "drained")
					}
				}
			}
			break
		}
		p.set().halt()
		p.log.Info("removed pool closed")
		p.close()
		p.shut()
	}()
}

// redacted is c with API keys replaced by their SHA-256 (GET /v1/config and
// diffs never show a key).
func redacted(c *config.Config) config.Config {
	out := *c
	out.Auth.Keys = make([]config.Key, len(c.Auth.Keys))
	for i, k := range c.Auth.Keys {
		if k.Key != "" {
			sum := sha256.Sum256([]byte(k.Key))
			k.KeySHA256, k.Key = hex.EncodeToString(sum[:]), ""
		}
		k.KeySHA256 = strings.ToLower(k.KeySHA256)
		out.Auth.Keys[i] = k
	}
	return out
}

func canonicalYAML(c *config.Config) string {
	r := redacted(c)
	b, err := yaml.Marshal(&r)
	if err != nil {
		return "# cannot render: " + err.Error() + "\n"
	}
	return string(b)
}

// configDiff is a unified diff of the canonical YAML of two configs.
func configDiff(cur, next *config.Config) string {
	d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(canonicalYAML(cur)), B: difflib.SplitLines(canonicalYAML(next)),
		FromFile: "running", ToFile: "new", Context: 2,
	})
	if err != nil {
		return ""
	}
	return d
}

// handleConfigGet is GET /v1/config: the running config as canonical YAML.
func (s *Server) handleConfigGet(ctx *fasthttp.RequestCtx) {
	if _, ok := s.requireControlRead(ctx); !ok {
		return
	}
	ctx.SetContentType("application/yaml")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetBodyString(canonicalYAML(s.running.Load()))
}

// handleConfigPost is POST /v1/config[?dry_run=true] with a whole config.
func (s *Server) handleConfigPost(ctx *fasthttp.RequestCtx) {
	if _, ok := s.require(ctx, RoleControl); !ok {
		return
	}
	dry := string(ctx.QueryArgs().Peek("dry_run"))
	res, err := s.Apply(ctx.PostBody(), dry == "true" || dry == "1")
	if err != nil {
		var ae *ApplyError
		errors.As(err, &ae)
		type problem struct {
			Path    string `json:"path"`
			Line    int    `json:"line,omitempty"`
			Message string `json:"message"`
			Warning bool   `json:"warning,omitempty"`
		}
		body := struct {
			APIError
			Problems []problem `json:"problems,omitempty"`
			Diff     string    `json:"diff,omitempty"`
			Changes  []string  `json:"changes,omitempty"`
		}{APIError: APIError{Code: CodeInvalidParams, Message: err.Error()}, Diff: res.Diff, Changes: res.Changes}
		if ae != nil {
			for _, p := range ae.Problems {
				body.Problems = append(body.Problems, problem{Path: p.Path, Line: p.Line, Message: p.Message, Warning: p.Warning})
			}
		}
		status := fasthttp.StatusBadRequest
		if ae != nil && ae.Busy {
			body.Code, status = "APPLY_BUSY", fasthttp.StatusConflict
		}
		writeJSON(ctx, status, body)
		return
	}
	if res.Changes == nil {
		res.Changes = []string{}
	}
	writeJSON(ctx, fasthttp.StatusOK, res)
}

// sameSlice compares two lists as YAML, taking nil and empty as equal.
func sameSlice[T any](a, b []T) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return sameYAML(a, b)
}

// sameYAML compares two config values as their YAML: nil and empty lists,
// absent and zero optional values are alike, as in the file.
func sameYAML(a, b any) bool {
	ya, erra := yaml.Marshal(a)
	yb, errb := yaml.Marshal(b)
	return erra == nil && errb == nil && string(ya) == string(yb)
}
