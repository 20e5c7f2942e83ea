package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/gateway/admission"
	"github.com/llama-orch/llama-orch/gateway/tasklog"
)

// enqueueResponse is the 202 body (SPEC §3.1).
type enqueueResponse struct {
	TaskID           string `json:"task_id"`
	QueuePosition    int    `json:"queue_position"`
	PredictedStartMs int64  `json:"predicted_start_ms"`
	BackoffMs        int64  `json:"backoff_ms"`
}

// estimatePromptTokens is the guardrail's prompt-size estimate: bytes divided
// by chars_per_token, rounded up. It is deliberately simple and documented
// in the README; real tokenizers differ by roughly ±30 % on English text.
func estimatePromptTokens(prompt string, charsPerToken float64) int {
	if charsPerToken <= 0 {
		charsPerToken = 4
	}
	return int(math.Ceil(float64(len(prompt)) / charsPerToken))
}

// promptTokens counts the prompt's tokens with the engine's tokenizer when
// `admission.tokenize: engine` is set (one bounded call to a ready replica,
// plus the BOS token), else — or if that fails — with the chars_per_token
// estimate.
func (s *Server) promptTokens(p *pool, prompt string) int {
	if s.cfg.Admission.Tokenize == "engine" {
		rs := p.set()
		for i, r := range rs.replicas {
			tk, ok := rs.states[i].adapter.(engines.Tokenizer)
			if !ok || !r.Ready() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			n, err := tk.CountTokens(ctx, prompt)
			cancel()
			if err == nil {
				return n + 1
			}
			s.log.Warn("engine tokenizer failed; using the chars_per_token estimate",
				zap.String("pool_id", p.id), zap.String("replica_id", r.ID), zap.Error(err))
			break
		}
	}
	return estimatePromptTokens(prompt, s.cfg.Admission.CharsPerToken)
}

// withQueue adds the pool's queue headers to an admission 429.
func withQueue(e *APIError, p *pool) *APIError {
	n := p.queue.Len()
	e.queuePosition, e.queueETAMs, e.queueKnown = n, p.predictStartMs(n), true
	return e
}

func (s *Server) reject(ctx *fasthttp.RequestCtx, engine string, e *APIError) {
	reason := reasonLabel(e.Code)
	if e.PolicyLabel != "" {
		reason = e.PolicyLabel
	}
	s.metrics.rejected(engine, reason)
	writeError(ctx, e)
}

// handleEnqueue is POST /v1/tasks: every pre-admission check in SPEC §3.1
// order, then the queue. With Accept: text/event-stream the answer is the
// task's stream itself (one round trip).
func (s *Server) handleEnqueue(ctx *fasthttp.RequestCtx) {
	pr, ok := s.require(ctx, RoleData)
	if !ok {
		reason := "forbidden"
		if ctx.Response.StatusCode() == fasthttp.StatusUnauthorized {
			reason = "unauthorized"
		}
		s.metrics.rejected(unknownLabel, reason)
		return
	}
	pt, aerr := parseTaskRequest(ctx.PostBody())
	if aerr != nil {
		s.reject(ctx, unknownLabel, aerr)
		return
	}
	t := s.admit(ctx, pr, pt)
	if t == nil {
		return
	}
	p := t.pool
	ctx.Response.Header.Set("X-Queue-Position", strconv.Itoa(t.queuePosition))
	ctx.Response.Header.Set("X-Queue-ETA-Ms", strconv.FormatInt(t.predictedStartMs, 10))
	if rem := s.sessions.remaining(t); rem != nil {
		ctx.Response.Header.Set("X-Budget-Tokens-Remaining", strconv.Itoa(*rem))
	}
	if wantsStream(ctx) {
		s.serveStream(ctx, t, -1)
		return
	}
	var backoff int64
	if t.predictedStartMs > 0 {
		backoff = p.backoffMs(t.prio, false)
	}
	writeJSON(ctx, fasthttp.StatusAccepted, enqueueResponse{
		TaskID: pt.TaskID, QueuePosition: t.queuePosition, PredictedStartMs: t.predictedStartMs, BackoffMs: backoff,
	})
}

