package triton

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/fake/internal/slots"
)

// Triton's routes, bodies and messages (server @e1db8a6 http_server.cc,
// vllm_backend @8de0c14 src/model.py and src/utils/request.py).

const (
	ctypeJSON = "application/json"
	ctypeSSE  = "text/event-stream; charset=utf-8"
	maxBody   = 64 << 20

	// msgEngineDead is vLLM's EngineDeadError text, which the vLLM backend
	// wraps in "Error generating stream: …".
	msgEngineDead = "EngineCore encountered an issue. See stack trace (above) for the root cause."
	// msgQueueFull is Triton's UNAVAILABLE answer when a model's queue
	// policy rejects a request: its overload answer (there is no 429).
	msgQueueFull = "Exceeds maximum queue size"
	// msgGenerateOne is Triton's error when /generate gets more than one
	// response from a decoupled model.
	msgGenerateOne = "generate expects model to produce exactly 1 response, use generate stream for model that generates various number of responses"
	// malformedEvent is the event the malformed fault sends: cut JSON.
	malformedEvent = "data: {\"model_name\":\"vllm_model\",\"model_version\":\"1\",\"text_output\":\n\n"
	// errPrefix is the vLLM backend's prefix for an exception in a request.
	errPrefix = "Error generating stream: "
)

// serverExtensions are the extensions GET /v2 lists (Triton 2.5x and
// later, HTTP endpoint).
var serverExtensions = []string{"classification", "sequence", "model_repository",
	"model_repository(unload_dependents)", "schedule_policy", "model_configuration",
	"system_shared_memory", "cuda_shared_memory", "binary_tensor_data", "parameters",
	"statistics", "trace", "logging"}

