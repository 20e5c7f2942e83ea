package tgi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/llama-orch/llama-orch/engines/fake"
)

// TGI's limits and fixed answers.
const (
	// payloadLimit is the router's --payload-limit default (axum
	// DefaultBodyLimit).
	payloadLimit = 2_000_000
	// defaultGenerationLength caps max_new_tokens when a request gives none
	// (validation.rs DEFAULT_GENERATION_LENGTH).
	defaultGenerationLength = 1024
	maxStopSequences        = 4
	// computeType is the router's COMPUTE_TYPE default (x-compute-type).
	computeType = "gpu+optimized"

	msgOverloaded = "Model is overloaded"
	// Generation errors are the shard's exception behind "Server error:".
	msgStartFault  = "Request failed during generation: Server error: CUDA error: an illegal memory access was encountered (orch-fake-engine fault start-500)"
	msgUnhealthy   = "Request failed during generation: Server error: transport error (orch-fake-engine fault start-503: the shard failed its health check)"
	msgMidstream   = "Request failed during generation: Server error: CUDA error: an illegal memory access was encountered (orch-fake-engine fault midstream-error)"
	validationPref = "Input validation error: "
)

var bodyUnhealthy = []byte(`{"error":"unhealthy","error_type":"healthcheck"}`)

// serveHTTP routes one request like TGI's axum router.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	method := http.MethodGet
	switch r.URL.Path {
	case "/generate_stream", "/generate", "/":
		method = http.MethodPost
	case "/health", "/ping", "/info", "/metrics", "/v1/models":
	default:
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
		w.Header().Set("Allow", method)
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	switch r.URL.Path {
	case "/generate_stream", "/generate", "/":
		s.requests.Add(1)
		req, ok := readRequest(w, r)
		if !ok {
			return
		}
		stream := r.URL.Path == "/generate_stream" || (r.URL.Path == "/" && req.Stream)
		if stream {
			s.generateStream(w, r, req)
		} else {
			s.generate(w, r, req, r.URL.Path == "/")
		}
	case "/health", "/ping":
		if s.o.Fail == fake.FailStart503 {
			writeJSON(w, http.StatusServiceUnavailable, bodyUnhealthy)
			return
		}
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
	case "/info":
		writeJSON(w, http.StatusOK, s.info())
	case "/v1/models":
		writeJSON(w, http.StatusOK, s.models())
	case "/metrics":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(s.metrics())
	}
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(msg)))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg)
}

// genRequest is TGI's GenerateRequest (CompatGenerateRequest on POST /).
type genRequest struct {
	Inputs     *string   `json:"inputs"`
	Parameters genParams `json:"parameters"`
	Stream     bool      `json:"stream"`
}

// genParams holds the GenerateParameters the fake reads; serde ignores the
// others, and so does the fake (best_of > 1 on /generate included).
type genParams struct {
	BestOf              *uint64  `json:"best_of"`
	Temperature         *float32 `json:"temperature"`
	TopK                *int32   `json:"top_k"`
	TopP                *float32 `json:"top_p"`
	TypicalP            *float32 `json:"typical_p"`
	DoSample            bool     `json:"do_sample"`
	MaxNewTokens        *uint32  `json:"max_new_tokens"`
	ReturnFullText      *bool    `json:"return_full_text"`
	Stop                []string `json:"stop"`
	Seed                *uint64  `json:"seed"`
	Details             bool     `json:"details"`
	DecoderInputDetails bool     `json:"decoder_input_details"`
}

// readRequest reads the body as axum's Json extractor does, answering its
// text/plain rejections itself.
func readRequest(w http.ResponseWriter, r *http.Request) (*genRequest, bool) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || !(mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))) {
		writeText(w, http.StatusUnsupportedMediaType, "Expected request with `Content-Type: application/json`")
		return nil, false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, payloadLimit+1))
	if err != nil {
		return nil, false
	}
	if len(body) > payloadLimit {
		writeText(w, http.StatusRequestEntityTooLarge, "Failed to buffer the request body: length limit exceeded")
		return nil, false
	}
	req := &genRequest{}
	if err := json.Unmarshal(body, req); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			writeText(w, http.StatusUnprocessableEntity, "Failed to deserialize the JSON body into the target type: "+
				te.Field+": invalid type: "+te.Value+", expected "+rustType(te.Type.String())+" at line 1 column "+strconv.FormatInt(te.Offset, 10))
			return nil, false
		}
		writeText(w, http.StatusBadRequest, "Failed to parse the request body as JSON: "+strings.TrimPrefix(err.Error(), "json: "))
		return nil, false
	}
	if req.Inputs == nil {
		writeText(w, http.StatusUnprocessableEntity, "Failed to deserialize the JSON body into the target type: missing field `inputs` at line 1 column "+strconv.Itoa(len(bytes.TrimRight(body, " \t\r\n"))))
		return nil, false
	}
	return req, true
}

