package vllm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// request is a parsed /v1/completions or /v1/chat/completions body.
type request struct {
	chat   bool
	model  string // "" = the served model
	prompt string // the chat template applied for chat
	// maxTokens is -1 when absent or null (up to max_model_len).
	maxTokens       int
	seed            int64
	stream          bool
	includeUsage    bool
	continuousUsage bool
	ignoreEOS       bool
	returnTokenIDs  bool
}

// apiError is a 4xx answer of the serving layer.
type apiError struct {
	status int
	typ    string
	msg    string
}

// badRequest is a ValueError raised by vLLM's serving code (400
// BadRequestError).
func badRequest(format string, args ...any) *apiError {
	return &apiError{status: 400, typ: "BadRequestError", msg: fmt.Sprintf(format, args...)}
}

// invalid is a pydantic validation failure: FastAPI's RequestValidationError,
// which vLLM answers 400 with type "Bad Request".
func invalid(loc, msg string, input json.RawMessage) *apiError {
	in := string(input)
	if len(in) > 80 {
		in = in[:80] + "..."
	}
	return &apiError{status: 400, typ: "Bad Request",
		msg: fmt.Sprintf("1 validation error:\n  {'type': 'value_error', 'loc': ('body', '%s'), 'msg': '%s', 'input': %s}", loc, msg, in)}
}

// textSeed is the seed the fake's text uses when a request names none (as
// the llama.cpp fake: llama.cpp's "random" default, 4294967295).
const textSeed = math.MaxUint32

// parseRequest decodes and validates a request body.
func parseRequest(body []byte, chat bool) (*request, *apiError) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil || dec.More() {
		return nil, &apiError{status: 400, typ: "Bad Request",
			msg: "1 validation error:\n  {'type': 'json_invalid', 'loc': ('body', 0), 'msg': 'JSON decode error'}"}
	}
	req := &request{chat: chat, maxTokens: -1, seed: textSeed}
	isNull := func(v json.RawMessage) bool { return v == nil || string(v) == "null" }
	if v := raw["model"]; !isNull(v) {
		if err := json.Unmarshal(v, &req.model); err != nil {
			return nil, invalid("model", "Input should be a valid string", v)
		}
	}
	if chat {
		v := raw["messages"]
		var msgs []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(v, &msgs); err != nil || len(msgs) == 0 {
			return nil, invalid("messages", "Field required", v)
		}
		var sb strings.Builder
		for _, m := range msgs {
			var content string
			if !isNull(m.Content) {
				if err := json.Unmarshal(m.Content, &content); err != nil {
					return nil, invalid("messages", "Input should be a valid string", m.Content)
				}
			}
			// Qwen2.5's chat template (ChatML).
			sb.WriteString("<|im_start|>" + m.Role + "\n" + content + "<|im_end|>\n")
		}
		sb.WriteString("<|im_start|>assistant\n")
		req.prompt = sb.String()
	} else {
		v := raw["prompt"]
		var list []string
		switch {
		case isNull(v):
			return nil, badRequest("Either prompt or prompt_embeds must be provided and non-empty.")
		case json.Unmarshal(v, &req.prompt) == nil:
		case json.Unmarshal(v, &list) == nil && len(list) == 1:
			req.prompt = list[0]
		default:
			// Token-id and batched prompts are real vLLM features the fake
			// does not serve.
			return nil, badRequest("orch-fake-engine serves one text prompt per request")
		}
	}
	maxKey := "max_tokens"
	if chat && !isNull(raw["max_completion_tokens"]) {
		maxKey = "max_completion_tokens"
	}
	if v := raw[maxKey]; !isNull(v) {
		n, err := strconv.ParseInt(string(v), 10, 32)
		if err != nil {
			return nil, invalid(maxKey, "Input should be a valid integer", v)
		}
		if n < 1 {
			return nil, badRequest("max_tokens must be at least 1, got %d.", n)
		}
		req.maxTokens = int(n)
	}
	if v := raw["seed"]; !isNull(v) {
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return nil, invalid("seed", "Input should be a valid integer", v)
		}
		req.seed = n
	}
	if v := raw["temperature"]; !isNull(v) {
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil || f < 0 {
			return nil, invalid("temperature", "Input should be a valid number", v)
		}
	}
	if v := raw["n"]; !isNull(v) && string(v) != "1" {
		return nil, badRequest("orch-fake-engine serves n=1 only")
	}
	for key, dst := range map[string]*bool{"stream": &req.stream, "ignore_eos": &req.ignoreEOS, "return_token_ids": &req.returnTokenIDs} {
		if v := raw[key]; !isNull(v) {
			if err := json.Unmarshal(v, dst); err != nil {
				return nil, invalid(key, "Input should be a valid boolean", v)
			}
		}
	}
	if v := raw["stream_options"]; !isNull(v) {
		var so struct {
			IncludeUsage         *bool `json:"include_usage"`
			ContinuousUsageStats *bool `json:"continuous_usage_stats"`
		}
		if err := json.Unmarshal(v, &so); err != nil {
			return nil, invalid("stream_options", "Input should be a valid dictionary", v)
		}
		if !req.stream {
			return nil, badRequest("Stream options can only be defined when `stream=True`.")
		}
		req.includeUsage = so.IncludeUsage != nil && *so.IncludeUsage
		// vLLM: usage in every chunk only together with include_usage.
		req.continuousUsage = req.includeUsage && so.ContinuousUsageStats != nil && *so.ContinuousUsageStats
	}
	return req, nil
}
