// Package tgi is a fake Hugging Face Text Generation Inference replica
// (TGI v3.3.7, ENGINES.md §3) for tests, demos and benchmarks without a GPU:
// it speaks TGI's router wire format — POST /generate_stream, /generate and
// /, GET /health, /ping, /info, /metrics and /v1/models — with the text of
// engines/fake's model, so the same (seed, prompt) yields the same words as
// every other engine's fake.
//
// What a client sees:
//
//   - Streams: `200 text/event-stream` at once (before validation or
//     queueing, as TGI's axum handler answers), then one `data: {…}` frame
//     per token with index from 1; the last frame carries the last token,
//     generated_text and, with details:true, details {finish_reason,
//     generated_tokens, seed (null for greedy), input_length}. `:` keep-alive
//     comments follow 15 s of silence (axum's default). No `[DONE]`.
//   - Tokens: max_new_tokens N gives N text frames, finish_reason "length".
//     Options.Tokens caps the text as the model's EOS would: Tokens text
//     frames, then the EOS frame ("<|im_end|>", special:true, left out of
//     generated_text, counted in generated_tokens: Tokens+1), finish_reason
//     "eos_token". `stop` sequences end the stream with "stop_sequence".
//   - Prompt tokens (input_length) are fake.CountTokens(inputs). Options.Ctx
//     plays --max-total-tokens (max_input_tokens is Ctx−1): a request with
//     inputs + max_new_tokens > Ctx gets the validation error frame
//     "Input validation error: `inputs` tokens + `max_new_tokens` must be <= …".
//   - Errors on /generate_stream are always a 200 stream with one
//     `{"error":…,"error_type":…}` frame, then the end: overloaded,
//     validation, generation. /generate answers them with 429, 422, 424 and
//     500. An unreadable body gets axum's text/plain 400, 415 or 422 (the
//     serde wording is approximated).
//   - Concurrency: Options.Slots, when set, plays both
//     --max-concurrent-requests (reported as /info max_concurrent_requests)
//     and the batch size: that many requests generate at once and one more
//     gets the overloaded frame ("Model is overloaded"). Unset, the fake keeps
//     TGI's default of 128 requests in flight, fake.DefaultSlots of them
//     generating and the rest queued in FIFO order (tgi_queue_size); the
//     129th is refused as overloaded.
//   - Cancellation: a client that closes the connection frees its slot at
//     once (TGI drops it from the batch at the next step) and counts in
//     tgi_request_failure{err="dropped"}.
//   - Loading: with Options.Load the port is bound but not listening, so
//     connections are refused until the model is loaded, as TGI's launcher
//     starts the router only then (on systems without Unix sockets the port
//     is released and taken again after the load).
//   - Faults (Options.Fail), all shaped as TGI shows them:
//     start-429 → a 200 stream with the overloaded frame (TGI never sends 429
//     on /generate_stream); start-500 → a 200 stream with a generation error
//     frame; start-503 → GET /health answers 503
//     {"error":"unhealthy","error_type":"healthcheck"} (the only 503 TGI
//     has: its backend failed its health check) and every stream gets the
//     generation error frame a dead shard causes; midstream-disconnect → 3
//     tokens, then the TCP connection closes without the final frame or the
//     last chunk; stall → 2 tokens, then silence (only keep-alives) holding
//     the slot until the client leaves; malformed → 2 tokens, then a frame
//     that is not JSON, then the end; midstream-error → 2 tokens, then the
//     generation error frame, then the end; split-utf8 → tokens split inside
//     multi-byte characters, sent as TGI does: `"text":""` for a token that
//     ends mid-character, and the whole character with the next token.
package tgi

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/fake/internal/serve"
)

