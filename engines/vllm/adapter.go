// Package vllm is the engine adapter for one vLLM replica (`vllm serve`,
// OpenAI-compatible server; ENGINES.md §2). It streams POST /v1/completions
// and turns its SSE chunks into canonical token callbacks, probes /health,
// /version and /v1/models, and scrapes the vllm: load gauges from /metrics.
//
// The wire format followed is vLLM main as of 2026
// (vllm/entrypoints/openai/completion/serving.py @030ea52,
// v1/metrics/loggers.py), compatible with v0.9 through v0.11: the nested and
// the older flat error bodies, `usage:null` and a missing usage alike, the
// deprecated vllm:gpu_cache_usage_perc gauge.
package vllm

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// means none. vLLM sends its header at once, before prefill, so this is
	// a tight bound on a hung server.
	HeaderTimeout time.Duration
	// MaxIdleConns is the size of the keep-alive pool (default 64; negative
	// disables keep-alive).
	MaxIdleConns int
	// Dial, when set, replaces net.Dialer.DialContext (tests).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Model is the served model name sent in each request's "model". When
	// "", the first id of GET /v1/models is used (fetched once and cached,
	// fetched again when the engine answers 404 NotFoundError).
	Model string
}

const (
	// drainTimeout bounds the wait for the end of the body after [DONE]; on
	// expiry the connection is closed instead of pooled.
	drainTimeout   = time.Second
	maxErrorBody   = 64 << 10
	maxModelsBody  = 4 << 20
	maxMetricsBody = 8 << 20 // histograms per engine core add up
	maxKeptBuffer  = 1 << 20
)

// Adapter streams requests to one vLLM replica. It is safe for concurrent
// use.
type Adapter struct {
	hc            *httpc.Client
	headerTimeout time.Duration
	model         string                 // Options.Model
	auto          atomic.Pointer[string] // the discovered model when model == ""
	modelMu       sync.Mutex             // serialises discovery
	states        sync.Pool              // *streamState
}

var (
	_ engines.Adapter       = (*Adapter)(nil)
	_ engines.Prober        = (*Adapter)(nil)
	_ engines.LoadScraper   = (*Adapter)(nil)
	_ engines.Interruptible = (*Adapter)(nil)
	_ engines.Closer        = (*Adapter)(nil)
)

// New returns an Adapter for the replica at baseURL, which must be
// http://host:port with an optional path prefix.
func New(baseURL string, o Options) (*Adapter, error) {
	hc, err := httpc.New(baseURL, httpc.Options{DialTimeout: o.DialTimeout, MaxIdleConns: o.MaxIdleConns, Dial: o.Dial})
	if err != nil {
		return nil, errors.New("vllm: " + err.Error())
	}
	a := &Adapter{hc: hc, headerTimeout: o.HeaderTimeout, model: o.Model}
	a.states.New = func() any { return &streamState{rd: sse.NewReader(nil, 0)} }
	return a, nil
}

// Engine returns engines.VLLM.
func (a *Adapter) Engine() string { return engines.VLLM }

// InterruptibleDecode is true: when the connection closes, vLLM aborts the
// request and frees its KV blocks at once (ENGINES.md §2 "Cancellation").
func (a *Adapter) InterruptibleDecode() bool { return true }

// Close closes the idle pooled connections; connections in use are closed
// when their stream ends. The Adapter stays usable (without keep-alive).
func (a *Adapter) Close() error { return a.hc.Close() }

// streamState is the per-stream scratch, reused through a sync.Pool so that
// steady-state streaming allocates nothing per token.
type streamState struct {
	rd    *sse.Reader
	ev    sse.Frame
	dec   decoder
	ch    chunk
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
	st.ch = chunk{}
	if cap(st.req) > maxKeptBuffer {
		st.req, st.jbody = nil, nil
	}
	a.states.Put(st)
}