// serveHTTP routes one request as Triton's HTTP frontend does.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	switch path {
	case "/v2/health/live":
		if !method(w, r, http.MethodGet) {
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	case "/v2/health/ready":
		if !method(w, r, http.MethodGet) {
			return
		}
		if s.loading() {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	case "/v2", "/v2/":
		if !method(w, r, http.MethodGet) {
			return
		}
		writeJSON(w, http.StatusOK, s.serverMetadata())
		return
	case "/metrics":
		if !method(w, r, http.MethodGet) {
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(s.metrics())
		return
	}
	rest, ok := strings.CutPrefix(path, "/v2/models/")
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	parts := strings.Split(rest, "/")
	model, version, action := parts[0], "", ""
	switch {
	case len(parts) == 1:
	case len(parts) == 2:
		action = parts[1]
	case len(parts) >= 3 && parts[1] == "versions":
		version = parts[2]
		if len(parts) == 4 {
			action = parts[3]
		} else if len(parts) > 4 {
			writeError(w, http.StatusNotFound, "Not Found")
			return
		}
	default:
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	switch action {
	case "generate", "generate_stream":
		if !method(w, r, http.MethodPost) {
			return
		}
		s.requests.Add(1)
		if !s.knownModel(w, model, version) {
			return
		}
		s.generate(w, r, action == "generate_stream")
	case "ready":
		if !method(w, r, http.MethodGet) {
			return
		}
		if model != s.o.Model || (version != "" && version != ModelVersion) {
			writeError(w, http.StatusBadRequest, unknownModel(model, version, "is not found"))
			return
		}
		if s.loading() {
			writeError(w, http.StatusBadRequest, "Model version not ready")
			return
		}
		w.WriteHeader(http.StatusOK)
	case "":
		if !method(w, r, http.MethodGet) {
			return
		}
		if !s.knownModel(w, model, version) {
			return
		}
		writeJSON(w, http.StatusOK, s.modelMetadata())
	default:
		writeError(w, http.StatusNotFound, "Not Found")
	}
}

// knownModel answers 404 for another model or version, and for this model
// while it loads (Triton has no ready version of it yet).
func (s *Server) knownModel(w http.ResponseWriter, model, version string) bool {
	switch {
	case model != s.o.Model || (version != "" && version != ModelVersion):
		writeError(w, http.StatusNotFound, unknownModel(model, version, "is not found"))
	case s.loading():
		writeError(w, http.StatusNotFound, unknownModel(model, "", "has no available versions"))
	default:
		return true
	}
	return false
}

func unknownModel(model, version, what string) string {
	m := "Request for unknown model: '" + model + "'"
	if version != "" {
		m += " version " + version
	}
	return m + " " + what
}

func method(w http.ResponseWriter, r *http.Request, want string) bool {
	if r.Method == want {
		return true
	}
	writeError(w, http.StatusMethodNotAllowed, "Method Not Allowed")
	return false
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", ctypeJSON)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// errorJSON is Triton's error body, {"error":"<msg>"}.
func errorJSON(msg string) []byte {
	b := appendString([]byte(`{"error":`), msg)
	return append(b, '}')
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorJSON(msg))
}

func (s *Server) serverMetadata() []byte {
	b := []byte(`{"name":"triton","version":`)
	b = appendString(b, s.o.EngineVersion)
	b = append(b, `,"extensions":[`...)
	for i, e := range serverExtensions {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, e)
	}
	return append(b, "]}"...)
}

// modelMetadata is GET /v2/models/{m} for the vLLM backend's auto-completed
// config.
func (s *Server) modelMetadata() []byte {
	b := []byte(`{"name":`)
	b = appendString(b, s.o.Model)
	b = append(b, `,"versions":["1"],"platform":"vllm","inputs":[`...)
	b = append(b, `{"name":"text_input","datatype":"BYTES","shape":[1]},`...)
	b = append(b, `{"name":"image","datatype":"BYTES","shape":[-1]},`...)
	b = append(b, `{"name":"stream","datatype":"BOOL","shape":[1]},`...)
	b = append(b, `{"name":"sampling_parameters","datatype":"BYTES","shape":[1]},`...)
	b = append(b, `{"name":"exclude_input_in_output","datatype":"BOOL","shape":[1]},`...)
	b = append(b, `{"name":"return_finish_reason","datatype":"BOOL","shape":[1]},`...)
	b = append(b, `{"name":"return_cumulative_logprob","datatype":"BOOL","shape":[1]},`...)
	b = append(b, `{"name":"return_logprobs","datatype":"BOOL","shape":[1]},`...)
	b = append(b, `{"name":"return_num_input_tokens","datatype":"BOOL","shape":[1]},`...)
	b = append(b, `{"name":"return_num_output_tokens","datatype":"BOOL","shape":[1]}],"outputs":[`...)
	b = append(b, `{"name":"text_output","datatype":"BYTES","shape":[-1]},`...)
	b = append(b, `{"name":"finish_reason","datatype":"BYTES","shape":[-1]},`...)
	b = append(b, `{"name":"cumulative_logprob","datatype":"FP32","shape":[-1]},`...)
	b = append(b, `{"name":"logprobs","datatype":"BYTES","shape":[-1]},`...)
	b = append(b, `{"name":"num_input_tokens","datatype":"UINT32","shape":[1]},`...)
	return append(b, `{"name":"num_output_tokens","datatype":"UINT32","shape":[-1]}]}`...)
}

// genRequest is a parsed generate request.
type genRequest struct {
	id        string
	hasID     bool
	prompt    string
	stream    bool // the backend streams (input "stream")
	exclude   bool // exclude_input_in_output
	hasExcl   bool
	maxTokens int64
	seed      int64
	retFinish bool
	retIn     bool
	retOut    bool
}

// parseGenerate reads a generate body: text_input and the vLLM backend's
// BOOL inputs may be top-level or inside "parameters" (Triton makes either
// an input tensor when the model has an input of that name); max_tokens and
// seed are request parameters for vLLM's SamplingParams.
func parseGenerate(body []byte) (*genRequest, string) {
	var top map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&top); err != nil || top == nil {
		return nil, "failed to parse the request JSON buffer: The document is empty or not an object."
	}
	var params map[string]json.RawMessage
	if raw, ok := top["parameters"]; ok {
		if err := json.Unmarshal(raw, &params); err != nil || params == nil {
			return nil, "Expected JSON object for keyword: 'parameters'"
		}
	}
	get := func(k string) (json.RawMessage, bool) {
		if v, ok := top[k]; ok {
			return v, true
		}
		v, ok := params[k]
		return v, ok
	}
	req := &genRequest{maxTokens: DefaultMaxTokens}
	if raw, ok := top["id"]; ok {
		if err := json.Unmarshal(raw, &req.id); err != nil {
			return nil, "Expected string for keyword: 'id'"
		}
		req.hasID = true
	}
	raw, ok := get("text_input")
	if !ok {
		return nil, "expected number of inputs between 1 and 10 but got 0 inputs for model '" + DefaultModel + "'"
	}
	if err := json.Unmarshal(raw, &req.prompt); err != nil {
		var arr []string
		if err := json.Unmarshal(raw, &arr); err != nil || len(arr) != 1 {
			return nil, "Unable to parse 'text_input': expected a string"
		}
		req.prompt = arr[0]
	}
	for _, b := range []struct {
		key string
		dst *bool
		has *bool
	}{
		{"stream", &req.stream, nil},
		{"exclude_input_in_output", &req.exclude, &req.hasExcl},
		{"return_finish_reason", &req.retFinish, nil},
		{"return_num_input_tokens", &req.retIn, nil},
		{"return_num_output_tokens", &req.retOut, nil},
	} {
		raw, ok := get(b.key)
		if !ok {
			continue
		}
		if err := json.Unmarshal(raw, b.dst); err != nil {
			return nil, "Unable to parse '" + b.key + "': expected a boolean"
		}
		if b.has != nil {
			*b.has = true
		}
	}
	for _, n := range []struct {
		key string
		dst *int64
	}{{"max_tokens", &req.maxTokens}, {"seed", &req.seed}} {
		raw, ok := get(n.key)
		if !ok {
			continue
		}
		var num json.Number
		if err := json.Unmarshal(raw, &num); err != nil {
			return nil, "Unable to parse '" + n.key + "': expected a number"
		}
		if v, err := num.Int64(); err == nil {
			*n.dst = v
		} else if u, err := strconv.ParseUint(string(num), 10, 64); err == nil {
			*n.dst = int64(u)
		} else {
			return nil, "Unable to parse '" + n.key + "': expected an integer"
		}
	}
	return req, ""
}

