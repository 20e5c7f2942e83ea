package vllm

import (
	"math"
	"net/http"
	"strconv"

	"github.com/llama-orch/llama-orch/engines/fake/internal/wire"
)

// vLLM's bodies as its Python serializers print them: pydantic's and
// Starlette's compact JSON (raw UTF-8), json.dumps for mid-stream errors
// (", " and ": " separators, non-ASCII as \uXXXX), prometheus_client's text
// format (floats in Python repr).

// hexDigits spell the random-looking ids (appendHexID).
const hexDigits = "0123456789abcdef"

// appendPyString appends s as a compact-JSON string: `"`, `\` and control
// characters escaped (\b \f \n \r \t, others \u00xx), the rest raw. s must be
// valid UTF-8 (a Python str always is).
func appendPyString[S ~string | ~[]byte](b []byte, s S) []byte {
	return wire.AppendString(b, s, wire.Pydantic)
}

// appendDumpsString appends s as Python's json.dumps (ensure_ascii) prints
// it: every non-ASCII character as \uXXXX, astral ones as surrogate pairs.
func appendDumpsString(b []byte, s string) []byte { return wire.AppendASCIIString(b, s) }

// appendPyFloat appends v as Python's repr(float) does: "1.0", "0.25",
// "1e-05", "1.7e+16".
func appendPyFloat(b []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(b, "nan"...)
	case math.IsInf(v, 1):
		return append(b, "inf"...)
	case math.IsInf(v, -1):
		return append(b, "-inf"...)
	}
	return wire.AppendDouble(b, v, 1e16)
}

// errorBody is vLLM's ErrorResponse (v0.10+, compact):
// {"error":{"message","type","param":null,"code"}}.
func errorBody(code int, msg, typ string) []byte {
	b := append([]byte(`{"error":{"message":`), appendPyString(nil, msg)...)
	b = append(b, `,"type":`...)
	b = appendPyString(b, typ)
	b = append(b, `,"param":null,"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	return append(b, "}}"...)
}

// streamErrorBody is the mid-stream error frame's JSON, printed by
// json.dumps with its default separators.
func streamErrorBody(code int, msg, typ string) []byte {
	b := append([]byte(`{"error": {"message": `), appendDumpsString(nil, msg)...)
	b = append(b, `, "type": `...)
	b = appendDumpsString(b, typ)
	b = append(b, `, "param": null, "code": `...)
	b = strconv.AppendInt(b, int64(code), 10)
	return append(b, "}}"...)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeError answers vLLM's JSON error.
func writeError(w http.ResponseWriter, status int, msg, typ string) {
	writeJSON(w, status, errorBody(status, msg, typ))
}

// writeDetail answers FastAPI's own errors (unknown route, wrong method).
func writeDetail(w http.ResponseWriter, status int, detail string) {
	b := append([]byte(`{"detail":`), appendPyString(nil, detail)...)
	writeJSON(w, status, append(b, '}'))
}

// models is GET /v1/models: one ModelCard with its permission.
func (s *Server) models() []byte {
	created := strconv.FormatInt(s.created, 10)
	b := append([]byte(nil), `{"object":"list","data":[{"id":`...)
	b = appendPyString(b, s.o.Model)
	b = append(b, `,"object":"model","created":`...)
	b = append(b, created...)
	b = append(b, `,"owned_by":"vllm","root":`...)
	b = appendPyString(b, s.o.Model)
	b = append(b, `,"parent":null,"max_model_len":`...)
	b = strconv.AppendInt(b, int64(s.o.Ctx), 10)
	b = append(b, `,"permission":[{"id":"modelperm-`...)
	b = appendHexID(b, uint64(s.created)*0x9E3779B97F4A7C15, 32)
	b = append(b, `","object":"model_permission","created":`...)
	b = append(b, created...)
	b = append(b, `,"allow_create_engine":false,"allow_sampling":true,"allow_logprobs":true,"allow_search_indices":false,"allow_view":true,"allow_fine_tuning":false,"organization":"*","group":null,"is_blocking":false}]}]}`...)
	return b
}

// appendHexID appends n lowercase hex digits derived from x (a random-looking
// request id, as vLLM's random_uuid()).
func appendHexID(b []byte, x uint64, n int) []byte {
	for i := 0; i < n; i++ {
		if i%16 == 0 {
			x = splitmix(x + uint64(i))
		}
		b = append(b, hexDigits[x>>(60-4*(i%16))&0xF])
	}
	return b
}

func splitmix(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

// metricDef is one vllm: family of GET /metrics.
type metricDef struct{ name, help, typ string }

var (
	mRunning   = metricDef{"vllm:num_requests_running", "Number of requests in model execution batches.", "gauge"}
	mWaiting   = metricDef{"vllm:num_requests_waiting", "Number of requests waiting to be processed.", "gauge"}
	mKVUsage   = metricDef{"vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", "gauge"}
	mPreempt   = metricDef{"vllm:num_preemptions_total", "Cumulative number of preemption from the engine.", "counter"}
	mPrompt    = metricDef{"vllm:prompt_tokens_total", "Number of prefill tokens processed.", "counter"}
	mGenerated = metricDef{"vllm:generation_tokens_total", "Number of generation tokens processed.", "counter"}
	mSuccess   = metricDef{"vllm:request_success_total", "Count of successfully processed requests.", "counter"}
)

// metrics is GET /metrics: prometheus_client's text format, labels sorted,
// values as Python floats, for one engine core (engine="0").
func (s *Server) metrics() []byte {
	sn := s.q.snapshot()
	labels := append([]byte(`{engine="0",model_name=`), appendPyString(nil, s.o.Model)...)
	labels = append(labels, '}')
	b := make([]byte, 0, 2048)
	head := func(d metricDef) { b = wire.AppendMetricHead(b, d.name, d.help, d.typ) }
	sample := func(name string, lbl []byte, v float64) {
		b = append(b, name...)
		b = append(b, lbl...)
		b = append(b, ' ')
		b = appendPyFloat(b, v)
		b = append(b, '\n')
	}
	for _, g := range []struct {
		d metricDef
		v float64
	}{
		{mRunning, float64(sn.running)},
		{mWaiting, float64(sn.waiting)},
		{mKVUsage, sn.kvUsage},
		{mPreempt, 0},
		{mPrompt, float64(sn.promptTokens)},
		{mGenerated, float64(sn.genTokens)},
	} {
		head(g.d)
		sample(g.d.name, labels, g.v)
	}
	head(mSuccess)
	for i, reason := range finishedNames {
		lbl := append([]byte(`{engine="0",finished_reason="`), reason...)
		lbl = append(lbl, `",model_name=`...)
		lbl = appendPyString(lbl, s.o.Model)
		lbl = append(lbl, '}')
		sample(mSuccess.name, lbl, float64(sn.success[i]))
	}
	return b
}
