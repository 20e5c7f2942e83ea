// Package tgi is the engine adapter for one Hugging Face Text Generation
// Inference replica. Its wire format follows TGI v3.3.7 (@db931fc,
// router/src/server.rs, lib.rs, validation.rs, infer/mod.rs; ENGINES.md §3):
// it streams POST /generate_stream and turns TGI's SSE frames into
// canonical token callbacks, probes GET /health and /info, and reads the
// queue and batch gauges from GET /metrics.
//
// What it relies on:
//
//   - The stream is always `200 text/event-stream`; every failure, from
//     "Model is overloaded" to a validation or generation error, is one
//     `{"error","error_type"}` frame. The frame whose generated_text is set
//     ends the stream; a stream that ends before it was truncated.
//   - One frame per token, index from 1. A special token (the EOS) is
//     counted but its text is not output; a token with "text":"" (the end
//     of a partial character) outputs nothing and the next carries the whole
//     character. generated_text repeats what was streamed and is never
//     output (a full-sequence decode can even differ from the streamed
//     pieces, e.g. a dropped SentencePiece leading space).
//   - TokensOut is details.generated_tokens (else the last index), TokensIn
//     details.input_length; the request asks for details:true.
package tgi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fastjson"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/internal/httpc"
	"github.com/llama-orch/llama-orch/engines/internal/promtext"
	"github.com/llama-orch/llama-orch/engines/internal/text"
	"github.com/llama-orch/llama-orch/sse"
)

// Options tune an Adapter. The zero value is usable.
type Options struct {
	// DialTimeout bounds connecting to the engine (default 2 s).
	DialTimeout time.Duration
	// HeaderTimeout bounds the wait for the response header of a stream; 0
	// means none. TGI answers 200 at once, before queueing and prefill.
	HeaderTimeout time.Duration
	// MaxIdleConns is the size of the keep-alive pool (default 64; negative
	// disables keep-alive).
	MaxIdleConns int
	// Dial, when set, replaces net.Dialer.DialContext (tests).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Model is not sent: a TGI router serves one model, and its request's
	// only model-like field, adapter_id, names a LoRA adapter. Props reports
	// the engine's own model_id.
	Model string
}

const (
	// drainTimeout bounds the wait for the end of the body after the final
	// or error frame; on expiry the connection is closed instead of pooled.
	drainTimeout  = time.Second
	maxErrorBody  = 64 << 10
	maxInfoBody   = 1 << 20
	maxMetrics    = 4 << 20
	maxKeptBuffer = 1 << 20
)

// Adapter streams requests to one TGI replica. It is safe for concurrent
// use.
type Adapter struct {
	c             *httpc.Client
	headerTimeout time.Duration
	states        sync.Pool // *streamState
}

var (
	_ engines.Adapter       = (*Adapter)(nil)
	_ engines.Prober        = (*Adapter)(nil)
	_ engines.Interruptible = (*Adapter)(nil)
	_ engines.LoadScraper   = (*Adapter)(nil)
	_ engines.Closer        = (*Adapter)(nil)
)

// New returns an Adapter for the replica at baseURL, which must be
// http://host:port with an optional path prefix.
func New(baseURL string, o Options) (*Adapter, error) {
	c, err := httpc.New(baseURL, httpc.Options{DialTimeout: o.DialTimeout, MaxIdleConns: o.MaxIdleConns, Dial: o.Dial})
	if err != nil {
		return nil, fmt.Errorf("tgi: %w", err)
	}
	a := &Adapter{c: c, headerTimeout: o.HeaderTimeout}
	a.states.New = func() any { return &streamState{rd: sse.NewReader(nil, 0)} }
	return a, nil
}

// Engine returns engines.TGI.
func (a *Adapter) Engine() string { return engines.TGI }

// InterruptibleDecode is true: when the stream closes, TGI's next decode
// step finds the response channel closed and drops the request from the
// batch (ENGINES.md §3 "Cancellation").
func (a *Adapter) InterruptibleDecode() bool { return true }

// Close closes the idle pooled connections; the Adapter stays usable.
func (a *Adapter) Close() error { return a.c.Close() }

