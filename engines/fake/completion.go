package fake

import (
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/engines/fake/internal/slots"
)

// A completion task: slot, pacing, frames, faults.

// completion serves POST /completion: faults at start, parsing, then a task.
func (s *Server) completion(cc *conn, r *request) bool {
	switch s.o.Fail {
	case FailStart500:
		return cc.writeJSON(r, http.StatusInternalServerError, errorBody(500, msgStart500, "server_error"))
	case FailStart503:
		return cc.writeJSON(r, http.StatusServiceUnavailable, bodyLoading)
	case FailStart429:
		return cc.writeJSON(r, http.StatusTooManyRequests, errorBody(429, msgStart429, "unavailable_error"))
	}
	req, aerr := parseCompletion(r.body)
	if aerr != nil {
		return cc.writeJSON(r, aerr.status, errorBody(aerr.status, aerr.msg, aerr.typ))
	}
	if req.idSlot >= len(s.sched.slots) || req.idSlot < -1 {
		return cc.writeJSON(r, http.StatusBadRequest, errorBody(400,
			"id_slot "+strconv.Itoa(req.idSlot)+" is out of range (orch-fake-engine has "+strconv.Itoa(len(s.sched.slots))+" slots)",
			"invalid_request_error"))
	}
	t := &task{s: s, cc: cc, r: r, req: req}
	t.ids = Tokenize(make([]int32, 0, 16), req.prompt, true)
	t.nPrompt = len(t.ids)
	// Like llama.cpp, a streaming request notices its client leaving; a
	// non-streaming one does not (it generates to the end), except when
	// stalled, so a gateway's cancel frees a stalled slot either way.
	var w *watch
	if req.p.stream || s.o.Fail == FailStall {
		w = cc.startWatch()
		t.gone = w.gone
	}
	keep := t.run()
	if w != nil && !w.stop() {
		keep = false
	}
	return keep
}

// task is one completion holding (or waiting for) a slot.
type task struct {
	s    *Server
	cc   *conn
	r    *request
	req  *completionRequest
	gone <-chan struct{}

	ids     []int32 // prompt token ids, BOS first
	nPrompt int
	slot    int
	idTask  int64
	cacheN  int

	// Plan.
	nText     int // text tokens to generate
	eos       bool
	truncated bool
	stopType  string

	// Progress.
	gen    Generator
	outIDs []int32 // generated token ids
	tSlot  time.Time
	tFirst time.Time
	tLast  time.Time
	pause  slots.Pause

	// Stream output: wbuf holds bytes to write (the head until the first
	// frame, headLen long), ev and js are scratch.
	wbuf    []byte
	headLen int
	ev      []byte
	js      []byte
}

// wait sleeps d unless the client goes or the server closes.
func (t *task) wait(d time.Duration) bool { return t.pause.Sleep(d, t.gone, t.s.g.Done()) }

func (t *task) run() bool {
	s := t.s
	slotID, err := s.acquire(t.req.idSlot, t.ids, t.gone)
	if err != nil {
		return false
	}
	t.slot = slotID
	t.tSlot = time.Now()
	t.idTask = s.tasks.Add(1) - 1
	nCtx := s.o.Ctx
	if t.nPrompt >= nCtx {
		// The slot's own check, as in llama.cpp: the first result is an
		// error, so even a stream gets a plain JSON answer.
		s.mu.Lock()
		s.sched.free(slotID)
		s.mu.Unlock()
		return t.cc.writeJSON(t.r, http.StatusBadRequest, contextError(t.nPrompt, nCtx))
	}
	t.plan(nCtx)
	s.mu.Lock()
	sl := &s.sched.slots[slotID]
	if t.req.cachePrompt {
		t.cacheN = min(lcp(sl.cache, t.ids), t.nPrompt-1)
	}
	sl.used = true
	sl.idTask = t.idTask
	sl.nPrompt = t.nPrompt
	sl.nPromptProcessed = t.nPrompt - t.cacheN
	sl.nPromptCache = t.cacheN
	sl.params = t.req.p
	s.mu.Unlock()
	t.gen = NewGenerator(t.req.textSeed, t.req.prompt, s.o.Fail == FailSplitUTF8)
	if s.log.Core().Enabled(zap.DebugLevel) {
		s.log.Debug("fake engine task", zap.Int64("id_task", t.idTask), zap.Int("slot", slotID),
			zap.Int("n_prompt", t.nPrompt), zap.Int("n_text", t.nText), zap.Bool("eos", t.eos),
			zap.Bool("stream", t.req.p.stream), zap.String("fail", s.o.Fail))
	}
	if t.req.p.stream {
		return t.stream()
	}
	return t.whole()
}

