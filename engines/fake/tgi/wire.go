package tgi

import (
	"crypto/sha1"
	"encoding/hex"
	"math"
	"strconv"

	"github.com/llama-orch/llama-orch/engines/fake/internal/wire"
)

// JSON appenders that print like serde_json, which TGI's router uses for
// every body: compact, struct fields in declaration order, raw UTF-8, floats
// in shortest round-trip form with ".0" on whole numbers.

// appendString appends s as a JSON string the way serde_json escapes it:
// `"` `\` and control characters only (\b \f \n \r \t, others \u00xx).
// Invalid UTF-8 (which a Rust String cannot hold) becomes U+FFFD, as
// String::from_utf8_lossy would have made it.
func appendString[S ~string | ~[]byte](b []byte, s S) []byte {
	return wire.AppendString(b, s, wire.Serde)
}

// appendF32 appends an f32 as serde_json (ryu) prints it: shortest
// round-trip digits, and "-2.0" rather than "-2".
func appendF32(b []byte, f float32) []byte { return wire.AppendFixed(b, float64(f), 32) }

// appendF64 is appendF32 for f64 (Prometheus bucket bounds, sums).
func appendF64(b []byte, f float64) []byte {
	switch {
	case math.IsInf(f, 1):
		return append(b, "+Inf"...)
	case math.IsNaN(f):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

// token is one generated token as TGI's Token serializes it.
type token struct {
	id      int
	text    []byte
	logprob float32
	special bool
}

// eosToken is Qwen2.5's end-of-turn token, the EOS of the default model.
const (
	eosID   = 151645
	eosText = "<|im_end|>"
)

// logprob is the fake model's log-probability for a token: a stable
// function of its id and position in (-4, 0), so frames carry a plausible
// number without any randomness.
func logprob(id, pos int) float32 {
	h := uint32(id)*2654435761 ^ uint32(pos)*40503
	h ^= h >> 15
	h *= 2246822519
	h ^= h >> 13
	return -float32(h%4000+1) / 1024
}

func appendToken(b []byte, t *token) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, int64(t.id), 10)
	b = append(b, `,"text":`...)
	b = appendString(b, t.text)
	b = append(b, `,"logprob":`...)
	b = appendF32(b, t.logprob)
	b = append(b, `,"special":`...)
	b = strconv.AppendBool(b, t.special)
	return append(b, '}')
}

// streamDetails are a final frame's details.
type streamDetails struct {
	finishReason    string
	generatedTokens int
	seed            uint64
	hasSeed         bool
	inputLength     int
}

func appendSeed(b []byte, seed uint64, has bool) []byte {
	if !has {
		return append(b, "null"...)
	}
	return strconv.AppendUint(b, seed, 10)
}