// task is one generate request.
type task struct {
	s   *Server
	w   http.ResponseWriter
	rc  *http.ResponseController
	r   *http.Request
	req *genRequest
	sse bool // the route is generate_stream

	nPrompt int
	nText   int
	eos     bool
	gen     fake.Generator
	pause   slots.Pause
	buf     []byte
	wrote   bool // the status was sent
	tokens  int  // tokens generated (KV held)
}

func (s *Server) generate(w http.ResponseWriter, r *http.Request, sse bool) {
	switch s.o.Fail {
	case fake.FailStart503, fake.FailStart429:
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, maxBody))
		s.count(false)
		writeError(w, http.StatusServiceUnavailable, msgQueueFull)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return
	}
	if len(body) > maxBody {
		writeError(w, http.StatusBadRequest, "request body exceeds the fake's 64 MiB limit")
		return
	}
	req, msg := parseGenerate(body)
	if req == nil {
		s.count(false)
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	t := &task{s: s, w: w, rc: http.NewResponseController(w), r: r, req: req, sse: sse}
	t.nPrompt = fake.CountTokens(req.prompt)
	// Errors raised by the vLLM backend before the first token: the first
	// response is the error, so it brings status 500.
	switch {
	case s.o.Fail == fake.FailStart500:
		t.firstError(errPrefix + msgEngineDead)
		return
	case req.stream && req.hasExcl && !req.exclude:
		t.firstError(errPrefix + "When streaming, `exclude_input_in_output` = False is not allowed.")
		return
	case req.maxTokens < 1:
		t.firstError(errPrefix + "max_tokens must be at least 1, got " + strconv.FormatInt(req.maxTokens, 10) + ".")
		return
	case t.nPrompt > s.o.Ctx:
		t.firstError(errPrefix + "The decoder prompt (length " + strconv.Itoa(t.nPrompt) +
			") is longer than the maximum model length of " + strconv.Itoa(s.o.Ctx) +
			". Make sure that `max_model_len` is no smaller than the number of text tokens.")
		return
	}
	queued := time.Now()
	if err := s.acquire(r.Context()); err != nil {
		s.count(false)
		return
	}
	s.mu.Lock()
	s.sched.kvTokens += t.nPrompt
	s.sched.counters.queueDurationUs += time.Since(queued).Microseconds()
	s.mu.Unlock()
	start := time.Now()
	ok := false
	defer func() {
		s.mu.Lock()
		s.sched.kvTokens -= t.nPrompt + t.tokens
		c := &s.sched.counters
		c.promptTokens += int64(t.nPrompt)
		c.generationTokens += int64(t.tokens)
		c.requestDurationUs += time.Since(start).Microseconds()
		s.sched.slots.Release()
		s.mu.Unlock()
		s.count(ok)
	}()
	t.plan()
	if s.log.Core().Enabled(zap.DebugLevel) {
		s.log.Debug("fake triton request", zap.Int("n_prompt", t.nPrompt), zap.Int("n_text", t.nText),
			zap.Bool("eos", t.eos), zap.Bool("stream", req.stream), zap.Bool("sse", sse), zap.String("fail", s.o.Fail))
	}
	ok = t.run()
}

