// Package triton serves a canned NVIDIA Triton Inference Server with the
// vLLM backend (ENGINES.md §4, server 2.73.0dev, vllm_backend @8de0c14): the
// generate extension's routes, health, metadata and metrics, speaking the
// real wire format so that the triton adapter and the gateway can be tested
// without GPUs (SPEC §6).
//
// Text is the shared fake model's (fake.NewGenerator): the same (seed,
// prompt) yields the same words as every other engine's fake. What a client
// sees:
//
//   - POST /v2/models/{m}[/versions/1]/generate_stream: status and headers
//     only with the first response (after TTFT, so a queued request is
//     silent), then one `data: {…}` event per generated token, keys sorted
//     as Triton's std::map orders them (finish_reason, model_name,
//     model_version, num_input_tokens, num_output_tokens, text_output), the
//     optional outputs only when their return_* switch is true. text_output
//     is the delta since the previous response; the body then simply ends
//     (last chunk, no terminator frame). finish_reason is "None" until the
//     last frame ("length", or "stop" on the model's EOS).
//   - Tokens: max_tokens (default 16, as vLLM's SamplingParams) text tokens,
//     bounded by the context (Ctx − prompt tokens), finish "length".
//     Options.Tokens caps the text as the model's EOS would: Tokens text
//     frames, then a frame with text_output "" and num_output_tokens 1 (the
//     EOS token, which vLLM counts but does not detokenize) and finish
//     "stop". A prompt longer than Ctx fails as vLLM's input validation does:
//     the first response is the error, so the status is 500 and the body is
//     one SSE error event.
//   - POST …/generate: one JSON response at the end; without
//     exclude_input_in_output:true the prompt is prepended to text_output, as
//     the vLLM backend does for non-streaming requests.
//   - Split UTF-8 (Options.Fail "split-utf8"): the vLLM backend sends the
//     delta of vLLM's detokenized text, and vLLM's incremental detokenizer
//     holds back a character that is not complete yet. A token ending inside
//     a character therefore gets a frame with text_output "" (and
//     num_output_tokens 1), and the next frame carries the whole character:
//     every text_output is valid UTF-8. Bytes still held when generation ends
//     are dropped, as vLLM drops them.
//   - Slots: at most Options.Slots requests generate at once; the rest wait
//     in FIFO order. A client that disconnects stops its generation and
//     frees its slot at once (Triton ≥ 2.41 cancels the request and the vLLM
//     backend aborts it).
//   - Health: GET /v2/health/live is 200 from the start; /v2/health/ready is
//     400 with an empty body while Options.Load lasts, then 200;
//     /v2/models/{m}/ready is 400 {"error":"Model version not ready"} while
//     loading. A generate request during the load gets Triton's 404 "has no
//     available versions".
//   - GET /v2 (server metadata), GET /v2/models/{m} (model metadata), and
//     GET /metrics: Triton serves metrics on its own port (8002); the fake
//     serves them on its one port. The gauges come from the fake's state:
//     nv_inference_pending_request_count (always 0: the vLLM backend is
//     decoupled and takes requests at once), vllm:num_requests_running and
//     vllm:num_requests_waiting (slots busy, requests queued),
//     vllm:gpu_cache_usage_perc (tokens held by running requests over
//     Slots×Ctx), nv_gpu_utilization (busy slots over slots) and
//     nv_gpu_memory_used_bytes (weights plus KV bytes in use).
//
// Faults (Options.Fail, SPEC §13), each in Triton's own shape:
//
//   - start-500: the vLLM backend raises before the first token: status 500,
//     text/event-stream, `data: {"error":"Error generating stream: …"}`.
//   - start-503 and start-429: Triton refuses the request before inference
//     with UNAVAILABLE: 503 application/json {"error":"Exceeds maximum queue
//     size"}. Triton never answers 429; overload is this 503.
//   - midstream-disconnect: 3 frames, then the TCP connection closes without
//     the last chunk of the chunked body.
//   - stall: 2 frames, then silence, holding the slot until the client goes.
//   - malformed: 2 frames, then an event that is not JSON, then the body ends.
//   - midstream-error: 2 frames, then `data: {"error":"Error generating
//     stream: …"}`, then the body ends (status 200 was already sent).
package triton

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/fake/internal/serve"
	"github.com/llama-orch/llama-orch/engines/fake/internal/slots"
)