// plan decides how many tokens the task generates and why it stops.
func (t *task) plan(nCtx int) {
	limit := nCtx - t.nPrompt
	n, truncated := limit, true
	if p := t.req.p.nPredict; p >= 0 && p <= limit {
		n, truncated = p, false
	}
	t.nText, t.eos = t.s.o.TextTokens(n, t.req.p.ignoreEOS)
	t.truncated, t.stopType = truncated, "limit"
	if t.eos {
		t.truncated, t.stopType = false, "eos"
	}
	t.outIDs = make([]int32, 0, min(t.nText+1, 4096))
}

func contextError(nPrompt, nCtx int) []byte {
	b := append([]byte(`{"error":{"code":400,"message":`), `"request (`...)
	b = appendInt(b, nPrompt)
	b = append(b, ` tokens) exceeds the available context size (`...)
	b = appendInt(b, nCtx)
	b = append(b, ` tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":`...)
	b = appendInt(b, nPrompt)
	b = append(b, `,"n_ctx":`...)
	b = appendInt(b, nCtx)
	return append(b, "}}"...)
}

// token produces the token at pos (text or the EOS) and records it.
func (t *task) token(pos int) (string, int) {
	text, id := "", EOS
	if pos < t.nText {
		text, id = t.gen.Token(pos)
	}
	t.outIDs = append(t.outIDs, int32(id))
	t.s.sched.slots[t.slot].nDecoded.Store(int64(pos + 1))
	t.tLast = time.Now()
	return text, id
}

func (t *task) total() int {
	if t.eos {
		return t.nText + 1
	}
	return t.nText
}

// release frees the slot, keeps the KV cache and counts the metrics. It
// runs before the final frame is written, as in llama.cpp, so a client
// that sees the end finds the slot free.
func (t *task) release() {
	s := t.s
	n := len(t.outIDs)
	promptMs, predMs := t.timings()
	s.mu.Lock()
	sl := &s.sched.slots[t.slot]
	cache := append(sl.cache[:0], t.ids...)
	if n > 1 {
		cache = append(cache, t.outIDs[:n-1]...)
	}
	if len(cache) > s.o.Ctx {
		cache = cache[:s.o.Ctx]
	}
	sl.cache = cache
	st := &s.sched.stats
	st.promptTokens += int64(t.nPrompt - t.cacheN)
	st.promptCached += int64(t.cacheN)
	st.promptSeconds += promptMs / 1e3
	st.predicted += int64(n)
	st.predictedSeconds += predMs / 1e3
	st.nDecode += int64(n)
	st.busySlotsPerDecode += int64(n) * int64(s.sched.busy)
	st.nTokensMax = max(st.nTokensMax, int64(t.nPrompt+n))
	st.windowPrompt += int64(t.nPrompt - t.cacheN)
	st.windowPromptSeconds += promptMs / 1e3
	st.windowPred += int64(n)
	st.windowPredSeconds += predMs / 1e3
	s.sched.free(t.slot)
	s.mu.Unlock()
}

// timings returns prompt_ms (slot start to first token) and predicted_ms
// (first to last token), in ms with µs resolution like llama.cpp.
func (t *task) timings() (promptMs, predMs float64) {
	if t.tFirst.IsZero() {
		t.tFirst = time.Now()
	}
	if t.tLast.Before(t.tFirst) {
		t.tLast = t.tFirst
	}
	promptMs = max(float64(t.tFirst.Sub(t.tSlot).Microseconds()), 1) / 1e3
	predMs = max(float64(t.tLast.Sub(t.tFirst).Microseconds()), 1) / 1e3
	return promptMs, predMs
}