// count records a finished request for the nv_inference_request_* counters.
func (s *Server) count(ok bool) {
	s.mu.Lock()
	if c := &s.sched.counters; ok {
		c.success++
		c.inferenceCount++
	} else {
		c.failure++
	}
	s.mu.Unlock()
}

// plan decides how many text tokens the request gets and whether the
// model's EOS ends it: max_tokens, bounded by the context (vLLM generates
// at least one token once a prompt is accepted), capped by Options.Tokens.
func (t *task) plan() {
	o := &t.s.o
	n := int(min(t.req.maxTokens, int64(o.Ctx-t.nPrompt)))
	t.nText, t.eos = o.TextTokens(max(n, 1), false)
	t.gen = fake.NewGenerator(t.req.seed, t.req.prompt, o.Fail == fake.FailSplitUTF8)
}

// firstError answers an error that is the request's first response: its
// status (500, INTERNAL, for vLLM backend errors) and, on the stream route,
// an SSE body of one error event.
func (t *task) firstError(msg string) {
	t.s.count(false)
	t.writeFirstError(msg)
}

func (t *task) writeFirstError(msg string) {
	if !t.sse {
		writeError(t.w, http.StatusInternalServerError, msg)
		return
	}
	t.w.Header().Set("Content-Type", ctypeSSE)
	t.w.WriteHeader(http.StatusInternalServerError)
	b := append([]byte("data: "), errorJSON(msg)...)
	_, _ = t.w.Write(append(b, "\n\n"...))
}

// wait sleeps d unless the client goes or the server closes.
func (t *task) wait(d time.Duration) bool {
	return t.pause.Sleep(d, t.r.Context().Done(), t.s.run.Done())
}

// step is one vLLM output: the text delta and whether the request
// finished with it.
type step struct {
	text     string
	finished bool
	reason   string
}

// run generates the request's outputs and answers them as the route says.
// It reports whether the request succeeded.
func (t *task) run() bool {
	s := t.s
	total := t.nText
	if t.eos {
		total++ // the EOS token: counted, never detokenized
	}
	reason := "length"
	if t.eos {
		reason = "stop"
	}
	faultAt := fake.FaultAt(s.o.Fail)
	// Triton streams only a streaming backend on the stream route; anything
	// else is answered once, at the end.
	streaming := t.req.stream && t.sse
	if !t.wait(s.o.TTFT) {
		return false
	}
	var detok fake.Detokenizer // holds a character not complete yet
	var whole []byte           // the text of a non-streaming backend
	for pos := 0; pos < total; pos++ {
		if pos > 0 && !t.wait(s.o.ITL) {
			return false
		}
		piece := "" // the EOS token has no text
		if pos < t.nText {
			piece, _ = t.gen.Token(pos)
		}
		t.s.mu.Lock()
		t.s.sched.kvTokens++
		t.s.mu.Unlock()
		t.tokens++
		st := step{reason: "None"}
		if text, ok := detok.Add(piece); ok {
			st.text = string(text)
		}
		last := pos == total-1
		faulting := faultAt >= 0 && (pos+1 == faultAt || last)
		if last && !faulting {
			st.finished, st.reason = true, reason
		}
		if !streaming {
			whole = append(whole, st.text...)
			switch {
			case faulting:
				return t.wholeFault()
			case !last:
				continue
			case t.req.stream && total > 1:
				// /generate of a streaming backend: Triton answers the
				// first response's status, then its error.
				writeError(t.w, http.StatusOK, msgGenerateOne)
				return false
			case t.req.stream:
				return t.answerWhole(st.text, 1, reason)
			}
			return t.answerWhole(string(whole), total, reason)
		}
		t.buf = t.appendFrame(append(t.buf[:0], "data: "...), st, 1)
		t.buf = append(t.buf, "\n\n"...)
		if !t.send(t.buf) {
			return false
		}
		if faulting {
			return t.streamFault()
		}
	}
	return true
}

