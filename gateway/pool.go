package gateway

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/balancer"
	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/gateway/admission"
	"github.com/llama-orch/llama-orch/gateway/config"
)

// AdapterFactory makes the adapter for one replica of a pool.
type AdapterFactory func(pool config.Pool, replica config.Replica) (engines.Adapter, error)

// replicaState is what the gateway knows of a replica beyond the balancer's
// atomics: its adapter and what the engine reported.
type replicaState struct {
	adapter       engines.Adapter
	configSlots   int
	engineVersion atomic.Pointer[string]
	ctxMax        atomic.Int64 // engine-reported per-request context, 0 = unknown
	lastError     atomic.Pointer[string]
	heldOut       atomic.Bool                   // reports a different engine_version or model than its set
	okRun, badRun int                           // health streaks, touched only by the health loop
	load          atomic.Pointer[engines.Load]  // last engine-reported load (nil = none)
	props         atomic.Pointer[engines.Props] // last properties the engine reported (nil = none)
}

// replicaSet is a pool's replicas at one time: a reload with a new replica
// list builds a new set, proves it healthy, and switches the pool to it
// atomically (SPEC §9); tasks running on the old set finish there. A set
// never changes after it is built, so replica indexes stay valid.
type replicaSet struct {
	cfgs     []config.Replica
	replicas []*balancer.Replica
	states   []*replicaState
	ring     *balancer.Ring // consistent hashing with bounded loads over the replicas
	// version is the set's engine_version: the first one a ready replica
	// reported; replicas reporting another are held out (SPEC §5).
	version atomic.Pointer[string]
	stop    chan struct{} // ends the set's health loops
	once    sync.Once
	// expect is the model a set being reloaded in must report ("" = the
	// pool's engine_model).
	expect string
}

// has reports whether r belongs to rs.
func (rs *replicaSet) has(r *balancer.Replica) bool {
	return r != nil && r.Index >= 0 && r.Index < len(rs.replicas) && rs.replicas[r.Index] == r
}

// halt stops the set's health loops.
func (rs *replicaSet) halt() { rs.once.Do(func() { close(rs.stop) }) }

func (rs *replicaSet) close() {
	rs.halt()
	for _, st := range rs.states {
		if c, ok := st.adapter.(engines.Closer); ok {
			_ = c.Close()
		}
	}
}

// pool is one configured pool at run time.
type pool struct {
	// cfg is the pool's config as built; what an apply changes in place is
	// in tune.
	cfg    config.Pool
	tune   atomic.Pointer[poolTuning]
	id     string
	engine string
	log    *zap.Logger
	deps   poolDeps
	cur    atomic.Pointer[replicaSet]
	policy balancer.Policy
	queue  *admission.Queue[*task]
	wake   chan struct{}

	// retrying holds the queued tasks that already failed on some replicas
	// and may go only to one they have not tried (a retry or a failover):
	// each round checks that such a replica is still ready.
	retryMu  sync.Mutex
	retrying map[*task]struct{}
	// done ends the pool's dispatcher and watchdog when a config apply
	// removed it and it has drained (server shutdown ends them too).
	done     chan struct{}
	doneOnce sync.Once

	runMu   sync.Mutex
	running map[*task]struct{} // for the watchdog

	// models are the served model name and the engine_model replicas must
	// report; a reload switches both atomically.
	models atomic.Pointer[poolModels]

	everReady atomic.Bool
	draining  atomic.Bool  // POST /v1/pools/{id}/drain: no new admissions
	ttft      ttftWindow   // recent times to first token (/v1/replicasets)
	affinity  float64      // the ring's load factor
	ttftSLO   atomic.Int64 // ns: a first token slower than this counts against the replica (0 = off); a config apply changes it

	// est holds the pool's measured service times and drain rates.
	est     estimator
	weights [admission.NumPriorities]float64
}

// poolTuning holds the pool settings a config apply changes in place: the
// context limit applies to the next admission; the watchdog limits to
// running tasks at once (from the watchdog's next tick); failover and
// preemption to tasks dispatched after the change that have streamed no
// token yet (a task that has keeps the policy it streamed under, since
// whether its text is kept for a resume was decided then). The queue's
// limits live in the queue.
type poolTuning struct {
	ctx        int
	timeouts   config.Timeouts
	failover   string
	preemption string
}