// appendStreamResponse appends a StreamResponse (index, token, top_tokens
// omitted when empty, generated_text, details). generatedText nil means
// null; details nil means null.
func appendStreamResponse(b []byte, index int, t *token, generatedText []byte, final bool, d *streamDetails) []byte {
	b = append(b, `{"index":`...)
	b = strconv.AppendInt(b, int64(index), 10)
	b = append(b, `,"token":`...)
	b = appendToken(b, t)
	b = append(b, `,"generated_text":`...)
	if final {
		b = appendString(b, generatedText)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"details":`...)
	if d == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"finish_reason":`...)
		b = appendString(b, d.finishReason)
		b = append(b, `,"generated_tokens":`...)
		b = strconv.AppendInt(b, int64(d.generatedTokens), 10)
		b = append(b, `,"seed":`...)
		b = appendSeed(b, d.seed, d.hasSeed)
		b = append(b, `,"input_length":`...)
		b = strconv.AppendInt(b, int64(d.inputLength), 10)
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendErrorResponse appends TGI's ErrorResponse {"error","error_type"}.
func appendErrorResponse(b []byte, msg, typ string) []byte {
	b = append(b, `{"error":`...)
	b = appendString(b, msg)
	b = append(b, `,"error_type":`...)
	b = appendString(b, typ)
	return append(b, '}')
}

// appendGenerateResponse appends /generate's GenerateResponse:
// generated_text, then details (omitted when not asked for) with
// finish_reason, generated_tokens, seed, prefill, tokens.
func appendGenerateResponse(b []byte, text []byte, d *streamDetails, toks []token) []byte {
	b = append(b, `{"generated_text":`...)
	b = appendString(b, text)
	if d != nil {
		b = append(b, `,"details":{"finish_reason":`...)
		b = appendString(b, d.finishReason)
		b = append(b, `,"generated_tokens":`...)
		b = strconv.AppendInt(b, int64(d.generatedTokens), 10)
		b = append(b, `,"seed":`...)
		b = appendSeed(b, d.seed, d.hasSeed)
		b = append(b, `,"prefill":[],"tokens":[`...)
		for i := range toks {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendToken(b, &toks[i])
		}
		b = append(b, "]}"...)
	}
	return append(b, '}')
}

// modelSHA stands in for the Hub commit of the weights: the SHA-1 of the
// model id, so another --model reports another digest.
func modelSHA(model string) string {
	sum := sha1.Sum([]byte(model))
	return hex.EncodeToString(sum[:])
}

// Build identity of TGI v3.3.7 as /info reports it.
const (
	buildSHA    = "db931fcf42da018a3657580c64bf2720f167f9ab"
	dockerLabel = "sha-db931fc"
)

// info is GET /info, field for field as ENGINES.md §3 shows it.
func (s *Server) info() []byte {
	b := append([]byte(nil), `{"model_id":`...)
	b = appendString(b, s.o.Model)
	b = append(b, `,"model_sha":`...)
	b = appendString(b, s.modelSHA)
	b = append(b, `,"model_pipeline_tag":"text-generation","max_concurrent_requests":`...)
	b = strconv.AppendInt(b, int64(s.maxConcurrent), 10)
	b = append(b, `,"max_best_of":2,"max_stop_sequences":`...)
	b = strconv.AppendInt(b, maxStopSequences, 10)
	b = append(b, `,"max_input_tokens":`...)
	b = strconv.AppendInt(b, int64(s.o.Ctx-1), 10)
	b = append(b, `,"max_total_tokens":`...)
	b = strconv.AppendInt(b, int64(s.o.Ctx), 10)
	b = append(b, `,"validation_workers":2,"max_client_batch_size":4,"router":"text-generation-router","version":`...)
	b = appendString(b, s.o.EngineVersion)
	b = append(b, `,"sha":"`+buildSHA+`","docker_label":"`+dockerLabel+`"}`...)
	return b
}

// models is GET /v1/models (ModelsInfo: object, data).
func (s *Server) models() []byte {
	b := append([]byte(nil), `{"object":"list","data":[{"id":`...)
	b = appendString(b, s.o.Model)
	b = append(b, `,"object":"model","created":0,"owned_by":`...)
	b = appendString(b, s.o.Model)
	return append(b, "}]}"...)
}

// metrics is GET /metrics as metrics-exporter-prometheus renders TGI's
// registry: one family per block, gauges only once they were first set.
func (s *Server) metrics() []byte {
	s.mu.Lock()
	q := &s.sched
	queued, busy, batchTokens := q.batch.Waiting(), q.batch.Busy(), q.batchTokens
	queueSeen, batchSeen := q.queueSeen, q.batchSeen
	requestCount, success := q.requestCount, q.success
	failures := q.failures
	queueTime, perToken := q.queueTime, q.timePerToken
	s.mu.Unlock()

	var b []byte
	counter := func(name string, v int64) {
		b = append(b, "# TYPE "+name+" counter\n"+name+" "...)
		b = strconv.AppendInt(b, v, 10)
		b = append(b, "\n\n"...)
	}
	gauge := func(name string, v int) {
		b = append(b, "# TYPE "+name+" gauge\n"+name+" "...)
		b = strconv.AppendInt(b, int64(v), 10)
		b = append(b, "\n\n"...)
	}
	hist := func(name string, h *histogram) {
		b = append(b, "# TYPE "+name+" histogram\n"...)
		for i, le := range durationBuckets {
			b = append(b, name+`_bucket{le="`...)
			b = appendF64(b, le)
			b = append(b, `"} `...)
			b = strconv.AppendInt(b, h.counts[i], 10)
			b = append(b, '\n')
		}
		b = append(b, name+`_bucket{le="+Inf"} `...)
		b = strconv.AppendInt(b, h.n, 10)
		b = append(b, "\n"+name+"_sum "...)
		b = appendF64(b, h.sum)
		b = append(b, "\n"+name+"_count "...)
		b = strconv.AppendInt(b, h.n, 10)
		b = append(b, "\n\n"...)
	}
	if requestCount > 0 {
		counter("tgi_request_count", requestCount)
	}
	if success > 0 {
		counter("tgi_request_success", success)
	}
	any := false
	for _, n := range failures {
		any = any || n > 0
	}
	if any {
		b = append(b, "# TYPE tgi_request_failure counter\n"...)
		for i, n := range failures {
			if n == 0 {
				continue
			}
			b = append(b, `tgi_request_failure{err="`+failureLabels[i]+`"} `...)
			b = strconv.AppendInt(b, n, 10)
			b = append(b, '\n')
		}
		b = append(b, '\n')
	}
	if queueSeen {
		gauge("tgi_queue_size", queued)
	}
	if batchSeen {
		gauge("tgi_batch_current_size", busy)
		gauge("tgi_batch_current_max_tokens", batchTokens)
	}
	if queueTime.n > 0 {
		hist("tgi_request_queue_duration", &queueTime)
	}
	if perToken.n > 0 {
		hist("tgi_request_mean_time_per_token_duration", &perToken)
	}
	return b
}