// send writes one SSE event (with the header, the first time) and flushes.
func (t *task) send(b []byte) bool {
	if !t.wrote {
		t.w.Header().Set("Content-Type", ctypeSSE)
		t.w.WriteHeader(http.StatusOK)
		t.wrote = true
	}
	if _, err := t.w.Write(b); err != nil {
		return false
	}
	return t.rc.Flush() == nil
}

// appendFrame appends one response's JSON: keys sorted, optional outputs
// only when asked for.
func (t *task) appendFrame(b []byte, st step, numOut int) []byte {
	b = append(b, '{')
	if t.req.retFinish {
		b = append(b, `"finish_reason":`...)
		b = appendString(b, st.reason)
		b = append(b, ',')
	}
	if t.req.hasID {
		b = append(b, `"id":`...)
		b = appendString(b, t.req.id)
		b = append(b, ',')
	}
	b = append(b, `"model_name":`...)
	b = appendString(b, t.s.o.Model)
	b = append(b, `,"model_version":"`+ModelVersion+`"`...)
	if t.req.retIn {
		b = append(b, `,"num_input_tokens":`...)
		b = strconv.AppendInt(b, int64(t.nPrompt), 10)
	}
	if t.req.retOut {
		b = append(b, `,"num_output_tokens":`...)
		b = strconv.AppendInt(b, int64(numOut), 10)
	}
	b = append(b, `,"text_output":`...)
	b = appendString(b, st.text)
	return append(b, '}')
}

// answerWhole answers the one response of a non-streaming request; the
// vLLM backend prepends the prompt unless exclude_input_in_output is true.
func (t *task) answerWhole(text string, numOut int, reason string) bool {
	st := step{text: text, finished: true, reason: reason}
	if !t.req.stream && !(t.req.hasExcl && t.req.exclude) {
		st.text = t.req.prompt + st.text
	}
	b := t.appendFrame(nil, st, numOut)
	if t.sse {
		t.send(append(append([]byte("data: "), b...), "\n\n"...))
		return true
	}
	writeJSON(t.w, http.StatusOK, b)
	return true
}

// streamFault ends a stream the way Options.Fail says.
func (t *task) streamFault() bool {
	switch t.s.o.Fail {
	case fake.FailMidstreamDisconnect:
		// No last chunk: net/http closes the connection as it is.
		panic(http.ErrAbortHandler)
	case fake.FailStall:
		slots.Hold(t.r.Context().Done(), t.s.run.Done())
		return false
	case fake.FailMalformed:
		t.send([]byte(malformedEvent))
		return false
	case fake.FailMidstreamError:
		b := append([]byte("data: "), errorJSON(errPrefix+msgEngineDead)...)
		t.send(append(b, "\n\n"...))
		return false
	}
	panic("BUG: streamFault without a mid-stream fault mode")
}

// wholeFault is a mid-stream fault of a non-streaming request.
func (t *task) wholeFault() bool {
	switch t.s.o.Fail {
	case fake.FailMidstreamDisconnect:
		panic(http.ErrAbortHandler)
	case fake.FailStall:
		slots.Hold(t.r.Context().Done(), t.s.run.Done())
	case fake.FailMalformed:
		if t.sse {
			t.send([]byte(malformedEvent))
		} else {
			writeJSON(t.w, http.StatusOK, []byte(`{"model_name":"vllm_model","model_version":"1","text_output":`))
		}
	case fake.FailMidstreamError:
		t.writeFirstError(errPrefix + msgEngineDead)
	default:
		panic("BUG: wholeFault without a mid-stream fault mode")
	}
	return false
}
