package gateway

import (
	"encoding/json"
	"strconv"

	"github.com/valyala/fasthttp"
)

// Error codes (SPEC §3.6). Codes are the contract; messages are for people.
const (
	CodeInvalidParams     = "INVALID_PARAMS"
	CodeDeadlineUnmet     = "DEADLINE_UNMET"
	CodeAdmissionReject   = "ADMISSION_REJECT"
	CodeQueueFullDropLRU  = "QUEUE_FULL_DROP_LRU"
	CodeModelDeprecated   = "MODEL_DEPRECATED"
	CodeUntrustedArtifact = "UNTRUSTED_ARTIFACT"
	CodePoolUnready       = "POOL_UNREADY"
	CodePoolUnavailable   = "POOL_UNAVAILABLE"
	CodeReplicaExhausted  = "REPLICA_EXHAUSTED"
	CodeDecodeTimeout     = "DECODE_TIMEOUT"
	CodeWorkerReset       = "WORKER_RESET"
	CodeInternal          = "INTERNAL"
	CodeCanceled          = "CANCELED"
	CodeUnauthorized      = "UNAUTHORIZED"
	CodeForbidden         = "FORBIDDEN"
	CodeNotFound          = "NOT_FOUND"
	CodeMethodNotAllowed  = "METHOD_NOT_ALLOWED"
)

// statusOf maps each code to its HTTP status: the one place that does.
var statusOf = map[string]int{
	CodeInvalidParams:     fasthttp.StatusBadRequest,
	CodeDeadlineUnmet:     fasthttp.StatusBadRequest,
	CodeAdmissionReject:   fasthttp.StatusTooManyRequests,
	CodeQueueFullDropLRU:  fasthttp.StatusTooManyRequests,
	CodeModelDeprecated:   fasthttp.StatusForbidden,
	CodeUntrustedArtifact: fasthttp.StatusBadRequest,
	CodePoolUnready:       fasthttp.StatusServiceUnavailable,
	CodePoolUnavailable:   fasthttp.StatusServiceUnavailable,
	CodeReplicaExhausted:  fasthttp.StatusServiceUnavailable,
	CodeInternal:          fasthttp.StatusInternalServerError,
	CodeUnauthorized:      fasthttp.StatusUnauthorized,
	CodeForbidden:         fasthttp.StatusForbidden,
	CodeNotFound:          fasthttp.StatusNotFound,
	CodeMethodNotAllowed:  fasthttp.StatusMethodNotAllowed,
}

// APIError is the error envelope of SPEC §3.6, used both as an HTTP body and
// as the data of a terminal `error` event.
type APIError struct {
	Code           string `json:"code"`
	Message        string `json:"message"`
	Engine         string `json:"engine,omitempty"`
	PoolID         string `json:"pool_id,omitempty"`
	Retriable      bool   `json:"retriable"`
	RetryAfterMs   int64  `json:"retry_after_ms,omitempty"`
	PolicyLabel    string `json:"policy_label,omitempty"`
	PredictedEndMs int64  `json:"predicted_end_ms,omitempty"`

	// status overrides the code's status (409 for a duplicate task_id).
	status int
	// queuePosition and queueETAMs feed X-Queue-Position / X-Queue-ETA-Ms.
	queuePosition int
	queueETAMs    int64
	queueKnown    bool // the queue headers apply (429s of a pool's admission)
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

// Status returns the HTTP status for the error.
func (e *APIError) Status() int {
	if e.status != 0 {
		return e.status
	}
	if s, ok := statusOf[e.Code]; ok {
		return s
	}
	return fasthttp.StatusInternalServerError
}

func errInvalid(msg string) *APIError {
	return &APIError{Code: CodeInvalidParams, Message: msg}
}

// writeError writes e as the JSON envelope with its status and, for 429/503,
// the backpressure headers (SPEC §3.6, ORCH-2007).
func writeError(ctx *fasthttp.RequestCtx, e *APIError) {
	status := e.Status()
	if status == fasthttp.StatusTooManyRequests || status == fasthttp.StatusServiceUnavailable {
		if e.RetryAfterMs <= 0 {
			e.RetryAfterMs = 1000
		}
		e.Retriable = true
		secs := (e.RetryAfterMs + 999) / 1000
		ctx.Response.Header.Set("Retry-After", strconv.FormatInt(secs, 10))
		ctx.Response.Header.Set("X-Backoff-Ms", strconv.FormatInt(e.RetryAfterMs, 10))
		if e.queueKnown || e.queuePosition > 0 {
			ctx.Response.Header.Set("X-Queue-Position", strconv.Itoa(e.queuePosition))
			ctx.Response.Header.Set("X-Queue-ETA-Ms", strconv.FormatInt(e.queueETAMs, 10))
		}
	}
	writeJSON(ctx, status, e)
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.ResetBody()
	enc := json.NewEncoder(ctx)
	enc.SetEscapeHTML(false) // messages quote ">" and "&" as they are
	if err := enc.Encode(v); err != nil {
		// Only our own types reach here; failing to encode them is a bug.
		panic("BUG: gateway: cannot encode response: " + err.Error())
	}
}
