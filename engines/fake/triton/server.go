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
	"container/list"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
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
	o       fake.Options
	log     *zap.Logger
	gpuUUID string

	ln      net.Listener
	hs      *http.Server
	readyAt time.Time

	done     chan struct{}
	closed   atomic.Bool
	wg       sync.WaitGroup // handlers and the serve loop
	requests atomic.Int64

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
	if o.Fail == "" {
		o.Fail = fake.FailNone
	}
	valid := false
	for _, m := range fake.FailModes() {
		valid = valid || m == o.Fail
	}
	if !valid {
		return nil, fmt.Errorf("%w: unknown fail mode %q: valid modes: %s", fake.ErrInvalidOptions, o.Fail, strings.Join(fake.FailModes(), "|"))
	}
	if o.Slots < 0 || o.Ctx < 0 || o.Tokens < 0 || o.TTFT < 0 || o.ITL < 0 || o.Load < 0 {
		return nil, fmt.Errorf("%w: slots, ctx, tokens and delays must not be negative", fake.ErrInvalidOptions)
	}
	if o.Slots == 0 {
		o.Slots = fake.DefaultSlots
	}
	if o.Ctx == 0 {
		o.Ctx = fake.DefaultCtx
	}
	if o.Ctx < 2 {
		return nil, fmt.Errorf("%w: ctx must be at least 2", fake.ErrInvalidOptions)
	}
	if o.EngineVersion == "" {
		o.EngineVersion = DefaultEngineVersion
	}
	if o.Model == "" {
		o.Model = DefaultModel
	}
	if strings.ContainsAny(o.Model, "/?#% ") {
		return nil, fmt.Errorf("%w: model name %q cannot be a URL path segment", fake.ErrInvalidOptions, o.Model)
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	s := &Server{o: o, log: log, done: make(chan struct{})}
	s.sched.slots = o.Slots
	s.sched.waiters.Init()
	return s, nil
}

// Start listens on addr ("127.0.0.1:0" picks a free port) and serves in the
// background until Close.
func (s *Server) Start(addr string) error {
	if s.closed.Load() {
		return fmt.Errorf("%w: server closed", fake.ErrInvalidOptions)
	}
	if s.ln != nil {
		return fmt.Errorf("%w: server already started", fake.ErrInvalidOptions)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", addr, err)
	}
	s.ln = ln
	s.readyAt = time.Now().Add(s.o.Load)
	h := fnv.New128a()
	h.Write([]byte(ln.Addr().String()))
	sum := h.Sum(nil)
	s.gpuUUID = fmt.Sprintf("GPU-%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
	s.hs = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          zap.NewStdLog(s.log),
		BaseContext:       func(net.Listener) context.Context { return context.Background() },
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("BUG: fake triton serve loop panicked", zap.Any("panic", r))
			}
		}()
		if err := s.hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("fake triton serve ended", zap.Error(err))
		}
	}()
	s.log.Debug("fake engine listening", zap.String("engine", engines.Triton), zap.String("addr", ln.Addr().String()))
	return nil
}

// Addr returns the listening address ("127.0.0.1:PORT"), "" before Start.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL returns the base URL, "http://127.0.0.1:PORT".
func (s *Server) URL() string { return "http://" + s.Addr() }

// InFlight returns the number of requests holding a slot.
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sched.busy
}

// Deferred returns the number of requests waiting for a slot.
func (s *Server) Deferred() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sched.waiters.Len()
}

// Requests returns the number of generate requests received, whatever
// their outcome (faults, errors and the loading answer included).
func (s *Server) Requests() int64 { return s.requests.Load() }

// Close stops listening, drops every connection (streams end without their
// last chunk) and waits for every handler. It is safe to call twice.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed.Swap(true) {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	close(s.done)
	s.mu.Unlock()
	var err error
	if s.hs != nil {
		err = s.hs.Close()
	} else if s.ln != nil {
		err = s.ln.Close()
	}
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (s *Server) loading() bool {
	return s.o.Load > 0 && time.Now().Before(s.readyAt)
}

// sched is the slot scheduler; every field is guarded by Server.mu.
type sched struct {
	slots   int
	busy    int
	waiters list.List // of chan struct{}, FIFO
	// kvTokens is the number of tokens (prompt and generated) that running
	// requests hold in the KV cache.
	kvTokens int
	// Counters for /metrics.
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
	s.mu.Lock()
	if s.sched.busy < s.sched.slots && s.sched.waiters.Len() == 0 {
		s.sched.busy++
		s.mu.Unlock()
		return nil
	}
	ch := make(chan struct{}, 1)
	e := s.sched.waiters.PushBack(ch)
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	case <-s.done:
	}
	s.mu.Lock()
	select {
	case <-ch:
		// Granted while leaving: hand the slot on.
		s.releaseLocked()
	default:
		s.sched.waiters.Remove(e)
	}
	s.mu.Unlock()
	return errGone
}

// releaseLocked frees a slot, handing it to the first waiter.
func (s *Server) releaseLocked() {
	if e := s.sched.waiters.Front(); e != nil {
		s.sched.waiters.Remove(e)
		e.Value.(chan struct{}) <- struct{}{}
		return
	}
	s.sched.busy--
}
