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

	sink         taskSink
	dispatchedAt time.Time
	session      *session  // the session this task's turn was reserved in
	wdTokens     int       // watchdog: tokens seen at wdSince
	wdSince      time.Time // watchdog: when the token count last moved

	mu          sync.Mutex
	state       taskState
	replica     *balancer.Replica
	cancelRun   context.CancelFunc
	readers     int
	detachTimer *time.Timer
	kvWarm      bool
	reserved    int // session budget tokens reserved at admission
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
	TokensIn              int     `json:"tokens_in"`
	TokensOut             int     `json:"tokens_out"`
	TTFTMs                int64   `json:"ttft_ms"`
	ReplicaID             string  `json:"replica_id"`
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

// taskSink relays an adapter's tokens into the task log.
type taskSink struct {
	log        *tasklog.Log
	firstToken time.Time
	onFirst    func()
}

func (s *taskSink) Token(text []byte) {
	if s.firstToken.IsZero() {
		s.firstToken = time.Now()
		if s.onFirst != nil {
			s.onFirst()
		}
	}
	s.log.AppendToken(text)
}

func (s *taskSink) Flush() { s.log.Publish() }

// startTask moves a dispatched task to running on replica r. Called by the
// pool's dispatcher with r's slot already acquired.
func (s *Server) startTask(t *task, r *balancer.Replica) {
	t.mu.Lock()
	if t.state != stateQueued {
		// Canceled between Pop and here: give the slot back.
		t.mu.Unlock()
		r.Release()
		t.pool.signal()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.state = stateRunning
	t.replica = r
	t.cancelRun = cancel
	t.dispatchedAt = time.Now()
	prefer := s.sessions.lastReplica(t.key.tenant, t.sessionID, t.pool)
	t.kvWarm = prefer == r && t.kvHint != "cold"
	if t.readers == 0 {
		t.armDetachLocked(s)
	}
	t.mu.Unlock()
	t.pool.addRunning(t)

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.runTask(ctx, t, r)
	}()
}

// runTask streams the task from replica r and writes its terminal event.
// Whatever happens — an engine error, a cancel, a panic in an adapter — the
// slot is released, the task gets a terminal event and is finished, once.
func (s *Server) runTask(ctx context.Context, t *task, r *balancer.Replica) {
	p := t.pool
	st := p.states[r.Index]
	ver := p.replicaVersion(r.Index)
	labels := seriesLabels{engine: p.engine, engineVersion: ver, poolID: p.id, replicaID: r.ID, priority: t.prio.String()}
	queueMs := t.dispatchedAt.Sub(t.admittedAt).Milliseconds()

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
		r.Release()
		p.signal()
		s.settle(t, labels, res, err)
	}()

	s.metrics.started(labels)
	t.log.Append(sse.KindStarted, mustJSON(startedEvent{
		QueuePosition: t.queuePosition, PredictedStartMs: t.predictedStartMs, QueueTimeMs: queueMs,
		Engine: p.engine, PoolID: p.id, ReplicaID: r.ID, EngineVersion: ver, KVWarmth: t.kvWarm,
	}))
	t.log.Publish()
	s.taskLogger(t).Info("task started",
		zap.String("replica_id", r.ID), zap.String("engine_version", ver), zap.Bool("kv_warmth", t.kvWarm),
		zap.Int64("queue_time_ms", queueMs))

	t.sink.log = t.log
	t.sink.onFirst = func() {
		s.metrics.firstToken(labels, float64(time.Since(t.admittedAt).Microseconds())/1000)
	}
	res, err = st.adapter.Stream(ctx, &t.req, &t.sink)
	t.log.Publish()
}