// Stream sends req to POST /v1/completions and delivers each chunk's text
// to sink until `data: [DONE]`. The Result's TokensOut is the usage chunk's
// completion_tokens (requested with stream_options.include_usage); without
// one, the sum of token_ids, else one per chunk. DecodeMs is 0 (vLLM
// reports no decode time: the gateway measures it) and Slot -1.
//
// Flush is called before every wait for the engine when tokens were
// delivered since the last one, not after [DONE] or on error. Errors are
// *engines.Error, or ctx.Err() when ctx ended (the connection is then
// closed at once, which makes vLLM abort the request).
func (a *Adapter) Stream(ctx context.Context, req *engines.Request, sink engines.Sink) (engines.Result, error) {
	if err := ctx.Err(); err != nil {
		return engines.Result{Slot: -1}, err
	}
	model, err := a.modelName(ctx)
	if err != nil {
		return engines.Result{Slot: -1}, err
	}
	st := a.getState()
	defer a.putState(st)
	for attempt := 0; ; attempt++ {
		st.jbody = appendCompletionBody(st.jbody[:0], model, req)
		st.req = a.hc.AppendRequest(st.req[:0], "POST", "/v1/completions", st.jbody, true)
		errBody, ok, err := a.hc.StartStream(ctx, st.req, a.headerTimeout, &st.x, &st.jbody, maxErrorBody)
		if err != nil {
			return engines.Result{Slot: -1}, err
		}
		if !ok {
			status := st.x.Status
			e := statusError(status, errBody, &st.dec)
			if attempt == 0 && a.model == "" && status == 404 {
				// The cached model name may be stale (the replica was
				// restarted with another model): look again, retry once.
				if m, rerr := a.refreshModel(ctx, model); rerr == nil && m != model {
					model = m
					continue
				}
			}
			return engines.Result{Slot: -1}, e
		}
		res, reusable, err := st.run(ctx, req, sink)
		a.hc.Release(&st.x, reusable)
		return res, err
	}
}

// run reads chunks until [DONE].
func (st *streamState) run(ctx context.Context, req *engines.Request, sink engines.Sink) (engines.Result, bool, error) {
	st.src = httpc.Source{Body: &st.x.Body, Sink: sink}
	st.rd.Reset(&st.src)
	st.carry.Reset()
	var (
		tokens int // tokens delivered to sink
		chunks int // chunks with a choice
		idSum  int // Σ len(token_ids)
		hasIDs bool
		usage  = -1 // usage.completion_tokens of the last chunk with usage
		prompt int
		finish string
		ch     = &st.ch
	)
	for {
		if err := st.rd.Next(&st.ev); err != nil {
			return engines.Result{Slot: -1}, false, httpc.ReadError(ctx, err, tokens > 0, "stream ended before the engine's [DONE]")
		}
		if err := ctx.Err(); err != nil {
			// Canceled with frames still buffered: deliver none of them, so
			// that no token follows a cancel (SPEC §3.3).
			return engines.Result{Slot: -1}, false, err
		}
		if st.ev.Comment || st.ev.Data == nil {
			continue // `: keep-alive`, or a block without data
		}
		if err := st.dec.decode(st.ev.Data, ch); err != nil {
			// No excerpt: chunks carry generated text.
			return st.fail(ctx, tokens, engines.KindProtocol,
				"engine frame is not valid JSON ("+strconv.Itoa(len(st.ev.Data))+" bytes)", err)
		}
		if ch.done {
			break
		}
		if ch.hasError {
			msg := "engine reported an error"
			if len(ch.errMessage) > 0 {
				msg = text.Excerpt(ch.errMessage)
			}
			return st.fail(ctx, tokens, engines.KindUpstream, msg, nil)
		}
		if ch.hasChoice {
			chunks++
			if st.carry.Emit(sink, ch.text) {
				tokens++
				st.src.Dirty = true
			}
			if ch.hasTokenIDs {
				idSum, hasIDs = idSum+ch.nTokenIDs, true
			}
			if ch.finish != nil {
				switch string(ch.finish) {
				case "stop":
					finish = "stop"
				case "length":
					finish = "length"
				default: // "abort", "error": the engine gave up on the request
					return st.fail(ctx, tokens, engines.KindUpstream,
						"engine ended the request with finish_reason "+strconv.Quote(text.Excerpt(ch.finish)), nil)
				}
			}
		}
		if ch.hasUsage {
			usage, prompt = ch.completionTokens, ch.promptTokens
		}
	}
	// [DONE]. A character that never completed: U+FFFD, as encoding/json.
	st.carry.Finish(sink)
	st.src.Final = true
	res := engines.Result{TokensOut: usage, TokensIn: prompt, FinishReason: finish, Slot: -1}
	switch {
	case usage >= 0:
	case hasIDs:
		res.TokensOut = idSum
	default:
		res.TokensOut = chunks
	}
	if res.FinishReason == "" {
		// vLLM always sets it; if a proxy lost it, infer it from the count.
		res.FinishReason = "stop"
		if req.MaxTokens > 0 && res.TokensOut >= req.MaxTokens {
			res.FinishReason = "length"
		}
	}
	return res, st.x.DrainEvents(st.rd, &st.ev, drainTimeout), nil
}