// admit runs every pre-admission check of SPEC §3.1 in order and queues the
// task; on refusal it writes the error (and counts it) and returns nil.
func (s *Server) admit(ctx *fasthttp.RequestCtx, pr Principal, pt *parsedTask) *task {
	var aerr *APIError
	var p *pool
	// rej refuses the task: counted, logged with the SPEC §8 fields it has,
	// answered.
	rej := func(e *APIError) {
		engine, poolID, model := pt.Engine, "", ""
		if p != nil {
			engine, poolID, model = p.engine, p.id, p.model()
		}
		if ce := s.log.Check(zap.InfoLevel, "task rejected"); ce != nil {
			ce.Write(zap.String("job_id", pt.TaskID), zap.String("session_id", pt.SessionID), zap.String("tenant_id", pr.Tenant),
				zap.String("engine", engine), zap.String("pool_id", poolID), zap.String("model_id", model),
				zap.String("priority", pt.priority.String()), zap.String("code", e.Code), zap.String("policy", e.PolicyLabel),
				zap.String("error", e.Message))
		}
		s.reject(ctx, engine, e)
	}
	p, aerr = s.findPool(pt.ModelRef, pt.Engine)
	if aerr != nil {
		rej(aerr)
		return nil
	}
	if aerr := s.lifecycle(p, pr.Tenant, pt.SessionID); aerr != nil {
		rej(aerr)
		return nil
	}
	if aerr := p.readiness(); aerr != nil {
		rej(aerr)
		return nil
	}
	if s.draining.Load() {
		rej(errDraining(p))
		return nil
	}
	limit := p.ctxLimit()
	reqCtx := limit
	if pt.Ctx != nil {
		if *pt.Ctx > limit {
			rej(&APIError{Code: CodeInvalidParams, Engine: p.engine, PoolID: p.id,
				Message: "ctx " + strconv.Itoa(*pt.Ctx) + " exceeds the model limit " + strconv.Itoa(limit) + " of pool " + p.id})
			return nil
		}
		reqCtx = *pt.Ctx
	}
	est := s.promptTokens(p, *pt.Prompt)
	bound, what := reqCtx, "ctx"
	if s.cfg.Admission.MaxTokensLimit < bound {
		bound, what = s.cfg.Admission.MaxTokensLimit, "max_tokens_limit"
	}
	// Compared without adding, so a huge max_tokens cannot overflow past it.
	if pt.maxTokens > bound || est > bound-pt.maxTokens {
		rej(&APIError{Code: CodeInvalidParams, Engine: p.engine, PoolID: p.id,
			Message: "token budget exceeded: about " + strconv.Itoa(est) + " prompt tokens + max_tokens " + strconv.Itoa(pt.maxTokens) +
				" > " + what + " " + strconv.Itoa(bound)})
		return nil
	}

	s.admitMu.RLock()
	defer s.admitMu.RUnlock()
	if s.draining.Load() { // checked again: Shutdown may have begun meanwhile
		rej(errDraining(p))
		return nil
	}
	if p.draining.Load() { // checked again: a drain or a config apply removing the pool
		rej(p.readiness())
		return nil
	}
	// Checked again under the lock a retired model's task sweep takes, so
	// no task of it slips in between the state change and the sweep.
	if aerr := s.lifecycle(p, pr.Tenant, pt.SessionID); aerr != nil {
		rej(aerr)
		return nil
	}
	key := taskKey{pr.Tenant, pt.TaskID}
	if !s.tasks.reserve(key) {
		rej(&APIError{Code: CodeInvalidParams, Engine: p.engine, PoolID: p.id, status: fasthttp.StatusConflict,
			Message: "task_id " + pt.TaskID + " was already admitted; a task never runs twice"})
		return nil
	}
	t := &task{
		key:       key,
		sessionID: pt.SessionID,
		pool:      p,
		prio:      pt.priority,
		kvHint:    pt.KVHint,
		log:       tasklog.New(),
		req: engines.Request{
			TaskID: pt.TaskID, SessionID: pt.SessionID, Model: p.model(), Prompt: *pt.Prompt,
			MaxTokens: pt.maxTokens, Seed: pt.seed, Ctx: reqCtx, CachePrompt: pt.KVHint != "cold",
		},
	}
	if pt.DeadlineMs != nil {
		t.deadline = *pt.DeadlineMs
	}
	if pt.ExpectedTokens != nil && *pt.ExpectedTokens > 0 {
		t.expectedTokens = min(*pt.ExpectedTokens, pt.maxTokens)
	}
	t.strict = pt.Determinism == "strict"
	undoSession, aerr := s.sessions.reserve(t, pt.maxTokens)
	if aerr != nil {
		s.tasks.unreserve(key)
		s.metrics.backpressure(p.engine, aerr.PolicyLabel)
		rej(withQueue(aerr, p))
		return nil
	}
	commitQuota, undoQuota, aerr := s.quotas.acquire(pr.Tenant)
	if aerr != nil {
		undoSession()
		s.tasks.unreserve(key)
		aerr.Engine, aerr.PoolID = p.engine, p.id
		s.metrics.backpressure(p.engine, aerr.PolicyLabel)
		rej(withQueue(aerr, p))
		return nil
	}
	undo := func() {
		undoQuota()
		undoSession()
		s.tasks.unreserve(key)
	}

	// Deadline feasibility (SPEC §4.4): the predicted end must fit the
	// budget; the prediction uses the queue as it is now.
	estAhead := p.estimateAhead(t.prio)
	estStart := p.predictStartMs(estAhead)
	predictedEnd := p.predictEndMs(estStart, t.tokensExpected())
	if t.deadline > 0 && predictedEnd > t.deadline {
		undo()
		rej(&APIError{Code: CodeDeadlineUnmet, Engine: p.engine, PoolID: p.id, PredictedEndMs: predictedEnd,
			Message: "deadline_ms " + strconv.FormatInt(t.deadline, 10) + " cannot be met: predicted end in " + strconv.FormatInt(predictedEnd, 10) +
				" ms (" + strconv.Itoa(estAhead) + " tasks ahead, start in about " + strconv.FormatInt(estStart, 10) + " ms)"})
		return nil
	}

	t.mu.Lock()
	t.admittedAt = time.Now()
	meta := admission.Meta{Prio: t.prio, Tenant: pr.Tenant, Weight: s.quotas.weight(pr.Tenant)}
	if t.deadline > 0 {
		meta.Deadline = t.admittedAt.Add(time.Duration(t.deadline) * time.Millisecond)
	}
	e, ahead, victim, err := p.queue.Push(meta, t)
	if err != nil {
		t.mu.Unlock()
		undo()
		var full *admission.FullError
		if !errors.As(err, &full) {
			panic("BUG: gateway: unexpected queue error: " + err.Error())
		}
		s.metrics.backpressure(p.engine, full.Policy)
		code := CodeAdmissionReject
		if full.Policy == admission.PolicyDropLRU {
			code = CodeQueueFullDropLRU
		}
		perPriority := full.PerPriority
		rej(&APIError{Code: code, Engine: p.engine, PoolID: p.id, PolicyLabel: full.Policy,
			Message:      "queue of pool " + p.id + " is full (" + strconv.Itoa(full.Queued) + " queued, capacity " + strconv.Itoa(full.Capacity) + ")",
			RetryAfterMs: p.backoffMs(t.prio, perPriority), queuePosition: full.Queued, queueETAMs: p.predictStartMs(full.Queued), queueKnown: true})
		return nil
	}
	t.entry = e
	t.queuePosition = ahead
	t.predictedStartMs = p.predictStartMs(ahead)
	t.predictedEndMs = p.predictEndMs(t.predictedStartMs, t.tokensExpected())
	s.tasks.add(t)
	t.mu.Unlock()
	commitQuota()

	if victim != nil {
		s.evict(victim.Value, p.queue.Policy())
	}
	s.metrics.enqueued(seriesLabels{engine: p.engine, poolID: p.id, priority: t.prio.String()})
	s.logTask(t, zap.InfoLevel, "task admitted", zap.Float64("on_time_probability", onTimeProbability(t.predictedEndMs, t.deadline)))
	p.signal()
	s.maybePreempt(p, t)

	return t
}

