// Package triton is the engine adapter for one NVIDIA Triton Inference
// Server replica serving an LLM through the generate extension (ENGINES.md
// §4; wire format of server @e1db8a6, 2.73.0dev, with the vLLM backend
// @8de0c14). It streams POST /v2/models/{m}/generate_stream and turns its
// SSE frames into canonical token callbacks, probes /v2/health/ready,
// /v2/health/live, /v2 and /v2/models/{m}/ready, and scrapes the load gauges
// from Triton's metrics endpoint.
//
// Wire facts the adapter relies on:
//
//   - Status and headers arrive only with the first response, so the wait
//     for the header includes queueing and prefill (Options.HeaderTimeout).
//   - Frames are `data: {…}` with sorted keys; the adapter reads only
//     text_output (the delta since the previous response), num_output_tokens,
//     num_input_tokens, finish_reason and error, and ignores every other key
//     (TRT-LLM ensemble extras). A one-element tensor is a scalar; an array
//     (batch or beam outputs) contributes its first element.
//   - There is no terminator frame: the end of a 2xx chunked body (its last
//     chunk) is the end of the stream. A body cut before its last chunk (the
//     connection reset or closed) is a cut stream, KindUpstream — unless a
//     frame with a final finish_reason ("stop"/"length") already arrived,
//     which is the vLLM backend's last response: the result is then
//     complete and the stream succeeds.
//   - Counts: TokensOut = Σ num_output_tokens (the EOS token included, as
//     vLLM counts it), or the number of frames when the model does not
//     return it; TokensIn = num_input_tokens. FinishReason is the last
//     finish_reason; without one, "length" when TokensOut reached MaxTokens,
//     else "stop". finish_reason "abort" (vLLM aborted the request) is
//     KindUpstream.
//   - Errors are {"error":"<msg>"}. Before the stream: 400 → KindInvalidRequest,
//     404 → KindInvalidRequest (unknown model) — except "… has no available
//     versions" (the model is loading or unloaded here), KindUnavailable —,
//     503 (UNAVAILABLE, e.g. "Exceeds maximum queue size") → KindOverloaded,
//     other 4xx → KindInvalidRequest, 5xx → KindUpstream. When the first
//     response is an error the status comes with an SSE body `data:
//     {"error":"Error generating stream: …"}` (500 from the vLLM backend);
//     it is mapped the same way. Context-length heuristic: a 400 or 5xx
//     whose message names a length limit ("maximum model length" — vLLM's
//     "The decoder prompt (length N) is longer than the maximum model length
//     of M", which the vLLM backend reports as a 500 —, "context length",
//     "maximum/max input length", "max/maximum sequence length";
//     case-insensitive) is KindContextLength. A `data: {"error":…}` frame
//     after a 200 is KindUpstream.
package triton

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
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

// Options tune an Adapter. Model is required.
type Options struct {
	// DialTimeout bounds connecting to the engine (default 2 s).
	DialTimeout time.Duration
	// HeaderTimeout bounds the wait for the response header of a stream; 0
	// means none. Triton sends its header only with the first response,
	// after queueing and prefill, so the gateway's first-token watchdog
	// (which cancels ctx) is usually the better bound.
	HeaderTimeout time.Duration
	// MaxIdleConns is the size of the keep-alive pool (default 64; negative
	// disables keep-alive).
	MaxIdleConns int
	// Dial, when set, replaces net.Dialer.DialContext (tests).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Model is the Triton model the requests go to (the path segment of
	// /v2/models/{m}/generate_stream): "vllm_model", "ensemble", ….
	// Required: Triton has no default model.
	Model string
	// MetricsURL is the full URL of Triton's Prometheus endpoint. Triton
	// serves it on its own port (8002 by default: "http://host:8002/metrics");
	// "" means the base URL + "/metrics", which is where the fake serves it
	// and where a proxy that merges the ports would.
	MetricsURL string
}

const (
	// drainTimeout bounds the wait for the end of the body after the frame
	// that finished the request; on expiry the connection is closed
	// instead of pooled, and the stream still succeeds.
	drainTimeout   = time.Second
	maxErrorBody   = 64 << 10
	maxProbeBody   = 1 << 20
	maxMetricsBody = 4 << 20
	maxKeptBuffer  = 1 << 20
)