// streamState is the per-stream scratch, reused through a sync.Pool so that
// steady-state streaming allocates nothing per token.
type streamState struct {
	x     httpc.Exchange
	src   httpc.Source
	rd    *sse.Reader
	ev    sse.Frame
	p     fastjson.Parser
	fr    frame
	carry text.Carry
	req   []byte
	body  []byte
}

func (a *Adapter) getState() *streamState { return a.states.Get().(*streamState) }

func (a *Adapter) putState(st *streamState) {
	st.x.Abandon() // a connection left over by a panic (in a sink)
	st.src = httpc.Source{}
	st.rd.Reset(nil)
	st.ev.Reset()
	st.fr = frame{}
	if cap(st.req) > maxKeptBuffer {
		st.req, st.body = nil, nil
	}
	a.states.Put(st)
}

// Stream sends req to POST /generate_stream and delivers each token's text
// to sink until the frame with generated_text, whose details make the
// Result.
//
// Flush is called before every wait for the engine when tokens were
// delivered since the last one, never after the final frame or on error.
// Errors are *engines.Error (an error frame's kind follows its error_type),
// or ctx.Err() when ctx ended: the connection is then closed at once and
// TGI drops the request at its next step.
func (a *Adapter) Stream(ctx context.Context, req *engines.Request, sink engines.Sink) (engines.Result, error) {
	if err := ctx.Err(); err != nil {
		return engines.Result{Slot: -1}, err
	}
	st := a.getState()
	defer a.putState(st)
	st.body = appendGenerateBody(st.body[:0], req)
	st.req = a.c.AppendRequest(st.req[:0], "POST", "/generate_stream", st.body, true)
	errBody, ok, err := a.c.StartStream(ctx, st.req, a.headerTimeout, &st.x, &st.body, maxErrorBody)
	if err != nil {
		return engines.Result{Slot: -1}, err
	}
	if !ok {
		return engines.Result{Slot: -1}, statusError(st.x.Status, errBody, &st.p)
	}
	res, reusable, err := st.run(ctx, req, sink)
	a.c.Release(&st.x, reusable)
	return res, err
}

// run reads frames until the final one or an error frame.
func (st *streamState) run(ctx context.Context, req *engines.Request, sink engines.Sink) (engines.Result, bool, error) {
	st.src = httpc.Source{Body: &st.x.Body, Sink: sink}
	st.rd.Reset(&st.src)
	st.carry.Reset()
	tokens := 0 // delivered to sink
	index := 0  // the engine's token count so far
	for {
		if err := st.rd.Next(&st.ev); err != nil {
			return engines.Result{Slot: -1}, false, httpc.ReadError(ctx, err, tokens > 0, "stream ended before the final frame")
		}
		if err := ctx.Err(); err != nil {
			// Canceled with frames still buffered: deliver none of them, so
			// that no token follows a cancel (SPEC §3.3).
			return engines.Result{Slot: -1}, false, err
		}
		if st.ev.Comment || st.ev.Data == nil {
			continue // keep-alive (`:` after 15 s of silence)
		}
		if err := st.fr.decode(&st.p, st.ev.Data); err != nil {
			// No excerpt: frames carry generated text.
			return st.fail(ctx, tokens, engines.KindProtocol,
				"engine frame is not a TGI frame ("+strconv.Itoa(len(st.ev.Data))+" bytes)", err)
		}
		if st.fr.hasError {
			e := frameError(&st.fr)
			e.AfterFirstToken = tokens > 0
			// TGI ends the stream after an error frame: keep the connection
			// if it does.
			return engines.Result{Slot: -1}, st.x.Drain(drainTimeout), e
		}
		if st.fr.hasIndex {
			index = st.fr.index
		} else if st.fr.hasToken {
			index++
		}
		if !st.fr.special && st.carry.Emit(sink, st.fr.text) {
			tokens++
			st.src.Dirty = true
		}
		if st.fr.final {
			st.carry.Finish(sink) // a character that never completed: U+FFFD
			st.src.Final = true
			return result(&st.fr, index, req), st.x.Drain(drainTimeout), nil
		}
	}
}

// fail builds the error that ends a stream: ctx.Err() when ctx ended (the
// read error is then the cancel hook closing the connection).
func (st *streamState) fail(ctx context.Context, tokens int, kind engines.ErrorKind, msg string, err error) (engines.Result, bool, error) {
	return engines.Result{Slot: -1}, false, httpc.StreamError(ctx, tokens > 0, kind, msg, err)
}

