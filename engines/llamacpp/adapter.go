// Package llamacpp is the engine adapter for one llama.cpp `llama-server`
// replica (ENGINES.md §1): it streams POST /completion and turns its SSE
// frames into canonical token callbacks, probes /health and /props, and
// erases slots.
//
// It speaks HTTP/1.1 through its own small streaming client (client.go)
// rather than fasthttp's, because a relay must abort a request at any moment
// (the engine frees the slot when the connection closes) and must know when
// nothing more is buffered, to coalesce its writes (PERFORMANCE.md).
package llamacpp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/llama-orch/llama-orch/engines"
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
	defaultDialTimeout  = 2 * time.Second
	defaultMaxIdleConns = 64
	// callTimeout bounds Health, Props and EraseSlot when ctx has no
	// deadline.
	callTimeout = 5 * time.Second
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
	addr          string // host:port to dial
	host          string // Host header
	prefix        string // path prefix of the base URL, without trailing slash
	dialTimeout   time.Duration
	headerTimeout time.Duration
	dial          func(ctx context.Context, network, addr string) (net.Conn, error)
	pool          pool
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
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("llamacpp: invalid engine URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("llamacpp: engine URL %q: only http:// is supported", baseURL)
	}
	if u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("llamacpp: engine URL %q: want http://host:port[/path] without user, query or fragment", baseURL)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" {
		return nil, fmt.Errorf("llamacpp: engine URL %q: want http://host:port", baseURL)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return nil, fmt.Errorf("llamacpp: engine URL %q: invalid port %q", baseURL, port)
	}
	a := &Adapter{
		addr:          u.Host,
		host:          u.Host,
		prefix:        strings.TrimRight(u.EscapedPath(), "/"),
		dialTimeout:   o.DialTimeout,
		headerTimeout: o.HeaderTimeout,
		dial:          o.Dial,
	}
	if a.dialTimeout <= 0 {
		a.dialTimeout = defaultDialTimeout
	}
	a.pool.max = o.MaxIdleConns
	if a.pool.max == 0 {
		a.pool.max = defaultMaxIdleConns
	}
	if a.dial == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		a.dial = d.DialContext
	}
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
	a.pool.closeIdle()
	return nil
}

// streamState is the per-stream scratch, reused through a sync.Pool so that
// steady-state streaming allocates nothing per token.
type streamState struct {
	rd    *sse.Reader
	ev    sse.Frame
	fr    frame
	resp  response
	body  body
	src   source
	carry []byte // incomplete UTF-8 character held for the next frame
	text  []byte // carry + content
	fixed []byte // text with invalid UTF-8 replaced
	req   []byte
	jbody []byte
	// c and stop are the connection in use and its cancel hook, until
	// released; putState closes a connection left over by a panic (in a sink).
	c    *conn
	stop func() bool
}

func (a *Adapter) getState() *streamState { return a.states.Get().(*streamState) }

func (a *Adapter) putState(st *streamState) {
	if st.c != nil {
		st.stop()
		st.c.close()
		st.c, st.stop = nil, nil
	}
	st.src = source{}
	st.body = body{}
	st.rd.Reset(nil)
	st.ev.Reset()
	if cap(st.req) > maxKeptBuffer {
		st.req, st.jbody = nil, nil
	}
	a.states.Put(st)
}

// source is the io.Reader the SSE reader pulls from. Before a read that has
// to wait for the engine (the SSE reader holds no complete event and the
// body has nothing buffered), it flushes the sink: a burst of frames that
// arrived together is published once.
type source struct {
	body  *body
	sink  engines.Sink
	dirty bool // tokens delivered since the last Flush
	final bool // the final frame was seen: the caller publishes from here on
}