func tuningOf(pc config.Pool) *poolTuning {
	return &poolTuning{ctx: pc.Ctx, timeouts: pc.Timeouts, failover: pc.Failover, preemption: pc.Preemption}
}

// tuning returns the pool's current tunable settings.
func (p *pool) tuning() *poolTuning { return p.tune.Load() }

// queueLimitSet is a pool's admission queue limits (comparable: an absent
// per_priority and one of zeros are the same limits).
type queueLimitSet struct {
	capacity int
	policy   string
	caps     [admission.NumPriorities]int
}

// queueLimits returns the admission queue limits of pc.
func queueLimits(pc config.Pool) queueLimitSet {
	l := queueLimitSet{capacity: pc.Queue.Capacity, policy: pc.Queue.FullPolicy}
	if pp := pc.Queue.PerPriority; pp != nil {
		l.caps = [admission.NumPriorities]int{pp.Interactive, pp.Batch}
	}
	return l
}

// retune applies pc's tunable settings to the running pool (a config
// apply); the caller has checked that nothing else of the pool changed.
func (p *pool) retune(pc config.Pool) error {
	l := queueLimits(pc)
	if err := p.queue.SetLimits(l.capacity, l.policy, l.caps); err != nil {
		return fmt.Errorf("pool %s: %w", p.id, err)
	}
	p.tune.Store(tuningOf(pc))
	p.signal() // a larger queue or new limits: let the dispatcher look again
	return nil
}

// poolDeps are the server-wide settings and hooks a pool needs.
type poolDeps struct {
	weights      config.Weights
	breaker      config.Breaker
	affinity     float64 // balancer.affinity_load_factor
	ttftSLOMs    int     // slo.interactive.ttft_p95_ms: a slower first token counts against the replica
	factory      AdapterFactory
	log          *zap.Logger
	onTransition func(p *pool, r *balancer.Replica, from, to balancer.State)
	// onReady is told when a replica turns ready or unready (ops events).
	onReady func(p *pool, r *balancer.Replica, ready bool, cause string)
}

func newPool(cfg config.Pool, d poolDeps) (*pool, error) {
	weights, log := d.weights, d.log
	qcfg := admission.Config{Weights: [admission.NumPriorities]float64{weights.Interactive, weights.Batch}}
	l := queueLimits(cfg)
	qcfg.Capacity, qcfg.Policy, qcfg.PerPriority = l.capacity, l.policy, l.caps
	q, err := admission.NewQueue[*task](qcfg)
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", cfg.ID, err)
	}
	p := &pool{
		cfg:     cfg,
		id:      cfg.ID,
		engine:  cfg.Engine,
		log:     log.With(zap.String("pool_id", cfg.ID), zap.String("engine", cfg.Engine)),
		policy:  balancer.LeastLoaded{},
		queue:   q,
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		running: make(map[*task]struct{}),
	}
	p.tune.Store(tuningOf(cfg))
	p.est.init()
	p.weights = qcfg.Weights
	for i, w := range p.weights {
		if !(w > 0) {
			p.weights[i] = 1
		}
	}
	p.deps = d
	rs, err := p.newSet(cfg.Replicas, cfg.Model, cfg.EngineModel, p.tuning())
	if err != nil {
		return nil, err
	}
	p.cur.Store(rs)
	p.models.Store(&poolModels{model: cfg.Model, engineModel: cfg.EngineModel})
	p.affinity = d.affinity
	p.ttftSLO.Store(int64(time.Duration(d.ttftSLOMs) * time.Millisecond))
	return p, nil
}

