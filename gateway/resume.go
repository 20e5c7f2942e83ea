package gateway

import (
	"context"
	"errors"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/balancer"
	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/sse"
)

// abortReason says why the gateway itself aborted a running segment.
type abortReason uint8

const (
	abortNone       abortReason = iota
	abortPreempt                // hard preemption (SPEC §4.4)
	abortFirstToken             // no first token within first_token_ms (SPEC §4.5)
	abortIdle                   // no token for idle_ms after the first
)

// abortRun aborts t's running segment for reason; settle then decides
// whether it resumes elsewhere or ends. False if t was not running.
func (s *Server) abortRun(t *task, reason abortReason) bool {
	t.mu.Lock()
	if t.state != stateRunning || t.abort != abortNone {
		t.mu.Unlock()
		return false
	}
	t.abort = reason
	cancel := t.cancelRun
	t.mu.Unlock()
	cancel()
	return true
}

// resumeAfter handles a segment that ended in err. It puts the task back at
// the head of its queue when it may continue on another replica — after a
// hard preemption; after a failure before the first token (retried on a
// replica not tried yet, SPEC §5); after a failure mid-stream when the pool
// sets `failover: resume` and the task is best_effort — and returns true.
// Otherwise it returns false and the caller ends the task (the error then
// says why: retries used up, strict determinism, …).
func (s *Server) resumeAfter(t *task, err error) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != stateRunning || t.log.Closed() {
		return false // a cancel or the watchdog already ended it
	}
	p, r := t.pool, t.replica
	canceled := errors.Is(err, context.Canceled)
	ee, isEngine := engines.AsError(err)
	var failedHere, before, retriable bool
	switch {
	case canceled && t.abort == abortPreempt:
		if t.strict {
			s.endLocked(t, &APIError{Code: CodeWorkerReset, Engine: p.engine, PoolID: p.id, Retriable: true,
				Message: "preempted by higher-priority work; determinism strict forbids resuming on another sampler path"})
			return true
		}
		return s.requeueLocked(t, "preempted", nil)
	case canceled && t.abort == abortFirstToken:
		// A resumed segment that misses its first token comes after tokens
		// were streamed: a failure after the first token (SPEC §5).
		failedHere, before, retriable = true, t.log.Tokens() == 0, true
	case canceled && t.abort == abortIdle:
		failedHere, before, retriable = true, t.log.Tokens() == 0, true
	case canceled:
		return false
	case isEngine:
		failedHere, before, retriable = true, !ee.AfterFirstToken, ee.Retriable() || ee.AfterFirstToken && ee.Kind != engines.KindContextLength && ee.Kind != engines.KindInvalidRequest
	default:
		return false // a bug (INTERNAL): never retried
	}
	if !failedHere || !retriable {
		return false
	}
	if t.deadline > 0 && time.Since(t.admittedAt).Milliseconds() >= t.deadline {
		return false
	}
	if isEngine && before && ee.Kind == engines.KindOverloaded && overloadRetryableLocked(t) {
		// The engine refused for load although the gateway counted a free
		// slot: it frees an aborted request a moment after the gateway does
		// (TGI at its max_concurrent_requests). When it is the only replica
		// to try — and no other one has failed the task already — wait
		// briefly and try again rather than fail the task.
		t.overloads++
		return s.requeueAfterLocked(t, time.Duration(25<<t.overloads)*time.Millisecond)
	}
	if t.tried == nil {
		t.tried = make(map[*balancer.Replica]bool)
	}
	t.tried[r] = true
	if t.deadline > 0 && time.Since(t.admittedAt).Milliseconds() >= t.deadline {
		return false
	}
	if !p.hasUntried(t.tried) {
		return false
	}
	if !before && (t.tune.failover != "resume" || t.strict) {
		return false
	}
	t.lastFail = segmentFailure{replica: r, err: err, abort: t.abort}
	if before {
		return s.requeueLocked(t, "retry", r)
	}
	return s.requeueLocked(t, "failover", r)
}

// segmentFailure is how a task's segment failed on a replica, kept while the
// task waits to go to another one: if none is left, the task ends with the
// error this failure would have ended it with.
type segmentFailure struct {
	replica *balancer.Replica
	err     error
	abort   abortReason
}

// maxOverloadRetries bounds the retries of a task an engine refused as
// overloaded (backoff 50, 100, 200 ms).
const maxOverloadRetries = 3

// overloadRetryableLocked reports whether an "overloaded" refusal of t's
// running segment is retried on the same replica (t.mu held): retries left,
// no replica failed the task yet, and no other replica can take it.
func overloadRetryableLocked(t *task) bool {
	return t.overloads < maxOverloadRetries && len(t.tried) == 0 && !t.pool.hasUntriedExcept(t.tried, t.replica)
}

func overloadRetryable(t *task) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return overloadRetryableLocked(t)
}

// hasUntriedExcept reports whether a ready replica other than r has not
// failed the task.
func (p *pool) hasUntriedExcept(tried map[*balancer.Replica]bool, r *balancer.Replica) bool {
	for _, o := range p.set().replicas {
		if o != r && o.Ready() && !tried[o] {
			return true
		}
	}
	return false
}