// evict ends a queued task the full policy pushed out for a newcomer
// (SPEC §4.2): drop-lru ends it with QUEUE_FULL_DROP_LRU, shed-low-priority
// with ADMISSION_REJECT (a soft preemption).
func (s *Server) evict(v *task, policy string) {
	p := v.pool
	ae := &APIError{Engine: p.engine, PoolID: p.id, Retriable: true, PolicyLabel: policy, RetryAfterMs: p.backoffMs(v.prio, false)}
	reason := "dropped"
	if policy == admission.PolicyDropLRU {
		ae.Code, ae.Message = CodeQueueFullDropLRU, "dropped from the full queue (drop-lru) to admit a newer task"
	} else {
		ae.Code, ae.Message = CodeAdmissionReject, "shed from the full queue for higher-priority work (shed-low-priority)"
		reason = "shed"
		s.metrics.preemption("soft", p.engine)
	}
	s.metrics.backpressure(p.engine, policy)
	s.terminate(v, ae, reason)
}

func errDraining(p *pool) *APIError {
	return &APIError{Code: CodePoolUnready, Engine: p.engine, PoolID: p.id, Message: "orchd is shutting down and admits no new tasks", RetryAfterMs: 1000}
}

func wantsStream(ctx *fasthttp.RequestCtx) bool {
	return bytes.Contains(ctx.Request.Header.Peek(fasthttp.HeaderAccept), []byte("text/event-stream"))
}