// rustType names a Go field type as serde's message would.
func rustType(goType string) string {
	switch strings.TrimPrefix(goType, "*") {
	case "uint64":
		return "u64"
	case "uint32":
		return "u32"
	case "int32":
		return "i32"
	case "float32":
		return "f32"
	case "bool":
		return "a boolean"
	case "string":
		return "a string"
	case "[]string":
		return "a sequence"
	}
	return goType
}

// plan is a validated request.
type plan struct {
	inputs   string
	inputLen int
	maxNew   int
	nText    int  // text tokens before the end
	eos      bool // the model ends with EOS after nText tokens (Options.Tokens)
	stop     []string
	fullText bool
	details  bool
	// sampling: the seed is echoed in details (null for greedy decoding).
	sampling bool
	seed     uint64
	textSeed int64
}

// validate checks p as TGI's Validation::validate does, in its order, and
// returns the message after "Input validation error: ".
func (s *Server) validate(req *genRequest) (*plan, string) {
	p := &req.Parameters
	sampling := p.DoSample || p.Temperature != nil || p.TopK != nil || p.TopP != nil || p.TypicalP != nil
	if p.BestOf != nil && *p.BestOf > 1 && !sampling {
		return nil, "you must use sampling when `best_of` is > 1"
	}
	if p.Temperature != nil && *p.Temperature <= 0 {
		return nil, "`temperature` must be strictly positive"
	}
	if p.TopP != nil && (*p.TopP <= 0 || *p.TopP >= 1) {
		return nil, "`top_p` must be > 0.0 and < 1.0"
	}
	if p.TypicalP != nil && (*p.TypicalP <= 0 || *p.TypicalP >= 1) {
		return nil, "`typical_p` must be > 0.0 and < 1.0"
	}
	if p.TopK != nil && *p.TopK <= 0 {
		return nil, "`top_k` must be strictly positive"
	}
	if p.MaxNewTokens != nil && *p.MaxNewTokens == 0 {
		return nil, "`max_new_tokens` must be strictly positive"
	}
	if len(p.Stop) > maxStopSequences {
		return nil, "`stop` supports up to " + strconv.Itoa(maxStopSequences) + " stop sequences. Given: " + strconv.Itoa(len(p.Stop))
	}
	if p.Seed != nil && p.BestOf != nil && *p.BestOf > 1 {
		return nil, "`seed` must not be set when `best_of` > 1"
	}
	inputs := *req.Inputs
	if inputs == "" {
		return nil, "`inputs` cannot be empty"
	}
	pl := &plan{inputs: inputs, inputLen: fake.CountTokens(inputs), stop: p.Stop, details: p.Details,
		fullText: p.ReturnFullText != nil && *p.ReturnFullText, sampling: sampling, textSeed: math.MaxUint32, seed: math.MaxUint32}
	if p.Seed != nil {
		// The text seed is the u64 read back as i64: the adapter sends a
		// negative gateway seed as its two's complement, so every engine's
		// fake sees the same value.
		pl.seed, pl.textSeed = *p.Seed, int64(*p.Seed)
	}
	if p.MaxNewTokens != nil {
		pl.maxNew = int(*p.MaxNewTokens)
	} else {
		pl.maxNew = min(max(s.o.Ctx-pl.inputLen, 0), defaultGenerationLength)
	}
	if pl.inputLen+pl.maxNew > s.o.Ctx {
		return nil, "`inputs` tokens + `max_new_tokens` must be <= " + strconv.Itoa(s.o.Ctx) + ". Given: " +
			strconv.Itoa(pl.inputLen) + " `inputs` tokens and " + strconv.Itoa(pl.maxNew) + " `max_new_tokens`"
	}
	if pl.inputLen > s.o.Ctx-1 {
		return nil, "`inputs` must have less than " + strconv.Itoa(s.o.Ctx-1) + " tokens. Given: " + strconv.Itoa(pl.inputLen)
	}
	pl.nText = pl.maxNew
	if c := s.o.Tokens; c > 0 && c < pl.maxNew {
		pl.nText, pl.eos = c, true
	}
	return pl, ""
}

