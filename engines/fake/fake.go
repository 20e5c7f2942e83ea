// Package fake serves canned inference engines that speak a real engine's
// wire format byte for byte (SPEC §6): the gateway's tests, BDD features,
// demo and bench run against them instead of GPUs.
//
// This package fakes llama.cpp's `llama-server` (ENGINES.md §1, the
// captures in fixtures/llamacpp); its tgi, triton and vllm packages fake the
// other engines with the same Options, fault modes (FailModes, FaultAt,
// Options.TextTokens) and text model. Generated text is a pure function of
// (seed, prompt, position) — see Text — so the same request yields the same
// tokens from every engine's fake. Slots, deferred queueing, cancellation,
// the loading window and the metrics behave like the real server; Options.Fail
// injects faults.
//
// What a client of the llama.cpp fake sees:
//
//   - Tokens: n_predict (or max_tokens) N gives N text frames, stop_type
//     "limit". -1 or more than fits runs to the slot context (Ctx − prompt
//     tokens) with truncated:true. Options.Tokens caps the text as the model's
//     EOS would: Tokens text frames, then an EOS frame (content "", tokens
//     [2]), then the final frame with stop_type "eos"; like llama.cpp,
//     tokens_predicted counts the EOS token (Tokens+1). ignore_eos:true
//     disables the cap.
//   - Prompt tokens (CountTokens): BOS + whitespace-separated words + 1 if
//     the prompt ends in whitespace. A prompt of Ctx tokens or more gets the
//     400 exceed_context_size_error (plain JSON even when streaming).
//   - Timings: prompt_ms is slot start to first token (≈ TTFT),
//     predicted_ms first to last token (≈ (N−1)·ITL).
//   - Slots: at most Slots requests generate; others wait FIFO (deferred),
//     never 429. id_slot pins a slot (out of range: 400); otherwise the idle
//     slot whose cache shares most of the prompt, else the least recently
//     used. cache_prompt (default true) reuses the shared prefix (cache_n).
//   - Cancellation: a streaming request notices its client leaving at once
//     (the socket is watched) and frees its slot; like llama.cpp, a
//     non-streaming one does not, except when stalled.
//   - Connections: HTTP/1.1 keep-alive as cpp-httplib: idle connections
//     close after 5 s, the 100th response and every error response carry
//     Connection: close and close the connection.
//   - Endpoints: POST /completion(s), GET /health, /props, /slots,
//     /metrics, /v1/models, POST /slots/{id}?action=erase, POST /tokenize;
//     everything else 404. While loading, every path but the UI answers 503.
package fake

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake/internal/serve"
)

// Fault modes for Options.Fail.
const (
	// FailNone: no fault.
	FailNone = "none"
	// FailStart500: every completion answers 500 server_error before any stream.
	FailStart500 = "start-500"
	// FailStart503: every completion answers the loading 503.
	FailStart503 = "start-503"
	// FailStart429: every completion answers 429 (llama.cpp never does).
	FailStart429 = "start-429"
	// FailMidstreamDisconnect: 3 tokens (fewer if fewer are asked), then the
	// TCP connection closes with no final frame and no last chunk.
	FailMidstreamDisconnect = "midstream-disconnect"
	// FailStall: 2 tokens, then silence with the connection and the slot held
	// until the client goes or the server closes.
	FailStall = "stall"
	// FailMalformed: 2 tokens, then a frame that is not valid JSON, then the
	// stream ends.
	FailMalformed = "malformed"
	// FailSplitUTF8: the tokens carry multi-byte characters split across
	// tokens; llama.cpp withholds a frame until its text is valid UTF-8.
	FailSplitUTF8 = "split-utf8"
	// FailMidstreamError: 2 tokens, then a mid-stream error frame as in
	// error_midstream_completion.body.sse, then the stream ends.
	FailMidstreamError = "midstream-error"
)

// FailModes lists the valid Options.Fail values.
func FailModes() []string {
	return []string{FailNone, FailStart500, FailStart503, FailStart429, FailMidstreamDisconnect,
		FailStall, FailMalformed, FailSplitUTF8, FailMidstreamError}
}

// Errors returned by New.
var (
	ErrUnsupportedEngine = errors.New("fake: unsupported engine")
	ErrInvalidOptions    = errors.New("fake: invalid options")
)

// Options configure a fake engine replica.
type Options struct {
	// Engine is the wire format: "llamacpp" ("" means llamacpp).
	Engine string
	// Slots is the number of requests generated at once (llama.cpp
	// --parallel); default 2. Further requests wait in FIFO order.
	Slots int
	// Ctx is the context size per slot the fake reports and enforces;
	// default 8192.
	Ctx int
	// Tokens caps generated text tokens (0 = no cap): a request that would
	// get more gets Tokens tokens and then EOS, as if the model ended there.
	Tokens int
	// TTFT is the delay from slot start to the first token.
	TTFT time.Duration
	// ITL is the delay between tokens.
	ITL time.Duration
	// Load keeps every endpoint at the loading 503 this long after Start.
	Load time.Duration
	// Fail injects a fault (FailModes); "" means none.
	Fail string
	// EngineVersion is the reported build; default "b10470-34af94cd9".
	EngineVersion string
	// Model is the reported model alias and path; default "tiny.gguf".
	Model string
	// Logger receives debug and error logs; nil means none.
	Logger *zap.Logger
}

// Defaults.
const (
	DefaultSlots         = 2
	DefaultCtx           = 8192
	DefaultEngineVersion = "b10470-34af94cd9"
	DefaultModel         = "tiny.gguf"
)