// result maps the final frame: details.generated_tokens (else the index),
// details.input_length, finish_reason length → "length", eos_token and
// stop_sequence → "stop". Without details (a proxy dropping them) the
// reason is "length" when the request's budget was used up.
func result(f *frame, index int, req *engines.Request) engines.Result {
	r := engines.Result{TokensOut: index, FinishReason: "stop", Slot: -1}
	if f.hasGeneratedTokens {
		r.TokensOut = f.generatedTokens
	}
	if f.hasInputLength {
		r.TokensIn = f.inputLength
	}
	switch {
	case string(f.finishReason) == "length":
		r.FinishReason = "length"
	case f.finishReason == nil && req.MaxTokens > 0 && r.TokensOut >= req.MaxTokens:
		r.FinishReason = "length"
	}
	return r
}

// appendGenerateBody appends the request body: greedy decoding, the seed,
// details for the counts. TGI reads seed as a u64, so a negative seed is
// sent as its two's complement (every engine's fake reads it back as the
// same i64). max_new_tokens ≤ 0 is left out: TGI then fills the context (up
// to 1024 tokens).
func appendGenerateBody(dst []byte, req *engines.Request) []byte {
	dst = append(dst, `{"inputs":`...)
	dst = sse.AppendJSONString(dst, []byte(req.Prompt))
	dst = append(dst, `,"parameters":{`...)
	if req.MaxTokens > 0 {
		dst = append(dst, `"max_new_tokens":`...)
		dst = strconv.AppendInt(dst, int64(req.MaxTokens), 10)
		dst = append(dst, ',')
	}
	dst = append(dst, `"do_sample":false,"seed":`...)
	dst = strconv.AppendUint(dst, uint64(req.Seed), 10)
	return append(dst, `,"details":true}}`...)
}

// errorKind maps TGI's error_type (and, for validation, the message) to a
// kind (ENGINES.md §5 "Error mapping"). ok is false for a type TGI does not
// send on the generate routes.
func errorKind(errType, msg string) (engines.ErrorKind, bool) {
	switch errType {
	case "overloaded":
		return engines.KindOverloaded, true
	case "validation":
		if contextLength(msg) {
			return engines.KindContextLength, true
		}
		return engines.KindInvalidRequest, true
	case "generation", "incomplete_generation", "incomplete_generation_stream":
		return engines.KindUpstream, true
	case "healthcheck":
		return engines.KindUnavailable, true
	}
	return 0, false
}

// contextLength reports a validation message about the prompt not fitting:
// MaxTotalTokens ("`inputs` tokens + `max_new_tokens` must be <= N") and
// InputLength ("`inputs` must have less than N tokens").
func contextLength(msg string) bool {
	return strings.Contains(msg, "must be <=") || strings.Contains(msg, "`inputs` must have less than")
}

// frameError is the error of an {"error","error_type"} frame. Any type the
// router does not send on a stream counts as a mid-stream failure.
func frameError(f *frame) *engines.Error {
	msg := text.Excerpt(f.errMsg)
	if msg == "" {
		msg = "engine reported an error"
	}
	kind, ok := errorKind(string(f.errType), msg)
	if !ok || kind == engines.KindUnavailable {
		kind = engines.KindUpstream
	}
	return &engines.Error{Kind: kind, Message: msg}
}

// statusError maps a non-2xx answer. TGI's /generate_stream itself answers
// only 200; non-2xx come from axum's body rejections (400, 415, 422, 413 in
// text/plain), /health, or a proxy in front. An {"error","error_type"} body
// is classified by its type, anything else by the status.
func statusError(status int, data []byte, p *fastjson.Parser) *engines.Error {
	var f frame
	msg, typ := "", ""
	if f.decode(p, data) == nil && f.hasError {
		msg, typ = text.Excerpt(f.errMsg), string(f.errType)
	}
	msg = httpc.ErrorMessage(status, msg, data)
	if kind, ok := errorKind(typ, msg); ok {
		return &engines.Error{Kind: kind, Status: status, Message: msg}
	}
	e := httpc.StatusError(status, msg, data)
	if status == 422 && contextLength(msg) {
		e.Kind = engines.KindContextLength
	}
	return e
}

