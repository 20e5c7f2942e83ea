package fake

import (
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/llama-orch/llama-orch/engines/fake/internal/wire"
)

// llama.cpp `llama-server` routes and bodies, copied from the captures in
// fixtures/llamacpp (build b10470-34af94cd9): key order, spacing and number
// formats are the real server's.

// Error bodies. The HTTP middleware (loading, not found) orders keys
// message,type,code; handler errors order them code,message,type.
var (
	bodyLoading  = []byte(`{"error":{"message":"Loading model","type":"unavailable_error","code":503}}`)
	bodyNotFound = []byte(`{"error":{"message":"File Not Found","type":"not_found_error","code":404}}`)
	bodyHealthOK = []byte(`{"status":"ok"}`)
)

// Messages of injected and mid-stream faults.
const (
	msgStart500     = "Internal server error (orch-fake-engine fault start-500)"
	msgStart429     = "Too many requests (orch-fake-engine fault start-429)"
	msgContentOnly  = "The model produced output that does not match the expected Content-only format"
	malformedFrame  = "data: {\"index\":0,\"content\":\n\n"
	mediaMarker     = "<__media_QEfwXAn02FbjL5PawQZkqrtuUGamk80S__>"
	chatTemplate    = "{%- for message in messages -%}\n  {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' -}}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n  {{- '<|im_start|>assistant\n' -}}\n{%- endif -%}"
	slotsActionHint = "This server does not support slots action. Start it with `--slot-save-path`"
)

func errorBody(code int, msg, typ string) []byte {
	b := append([]byte(`{"error":{"code":`), strconv.Itoa(code)...)
	b = append(b, `,"message":`...)
	b = appendString(b, msg)
	b = append(b, `,"type":`...)
	b = appendString(b, typ)
	return append(b, "}}"...)
}

// route dispatches one request and reports whether the connection may
// serve another.
func (s *Server) route(cc *conn, r *request) bool {
	isCompletion := r.method == http.MethodPost && (r.path == "/completion" || r.path == "/completions")
	if isCompletion {
		s.requests.Add(1)
	}
	if r.method == http.MethodOptions {
		return cc.writeResponse(r, http.StatusOK,
			"Access-Control-Allow-Credentials: true\r\nAccess-Control-Allow-Methods: GET, POST\r\nAccess-Control-Allow-Headers: *\r\n",
			"text/plain", nil)
	}
	if s.loading() && r.path != "/" && r.path != "/index.html" {
		return cc.writeJSON(r, http.StatusServiceUnavailable, bodyLoading)
	}
	switch {
	case isCompletion:
		return s.completion(cc, r)
	case r.method == http.MethodGet && (r.path == "/health" || r.path == "/v1/health"):
		return cc.writeJSON(r, http.StatusOK, bodyHealthOK)
	case r.method == http.MethodGet && r.path == "/props":
		return cc.writeJSON(r, http.StatusOK, s.props())
	case r.method == http.MethodPost && r.path == "/props":
		return cc.writeJSON(r, http.StatusNotImplemented, errorBody(501,
			"This server does not support changing global properties. Start it with `--props`", "not_supported_error"))
	case r.method == http.MethodGet && r.path == "/slots":
		return s.getSlots(cc, r)
	case r.method == http.MethodPost && strings.HasPrefix(r.path, "/slots/"):
		return s.slotAction(cc, r)
	case r.method == http.MethodGet && r.path == "/metrics":
		return s.metrics(cc, r)
	case r.method == http.MethodGet && (r.path == "/models" || r.path == "/v1/models"):
		return cc.writeJSON(r, http.StatusOK, s.models())
	case r.method == http.MethodPost && r.path == "/tokenize":
		return s.tokenize(cc, r)
	}
	return cc.writeJSON(r, http.StatusNotFound, bodyNotFound)
}

// params are a task's sampling parameters as llama.cpp reports them.
type params struct {
	seed            uint32
	temperature     float32
	topK            int
	topP            float32
	minP            float32
	nPredict        int
	ignoreEOS       bool
	stream          bool
	stop            []string
	reasoningFormat string
}

func defaultParams() params {
	return params{seed: math.MaxUint32, temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05,
		nPredict: -1, reasoningFormat: "deepseek"}
}