// appendPartial appends a token frame's JSON.
func (t *task) appendPartial(b []byte, content []byte, id int) []byte {
	b = append(b, `{"index":0,"content":`...)
	b = appendString(b, content)
	b = append(b, `,"tokens":[`...)
	b = appendInt(b, id)
	b = append(b, `],"stop":false,"id_slot":-1,"tokens_predicted":`...)
	b = appendInt(b, len(t.outIDs))
	b = append(b, `,"tokens_evaluated":`...)
	b = appendInt(b, t.nPrompt)
	return append(b, '}')
}

// appendFinal appends the final result's JSON (the stream's last frame, or
// the whole non-streaming body with content set).
func (t *task) appendFinal(b []byte, content []byte) []byte {
	n := len(t.outIDs)
	b = append(b, `{"index":0,"content":`...)
	b = appendString(b, content)
	b = append(b, `,"tokens":[],"id_slot":`...)
	b = appendInt(b, t.slot)
	b = append(b, `,"stop":true,"model":`...)
	b = appendString(b, t.s.o.Model)
	b = append(b, `,"tokens_predicted":`...)
	b = appendInt(b, n)
	b = append(b, `,"tokens_evaluated":`...)
	b = appendInt(b, t.nPrompt)
	b = append(b, `,"generation_settings":`...)
	b = appendParams(b, &t.req.p, true)
	b = append(b, `,"prompt":`...)
	b = appendString(b, "<s> "+t.req.prompt)
	b = append(b, `,"has_new_line":false,"truncated":`...)
	b = appendBool(b, t.truncated)
	b = append(b, `,"stop_type":`...)
	b = appendString(b, t.stopType)
	b = append(b, `,"stopping_word":"","tokens_cached":`...)
	b = appendInt(b, t.nPrompt+n-1)
	promptMs, predMs := t.timings()
	promptN := t.nPrompt - t.cacheN
	b = append(b, `,"timings":{"cache_n":`...)
	b = appendInt(b, t.cacheN)
	b = append(b, `,"prompt_n":`...)
	b = appendInt(b, promptN)
	b = append(b, `,"prompt_ms":`...)
	b = appendFloat(b, promptMs)
	b = append(b, `,"prompt_per_token_ms":`...)
	b = appendFloat(b, promptMs/float64(promptN))
	b = append(b, `,"prompt_per_second":`...)
	b = appendFloat(b, 1e3/promptMs*float64(promptN))
	// llama.cpp's rates divide by the tokens after the first, which comes
	// out of prompt processing (predicted_ms spans first to last token).
	perN := float64(max(n-1, 1))
	b = append(b, `,"predicted_n":`...)
	b = appendInt(b, n)
	b = append(b, `,"predicted_ms":`...)
	b = appendFloat(b, predMs)
	b = append(b, `,"predicted_per_token_ms":`...)
	b = appendFloat(b, predMs/perN)
	b = append(b, `,"predicted_per_second":`...)
	b = appendFloat(b, 1e3/predMs*perN)
	return append(b, "}}"...)
}

