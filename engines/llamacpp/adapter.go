// Package llamacpp is the engine adapter for one llama.cpp `llama-server`
// replica (ENGINES.md §1): it streams POST /completion and turns its SSE
// frames into canonical token callbacks, probes /health and /props, and
// erases slots.
//
// It speaks HTTP/1.1 through the engines' own small streaming client (httpc)
// rather than fasthttp's, because a relay must abort a request at any moment
// (the engine frees the slot when the connection closes) and must know when
// nothing more is buffered, to coalesce its writes (PERFORMANCE.md).
package llamacpp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"strconv"
	"sync"
	"time"

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
	// means none. llama.cpp sends its header only with the first token, after
	// prefill, so the gateway's first-token watchdog (which cancels ctx) is
	// usually the better bound.
	HeaderTimeout time.Duration
	// MaxIdleConns is the size of the keep-alive pool (default 64; negative
	// disables keep-alive).
	MaxIdleConns int
	// Dial, when set, replaces net.Dialer.DialContext (tests).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

const (
	// drainTimeout bounds the wait for the end of the body after the final
	// frame (the terminating chunk); on expiry the connection is closed
	// instead of pooled, and the stream still succeeds.
	drainTimeout  = time.Second
	maxErrorBody  = 64 << 10
	maxPropsBody  = 4 << 20
	maxKeptBuffer = 1 << 20
)

// Adapter streams requests to one llama.cpp replica. It is safe for
// concurrent use.
type Adapter struct {
	hc            *httpc.Client
	headerTimeout time.Duration
	states        sync.Pool // *streamState
}

var (
	_ engines.Adapter       = (*Adapter)(nil)
	_ engines.Prober        = (*Adapter)(nil)
	_ engines.Interruptible = (*Adapter)(nil)
	_ engines.Tokenizer     = (*Adapter)(nil)
	_ engines.LoadScraper   = (*Adapter)(nil)
	_ engines.SlotEraser    = (*Adapter)(nil)
	_ engines.Closer        = (*Adapter)(nil)
)

// New returns an Adapter for the replica at baseURL, which must be
// http://host:port with an optional path prefix.
func New(baseURL string, o Options) (*Adapter, error) {
	hc, err := httpc.New(baseURL, httpc.Options{DialTimeout: o.DialTimeout, MaxIdleConns: o.MaxIdleConns, Dial: o.Dial})
	if err != nil {
		return nil, fmt.Errorf("llamacpp: %w", err)
	}
	a := &Adapter{hc: hc, headerTimeout: o.HeaderTimeout}
	a.states.New = func() any { return &streamState{rd: sse.NewReader(nil, 0)} }
	return a, nil
}

// Engine returns engines.LlamaCpp.
func (a *Adapter) Engine() string { return engines.LlamaCpp }

// InterruptibleDecode is true: closing the stream makes llama-server cancel
// the task and free the slot within a decode step (ENGINES.md §1).
func (a *Adapter) InterruptibleDecode() bool { return true }

// Close closes the idle pooled connections; connections in use are closed
// when their stream ends. The Adapter stays usable (without keep-alive).
func (a *Adapter) Close() error {
	return a.hc.Close()
}

// streamState is the per-stream scratch, reused through a sync.Pool so that
// steady-state streaming allocates nothing per token.
type streamState struct {
	rd    *sse.Reader
	ev    sse.Frame
	fr    frame
	x     httpc.Exchange // putState closes a connection left over by a panic (in a sink)
	src   httpc.Source
	carry text.Carry
	req   []byte
	jbody []byte
}

func (a *Adapter) getState() *streamState { return a.states.Get().(*streamState) }

func (a *Adapter) putState(st *streamState) {
	st.x.Abandon()
	st.src = httpc.Source{}
	st.rd.Reset(nil)
	st.ev.Reset()
	if cap(st.req) > maxKeptBuffer {
		st.req, st.jbody = nil, nil
	}
	a.states.Put(st)
}