// appendParams appends a task's parameters: full is the variant of the
// final frame's generation_settings; otherwise the shorter one of /slots
// and /props.
func appendParams(b []byte, p *params, full bool) []byte {
	b = append(b, `{"seed":`...)
	b = strconv.AppendUint(b, uint64(p.seed), 10)
	b = append(b, `,"temperature":`...)
	b = appendFloat32(b, p.temperature)
	b = append(b, `,"dynatemp_range":0.0,"dynatemp_exponent":1.0,"top_k":`...)
	b = appendInt(b, p.topK)
	b = append(b, `,"top_p":`...)
	b = appendFloat32(b, p.topP)
	b = append(b, `,"min_p":`...)
	b = appendFloat32(b, p.minP)
	b = append(b, `,"top_n_sigma":-1.0,"xtc_probability":0.0,"xtc_threshold":0.10000000149011612,"typical_p":1.0,"repeat_last_n":64,"repeat_penalty":1.0,"presence_penalty":0.0,"frequency_penalty":0.0,"dry_multiplier":0.0,"dry_base":1.75,"dry_allowed_length":2,"dry_penalty_last_n":64`...)
	if full {
		b = append(b, `,"dry_sequence_breakers":["\n",":","\"","*"]`...)
	}
	b = append(b, `,"mirostat":0,"mirostat_tau":5.0,"mirostat_eta":0.10000000149011612,"adaptive_target":-1.0,"adaptive_decay":0.8999999761581421`...)
	if full {
		b = append(b, `,"stop":[`...)
		for i, st := range p.stop {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, st)
		}
		b = append(b, ']')
	}
	b = append(b, `,"max_tokens":`...)
	b = appendInt(b, p.nPredict)
	b = append(b, `,"n_predict":`...)
	b = appendInt(b, p.nPredict)
	b = append(b, `,"n_keep":0,"n_discard":0,"ignore_eos":`...)
	b = appendBool(b, p.ignoreEOS)
	b = append(b, `,"stream":`...)
	b = appendBool(b, p.stream)
	if full {
		b = append(b, `,"logit_bias":[]`...)
	}
	b = append(b, `,"n_probs":0,"min_keep":0`...)
	if full {
		b = append(b, `,"grammar":"","grammar_lazy":false,"grammar_triggers":[],"preserved_tokens":[]`...)
	}
	b = append(b, `,"chat_format":"Content-only","reasoning_format":`...)
	b = appendString(b, p.reasoningFormat)
	return append(b, `,"reasoning_in_content":false,"generation_prompt":"","samplers":["penalties","dry","top_n_sigma","top_k","typ_p","top_p","min_p","xtc","temperature"],"speculative.types":"none","timings_per_token":false,"post_sampling_probs":false,"backend_sampling":false,"lora":[]}`...)
}

// props serves GET /props.
func (s *Server) props() []byte {
	p := defaultParams()
	p.reasoningFormat = "none"
	b := append([]byte(nil), `{"default_generation_settings":{"params":`...)
	b = appendParams(b, &p, false)
	b = append(b, `,"n_ctx":`...)
	b = appendInt(b, s.o.Ctx)
	b = append(b, `},"total_slots":`...)
	b = appendInt(b, s.o.Slots)
	b = append(b, `,"model_alias":`...)
	b = appendString(b, s.o.Model)
	b = append(b, `,"model_ftype":"all F32","model_path":`...)
	b = appendString(b, s.o.Model)
	b = append(b, `,"modalities":{"vision":false,"video":false,"audio":false},"media_marker":`...)
	b = appendString(b, mediaMarker)
	b = append(b, `,"endpoint_slots":true,"endpoint_props":false,"endpoint_metrics":true,"ui":true,"ui_settings":{},"chat_template":`...)
	b = appendString(b, chatTemplate)
	b = append(b, `,"chat_template_caps":{"supports_object_arguments":false,"supports_parallel_tool_calls":false,"supports_preserve_reasoning":false,"supports_reasoning_effort":false,"supports_string_content":true,"supports_system_role":true,"supports_tool_calls":false,"supports_tools":false,"supports_typed_content":false},"bos_token":"<s>","eos_token":"</s>","build_info":`...)
	b = appendString(b, s.o.EngineVersion)
	return append(b, `,"is_sleeping":false,"cors_proxy_enabled":false}`...)
}

