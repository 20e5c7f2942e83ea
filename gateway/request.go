package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"strings"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/gateway/admission"
)

// TaskRequest is the body of POST /v1/tasks (SPEC §3.1). Pointer fields tell
// "absent" from zero.
type TaskRequest struct {
	TaskID                string   `json:"task_id"`
	SessionID             string   `json:"session_id"`
	Workload              string   `json:"workload"`
	ModelRef              string   `json:"model_ref"`
	Engine                string   `json:"engine"`
	Ctx                   *int     `json:"ctx"`
	Priority              string   `json:"priority"`
	Seed                  *int64   `json:"seed"`
	Determinism           string   `json:"determinism"`
	SamplerProfileVersion string   `json:"sampler_profile_version"`
	Prompt                *string  `json:"prompt"`
	Inputs                []string `json:"inputs"`
	MaxTokens             *int     `json:"max_tokens"`
	DeadlineMs            *int64   `json:"deadline_ms"`
	ExpectedTokens        *int     `json:"expected_tokens"`
	KVHint                string   `json:"kv_hint"`
}

// SamplerProfileVersion is the one sampler profile every adapter applies:
// greedy decoding (temperature 0 / do_sample false) with the task's seed, so
// replicas of one set (same engine_version) give byte-identical streams
// (SPEC §11). A request naming another profile is refused.
const SamplerProfileVersion = "greedy-v1"

// DefaultMaxTokens is used when a request names no max_tokens.
const DefaultMaxTokens = 256

// maxPromptBytes bounds one prompt (the request body is bounded too).
const maxPromptBytes = 1 << 20

// parsedTask is a validated request.
type parsedTask struct {
	TaskRequest
	priority  admission.Priority
	maxTokens int
	seed      int64
}

// parseTaskRequest decodes and validates the body; every problem is an
// INVALID_PARAMS error naming the field.
func parseTaskRequest(body []byte) (*parsedTask, *APIError) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errInvalid("request body is empty: send a JSON object")
	}
	var r TaskRequest
	if msg := decodeStrict(body, &r); msg != "" {
		return nil, errInvalid(msg)
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	// Ids are kept in canonical form, so one id written two ways (upper
	// case, braces, urn:uuid:) is still one task and one session.
	if r.TaskID == "" {
		bad("task_id is required (a UUID)")
	} else if id, ok := canonicalID(r.TaskID); !ok {
		bad("task_id must be a UUID")
	} else {
		r.TaskID = id
	}
	if r.SessionID == "" {
		bad("session_id is required (a UUID)")
	} else if id, ok := canonicalID(r.SessionID); !ok {
		bad("session_id must be a UUID")
	} else {
		r.SessionID = id
	}
	switch r.Workload {
	case "", "completion":
	case "embedding", "rerank":
		bad("workload %q is not served in v1: only completion", r.Workload)
	default:
		bad("workload must be completion, embedding or rerank")
	}
	if r.ModelRef == "" {
		bad("model_ref is required")
	}
	switch r.Engine {
	case "", engines.LlamaCpp, engines.VLLM, engines.TGI, engines.Triton:
	default:
		bad("engine must be llamacpp, vllm, tgi or triton")
	}
	if r.Ctx != nil && *r.Ctx <= 0 {
		bad("ctx must be > 0")
	}
	prio, ok := admission.ParsePriority(r.Priority)
	if !ok {
		bad("priority must be interactive or batch")
	}
	switch r.Determinism {
	case "", "strict", "best_effort":
	default:
		bad("determinism must be strict or best_effort")
	}
	if r.SamplerProfileVersion != "" && r.SamplerProfileVersion != SamplerProfileVersion {
		bad("sampler_profile_version %q is not served: every replica set samples with %q (greedy, seeded)", r.SamplerProfileVersion, SamplerProfileVersion)
	}
	switch {
	case r.Prompt == nil && len(r.Inputs) == 0:
		bad("prompt is required for workload completion")
	case r.Prompt != nil && len(r.Inputs) > 0:
		bad("send prompt or inputs, not both")
	case r.Prompt == nil:
		bad("workload completion takes prompt; inputs is for embedding and rerank")
	case len(*r.Prompt) > maxPromptBytes:
		bad("prompt is longer than %d bytes", maxPromptBytes)
	}
	maxTokens := DefaultMaxTokens
	if r.MaxTokens != nil {
		maxTokens = *r.MaxTokens
		if maxTokens <= 0 {
			bad("max_tokens must be > 0")
		}
	}
	if r.DeadlineMs != nil && *r.DeadlineMs <= 0 {
		bad("deadline_ms must be > 0 (a budget from now)")
	}
	if r.ExpectedTokens != nil && *r.ExpectedTokens < 0 {
		bad("expected_tokens must be >= 0")
	}
	switch r.KVHint {
	case "", "reuse", "cold":
	default:
		bad("kv_hint must be reuse or cold")
	}
	if len(problems) > 0 {
		return nil, errInvalid(strings.Join(problems, "; "))
	}
	p := &parsedTask{TaskRequest: r, priority: prio, maxTokens: maxTokens}
	if r.Seed != nil {
		p.seed = *r.Seed
	} else {
		p.seed = seedFor(r.TaskID)
	}
	return p, nil
}

// canonicalID returns the canonical lower-case form of a UUID.
func canonicalID(s string) (string, bool) {
	u, err := uuid.Parse(s)
	if err != nil {
		return "", false
	}
	return u.String(), true
}

// seedFor is the stable seed injected when a request names none (SPEC §3.1):
// FNV-1a of the task id, kept non-negative so every engine accepts it.
func seedFor(taskID string) int64 {
	h := fnv.New64a()
	h.Write([]byte(taskID))
	return int64(h.Sum64() & (1<<31 - 1))
}

// decodeStrict decodes body, one JSON object, into v: unknown fields and
// data after the object are refused. It returns "" or what is wrong, for
// an INVALID_PARAMS message.
func decodeStrict(body []byte, v any) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describeJSONError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return "request body has data after the JSON object"
	}
	return ""
}

func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("request body is not valid JSON (at byte %d): %v", syn.Offset, err)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return "request body must be a JSON object"
		}
		return fmt.Sprintf("%s must be %s, got JSON %s", field, jsonTypeName(typ.Type.String()), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "request body is truncated JSON"
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "json: unknown field ") {
		name := strings.TrimPrefix(msg, "json: unknown field ")
		if name == `"tenant"` {
			return `unknown field "tenant": the tenant comes from the API key, never from the body`
		}
		return "unknown field " + name
	}
	return "cannot decode request body: " + msg
}

func jsonTypeName(goType string) string {
	switch strings.TrimPrefix(goType, "*") {
	case "int", "int64":
		return "an integer"
	case "string":
		return "a string"
	case "[]string":
		return "an array of strings"
	}
	return goType
}

// pathID is the {id} of a route in canonical form; a value that is no UUID
// is returned as it is and matches nothing (404).
func pathID(ctx *fasthttp.RequestCtx) string {
	raw, _ := ctx.UserValue("id").(string)
	if id, ok := canonicalID(raw); ok {
		return id
	}
	return raw
}