// exhaustQueued ends a task that waits in the queue to go to another
// replica (a retry or a failover) once no ready replica it has not failed
// on is left, with the error its last failure would have ended it with had
// no replica been left then (REPLICA_EXHAUSTED before the first token; after
// it WORKER_RESET, or DECODE_TIMEOUT for a stall), logged and counted alike.
func (s *Server) exhaustQueued(t *task) {
	t.mu.Lock()
	if t.state != stateQueued {
		t.mu.Unlock()
		return // started or canceled meanwhile
	}
	t.pool.queue.Remove(t.entry) // false when the dispatcher holds it popped
	t.state = stateDone
	lf, first := t.lastFail, t.sink.firstToken
	t.mu.Unlock()
	p := t.pool
	var ae *APIError
	if errors.Is(lf.err, context.Canceled) {
		ae = s.abortErrorFor(t, lf.abort, lf.replica)
	} else if lf.err != nil {
		ae = engineError(lf.err, p)
	}
	if ae == nil {
		ae = &APIError{Code: CodeReplicaExhausted, Engine: p.engine, PoolID: p.id, Retriable: true,
			Message: "every ready replica of the pool failed this task; none is left to retry on"}
	}
	s.sessions.finishTurn(t, engines.Result{TokensOut: t.log.Tokens()}, nil)
	s.releaseQuota(t)
	if ae.Code != CodeInvalidParams {
		s.slo.observe(t.prio, sinceMs(t.admittedAt, first), 0, true)
	}
	if t.log.Append(sse.KindError, mustJSON(ae)) {
		s.logTask(t, zap.WarnLevel, "task failed", s.runFields(t, lf.replica,
			zap.String("code", ae.Code), zap.String("error", ae.Message+" (no ready replica left to move to)"))...)
	}
	s.finishTask(t)
}

// requeueAfterLocked puts a task that streamed nothing back at the head of
// its queue after d (t.mu held). Meanwhile it counts as queued: a cancel or
// the drain ends it, and the timer then finds it done.
func (s *Server) requeueAfterLocked(t *task, d time.Duration) bool {
	p := t.pool
	t.state = stateQueued
	t.replica = nil
	if t.cancelRun != nil {
		t.cancelRun()
		t.cancelRun = nil
	}
	s.metrics.retry(p.engine, "overloaded")
	time.AfterFunc(d, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.state != stateQueued || t.log.Closed() {
			return
		}
		p.queue.PushFront(t.entry)
		p.signal()
	})
	return true
}

// requeueLocked puts a running task back at the head of its queue (t.mu
// held). why is "preempted", "retry" (nothing streamed yet: the next replica
// starts afresh) or "failover" (continue from the text so far).
func (s *Server) requeueLocked(t *task, why string, failed *balancer.Replica) bool {
	p := t.pool
	seg := t.sink.segTokens
	if seg > 0 || why != "retry" {
		t.segments++
		t.tokensOutPrev += seg
		if !t.sink.firstToken.IsZero() {
			t.decodeMsPrev += time.Since(later(t.sink.firstToken, t.dispatchedAt)).Milliseconds()
		}
		// Resume from the prompt plus the text so far, asking for what is left.
		t.req.Prompt += string(t.sink.text)
		t.sink.text = t.sink.text[:0]
		t.req.MaxTokens = max(t.req.MaxTokens-seg, 1)
		t.req.CachePrompt = true
	}
	t.state = stateQueued
	t.replica = nil
	if t.cancelRun != nil {
		t.cancelRun()
		t.cancelRun = nil
	}
	if why != "retry" {
		me := s.metricsEventLocked(t, time.Now())
		me.Preempted = why == "preempted"
		me.Failover = why == "failover"
		me.KVWarmth = false
		t.log.Append(sse.KindMetrics, mustJSON(me))
		t.log.Publish()
	}
	if failed != nil {
		s.metrics.retry(p.engine, why)
		s.logTask(t, zap.InfoLevel, "task moves to another replica", zap.String("why", why),
			zap.String("failed_replica_id", failed.ID), zap.Int("tokens_so_far", t.tokensOutPrev))
	}
	if len(t.tried) > 0 {
		p.addRetry(t) // it may go only to a replica it has not tried
	}
	p.queue.PushFront(t.entry)
	p.signal()
	return true
}

// endLocked writes t's terminal error (t.mu held) and finishes it.
func (s *Server) endLocked(t *task, ae *APIError) {
	t.mu.Unlock()
	s.sessions.finishTurn(t, engines.Result{TokensOut: t.log.Tokens()}, nil)
	s.releaseQuota(t)
	t.log.Append(sse.KindError, mustJSON(ae))
	s.finishTask(t)
	t.mu.Lock() // the caller's deferred Unlock
}

// hasUntried reports whether a ready replica of p has not failed the task.
func (p *pool) hasUntried(tried map[*balancer.Replica]bool) bool {
	for _, r := range p.set().replicas {
		if r.Ready() && !tried[r] {
			return true
		}
	}
	return false
}