func (s *source) Read(p []byte) (int, error) {
	if s.dirty && !s.final && s.body.Buffered() == 0 {
		s.dirty = false
		s.sink.Flush()
	}
	return s.body.Read(p)
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
	st.req = a.appendRequest(st.req[:0], "POST", "/completion", st.jbody, true)
	c, stop, err := a.start(ctx, st.req, a.headerTimeout, &st.resp)
	if err != nil {
		return engines.Result{Slot: -1}, err
	}
	st.c, st.stop = c, stop
	st.body.reset(c, &st.resp)
	if st.resp.status/100 != 2 {
		data, rerr := readBody(&st.body, st.jbody[:0], maxErrorBody)
		st.jbody = data[:0]
		st.c = nil
		a.release(c, stop, rerr == nil && !st.resp.close, &st.resp)
		if ctx.Err() != nil {
			return engines.Result{Slot: -1}, ctx.Err()
		}
		return engines.Result{Slot: -1}, statusError(st.resp.status, data, &st.fr)
	}
	if st.resp.contentType && !st.resp.eventStream {
		st.c = nil
		a.release(c, stop, false, &st.resp)
		return engines.Result{Slot: -1}, &engines.Error{Kind: engines.KindProtocol, Status: st.resp.status,
			Message: "engine answered the stream request without text/event-stream"}
	}
	res, reusable, err := st.run(ctx, sink)
	st.c = nil
	a.release(c, stop, reusable && !st.resp.close, &st.resp)
	return res, err
}

// run reads frames until the final one.
func (st *streamState) run(ctx context.Context, sink engines.Sink) (engines.Result, bool, error) {
	st.src = source{body: &st.body, sink: sink}
	st.rd.Reset(&st.src)
	st.carry = st.carry[:0]
	tokens := 0
	for {
		if err := st.rd.Next(&st.ev); err != nil {
			var pe *protocolError
			switch {
			case errors.Is(err, sse.ErrFrameTooLarge):
				return st.fail(ctx, tokens, engines.KindProtocol, "engine event exceeds the size limit", err)
			case errors.As(err, &pe):
				return st.fail(ctx, tokens, engines.KindProtocol, "malformed chunked body from the engine", err)
			}
			return st.fail(ctx, tokens, engines.KindUpstream, "stream ended before the engine's final frame", err)
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
		if st.emit(sink, st.fr.content) {
			tokens++
			st.src.dirty = true
		}
		if st.fr.stop {
			if len(st.carry) > 0 {
				// A character that never completed: U+FFFD, as encoding/json.
				st.fixed = appendValidUTF8(st.fixed[:0], st.carry)
				st.carry = st.carry[:0]
				sink.Token(st.fixed)
			}
			res := result(&st.fr)
			st.src.final = true
			return res, st.drain(), nil
		}
	}
}

// fail builds the error that ends a stream: ctx.Err() when ctx ended (the
// read error is then the cancel hook closing the connection).
func (st *streamState) fail(ctx context.Context, tokens int, kind engines.ErrorKind, msg string, err error) (engines.Result, bool, error) {
	if ctx.Err() != nil {
		return engines.Result{Slot: -1}, false, ctx.Err()
	}
	return engines.Result{Slot: -1}, false, &engines.Error{Kind: kind, Message: msg, AfterFirstToken: tokens > 0, Err: err}
}

// emit delivers content (after any held-back bytes) as one token, holding
// back an incomplete trailing UTF-8 character. It reports whether a token
// was delivered.
func (st *streamState) emit(sink engines.Sink, content []byte) bool {
	text := content
	if len(st.carry) > 0 {
		st.text = append(append(st.text[:0], st.carry...), content...)
		st.carry = st.carry[:0]
		text = st.text
	}
	if n := incompleteTail(text); n > 0 {
		st.carry = append(st.carry, text[len(text)-n:]...)
		text = text[:len(text)-n]
	}
	if !utf8.Valid(text) {
		st.fixed = appendValidUTF8(st.fixed[:0], text)
		text = st.fixed
	}
	if len(text) == 0 {
		return false
	}
	sink.Token(text)
	return true
}

// drain reads the rest of the body after the final frame and reports whether
// it ended cleanly with nothing else in it (the connection is reusable).
func (st *streamState) drain() bool {
	var err error
	if st.body.finished() {
		err = st.rd.Next(&st.ev) // cannot block: the body is fully read
	} else {
		nc := st.body.c.nc
		_ = nc.SetReadDeadline(time.Now().Add(drainTimeout))
		err = st.rd.Next(&st.ev)
		_ = nc.SetReadDeadline(time.Time{})
	}
	return err == io.EOF && st.body.done
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

func (a *Adapter) appendRequest(dst []byte, method, path string, body []byte, stream bool) []byte {
	dst = append(dst, method...)
	dst = append(dst, ' ')
	dst = append(dst, a.prefix...)
	dst = append(dst, path...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, a.host...)
	dst = append(dst, "\r\nUser-Agent: orchd\r\n"...)
	if stream {
		dst = append(dst, "Accept: text/event-stream\r\n"...)
	}
	if body != nil {
		dst = append(dst, "Content-Type: application/json\r\nContent-Length: "...)
		dst = strconv.AppendInt(dst, int64(len(body)), 10)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "\r\n"...)
	return append(dst, body...)
}

// start sends req on a pooled or new connection and reads the response
// header. From here until release, canceling ctx closes the connection. A
// pooled connection that turns out dead (the write fails, or it ends before
// any response byte) is replaced by a new one, once.
func (a *Adapter) start(ctx context.Context, req []byte, headerTimeout time.Duration, resp *response) (*conn, func() bool, error) {
	for attempt := 0; ; attempt++ {
		var c *conn
		if attempt == 0 {
			c = a.pool.get(time.Now())
		}
		reused := c != nil
		if c == nil {
			dctx, cancel := context.WithTimeout(ctx, a.dialTimeout)
			nc, err := a.dial(dctx, "tcp", a.addr)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return nil, nil, ctx.Err()
				}
				return nil, nil, &engines.Error{Kind: engines.KindUnavailable, Message: "cannot connect to the engine", Err: err}
			}
			c = newConn(nc)
		}
		stop := context.AfterFunc(ctx, c.abort)
		if headerTimeout > 0 {
			_ = c.nc.SetReadDeadline(time.Now().Add(headerTimeout))
		}
		got := false
		_, err := c.nc.Write(req)
		wrote := err == nil
		if wrote {
			got, err = c.readResponse(resp)
		}
		if err == nil {
			if headerTimeout > 0 {
				_ = c.nc.SetReadDeadline(time.Time{})
			}
			return c, stop, nil
		}
		stop()
		c.close()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		var ne net.Error
		timeout := errors.As(err, &ne) && ne.Timeout()
		if reused && !got && !timeout {
			continue // the engine had closed the idle connection
		}
		var pe *protocolError
		switch {
		case errors.As(err, &pe):
			return nil, nil, &engines.Error{Kind: engines.KindProtocol, Message: "malformed response header from the engine", Err: err}
		case timeout:
			return nil, nil, &engines.Error{Kind: engines.KindUpstream, Message: "no response header within " + headerTimeout.String(), Err: err}
		case !wrote:
			return nil, nil, &engines.Error{Kind: engines.KindUpstream, Message: "cannot send the request to the engine", Err: err}
		}
		return nil, nil, &engines.Error{Kind: engines.KindUpstream, Message: "connection ended before the response header", Err: err}
	}
}