// Adapter streams requests to one Triton replica. It is safe for concurrent
// use.
type Adapter struct {
	hc            *httpc.Client
	mc            *httpc.Client // metrics endpoint (hc when on the same port)
	metricsPath   string
	model         string
	streamPath    string // /v2/models/{m}/generate_stream
	readyPath     string // /v2/models/{m}/ready
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

// ErrNoModel is returned by New when Options.Model is empty.
var ErrNoModel = errors.New("triton: Options.Model is required (the Triton model to send requests to)")

// New returns an Adapter for the replica at baseURL (http://host:port with
// an optional path prefix) and the model o.Model.
func New(baseURL string, o Options) (*Adapter, error) {
	if o.Model == "" {
		return nil, ErrNoModel
	}
	ho := httpc.Options{DialTimeout: o.DialTimeout, MaxIdleConns: o.MaxIdleConns, Dial: o.Dial}
	hc, err := httpc.New(baseURL, ho)
	if err != nil {
		return nil, fmt.Errorf("triton: %w", err)
	}
	m := "/v2/models/" + url.PathEscape(o.Model)
	a := &Adapter{
		hc:            hc,
		mc:            hc,
		metricsPath:   "/metrics",
		model:         o.Model,
		streamPath:    m + "/generate_stream",
		readyPath:     m + "/ready",
		headerTimeout: o.HeaderTimeout,
	}
	if o.MetricsURL != "" {
		u, err := url.Parse(o.MetricsURL)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("triton: invalid MetricsURL %q: want http://host:port/path", o.MetricsURL)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("triton: MetricsURL %q: want no query or fragment", o.MetricsURL)
		}
		mc, err := httpc.New(u.Scheme+"://"+u.Host, ho)
		if err != nil {
			return nil, fmt.Errorf("triton: MetricsURL: %w", err)
		}
		a.mc, a.metricsPath = mc, u.EscapedPath()
		if a.metricsPath == "" {
			a.metricsPath = "/"
		}
	}
	a.states.New = func() any { return &streamState{rd: sse.NewReader(nil, 0)} }
	return a, nil
}

// Engine returns engines.Triton.
func (a *Adapter) Engine() string { return engines.Triton }

// Model returns the Triton model the adapter sends requests to.
func (a *Adapter) Model() string { return a.model }

// InterruptibleDecode is true: since Triton 2.41 a closed connection cancels
// the request, and the vLLM backend aborts it in vLLM at its next output
// (the TRT-LLM backend stops it too), freeing the KV blocks (ENGINES.md §4).
func (a *Adapter) InterruptibleDecode() bool { return true }

// Close closes the idle pooled connections; connections in use are closed
// when their stream ends. The Adapter stays usable (without keep-alive).
func (a *Adapter) Close() error {
	err := a.hc.Close()
	if a.mc != a.hc {
		err = errors.Join(err, a.mc.Close())
	}
	return err
}

// streamState is the per-stream scratch, reused through a sync.Pool so that
// steady-state streaming allocates nothing per token.
type streamState struct {
	rd    *sse.Reader
	ev    sse.Frame
	dec   decoder
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
	st.dec.shrink()
	a.states.Put(st)
}

// Stream sends req to POST /v2/models/{m}/generate_stream and delivers each
// frame's text_output to sink until the body ends.
//
// Flush is called before every wait for the engine when tokens were
// delivered since the last one, and not after the frame that finished the
// request (finish_reason "stop"/"length") or on error: the caller publishes
// its terminal event together with whatever the sink still holds. Errors are
// *engines.Error, or ctx.Err() when ctx ended (the engine connection is then
// closed at once, which cancels the request in Triton).
func (a *Adapter) Stream(ctx context.Context, req *engines.Request, sink engines.Sink) (engines.Result, error) {
	if err := ctx.Err(); err != nil {
		return engines.Result{Slot: -1}, err
	}
	st := a.getState()
	defer a.putState(st)
	st.jbody = appendGenerateBody(st.jbody[:0], req)
	st.req = a.hc.AppendRequest(st.req[:0], "POST", a.streamPath, st.jbody, true)
	errBody, ok, err := a.hc.StartStream(ctx, st.req, a.headerTimeout, &st.x, &st.jbody, maxErrorBody)
	if err != nil {
		return engines.Result{Slot: -1}, err
	}
	if !ok {
		return engines.Result{Slot: -1}, statusError(st.x.Status, errBody, &st.dec)
	}
	res, reusable, err := st.run(ctx, req.MaxTokens, sink)
	a.hc.Release(&st.x, reusable)
	return res, err
}