// generation produces one request's tokens.
type generation struct {
	pl    *plan
	gen   fake.Generator
	detok fake.Detokenizer // holds a character not complete yet
	out   []byte           // generated text so far (special tokens left out)
	tok   token
	start time.Time // when the request got its batch slot
}

func newGeneration(pl *plan, splitUTF8 bool) *generation {
	return &generation{pl: pl, gen: fake.NewGenerator(pl.textSeed, pl.inputs, splitUTF8)}
}

// next returns the token at pos and, when it is the last one, why the
// generation ends ("" otherwise). The token is valid until the next call.
func (g *generation) next(pos int) (*token, string) {
	t := &g.tok
	if pos >= g.pl.nText {
		*t = token{id: eosID, text: append(t.text[:0], eosText...), logprob: logprob(eosID, pos), special: true}
		return t, "eos_token"
	}
	piece, id := g.gen.Token(pos)
	g.out = append(g.out, piece...)
	// TGI's incremental detokenizer sends "" while the text ends inside a
	// character, then the whole character with the token completing it.
	t.text = t.text[:0]
	if text, ok := g.detok.Add(piece); ok {
		t.text = append(t.text, text...)
	}
	t.id, t.logprob, t.special = id, logprob(id, pos), false
	for _, stop := range g.pl.stop {
		if stop != "" && bytes.HasSuffix(g.out, []byte(stop)) {
			return t, "stop_sequence"
		}
	}
	if pos == g.pl.nText-1 && !g.pl.eos {
		return t, "length"
	}
	return t, ""
}

// generatedText is the final text: the prompt first with return_full_text.
func (g *generation) generatedText() []byte {
	if g.pl.fullText {
		return append([]byte(g.pl.inputs), g.out...)
	}
	return g.out
}

func (g *generation) details(reason string, tokens int) *streamDetails {
	return &streamDetails{finishReason: reason, generatedTokens: tokens, seed: g.pl.seed, hasSeed: g.pl.sampling, inputLength: g.pl.inputLen}
}

// pacer waits for the generation's pace, the queue or the client leaving;
// for streams it writes the SSE events and axum's keep-alive comments.
type pacer struct {
	s     *Server
	ctx   context.Context
	w     http.ResponseWriter
	fl    http.Flusher
	sse   bool
	buf   []byte
	last  time.Time // last event written
	timer *time.Timer
}

func (s *Server) newPacer(w http.ResponseWriter, r *http.Request, sse bool) *pacer {
	p := &pacer{s: s, ctx: r.Context(), w: w, sse: sse, last: time.Now()}
	p.fl, _ = w.(http.Flusher)
	return p
}

func (p *pacer) stop() {
	if p.timer != nil {
		p.timer.Stop()
	}
}

// wait returns true after d (d < 0: never) or when ch delivers, false when
// the client left or the server closed.
func (p *pacer) wait(d time.Duration, ch <-chan int) bool {
	var deadline time.Time
	if d >= 0 {
		deadline = time.Now().Add(d)
	}
	for {
		now := time.Now()
		if d >= 0 && !now.Before(deadline) {
			select {
			case <-p.ctx.Done():
				return false
			case <-p.s.run.Done():
				return false
			default:
				return true
			}
		}
		var next time.Duration = math.MaxInt64
		if d >= 0 {
			next = deadline.Sub(now)
		}
		if p.sse {
			ka := p.last.Add(p.s.keepAlive)
			if !now.Before(ka) {
				if !p.write([]byte(":\n\n")) {
					return false
				}
				continue
			}
			next = min(next, ka.Sub(now))
		}
		var tc <-chan time.Time
		if next != math.MaxInt64 {
			if p.timer == nil {
				p.timer = time.NewTimer(next)
			} else {
				p.timer.Reset(next)
			}
			tc = p.timer.C
		}
		select {
		case <-ch:
			p.stop()
			return true
		case <-tc:
		case <-p.ctx.Done():
			p.stop()
			return false
		case <-p.s.run.Done():
			p.stop()
			return false
		}
	}
}

// write sends b as one chunk.
func (p *pacer) write(b []byte) bool {
	if _, err := p.w.Write(b); err != nil {
		return false
	}
	if p.fl != nil {
		p.fl.Flush()
	}
	p.last = time.Now()
	return p.ctx.Err() == nil
}