// Defaults of the TGI fake.
const (
	// DefaultModel is the model id /info reports when Options.Model is "".
	DefaultModel = "Qwen/Qwen2.5-1.5B-Instruct"
	// DefaultEngineVersion is the TGI version /info reports when
	// Options.EngineVersion is "".
	DefaultEngineVersion = "3.3.7"
	// DefaultMaxConcurrentRequests is TGI's --max-concurrent-requests
	// default, used when Options.Slots is 0.
	DefaultMaxConcurrentRequests = 128
	// keepAliveInterval is axum's KeepAlive::default(): a comment after 15 s
	// without an event.
	keepAliveInterval = 15 * time.Second
)

// ErrInvalidOptions is returned by New and Start for unusable options or
// calls out of order.
var ErrInvalidOptions = errors.New("tgi fake: invalid options")

// Server is one fake TGI replica.
type Server struct {
	o             fake.Options
	log           *zap.Logger
	slots         int // requests generated at once
	maxConcurrent int // requests in flight (queued or generating)
	modelSHA      string
	// keepAlive is the SSE keep-alive interval (tests shorten it).
	keepAlive time.Duration

	run      *serve.HTTP
	requests atomic.Int64

	// mu guards sched.
	mu    sync.Mutex
	sched sched
}

// New validates o and returns an unstarted server. o.Engine must be "" or
// "tgi"; the fault mode must be one of fake.FailModes().
func New(o fake.Options) (*Server, error) {
	if o.Engine != "" && o.Engine != engines.TGI {
		return nil, fmt.Errorf("%w: engine %q: this fake serves %s", ErrInvalidOptions, o.Engine, engines.TGI)
	}
	o.Engine = engines.TGI
	// Slots stays 0 when unset: TGI's own defaults apply (see below).
	if err := o.Check(fake.Defaults{EngineVersion: DefaultEngineVersion, Model: DefaultModel}, ErrInvalidOptions); err != nil {
		return nil, err
	}
	s := &Server{o: o, log: o.Logger, keepAlive: keepAliveInterval}
	s.slots, s.maxConcurrent = fake.DefaultSlots, DefaultMaxConcurrentRequests
	if o.Slots > 0 {
		s.slots, s.maxConcurrent = o.Slots, o.Slots
	}
	s.modelSHA = modelSHA(o.Model)
	s.sched.init(s.slots)
	// A request that arrives while the server closes gets an empty 503.
	s.run = serve.NewHTTP(serve.NewGroup("fake tgi", o.Logger),
		&http.Server{Handler: http.HandlerFunc(s.serveHTTP), ReadHeaderTimeout: time.Minute}, http.StatusServiceUnavailable)
	return s, nil
}

// Start binds addr ("127.0.0.1:0" picks a free port) and serves in the
// background until Close. With Options.Load the port is bound at once (Addr
// is known) but connections are refused until the load time has passed, as
// TGI's launcher starts the router only once the model is loaded.
func (s *Server) Start(addr string) error {
	return s.run.Start(addr, s.o.Load, ErrInvalidOptions, nil)
}

// Addr returns the bound address ("127.0.0.1:PORT"), "" before Start.
func (s *Server) Addr() string { return s.run.Addr() }

// URL returns the base URL, "http://127.0.0.1:PORT".
func (s *Server) URL() string { return "http://" + s.Addr() }

// InFlight returns the number of requests generating (holding a batch slot).
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sched.batch.Busy()
}

// Deferred returns the number of requests queued for a batch slot
// (tgi_queue_size).
func (s *Server) Deferred() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sched.batch.Waiting()
}

// Requests returns the number of generation requests received
// (/generate_stream, /generate and /), whatever their outcome.
func (s *Server) Requests() int64 { return s.requests.Load() }

// MaxConcurrentRequests returns the in-flight cap the fake reports in /info
// and enforces with the overloaded error.
func (s *Server) MaxConcurrentRequests() int { return s.maxConcurrent }

// Close stops serving, drops every connection (streams end without their
// final frame) and waits for every handler. It is safe to call twice.
func (s *Server) Close() error { return s.run.Close() }
