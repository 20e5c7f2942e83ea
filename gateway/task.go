package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/llama-orch/llama-orch/balancer"
	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/gateway/admission"
	"github.com/llama-orch/llama-orch/gateway/tasklog"
	"github.com/llama-orch/llama-orch/sse"
)

type taskState uint8

const (
	stateQueued taskState = iota
	stateRunning
	stateDone
)

// Cancel reasons (tasks_canceled_total{reason}).
const (
	reasonClient    = "client"
	reasonAbandoned = "abandoned"
	reasonShutdown  = "shutdown"
	reasonWatchdog  = "watchdog"
)

// taskKey scopes task ids to their tenant (SPEC §3.1).
type taskKey struct{ tenant, id string }

// task is one admitted request.
type task struct {
	key       taskKey
	sessionID string
	pool      *pool
	prio      admission.Priority
	req       engines.Request
	deadline  int64 // deadline_ms from the request, 0 = none
	kvHint    string

	admittedAt       time.Time
	queuePosition    int
	predictedStartMs int64
	log              *tasklog.Log
	entry            *admission.Entry[*task]

	sink           taskSink
	dispatchedAt   time.Time
	expectedTokens int         // the client's expected_tokens hint (0 = none)
	strict         bool        // determinism: strict (never resumed after preemption)
	tune           *poolTuning // the pool's failover and preemption when its first token was dispatched
	predictedEndMs int64       // at admission
	// Hard preemption (SPEC §4.4): a preempted best_effort task resumes from
	// its text so far; these carry the finished segments' account.
	segments      int
	tokensOutPrev int
	decodeMsPrev  int64
	lastMetrics   time.Time // watchdog: last periodic metrics event
	session       *session  // the session this task's turn was reserved in
	wdTokens      int       // watchdog: tokens seen at wdSince
	wdSince       time.Time // watchdog: when the token count last moved
	wdSeg         time.Time // watchdog: segStart of the segment wdSince belongs to
	// segStart and segBase are when the running segment was dispatched and
	// the task's token count then: a resumed segment gets its own first
	// token and idle clocks (written before addRunning, read by the watchdog).
	segStart time.Time
	segBase  int
	// firstDispatch is when the task first reached a replica: wall_ms counts
	// from here across retries and resumes.
	firstDispatch time.Time

	mu          sync.Mutex
	abort       abortReason                // why the gateway aborted the running segment
	tried       map[*balancer.Replica]bool // replicas that failed this task
	lastFail    segmentFailure             // the failure a queued retry or failover moves on from
	overloads   int                        // "overloaded" refusals retried on a busy pool (resume.go)
	fault       bool                       // the watchdog ended the segment for the replica's stall
	brDone      func(bool)                 // the replica breaker's outcome callback for this segment
	startedSent bool
	finished    bool // finishTask ran
	released    bool // the tenant's concurrency place was given back
	state       taskState
	replica     *balancer.Replica
	cancelRun   context.CancelFunc
	readers     int
	detachTimer *time.Timer
	kvWarm      bool
	reserved    int // session budget tokens reserved at admission
	res         engines.Result
}

// startedEvent is the data of `started` (SPEC §3.2).
type startedEvent struct {
	QueuePosition    int    `json:"queue_position"`
	PredictedStartMs int64  `json:"predicted_start_ms"`
	QueueTimeMs      int64  `json:"queue_time_ms"`
	Engine           string `json:"engine"`
	PoolID           string `json:"pool_id"`
	ReplicaID        string `json:"replica_id"`
	EngineVersion    string `json:"engine_version"`
	KVWarmth         bool   `json:"kv_warmth"`
}

// metricsEvent is the data of `metrics` (SPEC §3.2).
type metricsEvent struct {
	OnTimeProbability     float64 `json:"on_time_probability"`
	QueueDepth            int     `json:"queue_depth"`
	KVWarmth              bool    `json:"kv_warmth"`
	TokensBudgetRemaining *int    `json:"tokens_budget_remaining,omitempty"`
	TokensIn              int     `json:"tokens_in,omitempty"`
	TokensOut             int     `json:"tokens_out"`
	TTFTMs                int64   `json:"ttft_ms,omitempty"`
	ReplicaID             string  `json:"replica_id,omitempty"`
	Preempted             bool    `json:"preempted"`
	Failover              bool    `json:"failover,omitempty"`
}

