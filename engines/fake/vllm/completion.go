package vllm

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/fake/internal/slots"
)

// Messages of injected faults.
const (
	msgStart500    = "Internal server error (orch-fake-engine fault start-500)"
	msgStart503    = "Service unavailable: no engine ready behind the proxy (orch-fake-engine fault start-503)"
	msgStart429    = "Too many requests (orch-fake-engine fault start-429)"
	msgMidstream   = "EngineCore encountered an issue. See stack trace (above) for the root cause. (orch-fake-engine fault midstream-error)"
	maxRequestBody = 32 << 20
)

// task is one completion request.
type task struct {
	s    *Server
	w    http.ResponseWriter
	rc   *http.ResponseController
	r    *http.Request
	req  *request
	id   []byte // "cmpl-…" / "chatcmpl-…"
	prem []byte // the chunk prefix up to "choices":

	nPrompt int
	ids     []int32 // prompt ids, for return_token_ids
	nText   int     // text tokens
	eos     bool    // then the EOS token
	seq     seq
	gen     fake.Generator
	pause   slots.Pause

	buf []byte
}

// completions serves POST /v1/completions and /v1/chat/completions.
func (s *Server) completions(w http.ResponseWriter, r *http.Request, chat bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))
	if err != nil {
		return // the client went away
	}
	switch s.o.Fail {
	case fake.FailStart500:
		writeError(w, http.StatusInternalServerError, msgStart500, "InternalServerError")
		return
	case fake.FailStart503:
		writeError(w, http.StatusServiceUnavailable, msgStart503, "ServiceUnavailableError")
		return
	case fake.FailStart429:
		writeError(w, http.StatusTooManyRequests, msgStart429, "RateLimitError")
		return
	}
	req, aerr := parseRequest(body, chat)
	if aerr == nil && req.model != "" && req.model != s.o.Model {
		aerr = &apiError{status: 404, typ: "NotFoundError", msg: "The model `" + req.model + "` does not exist."}
	}
	t := &task{s: s, w: w, r: r, req: req}
	if aerr == nil {
		aerr = t.plan()
	}
	if aerr != nil {
		writeError(w, aerr.status, aerr.msg, aerr.typ)
		return
	}
	t.rc = http.NewResponseController(w)
	t.prefix()
	if s.log.Core().Enabled(zap.DebugLevel) {
		s.log.Debug("fake vllm request", zap.ByteString("id", t.id), zap.Int("n_prompt", t.nPrompt),
			zap.Int("n_text", t.nText), zap.Bool("eos", t.eos), zap.Bool("stream", req.stream), zap.String("fail", s.o.Fail))
	}
	if req.stream {
		t.stream()
	} else {
		t.whole()
	}
}

// plan checks the lengths as vLLM's serving layer does and decides how
// many tokens the request generates.
func (t *task) plan() *apiError {
	s, req := t.s, t.req
	t.ids = fake.Tokenize(make([]int32, 0, 16), req.prompt, true)
	t.nPrompt = len(t.ids)
	ctx := s.o.Ctx
	if t.nPrompt >= ctx {
		return badRequest("This model's maximum context length is %d tokens. However, your request has %d input tokens. Please reduce the length of the input messages.", ctx, t.nPrompt)
	}
	n := req.maxTokens
	if n < 0 {
		n = ctx - t.nPrompt
	} else if t.nPrompt+n > ctx {
		return badRequest("'max_tokens' or 'max_completion_tokens' is too large: %d. This model's maximum context length is %d tokens and your request has %d input tokens (%d > %d - %d).",
			n, ctx, t.nPrompt, n, ctx, t.nPrompt)
	}
	t.nText, t.eos = s.o.TextTokens(n, req.ignoreEOS)
	t.gen = fake.NewGenerator(req.seed, req.prompt, s.o.Fail == fake.FailSplitUTF8)
	return nil
}

func (t *task) total() int {
	if t.eos {
		return t.nText + 1
	}
	return t.nText
}

func (t *task) finishReason() (string, int) {
	if t.eos {
		return "stop", finishedStop
	}
	return "length", finishedLength
}

// prefix builds the id and the constant head of every chunk.
func (t *task) prefix() {
	s := t.s
	n := s.ids.Add(1)
	obj, prefix := "text_completion", "cmpl-"
	switch {
	case t.req.chat && t.req.stream:
		obj, prefix = "chat.completion.chunk", "chatcmpl-"
	case t.req.chat:
		obj, prefix = "chat.completion", "chatcmpl-"
	}
	t.id = append(t.id, prefix...)
	t.id = appendHexID(t.id, uint64(s.startAt.UnixNano())^n, 16)
	b := append([]byte(`{"id":"`), t.id...)
	b = append(b, `","object":"`...)
	b = append(b, obj...)
	b = append(b, `","created":`...)
	b = strconv.AppendInt(b, time.Now().Unix(), 10)
	b = append(b, `,"model":`...)
	b = appendPyString(b, s.o.Model)
	t.prem = append(b, `,"choices":`...)
}