// release disarms the cancel hook and pools c if it is reusable, else closes
// it.
func (a *Adapter) release(c *conn, stop func() bool, reusable bool, resp *response) {
	if !stop() {
		c.close() // the cancel hook fired: c is being closed anyway
		return
	}
	if !reusable || c.buffered() != 0 || c.err != nil {
		c.close()
		return
	}
	idle := resp.keepAlive
	if idle <= 0 {
		idle = defaultIdleTimeout
	}
	if idle > time.Second {
		idle -= time.Second // margin: do not race the engine's own close
	} else {
		idle /= 2
	}
	c.idleUntil = time.Now().Add(idle)
	a.pool.put(c)
}

var errBodyTooLarge = errors.New("response body exceeds the size limit")

// readBody appends the whole body to dst, up to limit bytes.
func readBody(b *body, dst []byte, limit int) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			if len(dst) >= limit {
				return dst, errBodyTooLarge
			}
			dst = append(dst, make([]byte, max(512, len(dst)))...)[:len(dst)]
		}
		n, err := b.Read(dst[len(dst):min(cap(dst), limit)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
		if len(dst) >= limit && !b.finished() {
			return dst, errBodyTooLarge
		}
	}
}

// statusError maps a non-2xx answer (ENGINES.md §5) using the engine's
// {"error":{"code","message","type"}} body when there is one.
func statusError(status int, data []byte, f *frame) *engines.Error {
	msg, typ := "", ""
	if f.scan(data) == nil && f.hasError {
		msg, typ = string(f.errMessage), string(f.errType)
	}
	if msg == "" {
		msg = excerpt(bytes.TrimSpace(data))
	}
	if msg == "" {
		msg = "HTTP " + strconv.Itoa(status)
	}
	e := &engines.Error{Status: status, Message: msg}
	switch {
	case status == 503:
		e.Kind = engines.KindUnavailable
	case status == 429:
		e.Kind = engines.KindOverloaded
	case status == 400 && typ == "exceed_context_size_error":
		e.Kind = engines.KindContextLength
	case status >= 400 && status < 500:
		e.Kind = engines.KindInvalidRequest
	case status >= 500:
		e.Kind = engines.KindUpstream
	default:
		e.Kind = engines.KindProtocol
		e.Message = "unexpected HTTP status " + strconv.Itoa(status) + ": " + msg
	}
	return e
}