// endEvent is the data of `end` (SPEC §3.2).
type endEvent struct {
	TokensOut    int    `json:"tokens_out"`
	DecodeMs     int64  `json:"decode_ms"`
	FinishReason string `json:"finish_reason"`
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("BUG: gateway: cannot encode event: " + err.Error())
	}
	return b
}

// tokensExpected is the generation length estimates use.
func (t *task) tokensExpected() int {
	if t.expectedTokens > 0 {
		return t.expectedTokens
	}
	return t.req.MaxTokens
}

// taskSink relays an adapter's tokens into the task log.
type taskSink struct {
	log        *tasklog.Log
	firstToken time.Time
	onFirst    func()
	// keep collects the text when the task may be hard-preempted and resumed
	// from it; segTokens counts this segment's token events.
	keep      bool
	text      []byte
	segTokens int
}

func (s *taskSink) Token(text []byte) {
	if s.firstToken.IsZero() {
		s.firstToken = time.Now()
		if s.onFirst != nil {
			s.onFirst()
		}
	}
	if s.log.AppendToken(text) {
		s.segTokens++
		if s.keep {
			s.text = append(s.text, text...)
		}
	}
}

// Flush publishes what the engine sent; this goroutine writes it to a sole
// caught-up reader itself (tasklog.PublishDirect).
func (s *taskSink) Flush() { s.log.PublishDirect() }

// resumes reports whether t continues on another replica after a failure
// past its first token (failover: resume as of its first token's dispatch).
// t.tune is written under t.mu (a retried task's dispatch may rewrite it).
func (t *task) resumes() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.tune != nil && t.tune.failover == "resume"
}

// startTask moves a dispatched task to running on replica r. Called by the
// pool's dispatcher with r's slot already acquired.
func (s *Server) startTask(t *task, r *balancer.Replica, done func(success bool)) {
	select {
	case <-s.stop:
		// Shutdown swept the tasks already (a dispatcher round it stopped
		// waiting for): start nothing more, end this one as the sweep does.
		done(true)
		r.Release()
		s.terminate(t, shutdownError(t), reasonShutdown)
		return
	default:
	}
	t.mu.Lock()
	if t.state != stateQueued {
		// Canceled between Pop and here: give the slot back.
		t.mu.Unlock()
		done(true) // not the replica's doing
		r.Release()
		t.pool.signal()
		return
	}
	t.pool.dropRetry(t)
	ctx, cancel := context.WithCancel(context.Background())
	now := time.Now()
	t.state = stateRunning
	t.abort = abortNone
	t.fault = false
	t.brDone = done
	t.replica = r
	t.cancelRun = cancel
	if t.segments == 0 {
		t.dispatchedAt = now
	}
	t.segStart, t.segBase = now, t.log.Tokens()
	if t.tune == nil || t.segBase == 0 {
		// Failover and preemption as of the dispatch of the first token
		// (runTask decides from them whether the text is kept).
		t.tune = t.pool.tuning()
	}
	if t.firstDispatch.IsZero() {
		t.firstDispatch = now
	}
	prefer := s.sessions.lastReplica(t.key.tenant, t.sessionID, t.pool)
	t.kvWarm = prefer == r && t.kvHint != "cold" && t.segments == 0
	if t.readers == 0 {
		t.armDetachLocked(s)
	}
	t.mu.Unlock()
	p := t.pool
	p.addRunning(t)
	p.est.observeDispatch(t.prio, now, p.queue.Len() > 0, p.queue.LenPriority(t.prio) > 0)
	s.shares.observe(t.key.tenant, t.prio)

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer recoverLog(s.log, "task "+t.key.id)
		s.runTask(ctx, t, r)
	}()
}

