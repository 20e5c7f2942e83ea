// Package fake serves canned inference engines that speak a real engine's
// wire format byte for byte (SPEC §6): the gateway's tests, BDD features,
// demo and bench run against them instead of GPUs.
//
// So far one engine is faked: llama.cpp's `llama-server` (ENGINES.md §1, the
// captures in fixtures/llamacpp). Generated text is a pure function of
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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/engines"
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

// Server is one fake engine replica.
type Server struct {
	o   Options
	log *zap.Logger

	ln      net.Listener
	readyAt time.Time
	startAt time.Time

	done   chan struct{}
	wg     sync.WaitGroup
	closed atomic.Bool

	requests atomic.Int64
	tasks    atomic.Int64

	// mu guards conns and everything in sched.
	mu    sync.Mutex
	conns map[net.Conn]struct{}
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
	if o.Fail == "" {
		o.Fail = FailNone
	}
	valid := false
	for _, m := range FailModes() {
		valid = valid || m == o.Fail
	}
	if !valid {
		return nil, fmt.Errorf("%w: unknown fail mode %q: valid modes: %s", ErrInvalidOptions, o.Fail, strings.Join(FailModes(), "|"))
	}
	if o.Slots < 0 || o.Ctx < 0 || o.Tokens < 0 || o.TTFT < 0 || o.ITL < 0 || o.Load < 0 {
		return nil, fmt.Errorf("%w: slots, ctx, tokens and delays must not be negative", ErrInvalidOptions)
	}
	if o.Slots == 0 {
		o.Slots = DefaultSlots
	}
	if o.Ctx == 0 {
		o.Ctx = DefaultCtx
	}
	if o.Ctx < 2 {
		return nil, fmt.Errorf("%w: ctx must be at least 2", ErrInvalidOptions)
	}
	if o.EngineVersion == "" {
		o.EngineVersion = DefaultEngineVersion
	}
	if o.Model == "" {
		o.Model = DefaultModel
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	s := &Server{o: o, log: log, done: make(chan struct{}), conns: make(map[net.Conn]struct{})}
	s.sched.init(o.Slots)
	return s, nil
}

// Start listens on addr ("127.0.0.1:0" picks a free port) and serves in the
// background until Close.
func (s *Server) Start(addr string) error {
	if s.closed.Load() {
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
	s.wg.Add(1)
	go s.accept()
	s.log.Debug("fake engine listening", zap.String("engine", s.o.Engine), zap.String("addr", ln.Addr().String()))
	return nil
}

func (s *Server) accept() {
	defer s.wg.Done()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("BUG: fake engine accept loop panicked", zap.Any("panic", r))
		}
	}()
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("fake engine accept failed", zap.Error(err))
			select {
			case <-time.After(backoff):
			case <-s.done:
				return
			}
			continue
		}
		backoff = 0
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		s.mu.Lock()
		if s.closed.Load() {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
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
	s.mu.Lock()
	if s.closed.Swap(true) {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	close(s.done)
	var err error
	if s.ln != nil {
		err = s.ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (s *Server) loading() bool {
	return s.o.Load > 0 && time.Now().Before(s.readyAt)
}
