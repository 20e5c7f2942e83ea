package gateway

import (
	"time"

	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/gateway/admission"
	"github.com/llama-orch/llama-orch/sse"
)

// interruptible reports whether every replica of p can be hard-preempted.
func (p *pool) interruptible() bool {
	for _, st := range p.states {
		i, ok := st.adapter.(engines.Interruptible)
		if !ok || !i.InterruptibleDecode() {
			return false
		}
	}
	return true
}

// maybePreempt makes room for an urgent newcomer in a full pool with
// `preemption: hard` (SPEC §4.4): it aborts the running lower-priority task
// that started last (the least work lost). The victim resumes later from its
// text so far; a `strict` one ends with an error instead.
func (s *Server) maybePreempt(p *pool, newcomer *task) {
	if p.cfg.Preemption != "hard" || newcomer.prio != admission.Interactive || !p.interruptible() {
		return
	}
	if _, free := p.capacity(); free > 0 {
		return
	}
	var victim *task
	p.runMu.Lock()
	for t := range p.running {
		if t.prio <= newcomer.prio {
			continue
		}
		if victim == nil || t.dispatchedAt.After(victim.dispatchedAt) {
			victim = t
		}
	}
	p.runMu.Unlock()
	if victim == nil {
		return
	}
	victim.mu.Lock()
	if victim.state != stateRunning || victim.preempting {
		victim.mu.Unlock()
		return
	}
	victim.preempting = true
	cancel := victim.cancelRun
	victim.mu.Unlock()
	s.metrics.preemption("hard", p.engine)
	s.logTask(victim, zap.InfoLevel, "task preempted", zap.String("for_job_id", newcomer.key.id), zap.Bool("preempted", true))
	cancel()
}

// requeuePreempted handles the end of a preempted segment: a best_effort
// task goes back to the head of its queue to resume from its text so far; a
// strict one ends with an error. It returns false when the task was not
// preempted (an ordinary cancel).
func (s *Server) requeuePreempted(t *task) bool {
	t.mu.Lock()
	if !t.preempting || t.state != stateRunning {
		t.mu.Unlock()
		return false
	}
	p := t.pool
	if t.strict {
		t.mu.Unlock()
		ae := &APIError{Code: CodeWorkerReset, Engine: p.engine, PoolID: p.id, Retriable: true,
			Message: "preempted by higher-priority work; determinism strict forbids resuming on another sampler path"}
		s.sessions.finishTurn(t, engines.Result{TokensOut: t.log.Tokens()}, nil)
		s.releaseQuota(t)
		t.log.Append(sse.KindError, mustJSON(ae))
		s.finishTask(t)
		return true
	}
	seg := t.sink.segTokens
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
	t.state = stateQueued
	t.replica = nil
	if t.cancelRun != nil {
		t.cancelRun()
		t.cancelRun = nil
	}
	me := s.metricsEventLocked(t, time.Now())
	me.Preempted = true
	t.log.Append(sse.KindMetrics, mustJSON(me))
	t.log.Publish()
	p.queue.PushFront(t.entry)
	t.mu.Unlock()
	p.signal()
	return true
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