// handleStream is GET /v1/tasks/{id}/stream.
func (s *Server) handleStream(ctx *fasthttp.RequestCtx) {
	pr, ok := s.require(ctx, RoleData)
	if !ok {
		return
	}
	t := s.taskByPath(ctx, pr)
	if t == nil {
		return
	}
	after := int64(-1)
	if h := ctx.Request.Header.Peek("Last-Event-ID"); len(h) > 0 {
		n, err := strconv.ParseInt(string(bytes.TrimSpace(h)), 10, 64)
		if err != nil || n < 0 {
			writeError(ctx, errInvalid("Last-Event-ID must be the non-negative integer id of an event of this stream"))
			return
		}
		after = n
	}
	s.serveStream(ctx, t, after)
}

// serveStream answers with the task's SSE stream from event after+1.
func (s *Server) serveStream(ctx *fasthttp.RequestCtx, t *task, after int64) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("text/event-stream")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-cache")
	ctx.Response.Header.Set("X-Accel-Buffering", "no")
	ctx.Response.ImmediateHeaderFlush = true
	t.attach()
	body := &streamBody{s: s, t: t, cur: t.log.Subscribe(after), dl: writeDeadline{ctx: ctx}}
	ctx.Response.SetBodyStream(body, -1)
}

// streamBody writes a task's log to one client. fasthttp calls WriteTo on
// the connection's own goroutine and turns each Write into one flushed HTTP
// chunk, so a burst of events published together leaves in one write.
type streamBody struct {
	s       *Server
	t       *task
	cur     *tasklog.Cursor
	pending []byte        // Read's leftover
	dl      writeDeadline // a client that stops reading is dropped
	closed  bool
}

var pingComment = []byte(": ping\n\n")

// streamWriteTimeout bounds one write to a stream client: one that keeps the
// socket open but stops reading is detached instead of pinning the task (a
// variable so a test can shorten it).
var streamWriteTimeout = 30 * time.Second

// writeDeadline keeps a streaming response's write deadline ahead of now.
// It goes through the RequestCtx, so fasthttp writes the end of the response
// (the last chunk, after the body writer returned) under it too and clears it
// afterwards for the connection's next request. Re-arming costs a poller
// update; a deadline a few seconds stale is as good a bound, so it is
// refreshed only every streamWriteTimeout/8.
type writeDeadline struct {
	ctx   *fasthttp.RequestCtx
	armed time.Time
}

func (d *writeDeadline) arm() {
	if d.ctx == nil {
		return
	}
	if now := time.Now(); now.Sub(d.armed) > streamWriteTimeout/8 {
		_ = d.ctx.SetWriteDeadline(now.Add(streamWriteTimeout))
		d.armed = now
	}
}

func (b *streamBody) write(w io.Writer, p []byte) (int, error) {
	b.dl.arm()
	return w.Write(p)
}

// SupportsBodyWriteTo lets fasthttp call WriteTo instead of Read.
func (b *streamBody) SupportsBodyWriteTo() bool { return true }

// WriteTo streams until the log's terminal event or a write error (the
// client left: the reader detaches at once, STYLE.md fasthttp trap 2). While
// it waits, the engine relay may write new events to w itself
// (tasklog.PublishDirect); the cursor's write lock keeps the two apart, and
// the direct writer is withdrawn before WriteTo returns.
func (b *streamBody) WriteTo(w io.Writer) (int64, error) {
	var n int64
	timer := time.NewTimer(b.s.keep)
	defer timer.Stop()
	cur := b.cur
	cur.SetDirect(func(p []byte) error {
		_, err := b.write(w, p)
		return err
	})
	defer cur.SetDirect(nil)
	for {
		cur.Lock()
		if err := cur.Err(); err != nil {
			cur.Unlock()
			return n, err
		}
		data, done := cur.Next()
		if len(data) > 0 {
			m, err := b.write(w, data)
			n += int64(m)
			if err != nil {
				cur.Unlock()
				return n, err
			}
		}
		cur.Unlock()
		if done {
			return n, nil
		}
		select {
		case <-cur.Wake():
		case <-timer.C:
			cur.Lock()
			m, err := b.write(w, pingComment)
			cur.Unlock()
			n += int64(m)
			if err != nil {
				return n, err
			}
			timer.Reset(b.s.keep)
		}
	}
}

// Read is required by io.Reader; fasthttp uses WriteTo. It serves the same
// bytes (without keep-alives) for any other consumer.
func (b *streamBody) Read(p []byte) (int, error) {
	for {
		if len(b.pending) > 0 {
			n := copy(p, b.pending)
			b.pending = b.pending[n:]
			return n, nil
		}
		data, done := b.cur.Next()
		if len(data) > 0 {
			b.pending = data
			continue
		}
		if done {
			return 0, io.EOF
		}
		<-b.cur.Wake()
	}
}

// Close detaches the reader; fasthttp calls it when the response is done or
// the connection failed.
func (b *streamBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	b.cur.Close()
	b.t.detach(b.s)
	return nil
}