// event sends `data: <json>\n\n`.
func (p *pacer) event(data []byte) bool {
	p.buf = append(append(append(p.buf[:0], "data: "...), data...), "\n\n"...)
	return p.write(p.buf)
}

func (p *pacer) errorEvent(msg, typ string) bool {
	return p.event(appendErrorResponse(nil, msg, typ))
}

// generateStream serves POST /generate_stream (and / with stream:true):
// the 200 head goes out at once, every outcome is a frame.
func (s *Server) generateStream(w http.ResponseWriter, r *http.Request, req *genRequest) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Compute-Type", computeType)
	h.Set("X-Compute-Characters", strconv.Itoa(utf8.RuneCountInString(*req.Inputs)))
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	p := s.newPacer(w, r, true)
	defer p.stop()
	if !p.write(nil) {
		return
	}
	s.mu.Lock()
	s.sched.requestCount++
	s.mu.Unlock()
	switch s.o.Fail {
	case fake.FailStart429:
		s.count(failOverloaded)
		p.errorEvent(msgOverloaded, "overloaded")
		return
	case fake.FailStart500:
		s.count(failGeneration)
		p.errorEvent(msgStartFault, "generation")
		return
	case fake.FailStart503:
		s.count(failGeneration)
		p.errorEvent(msgUnhealthy, "generation")
		return
	}
	prm := &req.Parameters
	if prm.BestOf != nil && *prm.BestOf != 1 {
		s.count(failValidation)
		p.errorEvent(validationPref+"`best_of` != 1 is not supported when streaming tokens", "validation")
		return
	}
	if prm.DecoderInputDetails {
		s.count(failValidation)
		p.errorEvent(validationPref+"`decoder_input_details` == true is not supported when streaming tokens", "validation")
		return
	}
	if !s.admit() {
		p.errorEvent(msgOverloaded, "overloaded")
		return
	}
	defer s.unadmit()
	pl, verr := s.validate(req)
	if verr != "" {
		s.count(failValidation)
		p.errorEvent(validationPref+verr, "validation")
		return
	}
	queued := time.Now()
	g, release, ok := s.startGeneration(p, pl)
	if !ok {
		return
	}
	defer release()
	faultAt := fake.FaultAt(s.o.Fail)
	var js []byte
	for pos := 0; ; pos++ {
		if pos > 0 && !p.wait(s.o.ITL, nil) {
			s.count(failDropped)
			return
		}
		if pos == faultAt {
			s.streamFault(p, pos, release)
			return
		}
		t, reason := g.next(pos)
		if reason == "" || faultAt >= 0 {
			// An intermediate frame; with a fault pending, the stream ends
			// before its final frame even when the tokens run out.
			js = appendStreamResponse(js[:0], pos+1, t, nil, false, nil)
			if !p.event(js) {
				s.count(failDropped)
				return
			}
			if reason != "" {
				s.streamFault(p, pos+1, release)
				return
			}
			continue
		}
		var d *streamDetails
		if pl.details {
			d = g.details(reason, pos+1)
		}
		js = appendStreamResponse(js[:0], pos+1, t, g.generatedText(), true, d)
		// The batch slot is free before the client reads the end, as TGI
		// filters the finished request out of the batch in that step.
		release()
		s.succeeded(queued, g.start, time.Now(), pos+1)
		p.event(js)
		return
	}
}

// startGeneration waits in the queue for a batch slot (a stream gets its
// keep-alives meanwhile), adds the request's token budget to the batch and
// waits the time to the first token. It returns the generation and the
// function that leaves the batch — the first call frees the slot, later
// ones do nothing — or false, the batch left, when the client left or the
// server closed first.
func (s *Server) startGeneration(p *pacer, pl *plan) (g *generation, release func(), ok bool) {
	if w := s.enqueue(); w != nil && !p.wait(-1, w.Ready()) {
		s.leave(w)
		s.count(failDropped)
		return nil, nil, false
	}
	g = newGeneration(pl, s.o.Fail == fake.FailSplitUTF8)
	g.start = time.Now()
	budget := pl.inputLen + pl.maxNew
	s.join(budget)
	held := true
	release = func() {
		if held {
			held = false
			s.free(budget)
		}
	}
	if !p.wait(s.o.TTFT, nil) {
		s.count(failDropped)
		release()
		return nil, nil, false
	}
	return g, release, true
}