// stream serves a streaming completion: the head goes out with the first
// frame (llama.cpp sends the status with the first result), each frame is
// its own chunk and one write, the final frame and the last chunk go with the
// last token.
func (t *task) stream() bool {
	bp := bufPool.Get().(*[]byte)
	t.ev = (*bp)[:0]
	t.wbuf = appendHead(t.cc.out[:0], t.r, http.StatusOK, "X-Accel-Buffering: no\r\n", ctypeSSE, -1)
	t.headLen = len(t.wbuf)
	defer func() {
		*bp = t.ev[:0]
		bufPool.Put(bp)
		t.cc.out = t.wbuf[:0]
	}()
	var detok Detokenizer // withholds bytes until they end a character
	frames := 0
	faultAt := FaultAt(t.s.o.Fail)
	abort := func() bool { t.release(); return false }

	if !t.wait(t.s.o.TTFT) {
		return abort()
	}
	t.tFirst = time.Now()
	total := t.total()
	for pos := 0; pos < max(total, 1); pos++ {
		if total > 0 {
			if pos > 0 && !t.wait(t.s.o.ITL) {
				return abort()
			}
			piece, id := t.token(pos)
			if text, ok := detok.Add(piece); ok {
				t.js = t.appendPartial(t.js[:0], text, id)
				t.frame(t.js)
				frames++
			}
		}
		last := pos >= total-1
		if faultAt >= 0 && (frames == faultAt || last) {
			return t.fault()
		}
		if last {
			t.release()
			t.js = t.appendFinal(t.js[:0], nil)
			t.frame(t.js)
			t.wbuf = append(t.wbuf, lastChunk...)
			return t.flush(true) && t.r.keepAlive
		}
		if !t.flush(false) {
			return abort()
		}
	}
	panic("BUG: stream loop ended without its final frame")
}

// frame buffers one SSE event as one chunk.
func (t *task) frame(json []byte) {
	t.ev = append(t.ev[:0], "data: "...)
	t.ev = append(t.ev, json...)
	t.ev = append(t.ev, "\n\n"...)
	t.wbuf = appendChunk(t.wbuf, t.ev)
}

// flush writes what is buffered; the head alone is written only if force.
func (t *task) flush(force bool) bool {
	if len(t.wbuf) == 0 || (len(t.wbuf) == t.headLen && !force) {
		return true
	}
	_, err := t.cc.c.Write(t.wbuf)
	t.wbuf, t.headLen = t.wbuf[:0], 0
	return err == nil
}

// fault ends a stream the way Options.Fail says.
func (t *task) fault() bool {
	s := t.s
	switch s.o.Fail {
	case FailMidstreamDisconnect:
		// No final frame and no last chunk: the body is cut.
		t.flush(true)
		t.release()
		_ = t.cc.c.Close()
		return false
	case FailStall:
		if t.flush(true) {
			slots.Hold(t.gone, s.g.Done())
		}
		t.release()
		return false
	case FailMalformed:
		t.release()
		t.wbuf = appendChunk(t.wbuf, []byte(malformedFrame))
		t.wbuf = append(t.wbuf, lastChunk...)
		return t.flush(true) && t.r.keepAlive
	case FailMidstreamError:
		t.release()
		t.frame(errorBody(500, msgContentOnly, "server_error"))
		t.wbuf = append(t.wbuf, lastChunk...)
		return t.flush(true) && t.r.keepAlive
	}
	panic("BUG: fault called without a mid-stream fault mode")
}

// whole serves a non-streaming completion: one JSON body at the end.
func (t *task) whole() bool {
	abort := func() bool { t.release(); return false }
	if !t.wait(t.s.o.TTFT) {
		return abort()
	}
	t.tFirst = time.Now()
	total := t.total()
	faultAt := FaultAt(t.s.o.Fail)
	var content []byte
	for pos := 0; pos < total; pos++ {
		if pos > 0 && !t.wait(t.s.o.ITL) {
			return abort()
		}
		text, _ := t.token(pos)
		content = append(content, text...)
		if faultAt >= 0 && (pos+1 == faultAt || pos == total-1) {
			break
		}
	}
	switch t.s.o.Fail {
	case FailMidstreamDisconnect:
		t.release()
		t.cc.c.Close()
		return false
	case FailStall:
		slots.Hold(t.gone, t.s.g.Done())
		t.release()
		return false
	case FailMalformed:
		t.release()
		return t.cc.writeJSON(t.r, http.StatusOK, []byte(`{"index":0,"content":`))
	case FailMidstreamError:
		t.release()
		return t.cc.writeJSON(t.r, http.StatusInternalServerError, errorBody(500, msgContentOnly, "server_error"))
	}
	t.release()
	body := t.appendFinal(nil, content)
	return t.cc.writeJSON(t.r, http.StatusOK, body)
}
