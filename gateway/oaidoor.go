package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"github.com/llama-orch/llama-orch/gateway/openai"
	"github.com/llama-orch/llama-orch/sse"
)

// The optional OpenAI-compatible front door (SPEC §3.5, `openai_compat:
// true`): POST /v1/completions and /v1/chat/completions become ordinary
// tasks — the same admission, quotas, scheduling, balancing and failover —
// and the task's canonical events are re-encoded as OpenAI chunks. Errors use
// OpenAI's shape with the statuses and backpressure headers of SPEC §3.6.

// chatDefaultMaxTokens bounds a chat request that names no limit.
const chatDefaultMaxTokens = DefaultMaxTokens

func (s *Server) handleOpenAI(chat bool) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		pr, ok := s.require(ctx, RoleData)
		if !ok {
			s.openAIError(ctx)
			return
		}
		var (
			req *openai.Request
			err error
		)
		if chat {
			req, err = openai.ParseChat(ctx.PostBody())
		} else {
			req, err = openai.ParseCompletion(ctx.PostBody())
		}
		if err != nil {
			oe, _ := err.(*openai.Error)
			writeOpenAIError(ctx, oe)
			return
		}
		p, _ := s.findPool(req.Model, "")
		if p == nil {
			writeOpenAIError(ctx, openai.ModelNotFound(req.Model))
			return
		}
		maxTokens := req.MaxTokens
		if maxTokens == 0 {
			maxTokens = chatDefaultMaxTokens
		}
		prompt := req.Prompt
		tr := TaskRequest{TaskID: uuid.NewString(), SessionID: uuid.NewString(), ModelRef: req.Model, Engine: p.engine,
			Prompt: &prompt, MaxTokens: &maxTokens, Seed: req.Seed}
		body, _ := json.Marshal(&tr)
		pt, aerr := parseTaskRequest(body)
		if aerr != nil {
			s.reject(ctx, p.engine, aerr)
			s.openAIError(ctx)
			return
		}
		t := s.admit(ctx, pr, pt)
		if t == nil {
			s.openAIError(ctx)
			return
		}
		st := &openai.Stream{ID: t.key.id, Created: time.Now().Unix(), Model: req.Model, Chat: chat}
		t.attach()
		cur := t.log.Subscribe(-1)
		done := func() {
			cur.Close()
			t.detach(s)
		}
		if !req.Stream {
			defer done()
			res := collect(cur, nil, nil, 0)
			if res.err != nil {
				setBackoff(ctx, res.err.Status, res.retryAfterMs)
				writeOpenAIError(ctx, res.err)
				return
			}
			ctx.SetContentType("application/json")
			ctx.SetStatusCode(fasthttp.StatusOK)
			ctx.SetBody(openai.AppendCompletion(nil, st, res.text, res.finish, res.tokensIn, res.tokensOut))
			return
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.SetContentType("text/event-stream")
		ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-cache")
		ctx.Response.Header.Set("X-Accel-Buffering", "no")
		includeUsage := req.IncludeUsage
		keep := s.keep
		// The writer runs until the response ends, so ctx outlives it.
		dl := writeDeadline{ctx: ctx}
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			defer done()
			// A client that stops reading but keeps the socket open is
			// dropped after streamWriteTimeout, as on the canonical stream.
			write := func(p []byte) bool {
				dl.arm()
				_, err := w.Write(p)
				return err == nil
			}
			var buf []byte
			buf = st.AppendRole(buf)
			if len(buf) > 0 && (!write(buf) || w.Flush() != nil) {
				return
			}
			res := collect(cur, func(text []byte) bool {
				buf = st.AppendToken(buf[:0], text)
				return write(buf)
			}, func() bool { // keep-alive while queued or between tokens
				return write(pingComment) && w.Flush() == nil
			}, keep, w.Flush)
			if res.gone {
				return
			}
			buf = buf[:0]
			if res.err != nil {
				buf = st.AppendError(buf, res.err)
			} else {
				buf = st.AppendFinish(buf, res.finish)
				if includeUsage {
					buf = st.AppendUsage(buf, res.tokensIn, res.tokensOut)
				}
			}
			buf = st.AppendDone(buf)
			if write(buf) {
				_ = w.Flush()
			}
		})
	}
}