// run reads frames until the body ends.
func (st *streamState) run(ctx context.Context, maxTokens int, sink engines.Sink) (engines.Result, bool, error) {
	st.src = httpc.Source{Body: &st.x.Body, Sink: sink}
	st.rd.Reset(&st.src)
	st.carry.Reset()
	var (
		tokens   int // tokens delivered to the sink
		frames   int // response frames
		numOut   int // Σ num_output_tokens
		hasOut   bool
		numIn    int
		finished bool // a frame carried a final finish_reason
		reason   string
	)
	for {
		err := st.rd.Next(&st.ev)
		if err == io.EOF {
			break // the body's end: Triton's end of the stream
		}
		if err != nil {
			if finished && ctx.Err() == nil {
				// The request had finished; only the body's end was lost
				// (cut, or late). The result is complete, the connection
				// is not reusable.
				return st.result(frames, numOut, hasOut, numIn, reason, maxTokens, sink), false, nil
			}
			return engines.Result{Slot: -1}, false, httpc.ReadError(ctx, err, tokens > 0, "stream cut before the end of the engine's body")
		}
		if err := ctx.Err(); err != nil {
			// Canceled with frames still buffered: deliver none of them, so
			// that no token follows a cancel (SPEC §3.3). An atomic load.
			return engines.Result{Slot: -1}, false, err
		}
		if st.ev.Comment || st.ev.Data == nil {
			continue // keep-alive (Triton sends none), or a block without data
		}
		if err := st.dec.decode(st.ev.Data, &st.fr); err != nil {
			// No excerpt: frames carry generated text.
			return st.fail(ctx, tokens, engines.KindProtocol,
				"engine frame is not a JSON object ("+strconv.Itoa(len(st.ev.Data))+" bytes)", err)
		}
		if st.fr.hasError {
			return st.fail(ctx, tokens, engines.KindUpstream, errorText(st.fr.errMsg), nil)
		}
		frames++
		if st.fr.hasNumOut {
			numOut += st.fr.numOut
			hasOut = true
		}
		if st.fr.hasNumIn {
			numIn = st.fr.numIn
		}
		if st.carry.Emit(sink, st.fr.text) {
			tokens++
			st.src.Dirty = true
		}
		switch string(st.fr.finish) {
		case "", "None":
		case "abort", "error":
			// vLLM ended the request without finishing it.
			return st.fail(ctx, tokens, engines.KindUpstream,
				"engine ended the request with finish_reason "+strconv.Quote(string(st.fr.finish)), nil)
		default:
			// The vLLM backend's last response ("stop", "length"): from
			// here the caller publishes, and the body's end is due at once.
			switch string(st.fr.finish) {
			case "stop":
				reason = "stop"
			case "length":
				reason = "length"
			}
			if !finished {
				finished = true
				st.src.Final = true
				st.x.SetReadDeadline(time.Now().Add(drainTimeout))
			}
		}
	}
	if finished {
		st.x.SetReadDeadline(time.Time{})
	}
	if frames == 0 {
		return st.fail(ctx, tokens, engines.KindProtocol, "engine ended the stream without any response", nil)
	}
	return st.result(frames, numOut, hasOut, numIn, reason, maxTokens, sink), st.x.Body.Finished(), nil
}

// result makes the Result of a finished stream, delivering a character that
// never completed as U+FFFD.
func (st *streamState) result(frames, numOut int, hasOut bool, numIn int, reason string, maxTokens int, sink engines.Sink) engines.Result {
	st.carry.Finish(sink)
	res := engines.Result{TokensOut: frames, TokensIn: numIn, Slot: -1}
	if hasOut {
		res.TokensOut = numOut
	}
	switch reason {
	case "length":
		res.FinishReason = "length"
	case "stop":
		res.FinishReason = "stop"
	default:
		res.FinishReason = "stop"
		if maxTokens > 0 && res.TokensOut >= maxTokens {
			res.FinishReason = "length"
		}
	}
	return res
}

// fail builds the error that ends a stream: ctx.Err() when ctx ended (the
// read error is then the cancel hook closing the connection).
func (st *streamState) fail(ctx context.Context, tokens int, kind engines.ErrorKind, msg string, err error) (engines.Result, bool, error) {
	return engines.Result{Slot: -1}, false, httpc.StreamError(ctx, tokens > 0, kind, msg, err)
}