// Health checks GET /health: nil on 200; an *engines.Error of
// KindUnavailable when TGI answers 503 {"error":"unhealthy"} (a shard failed
// its check), anything else, or cannot be reached — TGI's port refuses
// connections while the model loads. ctx.Err() when ctx ended.
func (a *Adapter) Health(ctx context.Context) error {
	status, data, err := a.c.Call(ctx, "GET", "/health", nil, maxErrorBody)
	if err != nil {
		if e, ok := engines.AsError(err); ok {
			e.Kind = engines.KindUnavailable
		}
		return err
	}
	if status == 200 {
		return nil
	}
	var p fastjson.Parser
	e := statusError(status, data, &p)
	e.Kind = engines.KindUnavailable
	return e
}

// infoJSON is the part of GET /info the gateway uses.
type infoJSON struct {
	ModelID               string      `json:"model_id"`
	ModelSHA              *string     `json:"model_sha"`
	MaxConcurrentRequests json.Number `json:"max_concurrent_requests"`
	MaxTotalTokens        json.Number `json:"max_total_tokens"`
	Version               string      `json:"version"`
}

// Props reads GET /info: EngineVersion (version), Model (model_id),
// ModelDigest (model_sha, the Hub commit; null for local weights), CtxMax
// (max_total_tokens: prompt plus generated tokens) and Slots
// (max_concurrent_requests).
//
// Slots is TGI's in-flight cap, not a batch size (continuous batching
// sizes the batch by tokens): more requests than that in flight, queued or
// generating, are refused as overloaded, so it is the most the gateway
// should send at once.
func (a *Adapter) Props(ctx context.Context) (engines.Props, error) {
	status, data, err := a.c.Call(ctx, "GET", "/info", nil, maxInfoBody)
	if err != nil {
		return engines.Props{}, err
	}
	if status != 200 {
		var p fastjson.Parser
		return engines.Props{}, statusError(status, data, &p)
	}
	var in infoJSON
	if err := json.Unmarshal(data, &in); err != nil {
		return engines.Props{}, &engines.Error{Kind: engines.KindProtocol, Status: status, Message: "cannot decode /info", Err: err}
	}
	props := engines.Props{
		Slots:         numberToInt(in.MaxConcurrentRequests),
		CtxMax:        numberToInt(in.MaxTotalTokens),
		EngineVersion: in.Version,
		Model:         in.ModelID,
	}
	if in.ModelSHA != nil {
		props.ModelDigest = *in.ModelSHA
	}
	return props, nil
}

func numberToInt(n json.Number) int {
	if n == "" {
		return 0
	}
	if v, err := n.Int64(); err == nil && v >= 0 && v <= math.MaxInt32 {
		return int(v)
	}
	return 0
}

// ScrapeLoad reads GET /metrics: tgi_batch_current_size → Processing and
// tgi_queue_size → Deferred. TGI registers a gauge when it first sets it,
// so a router that has not queued a request yet has neither: they count as
// 0 then. A body with samples but no tgi_* sample is not TGI's (an error).
// TGI exposes no KV cache or device gauges.
func (a *Adapter) ScrapeLoad(ctx context.Context) (engines.Load, error) {
	status, data, err := a.c.Call(ctx, "GET", "/metrics", nil, maxMetrics)
	if err != nil {
		return engines.Load{}, err
	}
	if status != 200 {
		var p fastjson.Parser
		return engines.Load{}, statusError(status, data, &p)
	}
	var load engines.Load
	samples, tgiSamples := 0, 0
	promtext.Each(data, func(name, _ []byte, v float64) {
		samples++
		if bytes.HasPrefix(name, []byte("tgi_")) {
			tgiSamples++
		}
		switch string(name) {
		case "tgi_batch_current_size":
			load.Processing = gaugeInt(v)
		case "tgi_queue_size":
			load.Deferred = gaugeInt(v)
		}
	})
	if samples > 0 && tgiSamples == 0 {
		return engines.Load{}, &engines.Error{Kind: engines.KindProtocol, Status: status, Message: "/metrics has no tgi_* metric"}
	}
	return load, nil
}

func gaugeInt(v float64) int {
	if v != v || v < 0 {
		return 0
	}
	return int(min(v, math.MaxInt32))
}