// newSet builds a replica set from cfgs: adapters, breakers and the ring.
// Its health loops are not started.
//
// tu is the tuning the set will run under (an apply that changes both a
// pool's replicas and its settings builds the set before switching).
func (p *pool) newSet(cfgs []config.Replica, model, engineModel string, tu *poolTuning) (*replicaSet, error) {
	d := p.deps
	rs := &replicaSet{cfgs: cfgs, stop: make(chan struct{})}
	// The adapters name the model the set serves (vLLM's "model", Triton's
	// path), which a reload may have changed since the pool was built.
	pc := p.cfg
	pc.Model, pc.EngineModel = model, engineModel
	pc.Ctx, pc.Timeouts, pc.Failover, pc.Preemption = tu.ctx, tu.timeouts, tu.failover, tu.preemption
	for i, rc := range cfgs {
		a, err := d.factory(pc, rc)
		if err != nil {
			rs.close()
			return nil, fmt.Errorf("pool %s replica %s: %w", p.id, rc.ID, err)
		}
		slots := rc.Slots
		if slots <= 0 {
			slots = 1 // until the engine's props say otherwise
		}
		r := balancer.NewReplica(i, rc.ID, rc.URL, slots)
		r.SetBreaker(balancer.BreakerConfig{
			ConsecutiveFailures: uint32(max(d.breaker.ConsecutiveFailures, 0)),
			FailureRatio:        d.breaker.FailureRatio,
			MinRequests:         uint32(max(d.breaker.MinRequests, 0)),
			Window:              time.Duration(d.breaker.WindowMs) * time.Millisecond,
			Open:                time.Duration(d.breaker.OpenMs) * time.Millisecond,
			OnTransition: func(r *balancer.Replica, from, to balancer.State) {
				if to == balancer.Open {
					// The breaker turns half-open lazily, when next asked:
					// have the dispatcher ask then, or tasks that can only go
					// to r wait for a release elsewhere.
					time.AfterFunc(time.Duration(d.breaker.OpenMs)*time.Millisecond, p.signal)
				}
				if d.onTransition != nil {
					d.onTransition(p, r, from, to)
				}
			},
		})
		st := &replicaState{adapter: a, configSlots: rc.Slots}
		r.Owner = st
		rs.replicas = append(rs.replicas, r)
		rs.states = append(rs.states, st)
	}
	rs.ring = balancer.NewRing(rs.replicas, 0)
	return rs, nil
}

// set is the pool's current replica set.
func (p *pool) set() *replicaSet { return p.cur.Load() }

// stateOf is r's state, in whichever set r belongs to (current or retired).
func (p *pool) stateOf(r *balancer.Replica) *replicaState {
	return r.Owner.(*replicaState)
}

// retire releases an old set once the tasks still running on it are done
// (or stop closes): its health loops end and its adapters close.
func (p *pool) retire(rs *replicaSet, stop <-chan struct{}) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		busy := false
		for _, r := range rs.replicas {
			busy = busy || r.InFlight() > 0
		}
		if !busy {
			break
		}
		select {
		case <-stop:
		case <-tick.C:
			continue
		}
		break
	}
	rs.close()
}

func (p *pool) close() {
	p.set().close()
}

// shut ends the pool's dispatcher and watchdog (a removed, drained pool).
func (p *pool) shut() { p.doneOnce.Do(func() { close(p.done) }) }

// signal wakes the dispatcher.
func (p *pool) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// readiness says whether the pool can admit (SPEC §3.1): nil, or the
// POOL_UNREADY / POOL_UNAVAILABLE error.
func (p *pool) readiness() *APIError {
	if p.draining.Load() {
		return &APIError{Code: CodePoolUnready, Message: "pool " + p.id + " is draining and admits no new tasks", PoolID: p.id, Engine: p.engine, RetryAfterMs: 5000}
	}
	for _, r := range p.set().replicas {
		if r.Ready() {
			return nil
		}
	}
	if !p.everReady.Load() {
		return &APIError{Code: CodePoolUnready, Message: "pool " + p.id + " is preloading: no replica has passed its health check yet", PoolID: p.id, Engine: p.engine, RetryAfterMs: int64(max(p.tuning().timeouts.FirstTokenMs/10, 1000))}
	}
	msg := "pool " + p.id + " has no healthy replica"
	if last := p.lastError(); last != "" {
		msg += " (last error: " + last + ")"
	}
	return &APIError{Code: CodePoolUnavailable, Message: msg, PoolID: p.id, Engine: p.engine, RetryAfterMs: 1000}
}