// fail builds the error that ends a stream: ctx.Err() when ctx ended (the
// read error is then the cancel hook closing the connection).
func (st *streamState) fail(ctx context.Context, tokens int, kind engines.ErrorKind, msg string, err error) (engines.Result, bool, error) {
	return engines.Result{Slot: -1}, false, httpc.StreamError(ctx, tokens > 0, kind, msg, err)
}

// appendCompletionBody appends the request body: deterministic sampling
// (temperature 0 and the gateway's seed) and the usage chunk, which carries
// the engine's token count.
func appendCompletionBody(dst []byte, model string, req *engines.Request) []byte {
	dst = append(dst, `{"model":`...)
	dst = sse.AppendJSONString(dst, []byte(model))
	dst = append(dst, `,"prompt":`...)
	dst = sse.AppendJSONString(dst, []byte(req.Prompt))
	if req.MaxTokens > 0 {
		dst = append(dst, `,"max_tokens":`...)
		dst = strconv.AppendInt(dst, int64(req.MaxTokens), 10)
	}
	dst = append(dst, `,"temperature":0,"seed":`...)
	dst = strconv.AppendInt(dst, req.Seed, 10)
	return append(dst, `,"stream":true,"stream_options":{"include_usage":true}}`...)
}

// statusError maps a non-2xx answer (ENGINES.md §5 "Error mapping") using
// vLLM's error body when there is one: {"error":{"message","type",…}}, the
// flat pre-v0.10 {"object":"error","message",…}, or FastAPI's {"detail"}.
func statusError(status int, data []byte, d *decoder) *engines.Error {
	msg := ""
	var c chunk
	if d.decode(data, &c) == nil && c.hasError && len(c.errMessage) > 0 {
		msg = text.Excerpt(c.errMessage)
	} else if dm := detailMessage(data); dm != "" {
		msg = dm
	}
	// By status, as httpc maps it; a 429 comes from a proxy or router in
	// front (vLLM has no admission control).
	e := httpc.StatusError(status, msg, data)
	if status/100 == 4 && status != 429 && strings.Contains(e.Message, "maximum context length") {
		e.Kind = engines.KindContextLength
	}
	return e
}

// detailMessage reads FastAPI's {"detail":"…"} (unknown route, wrong
// method).
func detailMessage(data []byte) string {
	var v struct {
		Detail json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(data, &v) != nil || v.Detail == nil {
		return ""
	}
	var s string
	if json.Unmarshal(v.Detail, &s) == nil {
		return text.Excerpt([]byte(s))
	}
	return text.Excerpt(v.Detail)
}

// call makes one probe request.
func (a *Adapter) call(ctx context.Context, path string, limit int) (int, []byte, error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, err
	}
	return a.hc.Call(ctx, "GET", path, nil, limit)
}

// Health checks GET /health: nil on 200 (vLLM listens only once the engine
// is loaded); an *engines.Error of KindUnavailable when the engine is dead
// (503), cannot be reached (connection refused while loading) or answers
// anything else; ctx.Err() when ctx ended.
func (a *Adapter) Health(ctx context.Context) error {
	status, data, err := a.call(ctx, "/health", maxErrorBody)
	if err != nil {
		if e, ok := engines.AsError(err); ok {
			e.Kind = engines.KindUnavailable
		}
		return err
	}
	if status == 200 {
		return nil
	}
	var d decoder
	e := statusError(status, data, &d)
	e.Kind = engines.KindUnavailable
	if e.Message == "HTTP 503" {
		e.Message = "engine is dead (GET /health answered 503)"
	}
	return e
}

// modelCard is one entry of GET /v1/models.
type modelCard struct {
	ID          string      `json:"id"`
	MaxModelLen json.Number `json:"max_model_len"`
}