// runTask streams the task from replica r and writes its terminal event.
// Whatever happens — an engine error, a cancel, a panic in an adapter — the
// slot is released, the task gets a terminal event (or, when preempted, goes
// back to the queue) and is finished, once.
func (s *Server) runTask(ctx context.Context, t *task, r *balancer.Replica) {
	p := t.pool
	st := p.stateOf(r)
	ver := p.replicaVersion(r)
	labels := seriesLabels{engine: p.engine, engineVersion: ver, poolID: p.id, replicaID: r.ID, priority: t.prio.String()}
	segStart := time.Now()

	var (
		res engines.Result
		err error
	)
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("recovered from panic in task", zap.String("job_id", t.key.id), zap.Any("panic", v), zap.Stack("stack"))
			res, err = engines.Result{}, fmt.Errorf("BUG: panic while streaming: %v", v)
		}
		p.removeRunning(t)
		s.recordOutcome(t, segStart, err)
		r.Release()
		p.signal()
		s.settle(t, labels, segStart, res, err)
	}()

	t.mu.Lock()
	first := !t.startedSent
	t.startedSent = true
	t.mu.Unlock()
	if first {
		queueMs := t.dispatchedAt.Sub(t.admittedAt).Milliseconds()
		s.metrics.started(labels)
		t.log.Append(sse.KindStarted, mustJSON(startedEvent{
			QueuePosition: t.queuePosition, PredictedStartMs: t.predictedStartMs, QueueTimeMs: queueMs,
			Engine: p.engine, PoolID: p.id, ReplicaID: r.ID, EngineVersion: ver, KVWarmth: t.kvWarm,
		}))
		t.log.Publish()
		s.logTask(t, zap.InfoLevel, "task started",
			zap.String("replica_id", r.ID), zap.String("engine_version", ver), zap.Bool("kv_warmth", t.kvWarm),
			zap.Int64("queue_time_ms", queueMs))
		t.sink.log = t.log
		t.sink.onFirst = func() {
			ms := float64(time.Since(t.admittedAt).Microseconds()) / 1000
			s.metrics.firstToken(labels, ms)
			p.ttft.add(ms)
		}
	} else if t.segments > 0 {
		s.metrics.resumption(p.engine)
		s.logTask(t, zap.InfoLevel, "task resumed", zap.String("replica_id", r.ID), zap.String("engine_version", p.replicaVersion(r)),
			zap.Int("segment", t.segments), zap.Int("tokens_so_far", t.tokensOutPrev), zap.Bool("preempted", true))
	}
	if t.segBase == 0 {
		// Keep the text when the task may resume elsewhere from it.
		t.sink.keep = !t.strict && (t.tune.failover == "resume" || t.tune.preemption == "hard" && t.prio != admission.Interactive)
	}
	t.sink.segTokens = 0
	res, err = st.adapter.Stream(ctx, &t.req, &t.sink)
	t.log.Publish()
}

