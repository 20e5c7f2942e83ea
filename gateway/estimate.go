package gateway

import (
	"math"
	"sync"
	"time"

	"github.com/llama-orch/llama-orch/gateway/admission"
)

// Priors used before a pool has measured anything.
const (
	priorTTFTMs     = 500.0
	priorPerTokenMs = 20.0
	priorTokens     = 64.0
	ewmaAlpha       = 0.2
)

// estimator keeps a pool's measurements (SPEC §4.4): EWMAs of the time to
// first token, the time per generated token and the tokens per task, and of
// the interval between dispatches while work was waiting (the drain rate)
// pool-wide and per priority. predicted_start_ms, predicted_end_ms,
// on_time_probability and every Retry-After come from them.
type estimator struct {
	mu         sync.Mutex
	ttftMs     float64
	perTokenMs float64
	tokens     float64
	drainMs    float64 // backlogged inter-dispatch interval, pool-wide (0 = unmeasured)
	drainPrio  [admission.NumPriorities]float64
	lastAny    time.Time
	lastPrio   [admission.NumPriorities]time.Time
}

func (e *estimator) init() {
	e.ttftMs, e.perTokenMs, e.tokens = priorTTFTMs, priorPerTokenMs, priorTokens
}

func ewma(old, v float64) float64 { return (1-ewmaAlpha)*old + ewmaAlpha*v }

// observeDispatch records a dispatch of priority p; backlogged says work was
// still waiting, so the interval since the previous dispatch measures how
// fast the queue drains.
func (e *estimator) observeDispatch(p admission.Priority, now time.Time, backlogged, prioBacklogged bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if backlogged && !e.lastAny.IsZero() {
		e.drainMs = ewmaOr(e.drainMs, ms(now.Sub(e.lastAny)))
	}
	if prioBacklogged && !e.lastPrio[p].IsZero() {
		e.drainPrio[p] = ewmaOr(e.drainPrio[p], ms(now.Sub(e.lastPrio[p])))
	}
	e.lastAny, e.lastPrio[p] = now, now
}

func ewmaOr(old, v float64) float64 {
	if old == 0 {
		return v
	}
	return ewma(old, v)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// observeFinish folds a finished task into the service estimates.
func (e *estimator) observeFinish(ttft time.Duration, decode time.Duration, tokens int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ttft > 0 {
		e.ttftMs = ewma(e.ttftMs, ms(ttft))
	}
	if tokens > 1 && decode > 0 {
		e.perTokenMs = ewma(e.perTokenMs, ms(decode)/float64(tokens-1))
	}
	if tokens > 0 {
		e.tokens = ewma(e.tokens, float64(tokens))
	}
}

// serviceMs is the expected dispatch-to-end time of a task generating n
// tokens (n <= 0: the pool's typical task).
func (e *estimator) serviceMs(n int) float64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	tokens := e.tokens
	if n > 0 {
		tokens = float64(n)
	}
	return e.ttftMs + e.perTokenMs*math.Max(tokens-1, 0)
}

// drainIntervalMs is how long until the next queue place frees: the measured
// backlogged dispatch interval (for priority p when perPriority), else the
// typical service time spread over the pool's slots.
func (e *estimator) drainIntervalMs(p admission.Priority, perPriority bool, totalSlots int) float64 {
	e.mu.Lock()
	d := e.drainMs
	if perPriority {
		d = e.drainPrio[p]
	}
	e.mu.Unlock()
	if d > 0 {
		return d
	}
	return e.serviceMs(0) / float64(max(totalSlots, 1))
}

// predictStartMs estimates when a task with `ahead` tasks before it starts:
// 0 with a free slot, else the number of service "waves" it must wait.
func (p *pool) predictStartMs(ahead int) int64 {
	total, free := p.capacity()
	if ahead < free {
		return 0
	}
	if total == 0 {
		total = 1
	}
	waves := (ahead-free)/total + 1
	return int64(float64(waves) * p.est.serviceMs(0))
}

// predictEndMs adds the expected generation of n tokens to a start estimate.
func (p *pool) predictEndMs(startMs int64, n int) int64 {
	return startMs + int64(p.est.serviceMs(n))
}

// backoffMs is how long a rejected client should wait for a queue place:
// the measured drain interval of the pool (or of the priority whose cap was
// hit), clamped to [100 ms, 60 s].
func (p *pool) backoffMs(prio admission.Priority, perPriority bool) int64 {
	total, _ := p.capacity()
	d := p.est.drainIntervalMs(prio, perPriority, total)
	return min(max(int64(math.Ceil(d)), 100), 60000)
}

// onTimeProbability is P(end <= deadline) under a normal model of the
// predicted end with a spread of a quarter of the prediction (at least
// 50 ms): 0.5 exactly at the prediction. No deadline: 1.
func onTimeProbability(predictedEndMs, deadlineMs int64) float64 {
	if deadlineMs <= 0 {
		return 1
	}
	sigma := math.Max(float64(predictedEndMs)/4, 50)
	z := float64(deadlineMs-predictedEndMs) / sigma
	return 0.5 * math.Erfc(-z/math.Sqrt2)
}