// Stream sends req to POST /completion and delivers each frame's text to
// sink until the final `stop:true` frame, whose counters make the Result.
//
// Flush is called before every wait for the engine when tokens were
// delivered since the last one; it is not called after the final frame or
// on error: the caller publishes its terminal event together with whatever
// the sink still holds. Errors are *engines.Error, or ctx.Err() when ctx
// ended (the engine connection is then closed at once, freeing the slot).
func (a *Adapter) Stream(ctx context.Context, req *engines.Request, sink engines.Sink) (engines.Result, error) {
	if err := ctx.Err(); err != nil {
		return engines.Result{Slot: -1}, err
	}
	st := a.getState()
	defer a.putState(st)
	st.jbody = appendCompletionBody(st.jbody[:0], req)
	st.req = a.hc.AppendRequest(st.req[:0], "POST", "/completion", st.jbody, true)
	errBody, ok, err := a.hc.StartStream(ctx, st.req, a.headerTimeout, &st.x, &st.jbody, maxErrorBody)
	if err != nil {
		return engines.Result{Slot: -1}, err
	}
	if !ok {
		return engines.Result{Slot: -1}, statusError(st.x.Status, errBody, &st.fr)
	}
	res, reusable, err := st.run(ctx, sink)
	a.hc.Release(&st.x, reusable)
	return res, err
}

// run reads frames until the final one.
func (st *streamState) run(ctx context.Context, sink engines.Sink) (engines.Result, bool, error) {
	st.src = httpc.Source{Body: &st.x.Body, Sink: sink}
	st.rd.Reset(&st.src)
	st.carry.Reset()
	tokens := 0
	for {
		if err := st.rd.Next(&st.ev); err != nil {
			return engines.Result{Slot: -1}, false, httpc.ReadError(ctx, err, tokens > 0, "stream ended before the engine's final frame")
		}
		if err := ctx.Err(); err != nil {
			// Canceled with frames still buffered: deliver none of them, so
			// that no token follows a cancel (SPEC §3.3). An atomic load.
			return engines.Result{Slot: -1}, false, err
		}
		if string(st.ev.Event) == "error" {
			// Very old builds: `error: {...}` instead of a data frame.
			return st.fail(ctx, tokens, engines.KindUpstream, legacyErrorMessage(st.ev.Data, &st.fr), nil)
		}
		if st.ev.Comment || st.ev.Data == nil {
			continue // keep-alive, or a block without data
		}
		if err := st.fr.scan(st.ev.Data); err != nil {
			// No excerpt: frames carry generated text, and the final one
			// echoes the prompt (log.prompts is off by default).
			return st.fail(ctx, tokens, engines.KindProtocol,
				"engine frame is not valid JSON ("+strconv.Itoa(len(st.ev.Data))+" bytes)", err)
		}
		if st.fr.hasError {
			return st.fail(ctx, tokens, engines.KindUpstream, errorMessage(&st.fr, "engine reported an error"), nil)
		}
		if st.carry.Emit(sink, st.fr.content) {
			tokens++
			st.src.Dirty = true
		}
		if st.fr.stop {
			// A character that never completed: U+FFFD, as encoding/json.
			st.carry.Finish(sink)
			res := result(&st.fr)
			st.src.Final = true
			return res, st.x.DrainEvents(st.rd, &st.ev, drainTimeout), nil
		}
	}
}

// fail builds the error that ends a stream: ctx.Err() when ctx ended (the
// read error is then the cancel hook closing the connection).
func (st *streamState) fail(ctx context.Context, tokens int, kind engines.ErrorKind, msg string, err error) (engines.Result, bool, error) {
	return engines.Result{Slot: -1}, false, httpc.StreamError(ctx, tokens > 0, kind, msg, err)
}