// settle writes a finished stream's terminal events, metrics and logs, or
// requeues a preempted task.
func (s *Server) settle(t *task, labels seriesLabels, segStart time.Time, res engines.Result, err error) {
	p, r := t.pool, t.replica
	end := time.Now()
	queueMs := t.dispatchedAt.Sub(t.admittedAt).Milliseconds()
	first := t.sink.firstToken
	// Tokens are counted per segment on the replica that produced them: the
	// engine's count when it finished, else the token events it delivered
	// (failed, canceled, preempted or failed-over segments).
	if err == nil {
		s.metrics.tokens(labels, res.TokensIn, res.TokensOut)
	} else if t.sink.segTokens > 0 {
		s.metrics.tokens(labels, 0, t.sink.segTokens)
	}
	if err != nil {
		if s.resumeAfter(t, err) {
			return
		}
		s.sessions.finishTurn(t, engines.Result{TokensOut: t.log.Tokens()}, nil)
		s.releaseQuota(t)
		var ae *APIError
		if !errors.Is(err, context.Canceled) {
			ae = engineError(err, p)
		} else {
			ae = s.abortError(t) // nil: a cancel already wrote the terminal event
		}
		if ae != nil {
			if ae.Code != CodeInvalidParams {
				s.slo.observe(t.prio, sinceMs(t.admittedAt, first), 0, true)
			}
			if t.log.Append(sse.KindError, mustJSON(ae)) {
				s.logTask(t, zap.WarnLevel, "task failed", s.runFields(t, r,
					zap.String("code", ae.Code), zap.String("error", ae.Message))...)
			}
		}
		// A cancel (client, abandonment, watchdog, shutdown) already wrote
		// the terminal event; Append refuses anything after it.
		s.finishTask(t)
		return
	}
	tokensOut := t.tokensOutPrev + res.TokensOut
	decodeMs := res.DecodeMs
	if decodeMs <= 0 && !first.IsZero() {
		decodeMs = end.Sub(later(first, segStart)).Milliseconds()
	}
	decodeMs += t.decodeMsPrev
	var ttft int64
	if !first.IsZero() {
		ttft = first.Sub(t.admittedAt).Milliseconds()
		s.metrics.decode(labels, float64(end.Sub(first).Microseconds())/1000)
		p.est.observeFinish(first.Sub(segStart), end.Sub(first), res.TokensOut)
	}
	t.res = res
	t.res.TokensOut = tokensOut
	remaining := s.sessions.finishTurn(t, t.res, r)
	me := s.metricsEvent(t, end)
	me.TokensBudgetRemaining = remaining
	me.TokensIn, me.TokensOut, me.TTFTMs = res.TokensIn, tokensOut, ttft
	me.OnTimeProbability = 1 // it ended: met, or not
	if t.deadline > 0 && end.Sub(t.admittedAt).Milliseconds() > t.deadline {
		me.OnTimeProbability = 0
	}
	t.log.Append(sse.KindMetrics, mustJSON(me))
	s.releaseQuota(t)
	finish := res.FinishReason
	if finish == "" {
		finish = "stop"
	}
	if t.log.Append(sse.KindEnd, mustJSON(endEvent{TokensOut: tokensOut, DecodeMs: decodeMs, FinishReason: finish})) {
		perToken := 0.0
		if !first.IsZero() && tokensOut > 1 {
			perToken = float64(end.Sub(first).Microseconds()) / 1000 / float64(tokensOut-1)
		}
		s.slo.observe(t.prio, sinceMs(t.admittedAt, first), perToken, false)
		if t.deadline > 0 {
			s.deadlines.observe(t.prio, me.OnTimeProbability == 1)
		}
		s.logTask(t, zap.InfoLevel, "task finished",
			zap.String("replica_id", r.ID), zap.String("engine_version", labels.engineVersion), zap.Bool("kv_warmth", t.kvWarm),
			zap.Int64("queue_time_ms", queueMs), zap.Int64("decode_time_ms", decodeMs),
			zap.Int("tokens_in", res.TokensIn), zap.Int("tokens_out", tokensOut),
			zap.Float64("on_time_probability", me.OnTimeProbability), zap.Bool("preempted", t.segments > 0))
	}
	s.finishTask(t)
}

// metricsEvent describes a task's state for a `metrics` event; now is the
// moment it describes (the end of a finished task, or now).
func (s *Server) metricsEvent(t *task, now time.Time) metricsEvent {
	t.mu.Lock()
	defer t.mu.Unlock()
	return s.metricsEventLocked(t, now)
}

// metricsEventLocked is metricsEvent with t.mu held.
func (s *Server) metricsEventLocked(t *task, now time.Time) metricsEvent {
	me := metricsEvent{
		QueueDepth: t.pool.queue.Len(), KVWarmth: t.kvWarm, Preempted: t.segments > 0,
		TokensOut: t.log.Tokens(),
	}
	if r := t.replica; r != nil {
		me.ReplicaID = r.ID
	}
	me.OnTimeProbability = s.onTimeNow(t, now)
	me.TokensBudgetRemaining = s.sessions.remaining(t)
	return me
}