// setBackoff sets the backpressure headers of SPEC §3.6 for an error that
// came after admission (as writeError does for the canonical API), plus
// retry-after-ms, which the official OpenAI clients read first.
func setBackoff(ctx *fasthttp.RequestCtx, status int, ms int64) {
	if ms <= 0 {
		if status != fasthttp.StatusTooManyRequests && status != fasthttp.StatusServiceUnavailable {
			return
		}
		ms = 1000 // as writeError does for a 429/503 without its own hint
	}
	ctx.Response.Header.Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
	ctx.Response.Header.Set("X-Backoff-Ms", strconv.FormatInt(ms, 10))
	ctx.Response.Header.Set("retry-after-ms", strconv.FormatInt(ms, 10))
}

type collected struct {
	text                []byte
	finish              string
	tokensIn, tokensOut int
	err                 *openai.Error
	retryAfterMs        int64
	gone                bool // the client left (a write failed)
}

// collect reads a task's canonical events to the end: each token goes to
// onToken (when nil, the text is gathered instead); flush is called after
// each batch; ping, when set, every keep of silence. A false from onToken or
// ping, or a flush error, means the client left: reading stops (the caller
// detaches, and the task is abandoned like any stream without a reader).
func collect(cur interface {
	Next() ([]byte, bool)
	Wake() <-chan struct{}
}, onToken func([]byte) bool, ping func() bool, keep time.Duration, flush ...func() error) collected {
	var res collected
	var f sse.Frame
	var tick <-chan time.Time
	if ping != nil && keep > 0 {
		t := time.NewTicker(keep)
		defer t.Stop()
		tick = t.C
	}
	var (
		br   bytes.Reader
		rd   = sse.NewReader(nil, 0)
		text []byte // one token's text, reused
	)
	for {
		data, done := cur.Next()
		if len(data) > 0 {
			br.Reset(data)
			rd.Reset(&br)
			for rd.Next(&f) == nil {
				switch string(f.Event) {
				case "token":
					var ok bool
					if text, ok = sse.AppendTokenText(text[:0], f.Data); !ok {
						continue
					}
					if onToken == nil {
						res.text = append(res.text, text...)
					} else if !onToken(text) {
						res.gone = true
						return res
					}
				case "metrics":
					var m struct {
						TokensIn int `json:"tokens_in"`
					}
					if json.Unmarshal(f.Data, &m) == nil && m.TokensIn > 0 {
						res.tokensIn = m.TokensIn
					}
				case "end":
					var e endEvent
					_ = json.Unmarshal(f.Data, &e)
					res.tokensOut, res.finish = e.TokensOut, e.FinishReason
					if res.finish == "" {
						res.finish = "stop"
					}
				case "error":
					var ae APIError
					_ = json.Unmarshal(f.Data, &ae)
					status := statusOf[ae.Code]
					if status == 0 {
						status = fasthttp.StatusInternalServerError
					}
					res.err = openai.ErrorFor(status, ae.Code, ae.Message)
					res.retryAfterMs = ae.RetryAfterMs
				}
			}
			for _, fl := range flush {
				if fl() != nil {
					res.gone = true
					return res
				}
			}
		}
		if done {
			return res
		}
		select {
		case <-cur.Wake():
		case <-tick:
			if !ping() {
				res.gone = true
				return res
			}
		}
	}
}

// openAIError rewrites the §3.6 error envelope already in ctx's response
// into OpenAI's shape, keeping the status and backpressure headers; the
// official clients read retry-after-ms first.
func (s *Server) openAIError(ctx *fasthttp.RequestCtx) {
	var ae APIError
	_ = json.Unmarshal(ctx.Response.Body(), &ae)
	status := ctx.Response.StatusCode()
	if ms := ctx.Response.Header.Peek("X-Backoff-Ms"); len(ms) > 0 {
		ctx.Response.Header.SetBytesV("retry-after-ms", ms)
	}
	writeOpenAIError(ctx, openai.ErrorFor(status, ae.Code, ae.Message))
}

func writeOpenAIError(ctx *fasthttp.RequestCtx, e *openai.Error) {
	if e == nil {
		e = openai.ErrorFor(fasthttp.StatusInternalServerError, CodeInternal, "internal error")
	}
	ctx.SetStatusCode(e.Status)
	ctx.SetContentType("application/json")
	ctx.SetBody(e.AppendJSON(nil))
}
