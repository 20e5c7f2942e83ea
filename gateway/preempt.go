package gateway

import (
	"time"

	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/gateway/admission"
)

// interruptible reports whether every replica of p can be hard-preempted.
func (p *pool) interruptible() bool {
	for _, st := range p.set().states {
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
	if p.tuning().preemption != "hard" || newcomer.prio != admission.Interactive || !p.interruptible() {
		return
	}
	if _, free := p.capacity(); free > 0 {
		return
	}
	var victim *task
	p.runMu.Lock()
	for t := range p.running {
		// A task dispatched before an apply turned preemption to hard
		// kept no text to resume from: it runs on.
		if t.prio <= newcomer.prio || t.tune.preemption != "hard" {
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
	if victim.state != stateRunning || victim.abort != abortNone {
		victim.mu.Unlock()
		return
	}
	victim.abort = abortPreempt
	cancel := victim.cancelRun
	victim.mu.Unlock()
	s.metrics.preemption("hard", p.engine)
	victim.mu.Lock()
	vr := victim.replica
	victim.mu.Unlock()
	fields := []zap.Field{zap.String("for_job_id", newcomer.key.id), zap.Bool("preempted", true)}
	if vr != nil {
		fields = append(fields, zap.String("replica_id", vr.ID), zap.String("engine_version", p.replicaVersion(vr)))
	}
	s.logTask(victim, zap.InfoLevel, "task preempted", fields...)
	cancel()
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