// streamFault ends a stream after `tokens` frames the way Options.Fail says.
func (s *Server) streamFault(p *pacer, tokens int, release func()) {
	switch s.o.Fail {
	case fake.FailMidstreamDisconnect:
		release()
		panic(http.ErrAbortHandler) // no final frame, no last chunk
	case fake.FailStall:
		p.wait(-1, nil) // only keep-alives, until the client goes
		s.count(failDropped)
	case fake.FailMalformed:
		release()
		p.write([]byte(`data: {"index":` + strconv.Itoa(tokens+1) + `,"token":{"id":` + "\n\n"))
	case fake.FailMidstreamError:
		release()
		s.count(failGeneration)
		p.errorEvent(msgMidstream, "generation")
	}
}

// generate serves POST /generate (and / without stream, whose answer is a
// one-element array): errors carry TGI's statuses.
func (s *Server) generate(w http.ResponseWriter, r *http.Request, req *genRequest, compat bool) {
	s.mu.Lock()
	s.sched.requestCount++
	s.mu.Unlock()
	fail := func(status int, msg, typ string) {
		writeJSON(w, status, appendErrorResponse(nil, msg, typ))
	}
	switch s.o.Fail {
	case fake.FailStart429:
		s.count(failOverloaded)
		fail(http.StatusTooManyRequests, msgOverloaded, "overloaded")
		return
	case fake.FailStart500, fake.FailStart503:
		s.count(failGeneration)
		msg := msgStartFault
		if s.o.Fail == fake.FailStart503 {
			msg = msgUnhealthy
		}
		fail(http.StatusFailedDependency, msg, "generation")
		return
	}
	if !s.admit() {
		fail(http.StatusTooManyRequests, msgOverloaded, "overloaded")
		return
	}
	defer s.unadmit()
	pl, verr := s.validate(req)
	if verr != "" {
		s.count(failValidation)
		fail(http.StatusUnprocessableEntity, validationPref+verr, "validation")
		return
	}
	p := s.newPacer(w, r, false)
	defer p.stop()
	t0 := time.Now()
	g, release, ok := s.startGeneration(p, pl)
	if !ok {
		return
	}
	defer release()
	start := g.start
	faultAt := fake.FaultAt(s.o.Fail)
	var toks []token
	reason := ""
	for pos := 0; reason == ""; pos++ {
		if pos > 0 && !p.wait(s.o.ITL, nil) {
			s.count(failDropped)
			return
		}
		if pos == faultAt {
			break
		}
		var t *token
		t, reason = g.next(pos)
		toks = append(toks, token{id: t.id, text: append([]byte(nil), t.text...), logprob: t.logprob, special: t.special})
	}
	if s.o.Fail != fake.FailStall {
		release() // free before the client sees the end
	}
	switch s.o.Fail {
	case fake.FailMidstreamDisconnect:
		panic(http.ErrAbortHandler)
	case fake.FailStall:
		p.wait(-1, nil)
		s.count(failDropped)
		return
	case fake.FailMalformed:
		writeJSON(w, http.StatusOK, []byte(`{"generated_text":`))
		return
	case fake.FailMidstreamError:
		s.count(failGeneration)
		fail(http.StatusFailedDependency, msgMidstream, "generation")
		return
	}
	end := time.Now()
	n := len(toks)
	s.succeeded(t0, start, end, n)
	var d *streamDetails
	if pl.details {
		d = g.details(reason, n)
	}
	var body []byte
	if compat {
		body = append(body, '[')
	}
	body = appendGenerateResponse(body, g.generatedText(), d, toks)
	if compat {
		body = append(body, ']')
	}
	ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
	h := w.Header()
	h.Set("X-Compute-Type", computeType)
	h.Set("X-Compute-Time", strconv.FormatFloat(end.Sub(t0).Seconds(), 'f', -1, 64))
	h.Set("X-Compute-Characters", strconv.Itoa(utf8.RuneCountInString(pl.inputs)))
	h.Set("X-Total-Time", ms(end.Sub(t0)))
	h.Set("X-Validation-Time", "0")
	h.Set("X-Queue-Time", ms(start.Sub(t0)))
	h.Set("X-Inference-Time", ms(end.Sub(start)))
	h.Set("X-Time-Per-Token", ms(end.Sub(start)/time.Duration(max(n, 1))))
	h.Set("X-Prompt-Tokens", strconv.Itoa(pl.inputLen))
	h.Set("X-Generated-Tokens", strconv.Itoa(n))
	writeJSON(w, http.StatusOK, body)
}