// wait sleeps d unless the client goes or the server closes.
func (t *task) wait(d time.Duration) bool {
	return t.pause.Sleep(d, t.r.Context().Done(), t.s.run.Done())
}

// start takes a slot (waiting FIFO) and waits the time to first token.
func (t *task) start() bool {
	s := t.s
	t.seq.tokens.Store(int64(t.nPrompt))
	if !s.q.acquire(t.r.Context(), s.run.Done(), &t.seq) {
		return false
	}
	s.q.countPrompt(t.nPrompt)
	if !t.wait(s.o.TTFT) {
		s.q.release(&t.seq, finishedAbort, 0)
		return false
	}
	return true
}

// next waits the inter-token latency and produces the token at pos (see
// step); false when the client left or the server closed first, the
// request then aborted.
func (t *task) next(pos int) (string, int, bool) {
	if pos > 0 && !t.wait(t.s.o.ITL) {
		t.s.q.release(&t.seq, finishedAbort, pos)
		t.abandon()
		return "", 0, false
	}
	piece, id := t.step(pos)
	return piece, id, true
}

// step produces the token at pos: its bytes (EOS: none) and id.
func (t *task) step(pos int) (string, int) {
	t.seq.tokens.Store(int64(t.nPrompt + pos + 1))
	if pos < t.nText {
		return t.gen.Token(pos)
	}
	return "", fake.EOS
}

// send writes one SSE event and flushes it as its own chunk; false when
// the client is gone.
func (t *task) send(data []byte) bool {
	t.buf = append(append(append(t.buf[:0], "data: "...), data...), "\n\n"...)
	if _, err := t.w.Write(t.buf); err != nil {
		return false
	}
	return t.rc.Flush() == nil
}

// cut ends the response without its last chunk: net/http closes the
// connection when a handler panics with ErrAbortHandler.
func (t *task) cut() {
	_ = t.rc.Flush()
	panic(http.ErrAbortHandler)
}

// stream serves stream:true: headers at once, a chunk per token, the
// finish reason on the last one, the usage chunk, [DONE].
func (t *task) stream() {
	s := t.s
	h := t.w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	t.w.WriteHeader(http.StatusOK)
	if t.rc.Flush() != nil {
		return
	}
	if !t.start() {
		t.abandon()
		return
	}
	total, faultAt := t.total(), fake.FaultAt(s.o.Fail)
	// The incremental detokenizer releases text only at a character
	// boundary; until then a token's chunk has text "".
	var detok fake.Detokenizer
	var js []byte
	if t.req.chat {
		// The role chunk comes with the first output.
		js = t.appendRoleChunk(js)
		if !t.send(js) {
			s.q.release(&t.seq, finishedAbort, 0)
			return
		}
	}
	for pos := 0; pos < total; pos++ {
		piece, id, ok := t.next(pos)
		if !ok {
			return
		}
		text, _ := detok.Add(piece)
		last := pos == total-1
		fault := faultAt >= 0 && (pos+1 == faultAt || last)
		finish := ""
		if last && !fault {
			var fr int
			finish, fr = t.finishReason()
			// The engine frees the request before its last output reaches
			// the client.
			s.q.release(&t.seq, fr, total)
		}
		js = t.appendChunk(js[:0], text, finish, id, pos)
		if !t.send(js) {
			if !last || fault {
				s.q.release(&t.seq, finishedAbort, pos+1)
			}
			return
		}
		if fault {
			t.fault(pos + 1)
			return
		}
	}
	if t.req.includeUsage {
		js = append(append(js[:0], t.prem...), `[],"usage":`...)
		js = t.appendUsage(js, total)
		js = append(js, '}')
		if !t.send(js) {
			return
		}
	}
	t.send([]byte("[DONE]"))
}

// abandon ends a stream whose request left the engine early: when the
// server is closing, the connection is cut; otherwise the client is gone.
func (t *task) abandon() {
	select {
	case <-t.s.run.Done():
		panic(http.ErrAbortHandler)
	default:
	}
}

// fault ends a stream the way Options.Fail says, after n tokens.
func (t *task) fault(n int) {
	s := t.s
	switch s.o.Fail {
	case fake.FailMidstreamDisconnect:
		s.q.release(&t.seq, finishedAbort, n)
		t.cut()
	case fake.FailStall:
		slots.Hold(t.r.Context().Done(), s.run.Done())
		s.q.release(&t.seq, finishedAbort, n)
		t.abandon()
	case fake.FailMalformed:
		s.q.release(&t.seq, finishedAbort, n)
		b := append(append([]byte(nil), t.prem...), `[{"index":0,"text":`...)
		if t.send(b) {
			t.send([]byte("[DONE]"))
		}
	case fake.FailMidstreamError:
		s.q.release(&t.seq, finishedAbort, n)
		if t.send(streamErrorBody(500, msgMidstream, "InternalServerError")) {
			t.send([]byte("[DONE]"))
		}
	default:
		panic("BUG: fault without a mid-stream fault mode")
	}
}