// models reads GET /v1/models.
func (a *Adapter) models(ctx context.Context) ([]modelCard, error) {
	status, data, err := a.call(ctx, "/v1/models", maxModelsBody)
	if err != nil {
		return nil, err
	}
	if status != 200 {
		var d decoder
		return nil, statusError(status, data, &d)
	}
	var list struct {
		Data []modelCard `json:"data"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, &engines.Error{Kind: engines.KindProtocol, Status: status, Message: "cannot decode /v1/models", Err: err}
	}
	if len(list.Data) == 0 || list.Data[0].ID == "" {
		return nil, &engines.Error{Kind: engines.KindProtocol, Status: status, Message: "/v1/models lists no model"}
	}
	return list.Data, nil
}

// modelName returns the name to send: Options.Model, else the cached first
// id of /v1/models.
func (a *Adapter) modelName(ctx context.Context) (string, error) {
	if a.model != "" {
		return a.model, nil
	}
	if p := a.auto.Load(); p != nil {
		return *p, nil
	}
	return a.refreshModel(ctx, "")
}

// refreshModel fetches the served model name unless another caller already
// replaced stale while this one waited.
func (a *Adapter) refreshModel(ctx context.Context, stale string) (string, error) {
	a.modelMu.Lock()
	defer a.modelMu.Unlock()
	if p := a.auto.Load(); p != nil && *p != stale {
		return *p, nil
	}
	list, err := a.models(ctx)
	if err != nil {
		return "", err
	}
	id := list[0].ID
	a.auto.Store(&id)
	return id, nil
}

// Props reads GET /v1/models (Model: Options.Model when the engine serves
// it, else the first id; CtxMax: its max_model_len) and GET /version
// (EngineVersion). vLLM reports no slot count (--max-num-seqs), so Slots is
// 0, nor a weights digest.
func (a *Adapter) Props(ctx context.Context) (engines.Props, error) {
	list, err := a.models(ctx)
	if err != nil {
		return engines.Props{}, err
	}
	card := list[0]
	for _, c := range list {
		if a.model != "" && c.ID == a.model {
			card = c
			break
		}
	}
	if a.model == "" {
		id := list[0].ID
		a.auto.Store(&id)
	}
	props := engines.Props{Model: card.ID, CtxMax: numberToInt(card.MaxModelLen)}
	status, data, err := a.call(ctx, "/version", maxErrorBody)
	if err != nil {
		return engines.Props{}, err
	}
	if status == 200 {
		var v struct {
			Version string `json:"version"`
		}
		if err := json.Unmarshal(data, &v); err != nil {
			return engines.Props{}, &engines.Error{Kind: engines.KindProtocol, Status: status, Message: "cannot decode /version", Err: err}
		}
		props.EngineVersion = v.Version
	}
	return props, nil
}

func numberToInt(n json.Number) int {
	if n == "" {
		return 0
	}
	if v, err := n.Int64(); err == nil && v >= 0 && v < math.MaxInt32 {
		return int(v)
	}
	if v, err := n.Float64(); err == nil && v >= 0 && v < math.MaxInt32 {
		return int(v)
	}
	return 0
}

// ScrapeLoad reads GET /metrics: vllm:num_requests_running (Processing),
// vllm:num_requests_waiting (Deferred) and vllm:kv_cache_usage_perc
// (KVCacheUsage; vllm:gpu_cache_usage_perc before v0.10). With several
// engine cores (data parallel, one label set each) the counts are summed
// and the KV usage is the fullest core's. vLLM reports no per-GPU gauges.
func (a *Adapter) ScrapeLoad(ctx context.Context) (engines.Load, error) {
	status, data, err := a.call(ctx, "/metrics", maxMetricsBody)
	if err != nil {
		return engines.Load{}, err
	}
	if status != 200 {
		var d decoder
		return engines.Load{}, statusError(status, data, &d)
	}
	var (
		l                engines.Load
		running, waiting float64
		hasRun, hasWait  bool
		kv, gpuKV        float64
		hasKV, hasGPUKV  bool
	)
	promtext.Each(data, func(name, _ []byte, v float64) {
		if v != v || v < 0 { // NaN or nonsense
			return
		}
		switch string(name) {
		case "vllm:num_requests_running":
			running, hasRun = running+v, true
		case "vllm:num_requests_waiting":
			waiting, hasWait = waiting+v, true
		case "vllm:kv_cache_usage_perc":
			kv, hasKV = max(kv, v), true
		case "vllm:gpu_cache_usage_perc":
			gpuKV, hasGPUKV = max(gpuKV, v), true
		}
	})
	if !hasRun || !hasWait {
		return engines.Load{}, &engines.Error{Kind: engines.KindProtocol, Status: status,
			Message: "/metrics lacks vllm:num_requests_running/num_requests_waiting"}
	}
	l.Processing, l.Deferred = gaugeInt(running), gaugeInt(waiting)
	switch {
	case hasKV:
		l.KVCacheUsage, l.HasKVCacheUsage = min(kv, 1), true
	case hasGPUKV:
		l.KVCacheUsage, l.HasKVCacheUsage = min(gpuKV, 1), true
	}
	return l, nil
}

func gaugeInt(v float64) int {
	if v >= math.MaxInt32 {
		return math.MaxInt32
	}
	return int(math.Round(v))
}