func errorMessage(f *frame, fallback string) string {
	if len(f.errMessage) > 0 {
		return string(appendValidUTF8(nil, f.errMessage))
	}
	return fallback
}

func legacyErrorMessage(data []byte, f *frame) string {
	if f.scan(data) == nil && f.hasError {
		return errorMessage(f, "engine reported an error")
	}
	if m := excerpt(bytes.TrimSpace(data)); m != "" {
		return m
	}
	return "engine reported an error"
}

// excerpt returns a printable prefix of b for error messages.
func excerpt(b []byte) string {
	const limit = 200
	cut := len(b) > limit
	if cut {
		b = b[:limit]
	}
	s := string(appendValidUTF8(nil, b))
	if cut {
		s += "…"
	}
	return s
}

// call makes one small request (probes, slot erase) and returns the status
// and body. It is bounded by callTimeout when ctx has no deadline.
func (a *Adapter) call(ctx context.Context, method, path string, reqBody []byte, limit int) (int, []byte, error) {
	parent := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, callTimeout)
		defer cancel()
	}
	var resp response
	c, stop, err := a.start(ctx, a.appendRequest(nil, method, path, reqBody, false), 0, &resp)
	if err == nil {
		var b body
		b.reset(c, &resp)
		var data []byte
		data, err = readBody(&b, nil, limit)
		a.release(c, stop, err == nil && !resp.close, &resp)
		if err == nil {
			return resp.status, data, nil
		}
		if errors.Is(err, errBodyTooLarge) {
			err = &engines.Error{Kind: engines.KindProtocol, Status: resp.status, Message: "engine response body too large", Err: err}
		} else if ctx.Err() == nil {
			err = &engines.Error{Kind: engines.KindUpstream, Status: resp.status, Message: "cannot read the engine's response", Err: err}
		}
	}
	if perr := parent.Err(); perr != nil {
		return 0, nil, perr
	}
	if ctx.Err() != nil {
		return 0, nil, &engines.Error{Kind: engines.KindUnavailable, Message: "no answer from the engine within " + callTimeout.String(), Err: ctx.Err()}
	}
	return 0, nil, err
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
// --metrics; otherwise 501, returned as an error).
func (a *Adapter) ScrapeLoad(ctx context.Context) (processing, deferred int, err error) {
	status, data, err := a.call(ctx, "GET", "/metrics", nil, maxMetricsBody)
	if err != nil {
		return 0, 0, err
	}
	if status != 200 {
		var f frame
		return 0, 0, statusError(status, data, &f)
	}
	found := 0
	for _, line := range bytes.Split(data, []byte("\n")) {
		name, value, ok := bytes.Cut(line, []byte(" "))
		if !ok || len(name) == 0 || name[0] == '#' {
			continue
		}
		v, perr := strconv.ParseFloat(string(bytes.TrimSpace(value)), 64)
		if perr != nil {
			continue
		}
		switch string(name) {
		case "llamacpp:requests_processing":
			processing, found = int(v), found+1
		case "llamacpp:requests_deferred":
			deferred, found = int(v), found+1
		}
	}
	if found < 2 {
		return 0, 0, &engines.Error{Kind: engines.KindProtocol, Status: status, Message: "/metrics lacks llamacpp:requests_processing/requests_deferred"}
	}
	return processing, deferred, nil
}