// appendGenerateBody appends the generate_stream request: greedy sampling,
// the gateway's seed, and the vLLM backend's switches for the counts (for a
// model without those inputs they become ignored request parameters).
func appendGenerateBody(dst []byte, req *engines.Request) []byte {
	dst = append(dst, `{"text_input":`...)
	dst = sse.AppendJSONString(dst, []byte(req.Prompt))
	dst = append(dst, `,"parameters":{"stream":true,"temperature":0`...)
	if req.MaxTokens > 0 {
		dst = append(dst, `,"max_tokens":`...)
		dst = strconv.AppendInt(dst, int64(req.MaxTokens), 10)
	}
	dst = append(dst, `,"seed":`...)
	dst = strconv.AppendInt(dst, req.Seed, 10)
	return append(dst, `,"return_num_output_tokens":true,"return_finish_reason":true,"return_num_input_tokens":true}}`...)
}

// statusError maps a non-2xx answer (ENGINES.md §5, package doc) using the
// engine's {"error":"<msg>"} body, plain or as one SSE event.
func statusError(status int, data []byte, d *decoder) *engines.Error {
	e := httpc.StatusError(status, bodyMessage(data, d), nil)
	switch {
	case (status == 400 || status >= 500) && contextLengthMessage(e.Message):
		e.Kind = engines.KindContextLength
	case status == 404 && strings.Contains(e.Message, "has no available versions"):
		e.Kind = engines.KindUnavailable
	case status == 503:
		e.Kind = engines.KindOverloaded
	}
	return e
}

// contextLimitPhrases mark an error message about the prompt not fitting
// the model's context (lowercase).
var contextLimitPhrases = []string{
	"maximum model length",    // vLLM input validation
	"context length",          // vLLM OpenAI wording, generic
	"maximum input length",    // TRT-LLM
	"max input length",        // TRT-LLM (older wording)
	"max sequence length",     // TRT-LLM executor
	"maximum sequence length", // generic
}

// contextLengthMessage reports whether msg says the prompt exceeds the
// context (the heuristic of the package doc).
func contextLengthMessage(msg string) bool {
	m := strings.ToLower(msg)
	for _, p := range contextLimitPhrases {
		if strings.Contains(m, p) {
			return true
		}
	}
	return false
}

// bodyMessage extracts the message of an error body: {"error":"<msg>"}, or
// that object as an SSE event (`data: {…}`), else a printable excerpt.
func bodyMessage(data []byte, d *decoder) string {
	b := bytes.TrimSpace(data)
	if rest, ok := bytes.CutPrefix(b, []byte("data:")); ok {
		b = bytes.TrimSpace(rest)
		if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
			b = b[:i] // the first event only
		}
	}
	var f frame
	if d.decode(b, &f) == nil && f.hasError {
		return errorText(f.errMsg)
	}
	return text.Excerpt(bytes.TrimSpace(data))
}

// errorText makes an engine error message printable.
func errorText(msg []byte) string {
	if len(msg) == 0 {
		return "engine reported an error"
	}
	return text.Excerpt(msg)
}

// Health checks GET /v2/health/ready: nil when Triton is ready (with
// strict readiness, the default, every model is loaded); an *engines.Error
// of KindUnavailable when it answers 400 (not ready, an empty body), cannot
// be reached or answers anything else; ctx.Err() when ctx ended.
func (a *Adapter) Health(ctx context.Context) error {
	return a.probe(ctx, "/v2/health/ready", "not ready")
}

// Live checks GET /v2/health/live: nil once the server process is up (even
// while models load), else an *engines.Error of KindUnavailable.
func (a *Adapter) Live(ctx context.Context) error {
	return a.probe(ctx, "/v2/health/live", "not live")
}

func (a *Adapter) probe(ctx context.Context, path, what string) error {
	status, data, err := a.hc.Call(ctx, "GET", path, nil, maxErrorBody)
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
	msg := bodyMessage(data, &d)
	if msg == "" {
		msg = what
	}
	return &engines.Error{Kind: engines.KindUnavailable, Status: status, Message: msg}
}