// getSlots serves GET /slots[?fail_on_no_slot=1].
func (s *Server) getSlots(cc *conn, r *request) bool {
	q, _ := url.ParseQuery(r.query)
	b := append([]byte(nil), '[')
	s.mu.Lock()
	if q.Get("fail_on_no_slot") != "" && q.Get("fail_on_no_slot") != "0" && q.Get("fail_on_no_slot") != "false" && s.sched.busy == len(s.sched.slots) {
		s.mu.Unlock()
		return cc.writeJSON(r, http.StatusServiceUnavailable, errorBody(503, "no slot available", "unavailable_error"))
	}
	for i := range s.sched.slots {
		sl := &s.sched.slots[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = appendInt(b, i)
		b = append(b, `,"n_ctx":`...)
		b = appendInt(b, s.o.Ctx)
		b = append(b, `,"speculative":false,"is_processing":`...)
		b = appendBool(b, sl.busy)
		if !sl.used {
			b = append(b, '}')
			continue
		}
		b = append(b, `,"id_task":`...)
		b = strconv.AppendInt(b, sl.idTask, 10)
		b = append(b, `,"n_prompt_tokens":`...)
		b = appendInt(b, sl.nPrompt)
		b = append(b, `,"n_prompt_tokens_processed":`...)
		b = appendInt(b, sl.nPromptProcessed)
		b = append(b, `,"n_prompt_tokens_cache":`...)
		b = appendInt(b, sl.nPromptCache)
		b = append(b, `,"params":`...)
		b = appendParams(b, &sl.params, false)
		nDecoded, nRemain := 0, -1
		if sl.busy {
			nDecoded = int(sl.nDecoded.Load())
			if sl.params.nPredict >= 0 {
				nRemain = sl.params.nPredict - nDecoded
			}
		}
		b = append(b, `,"next_token":[{"has_next_token":`...)
		b = appendBool(b, sl.busy)
		b = append(b, `,"has_new_line":false,"n_remain":`...)
		b = appendInt(b, nRemain)
		b = append(b, `,"n_decoded":`...)
		b = appendInt(b, nDecoded)
		b = append(b, `}]}`...)
	}
	s.mu.Unlock()
	b = append(b, ']')
	return cc.writeJSON(r, http.StatusOK, b)
}

// slotAction serves POST /slots/{id}?action=erase. Like llama.cpp, an erase
// of a busy slot waits (deferred) until the slot is idle.
func (s *Server) slotAction(cc *conn, r *request) bool {
	q, _ := url.ParseQuery(r.query)
	id, err := strconv.Atoi(strings.TrimPrefix(r.path, "/slots/"))
	if err != nil || id < 0 || id >= len(s.sched.slots) {
		return cc.writeJSON(r, http.StatusBadRequest, errorBody(400, "Invalid slot ID", "invalid_request_error"))
	}
	switch q.Get("action") {
	case "erase":
	case "save", "restore":
		return cc.writeJSON(r, http.StatusNotImplemented, errorBody(501, slotsActionHint, "not_supported_error"))
	default:
		return cc.writeJSON(r, http.StatusBadRequest, errorBody(400, "Invalid action", "invalid_request_error"))
	}
	if _, err := s.acquire(id, nil, nil); err != nil {
		return false
	}
	s.mu.Lock()
	sl := &s.sched.slots[id]
	n := len(sl.cache)
	sl.cache = sl.cache[:0]
	s.sched.free(id)
	s.mu.Unlock()
	b := append([]byte(`{"id_slot":`), strconv.Itoa(id)...)
	b = append(b, `,"n_erased":`...)
	b = appendInt(b, n)
	return cc.writeJSON(r, http.StatusOK, append(b, '}'))
}

// metricDefs are llama.cpp's /metrics families, in its order.
var metricDefs = [...]struct{ name, typ, help string }{
	{"prompt_tokens_total", "counter", "Number of prompt tokens processed, excluding cached tokens"},
	{"prompt_tokens_cached_total", "counter", "Number of prompt tokens reused from the cache"},
	{"prompt_seconds_total", "counter", "Total time spent processing prompts"},
	{"tokens_predicted_total", "counter", "Number of generation tokens processed"},
	{"tokens_predicted_seconds_total", "counter", "Total time spent generating tokens"},
	{"n_decode_total", "counter", "Total number of llama_decode() calls, excluding speculative decoding and multimodal decoding"},
	{"n_tokens_max", "counter", "Largest observed sequence length (prompt + generation)"},
	{"spec_decode_num_draft_tokens_total", "counter", "Speculative: Total draft tokens generated"},
	{"spec_decode_num_accepted_tokens_total", "counter", "Speculative: Total draft tokens accepted by the target model"},
	{"spec_decode_num_drafts_total", "counter", "Speculative: Total speculative decoding verification steps"},
	{"prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s"},
	{"predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s"},
	{"requests_processing", "gauge", "Number of requests processing"},
	{"requests_deferred", "gauge", "Number of requests deferred"},
	{"n_busy_slots_per_decode", "gauge", "Average number of busy slots per llama_decode() call"},
}

// metrics serves GET /metrics. Values print as llama.cpp prints them: C++
// ostream doubles with 6 significant digits (1234567 → 1.23457e+06).
func (s *Server) metrics(cc *conn, r *request) bool {
	var v [len(metricDefs)]float64
	s.mu.Lock()
	st := &s.sched.stats
	v[0] = float64(st.promptTokens)
	v[1] = float64(st.promptCached)
	v[2] = st.promptSeconds
	v[3] = float64(st.predicted)
	v[4] = st.predictedSeconds
	v[5] = float64(st.nDecode)
	v[6] = float64(st.nTokensMax)
	if st.windowPromptSeconds > 0 {
		v[10] = float64(st.windowPrompt) / st.windowPromptSeconds
	}
	if st.windowPredSeconds > 0 {
		v[11] = float64(st.windowPred) / st.windowPredSeconds
	}
	st.windowPrompt, st.windowPromptSeconds, st.windowPred, st.windowPredSeconds = 0, 0, 0, 0
	v[12] = float64(s.sched.busy)
	v[13] = float64(s.sched.waiters.Len())
	if st.nDecode > 0 {
		v[14] = float64(st.busySlotsPerDecode) / float64(st.nDecode)
	}
	s.mu.Unlock()
	b := make([]byte, 0, 3072)
	for i, d := range metricDefs {
		b = wire.AppendMetricHead(b, "llamacpp:"+d.name, d.help, d.typ)
		b = append(b, "llamacpp:"...)
		b = append(b, d.name...)
		b = append(b, ' ')
		b = strconv.AppendFloat(b, v[i], 'g', 6, 64)
		b = append(b, '\n')
	}
	extra := "Process-Start-Time-Unix: " + strconv.FormatInt(s.startAt.Unix(), 10) + "\r\n"
	return cc.writeResponse(r, http.StatusOK, extra, "text/plain; version=0.0.4", b)
}

// models serves GET /v1/models (shape of v1_models.body.json).
func (s *Server) models() []byte {
	b := append([]byte(nil), `{"models":[{"name":`...)
	b = appendString(b, s.o.Model)
	b = append(b, `,"model":`...)
	b = appendString(b, s.o.Model)
	b = append(b, `,"modified_at":"","size":"","digest":"","type":"model","description":"","tags":[""],"capabilities":["completion"],"parameters":"","details":{"parent_model":"","format":"gguf","family":"","families":[""],"parameter_size":"","quantization_level":""}}],"object":"list","data":[{"id":`...)
	b = appendString(b, s.o.Model)
	b = append(b, `,"aliases":[`...)
	b = appendString(b, s.o.Model)
	b = append(b, `],"tags":[],"object":"model","created":`...)
	b = strconv.AppendInt(b, s.startAt.Unix(), 10)
	b = append(b, `,"owned_by":"llamacpp","meta":{"vocab_type":1,"n_vocab":32000,"n_ctx":`...)
	b = appendInt(b, s.o.Ctx)
	b = append(b, `,"n_ctx_train":`...)
	b = appendInt(b, s.o.Ctx*s.o.Slots)
	return append(b, `,"n_embd":64,"n_params":4178240,"size":16712960,"ftype":"all F32"}}]}`...)
}

// tokenize serves POST /tokenize {"content","add_special"} → {"tokens":[…]}
// with the fake tokenizer (CountTokens), so a gateway that asks the engine
// to count gets the number the context check uses.
func (s *Server) tokenize(cc *conn, r *request) bool {
	var in struct {
		Content    *string `json:"content"`
		AddSpecial bool    `json:"add_special"`
	}
	if err := json.Unmarshal(r.body, &in); err != nil {
		aerr := parseError(r.body, err)
		return cc.writeJSON(r, aerr.status, errorBody(aerr.status, aerr.msg, aerr.typ))
	}
	if in.Content == nil {
		return cc.writeJSON(r, http.StatusBadRequest, errorBody(400, `"content" must be provided`, "invalid_request_error"))
	}
	ids := Tokenize(nil, *in.Content, in.AddSpecial)
	b := append([]byte(nil), `{"tokens":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendInt(b, int(id))
	}
	return cc.writeJSON(r, http.StatusOK, append(b, "]}"...))
}
