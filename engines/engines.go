// Package engines defines the seam between the gateway and inference engines:
// one Adapter per engine replica turns the engine's native token stream into
// canonical token callbacks, plus small optional interfaces (Prober, Loader)
// discovered by type assertion. Wire details live in engines/<name>.
package engines

import (
	"context"
	"errors"
	"fmt"
)

// Engine names (SPEC §3.1 `engine`).
const (
	LlamaCpp = "llamacpp"
	VLLM     = "vllm"
	TGI      = "tgi"
	Triton   = "triton"
)

// Request is what the gateway asks one engine replica to generate.
type Request struct {
	TaskID    string
	SessionID string
	Model     string
	Prompt    string
	MaxTokens int
	// Seed is always set by the gateway (a stable hash of task_id when the
	// client gave none).
	Seed int64
	// Ctx is the context size the client asked for (informational).
	Ctx int
	// CachePrompt lets the engine reuse the session's KV (kv_hint reuse).
	CachePrompt bool
}

// Sink receives a stream's tokens. Calls come from the adapter's goroutine,
// in order; implementations must not block for long (they run on the relay's
// hot path).
type Sink interface {
	// Token receives the text of one engine frame that carried text: valid,
	// non-empty UTF-8 (an adapter withholds an incomplete character until it
	// is complete). text is valid only during the call.
	Token(text []byte)
	// Flush tells the sink that nothing more is buffered from the engine right
	// now: the moment to publish what it has (write coalescing).
	Flush()
}

// Result is an engine's own account of a finished stream.
type Result struct {
	// TokensOut is the engine's count of generated tokens.
	TokensOut int
	// TokensIn is the engine's count of prompt tokens (0 when unknown).
	TokensIn int
	// DecodeMs is the engine-reported decode time (0 when unknown: the gateway
	// then measures it).
	DecodeMs int64
	// FinishReason is "stop" or "length".
	FinishReason string
	// Slot is the engine slot that served the request (-1 when unknown); the
	// gateway remembers it per session to evict the session's KV later.
	Slot int
}

// Adapter streams one request from one engine replica.
type Adapter interface {
	// Engine returns the engine name (LlamaCpp, ...).
	Engine() string
	// Stream sends req and delivers its tokens to sink until the engine's
	// terminal frame. It returns the engine's Result, or an error: *Error for
	// engine faults, ctx.Err() when ctx was canceled (the engine connection is
	// then closed at once so the engine frees the slot). It never reports
	// success for a stream that ended without the engine's terminal frame.
	Stream(ctx context.Context, req *Request, sink Sink) (Result, error)
}

// Props are an engine replica's properties, as far as the engine reports them.
type Props struct {
	// Slots is the number of requests decoded in parallel (0 = unknown).
	Slots int
	// CtxMax is the per-request context limit (0 = unknown).
	CtxMax int
	// EngineVersion is the engine build ("b10470-34af94cd9"); "" = unknown.
	EngineVersion string
	// Model is the model name or alias the engine reports ("" = unknown).
	Model string
	// ModelDigest identifies the weights where the engine exposes it.
	ModelDigest string
}

// Prober is implemented by adapters that can check health and read props.
type Prober interface {
	// Health returns nil when the replica is ready to serve; an *Error of
	// KindUnavailable while it loads or cannot be reached.
	Health(ctx context.Context) error
	// Props reads the replica's properties.
	Props(ctx context.Context) (Props, error)
}

// SlotEraser is implemented by adapters whose engine can drop one slot's KV
// cache (llama.cpp `POST /slots/{id}?action=erase`), used on session delete.
type SlotEraser interface {
	EraseSlot(ctx context.Context, slot int) error
}

// Load is an engine replica's own account of its load, from its metrics
// endpoint (ENGINES.md "Metrics"). A gauge the engine does not report is
// absent (its Has… flag false), never zero.
type Load struct {
	// Processing is the number of requests being decoded (llama.cpp
	// requests_processing, vLLM num_requests_running, TGI batch size).
	Processing int
	// Deferred is the number of requests waiting inside the engine.
	Deferred int
	// KVCacheUsage is the KV cache usage ratio, 0..1.
	KVCacheUsage    float64
	HasKVCacheUsage bool
	// Devices are per-GPU gauges, where the engine reports them.
	Devices []DeviceLoad
}

// DeviceLoad is one GPU's gauges.
type DeviceLoad struct {
	// Device names the GPU as the engine does (index or UUID).
	Device string
	// Utilization is 0..1.
	Utilization    float64
	HasUtilization bool
	// VRAMUsedBytes is the device memory in use.
	VRAMUsedBytes float64
	HasVRAMUsed   bool
}

// LoadScraper is implemented by adapters that can read the engine's own load
// gauges (llama.cpp `requests_processing`/`requests_deferred`, …). It is
// called periodically, off the request path.
type LoadScraper interface {
	ScrapeLoad(ctx context.Context) (Load, error)
}

// Tokenizer is implemented by adapters whose engine can count a text's
// tokens (admission's `tokenize: engine` estimator).
type Tokenizer interface {
	CountTokens(ctx context.Context, text string) (int, error)
}

// Interruptible is implemented by adapters whose engine frees the slot as
// soon as the stream is closed, so a running decode can be aborted and
// resumed elsewhere later (SPEC §4.4 interruptible_decode).
type Interruptible interface {
	InterruptibleDecode() bool
}

// Closer is implemented by adapters holding pooled connections.
type Closer interface{ Close() error }

// ErrorKind classifies engine failures (ENGINES.md §5 error mapping).
type ErrorKind uint8

// Error kinds.
const (
	// KindUpstream: 5xx, a mid-stream error frame, a cut stream.
	KindUpstream ErrorKind = iota + 1
	// KindContextLength: the prompt does not fit the context.
	KindContextLength
	// KindInvalidRequest: any other 4xx.
	KindInvalidRequest
	// KindOverloaded: the engine refused for load (429, TGI overloaded).
	KindOverloaded
	// KindUnavailable: loading, connection refused, not ready.
	KindUnavailable
	// KindProtocol: the engine sent something that is not its wire format.
	KindProtocol
)

var errorKindNames = [...]string{"", "upstream", "context_length", "invalid_request", "overloaded", "unavailable", "protocol"}

func (k ErrorKind) String() string {
	if int(k) < len(errorKindNames) {
		return errorKindNames[k]
	}
	return "unknown"
}

// Error is an engine failure.
type Error struct {
	Kind ErrorKind
	// Status is the engine's HTTP status (0 when none was received).
	Status int
	// Message is the engine's own message, or a description of the fault.
	Message string
	// AfterFirstToken is true when at least one token reached the sink: the
	// request must not be retried elsewhere (tokens would repeat).
	AfterFirstToken bool
	// Err is the underlying cause, if any.
	Err error
}

func (e *Error) Error() string {
	s := e.Kind.String()
	if e.Status != 0 {
		s += fmt.Sprintf(" (HTTP %d)", e.Status)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Retriable reports whether another replica may be tried: only failures
// before the first token that are not the request's own fault.
func (e *Error) Retriable() bool {
	if e.AfterFirstToken {
		return false
	}
	switch e.Kind {
	case KindUpstream, KindOverloaded, KindUnavailable, KindProtocol:
		return true
	}
	return false
}

// AsError returns err's *Error, if it has one.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