// Props reads GET /v2 (EngineVersion = its "version") and GET
// /v2/models/{m}/ready: Model is Options.Model when that answers 200 (the
// model is loaded and ready), else "". Triton reports no slot count, and
// the vLLM backend's max_model_len is not in the model config, so Slots and
// CtxMax stay 0 (unknown).
func (a *Adapter) Props(ctx context.Context) (engines.Props, error) {
	status, data, err := a.hc.Call(ctx, "GET", "/v2", nil, maxProbeBody)
	if err != nil {
		return engines.Props{}, err
	}
	if status != 200 {
		var d decoder
		return engines.Props{}, statusError(status, data, &d)
	}
	var meta struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	if err := json.Unmarshal(data, &meta); err != nil {
		return engines.Props{}, &engines.Error{Kind: engines.KindProtocol, Status: status, Message: "cannot decode /v2", Err: err}
	}
	props := engines.Props{EngineVersion: meta.Version}
	status, _, err = a.hc.Call(ctx, "GET", a.readyPath, nil, maxErrorBody)
	if err != nil {
		return engines.Props{}, err
	}
	if status == 200 {
		props.Model = a.model
	}
	return props, nil
}

// ScrapeLoad reads Triton's metrics endpoint (Options.MetricsURL):
//
//   - Processing: nv_trt_llm_request_metrics{request_type="active"}, else the
//     vLLM backend's vllm:num_requests_running (summed over series).
//   - Deferred: nv_inference_pending_request_count of the model, plus the
//     backend's own queue — vllm:num_requests_waiting or
//     nv_trt_llm_request_metrics{request_type="waiting"} — since decoupled
//     backends take requests from Triton at once (ENGINES.md §4).
//   - KVCacheUsage: nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=
//     "fraction"}, else vllm:kv_cache_usage_perc or vllm:gpu_cache_usage_perc.
//   - Devices: nv_gpu_utilization and nv_gpu_memory_used_bytes per gpu_uuid.
//
// It fails with KindProtocol when the body has none of these.
func (a *Adapter) ScrapeLoad(ctx context.Context) (engines.Load, error) {
	status, data, err := a.mc.Call(ctx, "GET", a.metricsPath, nil, maxMetricsBody)
	if err != nil {
		return engines.Load{}, err
	}
	if status != 200 {
		var d decoder
		return engines.Load{}, statusError(status, data, &d)
	}
	l, ok := parseLoad(data, a.model)
	if !ok {
		return engines.Load{}, &engines.Error{Kind: engines.KindProtocol, Status: status,
			Message: "metrics lack nv_inference_pending_request_count and the backend's load gauges"}
	}
	return l, nil
}

// parseLoad reads the load gauges from a metrics body (see ScrapeLoad); ok
// is false when none of them is present.
func parseLoad(data []byte, model string) (l engines.Load, ok bool) {
	var (
		pending, vllmRunning, vllmWaiting, trtActive, trtWaiting float64
		hasPending, hasVllmRunning, hasTrtActive                 bool
		trtKV, vllmKV, vllmKVOld                                 float64
		hasTrtKV, hasVllmKV, hasVllmKVOld                        bool
	)
	device := func(uuid string) *engines.DeviceLoad {
		for i := range l.Devices {
			if l.Devices[i].Device == uuid {
				return &l.Devices[i]
			}
		}
		l.Devices = append(l.Devices, engines.DeviceLoad{Device: uuid})
		return &l.Devices[len(l.Devices)-1]
	}
	promtext.Each(data, func(name, labels []byte, v float64) {
		switch string(name) {
		case "nv_inference_pending_request_count":
			if m, has := promtext.Label(labels, "model"); !has || m == model {
				pending += v
				hasPending = true
			}
		case "nv_trt_llm_request_metrics":
			switch typ, _ := promtext.Label(labels, "request_type"); typ {
			case "active":
				trtActive += v
				hasTrtActive = true
			case "waiting":
				trtWaiting += v
			}
		case "nv_trt_llm_kv_cache_block_metrics":
			if typ, _ := promtext.Label(labels, "kv_cache_block_type"); typ == "fraction" {
				trtKV, hasTrtKV = max(trtKV, v), true
			}
		case "vllm:num_requests_running":
			vllmRunning += v
			hasVllmRunning = true
		case "vllm:num_requests_waiting":
			vllmWaiting += v
		case "vllm:kv_cache_usage_perc":
			vllmKV, hasVllmKV = max(vllmKV, v), true
		case "vllm:gpu_cache_usage_perc":
			vllmKVOld, hasVllmKVOld = max(vllmKVOld, v), true
		case "nv_gpu_utilization":
			if uuid, has := promtext.Label(labels, "gpu_uuid"); has {
				d := device(uuid)
				d.Utilization, d.HasUtilization = v, true
			}
		case "nv_gpu_memory_used_bytes":
			if uuid, has := promtext.Label(labels, "gpu_uuid"); has {
				d := device(uuid)
				d.VRAMUsedBytes, d.HasVRAMUsed = v, true
			}
		}
	})
	switch {
	case hasTrtActive:
		l.Processing = int(trtActive)
	case hasVllmRunning:
		l.Processing = int(vllmRunning)
	}
	l.Deferred = int(pending + vllmWaiting + trtWaiting)
	switch {
	case hasTrtKV:
		l.KVCacheUsage, l.HasKVCacheUsage = trtKV, true
	case hasVllmKV:
		l.KVCacheUsage, l.HasKVCacheUsage = vllmKV, true
	case hasVllmKVOld:
		l.KVCacheUsage, l.HasKVCacheUsage = vllmKVOld, true
	}
	ok = hasPending || hasTrtActive || hasVllmRunning || l.HasKVCacheUsage
	return l, ok
}