func result(f *frame) engines.Result {
	r := engines.Result{
		TokensOut:    f.tokensPredicted,
		TokensIn:     f.tokensEvaluated,
		FinishReason: "stop",
		Slot:         -1,
	}
	if f.hasIDSlot {
		r.Slot = f.idSlot
	}
	if f.hasPredictedMs && f.predictedMs > 0 && f.predictedMs < math.MaxInt64/2 {
		r.DecodeMs = int64(math.Round(f.predictedMs))
	}
	switch string(f.stopType) {
	case "limit", "none":
		r.FinishReason = "length"
	}
	return r
}

func appendCompletionBody(dst []byte, req *engines.Request) []byte {
	dst = append(dst, `{"prompt":`...)
	dst = sse.AppendJSONString(dst, []byte(req.Prompt))
	dst = append(dst, `,"n_predict":`...)
	dst = strconv.AppendInt(dst, int64(req.MaxTokens), 10)
	// llama.cpp reads seed as uint32 (nlohmann truncates); sent as given so
	// that every engine's adapter passes the same value.
	dst = append(dst, `,"stream":true,"seed":`...)
	dst = strconv.AppendInt(dst, req.Seed, 10)
	dst = append(dst, `,"cache_prompt":`...)
	dst = strconv.AppendBool(dst, req.CachePrompt)
	return append(dst, `,"id_slot":-1}`...)
}

// statusError maps a non-2xx answer (ENGINES.md §5) using the engine's
// {"error":{"code","message","type"}} body when there is one.
func statusError(status int, data []byte, f *frame) *engines.Error {
	msg, typ := "", ""
	if f.scan(data) == nil && f.hasError {
		msg, typ = string(f.errMessage), string(f.errType)
	}
	e := httpc.StatusError(status, msg, data)
	if status == 400 && typ == "exceed_context_size_error" {
		e.Kind = engines.KindContextLength
	}
	return e
}

func errorMessage(f *frame, fallback string) string {
	if len(f.errMessage) > 0 {
		return string(text.AppendValid(nil, f.errMessage))
	}
	return fallback
}

func legacyErrorMessage(data []byte, f *frame) string {
	if f.scan(data) == nil && f.hasError {
		return errorMessage(f, "engine reported an error")
	}
	if m := text.Excerpt(bytes.TrimSpace(data)); m != "" {
		return m
	}
	return "engine reported an error"
}

// call makes one small request (probes, slot erase) and returns the status
// and body.
func (a *Adapter) call(ctx context.Context, method, path string, reqBody []byte, limit int) (int, []byte, error) {
	return a.hc.Call(ctx, method, path, reqBody, limit)
}

// Health checks GET /health: nil when the engine is ready; an *engines.Error
// of KindUnavailable while it loads ("Loading model"), cannot be reached or
// answers anything else; ctx.Err() when ctx ended.
func (a *Adapter) Health(ctx context.Context) error {
	status, data, err := a.call(ctx, "GET", "/health", nil, maxErrorBody)
	if err != nil {
		if e, ok := engines.AsError(err); ok {
			e.Kind = engines.KindUnavailable
		}
		return err
	}
	if status == 200 {
		return nil
	}
	var f frame
	e := statusError(status, data, &f)
	e.Kind = engines.KindUnavailable
	return e
}

// propsJSON is the part of GET /props the gateway uses. Numbers are
// json.Number: llama.cpp prints some integers as floats.
type propsJSON struct {
	DefaultGenerationSettings struct {
		NCtx json.Number `json:"n_ctx"`
	} `json:"default_generation_settings"`
	NCtx       json.Number `json:"n_ctx"` // very old builds
	TotalSlots json.Number `json:"total_slots"`
	ModelAlias string      `json:"model_alias"`
	ModelPath  string      `json:"model_path"`
	BuildInfo  string      `json:"build_info"`
}