func (p *pool) ready() bool { return p.readiness() == nil }

func (p *pool) lastError() string {
	for _, st := range p.set().states {
		if e := st.lastError.Load(); e != nil && *e != "" {
			return *e
		}
	}
	return ""
}

// ctxLimit is the pool's model limit: the configured ctx, or the engine's
// smaller per-slot context (SPEC §13).
func (p *pool) ctxLimit() int {
	limit := p.tuning().ctx
	rs := p.set()
	for i, st := range rs.states {
		if !rs.replicas[i].Ready() {
			continue
		}
		if c := int(st.ctxMax.Load()); c > 0 && c < limit {
			limit = c
		}
	}
	return limit
}

// engineVersion is the version reported by the pool's replicas ("-" before
// any reported one).
func (p *pool) engineVersion() string {
	for _, st := range p.set().states {
		if v := st.engineVersion.Load(); v != nil && *v != "" {
			return *v
		}
	}
	return unknownLabel
}

// replicaVersion is the engine_version r reported ("unknown" before any).
func (p *pool) replicaVersion(r *balancer.Replica) string {
	if v := p.stateOf(r).engineVersion.Load(); v != nil && *v != "" {
		return *v
	}
	return "unknown"
}

// capacity returns total and free slots over ready replicas.
func (p *pool) capacity() (total, free int) {
	for _, r := range p.set().replicas {
		if !r.Ready() {
			continue
		}
		s := r.Slots()
		total += s
		free += max(s-r.InFlight(), 0)
	}
	return total, free
}

func (p *pool) addRunning(t *task) {
	p.runMu.Lock()
	p.running[t] = struct{}{}
	p.runMu.Unlock()
}

func (p *pool) removeRunning(t *task) {
	p.runMu.Lock()
	delete(p.running, t)
	p.runMu.Unlock()
}

// estimateAhead estimates how many queued tasks would dispatch before a
// newcomer of priority p, before it is queued (deadline feasibility): all of
// its own priority plus the other priority's weighted round-robin share.
func (p *pool) estimateAhead(prio admission.Priority) int {
	own := p.queue.LenPriority(prio)
	ahead := own
	w := p.weights
	for o := admission.Priority(0); o < admission.NumPriorities; o++ {
		if o != prio {
			ahead += min(int(float64(own+1)*w[o]/w[prio]), p.queue.LenPriority(o))
		}
	}
	return ahead
}

// dispatch starts queued tasks while replicas have free slots; it runs until
// stop closes. A panic in one round is logged and the loop goes on.
func (p *pool) dispatch(stop <-chan struct{}, prefer func(t *task) *balancer.Replica, start func(t *task, r *balancer.Replica, done func(bool)), exhausted func(t *task)) {
	for {
		select {
		case <-stop:
			return
		case <-p.done:
			return
		case <-p.wake:
		}
		p.dispatchRound(prefer, start, exhausted)
	}
}

// dispatchRound starts queued tasks in queue order while a replica has a
// free slot. A task that already failed on some replicas can only go to one
// it has not tried: when none of those can take it now it is set aside for
// this round (it keeps its place) so that the tasks behind it, which may go
// anywhere, are not held up. Every round ends by ending, through exhausted,
// the waiting retries that have no ready replica left to try.
func (p *pool) dispatchRound(prefer func(t *task) *balancer.Replica, start func(t *task, r *balancer.Replica, done func(bool)), exhausted func(t *task)) {
	defer recoverLog(p.log, "dispatcher")
	var aside []*admission.Entry[*task]
	defer func() {
		// Back at the head in their order, unless canceled meanwhile; then
		// the retries' check (also when no slot was free at all).
		for i := len(aside) - 1; i >= 0; i-- {
			p.pushBack(aside[i])
		}
		p.sweepRetries(exhausted)
	}()
	for {
		if p.policy.Pick(p.set().replicas, nil) == nil {
			return // no free slot: a Release will wake us
		}
		e, ok := p.queue.Pop()
		if !ok {
			return
		}
		t := e.Value
		r := p.pickFor(t, prefer(t))
		var done func(bool)
		if r != nil && r.TryAcquire() {
			var ok bool
			if done, ok = r.Allow(); !ok { // half-open with its trial in flight
				r.Release()
				r = nil
			}
		} else {
			r = nil
		}
		if r != nil {
			start(t, r, done)
			continue
		}
		t.mu.Lock()
		retry := len(t.tried) > 0
		t.mu.Unlock()
		if !retry {
			// The slot went away between the two picks (a replica turned
			// unready): put the task back and wait for the next signal.
			p.pushBack(e)
			return
		}
		aside = append(aside, e)
	}
}