// Defaults for Options fields left zero.
const (
	// DefaultModel is the model name of the vllm_backend samples.
	DefaultModel = "vllm_model"
	// DefaultEngineVersion is the server version GET /v2 reports.
	DefaultEngineVersion = "2.73.0"
	// ModelVersion is the one version the fake model has.
	ModelVersion = "1"
	// DefaultMaxTokens is vLLM's SamplingParams default.
	DefaultMaxTokens = 16
)

// The fake GPU: its memory is weights plus KV bytes in use.
const (
	gpuMemoryTotal  = 24 << 30
	gpuWeightsBytes = 3 << 30
	kvBytesPerToken = 28 << 10
)

// Server is one fake Triton replica.
type Server struct {
	o   fake.Options
	log *zap.Logger

	run *serve.HTTP
	// Set once the port is bound, before any request is served.
	readyAt time.Time
	gpuUUID string

	requests atomic.Int64

	// mu guards sched.
	mu    sync.Mutex
	sched sched
}

// New validates o and returns an unstarted server. o.Engine must be "" or
// "triton"; o.Model defaults to "vllm_model" and o.EngineVersion to
// "2.73.0".
func New(o fake.Options) (*Server, error) {
	if o.Engine != "" && o.Engine != engines.Triton {
		return nil, fmt.Errorf("%w %q: this package fakes %s", fake.ErrUnsupportedEngine, o.Engine, engines.Triton)
	}
	o.Engine = engines.Triton
	d := fake.Defaults{Slots: fake.DefaultSlots, EngineVersion: DefaultEngineVersion, Model: DefaultModel}
	if err := o.Check(d, fake.ErrInvalidOptions); err != nil {
		return nil, err
	}
	if strings.ContainsAny(o.Model, "/?#% ") {
		return nil, fmt.Errorf("%w: model name %q cannot be a URL path segment", fake.ErrInvalidOptions, o.Model)
	}
	s := &Server{o: o, log: o.Logger}
	s.sched.slots.SetSize(o.Slots)
	// A request that arrives while the server closes has its connection
	// dropped.
	s.run = serve.NewHTTP(serve.NewGroup("fake triton", o.Logger), &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}, 0)
	return s, nil
}

// Start listens on addr ("127.0.0.1:0" picks a free port) and serves in the
// background until Close. Triton listens while its model loads; Options.Load
// is the time its readiness endpoints say "not ready".
func (s *Server) Start(addr string) error {
	return s.run.Start(addr, 0, fake.ErrInvalidOptions, func(addr string) {
		s.readyAt = time.Now().Add(s.o.Load)
		h := fnv.New128a()
		h.Write([]byte(addr))
		sum := h.Sum(nil)
		s.gpuUUID = fmt.Sprintf("GPU-%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
		s.log.Debug("fake engine listening", zap.String("engine", engines.Triton), zap.String("addr", addr))
	})
}

// Addr returns the listening address ("127.0.0.1:PORT"), "" before Start.
func (s *Server) Addr() string { return s.run.Addr() }

// URL returns the base URL, "http://127.0.0.1:PORT".
func (s *Server) URL() string { return "http://" + s.Addr() }

// InFlight returns the number of requests holding a slot.
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sched.slots.Busy()
}

// Deferred returns the number of requests waiting for a slot.
func (s *Server) Deferred() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sched.slots.Waiting()
}

// Requests returns the number of generate requests received, whatever
// their outcome (faults, errors and the loading answer included).
func (s *Server) Requests() int64 { return s.requests.Load() }

// Close stops listening, drops every connection (streams end without their
// last chunk) and waits for every handler. It is safe to call twice.
func (s *Server) Close() error { return s.run.Close() }

func (s *Server) loading() bool {
	return s.o.Load > 0 && time.Now().Before(s.readyAt)
}

// sched is the slot scheduler; every field is guarded by Server.mu.
type sched struct {
	slots slots.Pool
	// kvTokens is the number of tokens (prompt and generated) that running
	// requests hold in the KV cache.
	kvTokens int
	counters counters
}

// counters are what /metrics counts.
type counters struct {
	success, failure  int64
	promptTokens      int64
	generationTokens  int64
	inferenceCount    int64
	queueDurationUs   int64
	requestDurationUs int64
}

var errGone = errors.New("fake triton: request abandoned")

// acquire waits for a slot in FIFO order until it is granted, ctx ends or
// the server closes.
func (s *Server) acquire(ctx context.Context) error {
	if !s.sched.slots.Acquire(&s.mu, ctx.Done(), s.run.Done()) {
		return errGone
	}
	return nil
}
