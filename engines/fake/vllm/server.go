// Package vllm serves a fake vLLM replica (`vllm serve`, OpenAI-compatible;
// ENGINES.md §2, vLLM 0.11 wire format): the gateway's tests, BDD features
// and demo run against it instead of a GPU.
//
// Text is the shared fake model's (fake.NewGenerator): the token at position
// pos is the same word for the same (seed, prompt) on every engine's fake, and
// prompt_tokens is fake.CountTokens(prompt). What a client sees:
//
//   - POST /v1/completions: stream:true answers 200 text/event-stream at once
//     (before the request gets a slot, as vLLM sends its headers before
//     prefill), then one chunk per token in the compact pydantic shape of
//     ENGINES.md's capture ("usage":null, "*_token_ids":null), the last text
//     chunk carrying finish_reason, a usage chunk ("choices":[]) when
//     stream_options.include_usage is set, and `data: [DONE]`. max_tokens N
//     gives N chunks and finish "length"; null means up to max_model_len.
//     Options.Tokens caps the text as the model's EOS would: Tokens chunks,
//     then the EOS chunk (text "", finish "stop"); like vLLM, completion_tokens
//     counts the EOS token. ignore_eos:true disables the cap.
//     stream_options.continuous_usage_stats puts usage in every chunk and
//     return_token_ids fills token_ids / prompt_token_ids. stream:false
//     answers one JSON body.
//   - Validation before streaming, as vLLM's serving layer: a prompt of
//     max_model_len tokens or more, or prompt + max_tokens over it, is a 400
//     BadRequestError whose message contains "maximum context length"; an
//     unknown "model" is a 404 NotFoundError; other bad fields are 400.
//   - Scheduling: at most Slots requests run (vLLM --max-num-seqs); others
//     wait FIFO (vllm:num_requests_waiting). A client that disconnects aborts
//     its request at once and frees its slot (AsyncLLM.abort).
//   - Load: vLLM's app listens only once the engine is loaded, so during
//     Options.Load connections are refused: Start binds the port without
//     listening and listens when loading ends (on systems without Unix
//     sockets the port is released and taken again).
//   - GET /health (200, empty body), /version, /v1/models, /metrics (the
//     vllm: gauges with sorted labels and float values, from the fake's
//     state). Everything else is FastAPI's 404 {"detail":"Not Found"}.
//
// Faults (Options.Fail): start-500 answers 500 InternalServerError before
// any stream. vLLM itself never sends 429 or a start 503: start-429 answers
// the 429 RateLimitError that an OpenAI-compatible proxy or router in front
// of vLLM sends, and start-503 the 503 such a front answers while its engine
// is unavailable (vLLM's own /health says 503 when its engine is dead); both
// in vLLM's error shape. midstream-disconnect sends 3 tokens and cuts the
// connection (no [DONE], no last chunk); stall sends 2 tokens then holds the
// stream and the slot silently; malformed sends 2 tokens, a non-JSON frame
// and [DONE]; midstream-error sends 2 tokens, vLLM's json.dumps error frame
// (with spaces) and [DONE]; split-utf8 splits multi-byte characters across
// tokens as vLLM's incremental detokenizer shows them: a token that ends
// inside a character gets a chunk with text "", and the next chunk carries
// the whole character.
package vllm

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/fake/internal/serve"
)

// Defaults for the vLLM fake.
const (
	// DefaultModel is the served model name when Options.Model is "".
	DefaultModel = "Qwen/Qwen2.5-1.5B-Instruct"
	// DefaultEngineVersion is GET /version's answer when
	// Options.EngineVersion is "".
	DefaultEngineVersion = "0.11.0"
	// keepAliveTimeout is uvicorn's default --timeout-keep-alive.
	keepAliveTimeout = 5 * time.Second
)

// Server is one fake vLLM replica.
type Server struct {
	o   fake.Options
	log *zap.Logger

	run *serve.HTTP
	// Set once the port is bound, before any request is served.
	startAt time.Time
	created int64 // the model's "created" in /v1/models

	requests atomic.Int64
	ids      atomic.Uint64

	q sched
}