// addRetry and dropRetry keep p.retrying: a task joins when it is queued
// again to go to a replica it has not tried, and leaves when it starts or
// ends.
func (p *pool) addRetry(t *task) {
	p.retryMu.Lock()
	if p.retrying == nil {
		p.retrying = make(map[*task]struct{})
	}
	p.retrying[t] = struct{}{}
	p.retryMu.Unlock()
}

func (p *pool) dropRetry(t *task) {
	p.retryMu.Lock()
	delete(p.retrying, t)
	p.retryMu.Unlock()
}

// sweepRetries ends, through exhausted, each waiting retry that has no
// ready replica left that it has not tried.
func (p *pool) sweepRetries(exhausted func(t *task)) {
	p.retryMu.Lock()
	if len(p.retrying) == 0 {
		p.retryMu.Unlock()
		return
	}
	waiting := make([]*task, 0, len(p.retrying))
	for t := range p.retrying {
		waiting = append(waiting, t)
	}
	p.retryMu.Unlock()
	for _, t := range waiting {
		t.mu.Lock()
		stranded := t.state == stateQueued && !p.hasUntried(t.tried)
		t.mu.Unlock()
		if stranded {
			exhausted(t)
		}
	}
}

// pushBack returns a popped task to the head of the queue, unless it was
// canceled meanwhile.
func (p *pool) pushBack(e *admission.Entry[*task]) {
	t := e.Value
	t.mu.Lock()
	if t.state == stateQueued {
		p.queue.PushFront(e)
	}
	t.mu.Unlock()
}

// watchdog ends running tasks that break the pool's timeouts (SPEC §4.5):
// no first token within first_token_ms, no token for idle_ms after the first,
// or longer than wall_ms in all. It samples token counts instead of timing
// every token, so the relay's hot path pays nothing for it.
func (p *pool) watchdog(stop <-chan struct{}, expire func(t *task, ae *APIError, kind abortReason), report func(t *task, now time.Time)) {
	tune := p.tuning()
	tick := time.NewTicker(watchdogPeriod(tune.timeouts))
	defer tick.Stop()
	var due []*task
	var why []*APIError
	var kinds []abortReason
	for {
		select {
		case <-stop:
			return
		case <-p.done:
			return
		case now := <-tick.C:
			if cur := p.tuning(); cur != tune { // an apply changed the limits
				tune = cur
				tick.Reset(watchdogPeriod(tune.timeouts))
			}
			due, why, kinds = due[:0], why[:0], kinds[:0]
			func() {
				p.runMu.Lock()
				defer p.runMu.Unlock()
				defer recoverLog(p.log, "watchdog")
				for t := range p.running {
					if ae, kind := p.overdue(t, now); ae != nil {
						due, why, kinds = append(due, t), append(why, ae), append(kinds, kind)
					} else if t.lastMetrics.IsZero() {
						t.lastMetrics = now
					} else if now.Sub(t.lastMetrics) >= metricsInterval {
						t.lastMetrics = now
						report(t, now)
					}
				}
			}()
			for i, t := range due {
				func() {
					defer recoverLog(p.log, "watchdog")
					expire(t, why[i], kinds[i])
				}()
			}
		}
	}
}