// frame is what the adapter reads of one generate_stream response. Byte
// slices point into the decoder's buffer and stay valid until the next
// decode.
type frame struct {
	text      []byte
	numOut    int
	hasNumOut bool
	numIn     int
	hasNumIn  bool
	finish    []byte
	hasError  bool
	errMsg    []byte
}

// decoder decodes frames with a reused fastjson parser: no allocation per
// frame once its buffers have grown. Unknown keys are skipped; for a
// repeated key the last one wins, as with encoding/json.
type decoder struct {
	p fastjson.Parser
	// f is the frame being filled by visit, set only during decode.
	f *frame
	// large records a frame over maxKeptBuffer (see shrink).
	large bool
}

var errNotObject = errors.New("triton: frame is not a JSON object")

// decode parses data, one JSON object, into f.
func (d *decoder) decode(data []byte, f *frame) error {
	*f = frame{}
	if len(data) > maxKeptBuffer {
		d.large = true
	}
	v, err := d.p.ParseBytes(data)
	if err != nil {
		return err
	}
	o, err := v.Object()
	if err != nil {
		return errNotObject
	}
	d.f = f
	o.Visit(d.visit)
	d.f = nil
	return nil
}

// visit reads one member of a frame. It is a method value bound once per
// decode call; the compiler keeps it on the stack (Visit does not retain
// it), which BenchmarkDecodeFrame checks.
func (d *decoder) visit(key []byte, v *fastjson.Value) {
	f := d.f
	switch string(key) {
	case "text_output":
		f.text = stringValue(v)
	case "num_output_tokens":
		f.numOut, f.hasNumOut = intValue(v)
	case "num_input_tokens":
		f.numIn, f.hasNumIn = intValue(v)
	case "finish_reason":
		f.finish = stringValue(v)
	case "error":
		f.hasError = true
		f.errMsg = errorValue(v)
	}
}

// scalar returns v, or the first element of (nested) arrays: a tensor of
// one element is a scalar, a larger one contributes its first element.
func scalar(v *fastjson.Value) *fastjson.Value {
	for depth := 0; v != nil && v.Type() == fastjson.TypeArray && depth < 4; depth++ {
		v = v.Get("0")
	}
	return v
}

func stringValue(v *fastjson.Value) []byte {
	v = scalar(v)
	if v == nil || v.Type() != fastjson.TypeString {
		return nil // missing and null alike; other types are ignored
	}
	b, _ := v.StringBytes()
	return b
}

// intValue reads a count; fractions are truncated, out-of-range and
// negative values are ignored.
func intValue(v *fastjson.Value) (int, bool) {
	v = scalar(v)
	if v == nil || v.Type() != fastjson.TypeNumber {
		return 0, false
	}
	if n, err := v.Int(); err == nil {
		if n < 0 {
			return 0, false
		}
		return n, true
	}
	fv, err := v.Float64()
	if err != nil || fv < 0 || fv > 1<<31 {
		return 0, false
	}
	return int(fv), true
}

// errorValue reads Triton's error string; an object (not Triton's shape)
// gives its "message", anything else its JSON text.
func errorValue(v *fastjson.Value) []byte {
	switch v.Type() {
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		return b
	case fastjson.TypeObject:
		if m := v.Get("message"); m != nil && m.Type() == fastjson.TypeString {
			b, _ := m.StringBytes()
			return b
		}
	}
	return v.MarshalTo(nil)
}

// shrink drops a parser buffer grown by an unusually large frame.
func (d *decoder) shrink() {
	// fastjson keeps its input copy; a fresh parser releases a large one.
	// The cost is one allocation on the next stream, only after such a frame.
	if d.large {
		d.p = fastjson.Parser{}
		d.large = false
	}
}