// pickFor chooses a replica for t: the policy's choice, or — once t failed
// on some replicas — the least loaded available replica it has not tried.
func (p *pool) pickFor(t *task, prefer *balancer.Replica) *balancer.Replica {
	t.mu.Lock()
	tried := t.tried
	t.mu.Unlock()
	rs := p.set()
	if !rs.has(prefer) {
		prefer = nil // the session's replica left the pool in a reload
	}
	if len(tried) == 0 {
		// Session affinity: the last good replica, else consistent hashing
		// with bounded loads, so gateways with one config choose alike.
		return rs.ring.Pick(balancer.KeyOf(t.sessionID), prefer, p.affinity)
	}
	if prefer != nil && !tried[prefer] && prefer.Available() {
		return prefer
	}
	var best *balancer.Replica
	for _, r := range rs.replicas {
		if tried[r] || !r.Available() {
			continue
		}
		if best == nil || r.Score() < best.Score() {
			best = r
		}
	}
	return best
}

// abortError is the terminal error of a segment the watchdog aborted that
// could not move to another replica (nil for other cancels, which wrote
// their own terminal event).
func (s *Server) abortError(t *task) *APIError {
	t.mu.Lock()
	reason, r := t.abort, t.replica
	t.mu.Unlock()
	return s.abortErrorFor(t, reason, r)
}

// abortErrorFor is abortError for a segment the watchdog aborted on r for
// reason (t.mu not held).
func (s *Server) abortErrorFor(t *task, reason abortReason, r *balancer.Replica) *APIError {
	p := t.pool
	ae := &APIError{Engine: p.engine, PoolID: p.id, Retriable: true}
	switch reason {
	case abortFirstToken:
		ae.Code, ae.Message = CodeReplicaExhausted, "no first token within first_token_ms "+strconv.Itoa(p.tuning().timeouts.FirstTokenMs)+" on any replica tried"
		if t.log.Tokens() > 0 {
			ae.Code, ae.Message = CodeDecodeTimeout, "no token within first_token_ms "+strconv.Itoa(p.tuning().timeouts.FirstTokenMs)+" after resuming on another replica"
		}
	case abortIdle:
		ae.Code, ae.Message = CodeDecodeTimeout, "no token for idle_ms "+strconv.Itoa(p.tuning().timeouts.IdleMs)
	default:
		return nil
	}
	l := seriesLabels{engine: p.engine, poolID: p.id}
	if r != nil {
		l.engineVersion, l.replicaID = p.replicaVersion(r), r.ID
	}
	s.metrics.canceled(l, reasonWatchdog)
	return ae
}

// recordOutcome tells the replica's breaker how the segment went (SPEC §5:
// breakers count stream health, not only status codes). Failures: engine
// errors that are not the request's fault (connect, 5xx/429 at start, error
// frames, cut streams), the watchdog's first-token and idle aborts, and an
// interactive first token slower than the TTFT SLO. A client's cancel,
// preemption, shutdown or drain, and a request the engine rejected as
// invalid, are not the replica's doing.
func (s *Server) recordOutcome(t *task, segStart time.Time, err error) {
	t.mu.Lock()
	done, abort, fault := t.brDone, t.abort, t.fault
	t.brDone = nil
	t.mu.Unlock()
	if done == nil {
		return
	}
	success := true
	switch ee, isEngine := engines.AsError(err); {
	case err == nil:
		first := t.sink.firstToken
		if slo := time.Duration(t.pool.ttftSLO.Load()); slo > 0 && t.prio == 0 && !first.IsZero() && first.Sub(segStart) > slo {
			success = false
		}
	case isEngine && ee.Kind == engines.KindOverloaded && !ee.AfterFirstToken && overloadRetryable(t):
		// The refusal resumeAfter will retry on the same replica after a
		// backoff (the gateway's slot count ran ahead of the engine's):
		// neutral for the breaker; the last refused attempt still counts.
		success = true
	case isEngine:
		success = ee.Kind == engines.KindContextLength || ee.Kind == engines.KindInvalidRequest
	case errors.Is(err, context.Canceled):
		success = abort != abortFirstToken && abort != abortIdle && !fault
	}
	done(success)
}

// breakerTransition logs, counts and publishes a replica breaker's change.
func (s *Server) breakerTransition(p *pool, r *balancer.Replica, from, to balancer.State) {
	s.metrics.breakerTransition(p.id, r.ID, to.String())
	lvl := zap.InfoLevel
	if to == balancer.Open {
		lvl = zap.WarnLevel
	}
	if ce := s.log.Check(lvl, "breaker transition"); ce != nil {
		ce.Write(zap.String("pool_id", p.id), zap.String("replica_id", r.ID), zap.String("engine", p.engine),
			zap.String("engine_version", p.replicaVersion(r)), zap.String("model_id", p.model()),
			zap.String("from", from.String()), zap.String("to", to.String()), zap.String("last_error", p.lastError()))
	}
	s.events.publish(opsEvent{Type: "breaker", PoolID: p.id, ReplicaID: r.ID, From: from.String(), To: to.String()})
	if to == balancer.Closed {
		p.signal() // its slots are selectable again
	}
}