// watchdogPeriod samples running tasks four times per shortest limit,
// between 10 ms and a second (and often enough for the metrics events).
func watchdogPeriod(to config.Timeouts) time.Duration {
	period := time.Duration(min(to.FirstTokenMs, to.IdleMs, to.WallMs)) * time.Millisecond / 4
	return min(max(period, 10*time.Millisecond), time.Second, metricsInterval/2)
}

// metricsInterval spaces the periodic `metrics` events of a running task
// (a variable so a test can shorten it).
var metricsInterval = 2 * time.Second

// overdue checks one running task; only the watchdog goroutine touches
// wdTokens and wdSince.
// kind says which limit broke: abortFirstToken, abortIdle, or abortNone for
// wall_ms (never resumed: the task's whole budget is spent).
func (p *pool) overdue(t *task, now time.Time) (ae *APIError, kind abortReason) {
	to := p.tuning().timeouts
	n := t.log.Tokens()
	if t.wdSeg != t.segStart {
		// A new segment (a retry or a resume elsewhere): its clocks start
		// now, not at the last token of the segment before.
		t.wdSeg, t.wdTokens, t.wdSince = t.segStart, n, now
	}
	if n != t.wdTokens {
		t.wdTokens, t.wdSince = n, now
	}
	seg := n - t.segBase // tokens of this segment
	ae = &APIError{Engine: p.engine, PoolID: p.id}
	switch {
	case now.Sub(t.firstDispatch) > time.Duration(to.WallMs)*time.Millisecond:
		ae.Code, ae.Message = CodeDecodeTimeout, "task ran longer than wall_ms "+strconv.Itoa(to.WallMs)
	case seg == 0 && now.Sub(t.segStart) > time.Duration(to.FirstTokenMs)*time.Millisecond:
		// A miss before the first token is a replica failure (SPEC §4.5);
		// v0 makes one attempt, so it ends the task as retries used up.
		ae.Code, ae.Message, ae.Retriable = CodeReplicaExhausted, "no first token within first_token_ms "+strconv.Itoa(to.FirstTokenMs), true
		kind = abortFirstToken
	case seg > 0 && now.Sub(t.wdSince) > time.Duration(to.IdleMs)*time.Millisecond:
		ae.Code, ae.Message = CodeDecodeTimeout, "no token for idle_ms "+strconv.Itoa(to.IdleMs)
		kind = abortIdle
	default:
		return nil, abortNone
	}
	return ae, kind
}

// healthLoop probes every replica of rs until stop or rs.stop closes.
func (p *pool) healthLoop(rs *replicaSet, stop <-chan struct{}, hc config.Health, wg *sync.WaitGroup) {
	for i := range rs.replicas {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer recoverLog(p.log, "health loop")
			interval := time.Duration(hc.IntervalMs) * time.Millisecond
			t := time.NewTimer(0)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-rs.stop:
					return
				case <-t.C:
				}
				p.probe(rs, i, hc)
				t.Reset(interval)
			}
		}(i)
	}
}

// probe runs one health check of replica i of rs and updates its state.
func (p *pool) probe(rs *replicaSet, i int, hc config.Health) {
	r, st := rs.replicas[i], rs.states[i]
	prober, ok := st.adapter.(engines.Prober)
	if !ok {
		// An adapter with no health endpoint is taken as ready.
		p.setReady(rs, i, true, "")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(hc.TimeoutMs)*time.Millisecond)
	defer cancel()
	err := prober.Health(ctx)
	r.ProbeResult(err == nil) // a half-open breaker's trial when no request is
	if err != nil {
		st.okRun, st.badRun = 0, st.badRun+1
		if r.Ready() && st.badRun >= hc.UnhealthyAfter || !r.Ready() {
			p.setReady(rs, i, false, err.Error())
		}
		return
	}
	st.okRun, st.badRun = st.okRun+1, 0
	if r.Ready() {
		p.scrapeLoad(ctx, rs, i)
		return
	}
	if st.okRun < hc.HealthyAfter {
		return
	}
	props, err := prober.Props(ctx)
	if err == nil {
		st.props.Store(&props)
	}
	if err != nil {
		// Readiness comes from health alone; props only enrich it (SPEC §5).
		p.log.Warn("cannot read replica properties; using configured values",
			zap.String("replica_id", r.ID), zap.Error(err))
	} else {
		if st.configSlots <= 0 && props.Slots > 0 {
			r.SetSlots(props.Slots)
		}
		if props.CtxMax > 0 {
			st.ctxMax.Store(int64(props.CtxMax))
		}
		v := props.EngineVersion
		st.engineVersion.Store(&v)
		if why := p.holdOut(rs, props); why != "" {
			// Not mixed into the set (SPEC §5): reported, kept out of
			// selection, re-checked at every probe.
			st.heldOut.Store(true)
			if !r.Ready() {
				if last := st.lastError.Load(); last == nil || *last != why {
					p.log.Warn("replica held out of its replica set", zap.String("replica_id", r.ID), zap.String("cause", why))
				}
			}
			p.setReady(rs, i, false, why)
			st.okRun = 0
			return
		}
		st.heldOut.Store(false)
	}
	r.ClearEngineLoad() // a restarted engine: forget its old load
	p.scrapeLoad(ctx, rs, i)
	p.setReady(rs, i, true, "")
}