// New validates o and returns an unstarted server. o.Engine must be "" or
// "vllm"; o.Model and o.EngineVersion default to DefaultModel and
// DefaultEngineVersion, o.Slots and o.Ctx to fake.DefaultSlots and
// fake.DefaultCtx.
func New(o fake.Options) (*Server, error) {
	if o.Engine != "" && o.Engine != engines.VLLM {
		return nil, fmt.Errorf("%w %q: this fake serves %s", fake.ErrUnsupportedEngine, o.Engine, engines.VLLM)
	}
	o.Engine = engines.VLLM
	d := fake.Defaults{Slots: fake.DefaultSlots, EngineVersion: DefaultEngineVersion, Model: DefaultModel}
	if err := o.Check(d, fake.ErrInvalidOptions); err != nil {
		return nil, err
	}
	s := &Server{o: o, log: o.Logger}
	s.q.init(o.Slots, o.Ctx)
	// A request that arrives while the server closes has its connection
	// dropped.
	s.run = serve.NewHTTP(serve.NewGroup("fake vllm", o.Logger), &http.Server{
		Handler:           http.HandlerFunc(s.route),
		IdleTimeout:       keepAliveTimeout,
		ReadHeaderTimeout: 30 * time.Second,
	}, 0)
	return s, nil
}

// Start listens on addr ("127.0.0.1:0" picks a free port) and serves in the
// background until Close. With Options.Load the port is bound but refuses
// connections until loading ends, as vLLM's app listens only then.
func (s *Server) Start(addr string) error {
	return s.run.Start(addr, s.o.Load, fake.ErrInvalidOptions, func(addr string) {
		s.startAt = time.Now()
		s.created = s.startAt.Unix()
		s.log.Debug("fake engine started", zap.String("engine", engines.VLLM), zap.String("addr", addr), zap.Duration("load", s.o.Load))
	})
}

// Addr returns the listening address ("127.0.0.1:PORT"), "" before Start.
func (s *Server) Addr() string { return s.run.Addr() }

// URL returns the base URL, "http://127.0.0.1:PORT".
func (s *Server) URL() string { return "http://" + s.Addr() }

// Listening reports whether the server accepts connections (false before
// Start, while loading and after Close).
func (s *Server) Listening() bool { return s.run.Listening() }

// InFlight returns the number of requests holding a slot (running).
func (s *Server) InFlight() int { return s.q.running() }

// Deferred returns the number of requests waiting for a slot.
func (s *Server) Deferred() int { return s.q.waiting() }

// Requests returns the number of completion requests received, whatever
// their outcome (faults and errors included).
func (s *Server) Requests() int64 { return s.requests.Load() }

// Close stops listening, drops every connection (streams end without
// [DONE]) and waits for all goroutines. It is safe to call twice.
func (s *Server) Close() error { return s.run.Close() }

// ServeHTTP serves one request as the started server does: routed, counted
// for Close, a panic dropping the connection.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.run.ServeHTTP(w, r) }

// route routes one request (vLLM's FastAPI app).
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Server", "uvicorn")
	path := r.URL.Path
	switch path {
	case "/v1/completions", "/v1/chat/completions":
		if r.Method != http.MethodPost {
			writeDetail(w, http.StatusMethodNotAllowed, "Method Not Allowed")
			return
		}
		s.requests.Add(1)
		s.completions(w, r, path == "/v1/chat/completions")
		return
	case "/health", "/version", "/v1/models", "/metrics":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeDetail(w, http.StatusMethodNotAllowed, "Method Not Allowed")
			return
		}
	}
	switch path {
	case "/health":
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
	case "/version":
		b := append([]byte(`{"version":`), appendPyString(nil, s.o.EngineVersion)...)
		writeJSON(w, http.StatusOK, append(b, '}'))
	case "/v1/models":
		writeJSON(w, http.StatusOK, s.models())
	case "/metrics":
		b := s.metrics()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b)
	default:
		writeDetail(w, http.StatusNotFound, "Not Found")
	}
}