// settle writes a finished stream's terminal events, metrics and logs.
func (s *Server) settle(t *task, labels seriesLabels, res engines.Result, err error) {
	p, r := t.pool, t.replica
	end := time.Now()
	queueMs := t.dispatchedAt.Sub(t.admittedAt).Milliseconds()
	first := t.sink.firstToken
	if err != nil {
		s.sessions.finishTurn(t, engines.Result{}, nil)
		if !errors.Is(err, context.Canceled) {
			ae := engineError(err, p)
			if t.log.Append(sse.KindError, mustJSON(ae)) {
				s.taskLogger(t).Warn("task failed",
					zap.String("replica_id", r.ID), zap.String("engine_version", labels.engineVersion),
					zap.String("code", ae.Code), zap.String("error", ae.Message),
					zap.Int("tokens_streamed", t.log.Tokens()))
			}
		}
		// A cancel (client, abandonment, watchdog, shutdown) already wrote
		// the terminal event; Append refuses anything after it.
		s.finishTask(t)
		return
	}
	decodeMs := res.DecodeMs
	if decodeMs <= 0 && !first.IsZero() {
		decodeMs = end.Sub(first).Milliseconds()
	}
	var ttft int64
	if !first.IsZero() {
		ttft = first.Sub(t.admittedAt).Milliseconds()
		s.metrics.decode(labels, float64(end.Sub(first).Microseconds())/1000)
	}
	remaining := s.sessions.finishTurn(t, res, r)
	me := metricsEvent{
		OnTimeProbability: onTime(t, end), QueueDepth: p.queue.Len(), KVWarmth: t.kvWarm,
		TokensBudgetRemaining: remaining, TokensIn: res.TokensIn, TokensOut: res.TokensOut, TTFTMs: ttft, ReplicaID: r.ID,
	}
	t.log.Append(sse.KindMetrics, mustJSON(me))
	finish := res.FinishReason
	if finish == "" {
		finish = "stop"
	}
	if t.log.Append(sse.KindEnd, mustJSON(endEvent{TokensOut: res.TokensOut, DecodeMs: decodeMs, FinishReason: finish})) {
		s.metrics.tokens(labels, res.TokensIn, res.TokensOut)
		p.observeService(float64(end.Sub(t.dispatchedAt).Microseconds()) / 1000)
		s.taskLogger(t).Info("task finished",
			zap.String("replica_id", r.ID), zap.String("engine_version", labels.engineVersion), zap.Bool("kv_warmth", t.kvWarm),
			zap.Int64("queue_time_ms", queueMs), zap.Int64("decode_time_ms", decodeMs),
			zap.Int("tokens_in", res.TokensIn), zap.Int("tokens_out", res.TokensOut),
			zap.Float64("on_time_probability", me.OnTimeProbability), zap.Bool("preempted", false))
	}
	s.finishTask(t)
}

// onTime is 1 when the task met its deadline (or had none), else 0.
func onTime(t *task, end time.Time) float64 {
	if t.deadline <= 0 || end.Sub(t.admittedAt).Milliseconds() <= t.deadline {
		return 1
	}
	return 0
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
		if !t.log.Append(sse.KindError, mustJSON(ae)) {
			return false
		}
		s.metrics.canceled(seriesLabels{engine: t.pool.engine, poolID: t.pool.id}, reason)
		s.sessions.finishTurn(t, engines.Result{}, nil)
		s.taskLogger(t).Info("task canceled", zap.String("reason", reason), zap.String("state", "queued"))
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
	cancel()
	p := t.pool
	s.metrics.canceled(seriesLabels{engine: p.engine, engineVersion: p.replicaVersion(r.Index), poolID: p.id, replicaID: r.ID}, reason)
	s.taskLogger(t).Info("task canceled", zap.String("reason", reason), zap.String("state", "running"), zap.String("replica_id", r.ID))
	return true
}

// finishTask marks a task done and schedules its log's removal.
func (s *Server) finishTask(t *task) {
	t.mu.Lock()
	t.state = stateDone
	if t.detachTimer != nil {
		t.detachTimer.Stop()
		t.detachTimer = nil
	}
	if t.cancelRun != nil {
		t.cancelRun() // release the context's resources
	}
	t.mu.Unlock()
	s.tasks.retire(t, time.Duration(s.cfg.TaskRetentionMs)*time.Millisecond)
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

func (s *Server) taskLogger(t *task) *zap.Logger {
	return s.log.With(
		zap.String("job_id", t.key.id), zap.String("session_id", t.sessionID), zap.String("tenant_id", t.key.tenant),
		zap.String("engine", t.pool.engine), zap.String("pool_id", t.pool.id), zap.String("model_id", t.pool.cfg.Model),
		zap.String("priority", t.prio.String()), zap.Int("queue_position", t.queuePosition),
		zap.Int64("predicted_start_ms", t.predictedStartMs), zap.Int64("deadline_ms", t.deadline))
}