// Defaults are an engine fake's values for the Options fields left zero.
type Defaults struct {
	// Slots replaces a zero Slots; 0 leaves it zero, for an engine that
	// gives zero a meaning of its own.
	Slots int
	// EngineVersion and Model replace empty ones.
	EngineVersion string
	Model         string
}

// Check validates the fields every engine's fake reads alike and fills in
// their defaults: Fail must be one of FailModes ("" becomes FailNone),
// counts and delays must not be negative, Ctx (0 becomes DefaultCtx) must
// be at least 2; Slots, EngineVersion and Model take d's values when zero
// and a nil Logger becomes a no-op one. Errors wrap invalid. Engine is the
// caller's to check.
func (o *Options) Check(d Defaults, invalid error) error {
	if o.Fail == "" {
		o.Fail = FailNone
	}
	if !slices.Contains(FailModes(), o.Fail) {
		return fmt.Errorf("%w: unknown fail mode %q: valid modes: %s", invalid, o.Fail, strings.Join(FailModes(), "|"))
	}
	if o.Slots < 0 || o.Ctx < 0 || o.Tokens < 0 || o.TTFT < 0 || o.ITL < 0 || o.Load < 0 {
		return fmt.Errorf("%w: slots, ctx, tokens and delays must not be negative", invalid)
	}
	if o.Slots == 0 {
		o.Slots = d.Slots
	}
	if o.Ctx == 0 {
		o.Ctx = DefaultCtx
	}
	if o.Ctx < 2 {
		return fmt.Errorf("%w: ctx must be at least 2", invalid)
	}
	if o.EngineVersion == "" {
		o.EngineVersion = d.EngineVersion
	}
	if o.Model == "" {
		o.Model = d.Model
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return nil
}

// TextTokens returns how many text tokens a request that would generate n
// gets, and whether the model's EOS token follows them: Tokens caps n as
// the model's EOS would, unless ignoreEOS.
func (o *Options) TextTokens(n int, ignoreEOS bool) (text int, eos bool) {
	if o.Tokens > 0 && o.Tokens < n && !ignoreEOS {
		return o.Tokens, true
	}
	return n, false
}

// FaultAt returns after how many tokens the mid-stream fault of a fail
// mode fires: 3 for FailMidstreamDisconnect, 2 for FailStall, FailMalformed
// and FailMidstreamError, -1 for a mode without one.
func FaultAt(fail string) int {
	switch fail {
	case FailMidstreamDisconnect:
		return 3
	case FailStall, FailMalformed, FailMidstreamError:
		return 2
	}
	return -1
}

// Server is one fake engine replica.
type Server struct {
	o   Options
	log *zap.Logger

	ln      net.Listener
	readyAt time.Time
	startAt time.Time

	// g runs the accept loop, the connections and their socket watchers.
	g *serve.Group

	requests atomic.Int64
	tasks    atomic.Int64

	// mu guards everything in sched.
	mu    sync.Mutex
	sched sched
}

// New validates o and returns an unstarted server.
func New(o Options) (*Server, error) {
	switch o.Engine {
	case "", engines.LlamaCpp:
		o.Engine = engines.LlamaCpp
	default:
		return nil, fmt.Errorf("%w %q: supported engines: %s", ErrUnsupportedEngine, o.Engine, engines.LlamaCpp)
	}
	err := o.Check(Defaults{Slots: DefaultSlots, EngineVersion: DefaultEngineVersion, Model: DefaultModel}, ErrInvalidOptions)
	if err != nil {
		return nil, err
	}
	s := &Server{o: o, log: o.Logger, g: serve.NewGroup("fake llama.cpp", o.Logger)}
	s.sched.init(o.Slots)
	return s, nil
}

// Start listens on addr ("127.0.0.1:0" picks a free port) and serves in the
// background until Close.
func (s *Server) Start(addr string) error {
	if s.g.Closed() {
		return fmt.Errorf("%w: server closed", ErrInvalidOptions)
	}
	if s.ln != nil {
		return fmt.Errorf("%w: server already started", ErrInvalidOptions)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", addr, err)
	}
	s.ln = ln
	s.startAt = time.Now()
	s.readyAt = s.startAt.Add(s.o.Load)
	if !s.g.Go("accept loop", s.accept) {
		ln.Close()
		return fmt.Errorf("%w: server closed", ErrInvalidOptions)
	}
	s.log.Debug("fake engine listening", zap.String("engine", s.o.Engine), zap.String("addr", ln.Addr().String()))
	return nil
}

func (s *Server) accept() {
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.g.Closed() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("fake engine accept failed", zap.Error(err))
			select {
			case <-time.After(backoff):
			case <-s.g.Done():
				return
			}
			continue
		}
		backoff = 0
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		// Once closed, the group closes c (Track) or already has (Go).
		if !s.g.Track(c) || !s.g.Go("connection", func() { s.serveConn(c) }) {
			return
		}
	}
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

// Requests returns the number of completion requests received, whatever
// their outcome (faults, errors and the loading 503 included).
func (s *Server) Requests() int64 { return s.requests.Load() }

// Close stops listening, drops every connection (streams end without their
// final frame) and waits for all goroutines. It is safe to call twice.
func (s *Server) Close() error {
	var stop func() error
	if s.ln != nil {
		stop = s.ln.Close
	}
	return s.g.Close(stop)
}

func (s *Server) loading() bool {
	return s.o.Load > 0 && time.Now().Before(s.readyAt)
}