// reportProgress appends a periodic `metrics` event to a running task.
func (s *Server) reportProgress(t *task, now time.Time) {
	t.log.Append(sse.KindMetrics, mustJSON(s.metricsEvent(t, now)))
	t.log.Publish()
}

// onTimeNow is the probability the task meets its deadline as seen at now:
// 1 or 0 once it ended, else the model of onTimeProbability over what
// remains to generate.
func (s *Server) onTimeNow(t *task, now time.Time) float64 {
	if t.deadline <= 0 {
		return 1
	}
	elapsed := now.Sub(t.admittedAt).Milliseconds()
	if t.log.Closed() {
		if elapsed <= t.deadline {
			return 1
		}
		return 0
	}
	left := max(t.tokensExpected()-t.log.Tokens(), 0)
	return onTimeProbability(elapsed+t.pool.predictEndMs(0, left)-int64(t.pool.est.serviceMs(1)), t.deadline)
}

// engineError maps an adapter error to the terminal event (SPEC §5 mapping).
func engineError(err error, p *pool) *APIError {
	ae := &APIError{Engine: p.engine, PoolID: p.id}
	e, ok := engines.AsError(err)
	switch {
	case !ok:
		ae.Code, ae.Message = CodeInternal, err.Error()
	case e.AfterFirstToken:
		ae.Code, ae.Message = CodeWorkerReset, "engine failed after the first token: "+e.Error()
		ae.Retriable = true
	case e.Kind == engines.KindContextLength || e.Kind == engines.KindInvalidRequest:
		ae.Code, ae.Message = CodeInvalidParams, "engine rejected the request: "+e.Error()
	default:
		// Retrying on another replica before the first token is the
		// balancer's job (issue 4); v0 makes one attempt.
		ae.Code, ae.Message = CodeReplicaExhausted, "engine failed before the first token: "+e.Error()
		ae.Retriable = true
	}
	return ae
}

// terminate ends a task that has not finished with an error event. It
// returns false when the task had already ended.
func (s *Server) terminate(t *task, ae *APIError, reason string) bool {
	t.mu.Lock()
	switch t.state {
	case stateDone:
		t.mu.Unlock()
		return false
	case stateQueued:
		t.pool.queue.Remove(t.entry)
		t.state = stateDone
		t.mu.Unlock()
		s.releaseQuota(t)
		if !t.log.Append(sse.KindError, mustJSON(ae)) {
			return false
		}
		s.metrics.canceled(seriesLabels{engine: t.pool.engine, poolID: t.pool.id}, reason)
		s.sessions.finishTurn(t, engines.Result{}, nil)
		s.logTask(t, zap.InfoLevel, "task canceled", zap.String("reason", reason), zap.String("state", "queued"))
		s.finishTask(t)
		return true
	}
	// Running: the error event closes the log first, so no token can follow
	// it; then the engine request is aborted and runTask frees the slot. If
	// the stream ended a moment ago, its terminal event won: nothing to do.
	if !t.log.Append(sse.KindError, mustJSON(ae)) {
		t.mu.Unlock()
		return false
	}
	cancel, r := t.cancelRun, t.replica
	t.mu.Unlock()
	s.releaseQuota(t) // before the 204 of a cancel, so a resubmission finds the place free
	cancel()
	p := t.pool
	s.metrics.canceled(seriesLabels{engine: p.engine, engineVersion: p.replicaVersion(r), poolID: p.id, replicaID: r.ID}, reason)
	if reason == reasonWatchdog {
		s.slo.observe(t.prio, -1, 0, true) // a timeout is a failed task (SLO error rate)
	}
	s.logTask(t, zap.InfoLevel, "task canceled", s.runFields(t, r, zap.String("reason", reason), zap.String("state", "running"))...)
	return true
}