// holdOut says why a replica reporting props may not join the pool's replica
// set: a model other than the pool's engine_model, or an engine_version other
// than the set's (the first version a ready replica reported). "" = it fits.
func (p *pool) holdOut(rs *replicaSet, props engines.Props) string {
	want := rs.expect
	if want == "" {
		want = p.engineModel()
	}
	if want != "" && props.Model != want {
		return "engine reports model " + strconv.Quote(props.Model) + ", pool " + p.id + " expects engine_model " + strconv.Quote(want)
	}
	if props.EngineVersion == "" {
		return ""
	}
	set := rs.version.Load()
	if set == nil {
		v := props.EngineVersion
		if rs.version.CompareAndSwap(nil, &v) {
			return ""
		}
		set = rs.version.Load()
	}
	if *set != props.EngineVersion {
		return "engine_version " + strconv.Quote(props.EngineVersion) + " differs from the replica set's " + strconv.Quote(*set)
	}
	return ""
}

// scrapeLoad reads the engine's own load gauges, off the request path
// (after each health probe of a ready replica).
func (p *pool) scrapeLoad(ctx context.Context, rs *replicaSet, i int) {
	r, st := rs.replicas[i], rs.states[i]
	sc, ok := st.adapter.(engines.LoadScraper)
	if !ok {
		return
	}
	l, err := sc.ScrapeLoad(ctx)
	if err != nil {
		// No signal (llama.cpp without --metrics, or the scrape failed): drop
		// the last one rather than steer by a stale count.
		r.ClearEngineLoad()
		st.load.Store(nil)
		return
	}
	st.load.Store(&l)
	r.SetEngineLoad(l.Processing, l.Deferred) // blended into the replica's score
}

func (p *pool) setReady(rs *replicaSet, i int, ok bool, cause string) {
	r, st := rs.replicas[i], rs.states[i]
	st.lastError.Store(&cause)
	if r.Ready() == ok {
		return
	}
	r.SetReady(ok)
	if ok {
		if p.set() == rs {
			p.everReady.Store(true)
		}
		p.log.Info("replica ready", zap.String("replica_id", r.ID), zap.String("engine_version", p.replicaVersion(r)), zap.Int("slots", r.Slots()))
		p.signal()
	} else {
		p.log.Warn("replica not ready", zap.String("replica_id", r.ID), zap.String("cause", cause))
		p.signal() // a queued retry may have lost the last replica it could go to
	}
	if p.deps.onReady != nil && p.set() == rs {
		p.deps.onReady(p, r, ok, cause)
	}
}

func recoverLog(log *zap.Logger, what string) {
	if v := recover(); v != nil {
		log.Error("recovered from panic", zap.String("in", what), zap.Any("panic", v), zap.Stack("stack"))
	}
}

type poolModels struct{ model, engineModel string }

// model is the name requests route by (model_ref).
func (p *pool) model() string { return p.models.Load().model }

// engineModel is what replicas must report ("" = not checked).
func (p *pool) engineModel() string { return p.models.Load().engineModel }