// appendChunk appends one stream chunk's JSON. text nil is "" (a token
// inside a character, or EOS).
func (t *task) appendChunk(b, text []byte, finish string, id, pos int) []byte {
	b = append(b, t.prem...)
	if t.req.chat {
		return t.appendChatChunk(b, text, finish, id, pos)
	}
	b = append(b, `[{"index":0,"text":`...)
	b = appendPyString(b, text)
	b = append(b, `,"logprobs":null,"finish_reason":`...)
	b = appendNullString(b, finish)
	b = append(b, `,"stop_reason":null,"prompt_token_ids":`...)
	if t.req.returnTokenIDs && pos == 0 {
		b = appendIDs(b, t.ids)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"token_ids":`...)
	if t.req.returnTokenIDs {
		b = append(append(append(b, '['), strconv.Itoa(id)...), ']')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `}],"usage":`...)
	if t.req.continuousUsage {
		b = t.appendUsage(b, pos+1)
	} else {
		b = append(b, "null"...)
	}
	return append(b, '}')
}

// appendChatChunk appends a chat chunk's choices (ENGINES.md's chat
// capture).
func (t *task) appendChatChunk(b, text []byte, finish string, id, pos int) []byte {
	b = append(b, `[{"index":0,"delta":{"content":`...)
	b = appendPyString(b, text)
	b = append(b, `},"logprobs":null,"finish_reason":`...)
	b = appendNullString(b, finish)
	if finish != "" {
		b = append(b, `,"stop_reason":null`...)
	}
	b = append(b, `,"token_ids":`...)
	if t.req.returnTokenIDs {
		b = append(append(append(b, '['), strconv.Itoa(id)...), ']')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, "}]"...)
	if t.req.continuousUsage {
		b = append(b, `,"usage":`...)
		b = t.appendUsage(b, pos+1)
	}
	return append(b, '}')
}

// appendRoleChunk appends the chat stream's first chunk.
func (t *task) appendRoleChunk(b []byte) []byte {
	b = append(b, t.prem...)
	b = append(b, `[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":`...)
	if t.req.returnTokenIDs {
		b = appendIDs(b, t.ids)
	} else {
		b = append(b, "null"...)
	}
	return append(b, '}')
}

func (t *task) appendUsage(b []byte, completion int) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(t.nPrompt), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(t.nPrompt+completion), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(completion), 10)
	return append(b, '}')
}

func appendNullString(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return appendPyString(b, s)
}

func appendIDs(b []byte, ids []int32) []byte {
	b = append(b, '[')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(id), 10)
	}
	return append(b, ']')
}

// whole serves stream:false: one JSON body once the request finishes.
func (t *task) whole() {
	s := t.s
	if !t.start() {
		t.abandon()
		return
	}
	total, faultAt := t.total(), fake.FaultAt(s.o.Fail)
	var text []byte
	var detok fake.Detokenizer
	for pos := 0; pos < total; pos++ {
		piece, _, ok := t.next(pos)
		if !ok {
			return
		}
		if done, ok := detok.Add(piece); ok {
			text = append(text, done...)
		}
		if faultAt >= 0 && (pos+1 == faultAt || pos == total-1) {
			s.q.release(&t.seq, finishedAbort, pos+1)
			switch s.o.Fail {
			case fake.FailMidstreamDisconnect:
				panic(http.ErrAbortHandler)
			case fake.FailStall:
				slots.Hold(t.r.Context().Done(), s.run.Done())
				t.abandon()
			case fake.FailMalformed:
				writeJSON(t.w, http.StatusOK, append(append([]byte(nil), t.prem...), `[{"index":0,"text":`...))
			case fake.FailMidstreamError:
				writeError(t.w, http.StatusInternalServerError, msgMidstream, "InternalServerError")
			}
			return
		}
	}
	finish, fr := t.finishReason()
	s.q.release(&t.seq, fr, total)
	b := append([]byte(nil), t.prem...)
	if t.req.chat {
		b = append(b, `[{"index":0,"message":{"role":"assistant","content":`...)
		b = appendPyString(b, text)
		b = append(b, `,"refusal":null,"annotations":null,"audio":null,"function_call":null,"tool_calls":[],"reasoning_content":null},"logprobs":null,"finish_reason":`...)
		b = appendPyString(b, finish)
		b = append(b, `,"stop_reason":null,"token_ids":null}],"service_tier":null,"system_fingerprint":null,"usage":`...)
	} else {
		b = append(b, `[{"index":0,"text":`...)
		b = appendPyString(b, text)
		b = append(b, `,"logprobs":null,"finish_reason":`...)
		b = appendPyString(b, finish)
		b = append(b, `,"stop_reason":null,"token_ids":null,"prompt_logprobs":null,"prompt_token_ids":null}],"service_tier":null,"system_fingerprint":null,"usage":`...)
	}
	b = t.appendUsage(b, total)
	b = append(b[:len(b)-1], `,"prompt_tokens_details":null}`...)
	if t.req.chat {
		b = append(b, `,"prompt_logprobs":null,"prompt_token_ids":null`...)
	}
	b = append(b, `,"kv_transfer_params":null}`...)
	writeJSON(t.w, http.StatusOK, b)
}