// finishTask marks a task done and schedules its log's removal.
func (s *Server) finishTask(t *task) {
	t.mu.Lock()
	if t.finished {
		t.mu.Unlock()
		return
	}
	t.finished = true
	t.state = stateDone
	t.pool.dropRetry(t)
	if t.detachTimer != nil {
		t.detachTimer.Stop()
		t.detachTimer = nil
	}
	if t.cancelRun != nil {
		t.cancelRun() // release the context's resources
	}
	// Only the log is kept for late readers: drop what the run needed.
	t.req.Prompt = ""
	t.sink = taskSink{firstToken: t.sink.firstToken, log: t.log}
	t.mu.Unlock()
	t.log.Compact()
	s.releaseQuota(t)
	s.tasks.retire(t, time.Duration(s.cfg.TaskRetentionMs)*time.Millisecond)
}

// releaseQuota gives the tenant's concurrency place back, once. It runs
// before a task's terminal event is written, so a client that submits its
// next task as soon as it reads `end` finds the place free.
func (s *Server) releaseQuota(t *task) {
	t.mu.Lock()
	done := t.released
	t.released = true
	t.mu.Unlock()
	if !done {
		s.quotas.release(t.key.tenant)
	}
}

// attach registers a stream reader; detach unregisters it and, when the last
// reader of a running task leaves, arms the abandonment timer (SPEC §3.2).
func (t *task) attach() {
	t.mu.Lock()
	t.readers++
	if t.detachTimer != nil {
		t.detachTimer.Stop()
		t.detachTimer = nil
	}
	t.mu.Unlock()
}

func (t *task) detach(s *Server) {
	t.mu.Lock()
	t.readers--
	if t.readers == 0 && t.state == stateRunning {
		t.armDetachLocked(s)
	}
	t.mu.Unlock()
}

func (t *task) armDetachLocked(s *Server) {
	if t.detachTimer != nil {
		t.detachTimer.Stop()
	}
	grace := time.Duration(s.cfg.DetachGraceMs) * time.Millisecond
	t.detachTimer = time.AfterFunc(grace, func() {
		t.mu.Lock()
		abandoned := t.readers == 0 && t.state == stateRunning
		t.mu.Unlock()
		if abandoned {
			s.terminate(t, &APIError{Code: CodeCanceled, Message: "no stream reader for " + strconv.Itoa(s.cfg.DetachGraceMs) + " ms: task abandoned", Engine: t.pool.engine, PoolID: t.pool.id}, reasonAbandoned)
		}
	})
}

// logTask logs one task event with the SPEC §8 fields; nothing is built
// when the level is off (the bench runs at warn).
func (s *Server) logTask(t *task, lvl zapcore.Level, msg string, extra ...zap.Field) {
	ce := s.log.Check(lvl, msg)
	if ce == nil {
		return
	}
	fields := make([]zap.Field, 0, 10+len(extra))
	fields = append(fields,
		zap.String("job_id", t.key.id), zap.String("session_id", t.sessionID), zap.String("tenant_id", t.key.tenant),
		zap.String("engine", t.pool.engine), zap.String("pool_id", t.pool.id), zap.String("model_id", t.pool.model()),
		zap.String("priority", t.prio.String()), zap.Int("queue_position", t.queuePosition),
		zap.Int64("predicted_start_ms", t.predictedStartMs), zap.Int64("deadline_ms", t.deadline))
	ce.Write(append(fields, extra...)...)
}

// runFields are the SPEC §8 fields of a task that reached a replica: where
// it ran, how long it queued, what it produced. Call with t.mu not held.
func (s *Server) runFields(t *task, r *balancer.Replica, extra ...zap.Field) []zap.Field {
	t.mu.Lock()
	queueMs := t.dispatchedAt.Sub(t.admittedAt).Milliseconds()
	warm, preempted := t.kvWarm, t.segments > 0
	t.mu.Unlock()
	f := make([]zap.Field, 0, 6+len(extra))
	if r != nil {
		f = append(f, zap.String("replica_id", r.ID), zap.String("engine_version", t.pool.replicaVersion(r)))
	}
	f = append(f, zap.Bool("kv_warmth", warm), zap.Int64("queue_time_ms", max(queueMs, 0)),
		zap.Int("tokens_out", t.log.Tokens()), zap.Bool("preempted", preempted))
	return append(f, extra...)
}