// Props reads GET /props: slots (total_slots), per-slot context
// (default_generation_settings.n_ctx), build (build_info) and model
// (model_alias, else model_path).
func (a *Adapter) Props(ctx context.Context) (engines.Props, error) {
	status, data, err := a.call(ctx, "GET", "/props", nil, maxPropsBody)
	if err != nil {
		return engines.Props{}, err
	}
	if status != 200 {
		var f frame
		return engines.Props{}, statusError(status, data, &f)
	}
	var p propsJSON
	if err := json.Unmarshal(data, &p); err != nil {
		return engines.Props{}, &engines.Error{Kind: engines.KindProtocol, Status: status, Message: "cannot decode /props", Err: err}
	}
	props := engines.Props{
		Slots:         numberToInt(p.TotalSlots),
		CtxMax:        numberToInt(p.DefaultGenerationSettings.NCtx),
		EngineVersion: p.BuildInfo,
		Model:         p.ModelAlias,
	}
	if props.CtxMax == 0 {
		props.CtxMax = numberToInt(p.NCtx)
	}
	if props.Model == "" {
		props.Model = p.ModelPath
	}
	return props, nil
}

func numberToInt(n json.Number) int {
	if n == "" {
		return 0
	}
	if v, err := n.Int64(); err == nil {
		return int(v)
	}
	if v, err := n.Float64(); err == nil && v >= 0 && v < math.MaxInt32 {
		return int(v)
	}
	return 0
}

// EraseSlot drops one slot's KV cache: POST /slots/{slot}?action=erase.
func (a *Adapter) EraseSlot(ctx context.Context, slot int) error {
	if slot < 0 {
		return &engines.Error{Kind: engines.KindInvalidRequest, Message: "no slot to erase (" + strconv.Itoa(slot) + ")"}
	}
	status, data, err := a.call(ctx, "POST", "/slots/"+strconv.Itoa(slot)+"?action=erase", []byte("{}"), maxErrorBody)
	if err != nil {
		return err
	}
	if status/100 != 2 {
		var f frame
		return statusError(status, data, &f)
	}
	return nil
}

// maxTokenizeBody bounds a /tokenize answer (a few bytes per token).
const maxTokenizeBody = 16 << 20

// CountTokens asks the engine's tokenizer how many tokens text is
// (`POST /tokenize`, without the BOS token the engine adds to a prompt).
func (a *Adapter) CountTokens(ctx context.Context, text string) (int, error) {
	body := sse.AppendJSONString([]byte(`{"content":`), []byte(text))
	body = append(body, '}')
	status, data, err := a.call(ctx, "POST", "/tokenize", body, maxTokenizeBody)
	if err != nil {
		return 0, err
	}
	if status != 200 {
		var f frame
		return 0, statusError(status, data, &f)
	}
	var out struct {
		Tokens []json.RawMessage `json:"tokens"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return 0, &engines.Error{Kind: engines.KindProtocol, Status: status, Message: "cannot decode /tokenize", Err: err}
	}
	return len(out.Tokens), nil
}

// maxMetricsBody bounds a /metrics answer.
const maxMetricsBody = 1 << 20

// ScrapeLoad reads `llamacpp:requests_processing` and
// `llamacpp:requests_deferred` from GET /metrics (served only with
// --metrics; otherwise 501, returned as an error). llama.cpp reports no KV
// usage or GPU gauges since PR #13660, so those stay absent.
func (a *Adapter) ScrapeLoad(ctx context.Context) (engines.Load, error) {
	status, data, err := a.call(ctx, "GET", "/metrics", nil, maxMetricsBody)
	if err != nil {
		return engines.Load{}, err
	}
	if status != 200 {
		var f frame
		return engines.Load{}, statusError(status, data, &f)
	}
	var l engines.Load
	found := 0
	promtext.Each(data, func(name, _ []byte, v float64) {
		switch string(name) {
		case "llamacpp:requests_processing":
			l.Processing, found = int(v), found+1
		case "llamacpp:requests_deferred":
			l.Deferred, found = int(v), found+1
		case "llamacpp:kv_cache_usage_ratio": // builds before PR #13660
			l.KVCacheUsage, l.HasKVCacheUsage = v, true
		}
	})
	if found < 2 {
		return engines.Load{}, &engines.Error{Kind: engines.KindProtocol, Status: status, Message: "/metrics lacks llamacpp:requests_processing/requests_deferred"}
	}
	return l, nil
}
