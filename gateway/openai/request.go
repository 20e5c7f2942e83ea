// Package openai is the codec of the optional OpenAI-compatible front door
// (SPEC §3.5): it parses POST /v1/completions and /v1/chat/completions
// bodies into one plain Request, and encodes responses, stream chunks
// (the shapes vLLM and OpenAI emit, ending in `data: [DONE]`) and errors
// (OpenAI's {"error":{…}} shape). It knows nothing of HTTP servers or of the
// gateway: the caller bounds the body, maps Request onto a task and writes
// what the encoders append.
//
// Sampling. Our engines decode deterministically (seeded, SPEC §11), so
// temperature and top_p are checked against OpenAI's ranges and otherwise
// not applied, and other sampling knobs (presence_penalty, frequency_penalty,
// …) are ignored like any unknown field. Parameters that would change what
// the response holds (n>1, best_of>1, logprobs, echo, suffix, logit_bias,
// tools, response_format other than text) are refused with a 400 naming the
// parameter, never silently dropped.
package openai

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// Request is one parsed completions or chat-completions request.
type Request struct {
	// Chat is true for /v1/chat/completions.
	Chat  bool
	Model string
	// Prompt is the prompt as sent (completions) or the messages flattened
	// by the chat template (see ParseChat). Always valid UTF-8.
	Prompt string
	// MaxTokens is at least 1, except for a chat request naming neither
	// max_tokens nor max_completion_tokens: then it is 0 and the caller
	// applies its own default (OpenAI generates up to the context limit).
	MaxTokens int
	Stream    bool
	// IncludeUsage is stream_options.include_usage: end the stream with a
	// usage chunk (choices:[]) before [DONE].
	IncludeUsage bool
	// Seed is nil when the request names none.
	Seed *int64
	// Stop holds the non-empty stop strings (at most MaxStop), nil when none.
	Stop []string
	// User is OpenAI's end-user id, passed on for logs only.
	User string
}

// Limits and defaults.
const (
	// DefaultMaxTokens is max_tokens of a completions request naming none,
	// as OpenAI's /v1/completions.
	DefaultMaxTokens = 16
	// MaxMessages bounds the messages of one chat request.
	MaxMessages = 1024
	// MaxStop is OpenAI's limit on stop sequences.
	MaxStop = 4
)

// object is a JSON object whose keys are matched exactly (encoding/json
// would match struct fields case-insensitively, which OpenAI does not).
type object map[string]json.RawMessage

// ParseCompletion parses the body of POST /v1/completions. prompt is a string
// or an array of exactly one string; token-id prompts and several prompts are
// refused. Unknown fields are ignored, as OpenAI-compatible servers do.
// A rejected body gives an *Error (status 400, invalid_request_error) whose
// Param names the offending parameter, e.g. "max_tokens" or
// "messages[2].content[0].type"; only a body that is no JSON object has none.
func ParseCompletion(body []byte) (*Request, error) {
	r, e := parseCompletion(body)
	if e != nil {
		return nil, e
	}
	return r, nil
}

// ParseChat parses the body of POST /v1/chat/completions. Messages have role
// system, developer, user, assistant or tool, and content that is a string
// or an array of {"type":"text","text":…} parts (joined with "\n"); an
// assistant message may have null content. They are flattened into Prompt
// with a plain template, one line per message and an open assistant turn:
//
//	system: You are terse.
//	user: Hi
//	assistant: Hello.
//	user: Bye
//	assistant:
//
// developer is written as system; a message's own newlines are kept as they
// are. max_completion_tokens wins over the older max_tokens when both are
// given, as in vLLM. Errors are as for ParseCompletion.
func ParseChat(body []byte) (*Request, error) {
	r, e := parseChat(body)
	if e != nil {
		return nil, e
	}
	return r, nil
}

func parseCompletion(body []byte) (*Request, *Error) {
	obj, e := decodeBody(body)
	if e != nil {
		return nil, e
	}
	r := &Request{MaxTokens: DefaultMaxTokens}
	if e := parseCommon(obj, r); e != nil {
		return nil, e
	}
	if r.Prompt, e = promptField(obj["prompt"]); e != nil {
		return nil, e
	}
	if n, ok, e := intField(obj, "max_tokens"); e != nil {
		return nil, e
	} else if ok {
		if r.MaxTokens, e = tokenLimit("max_tokens", n); e != nil {
			return nil, e
		}
	}
	if n, ok, e := intField(obj, "best_of"); e != nil {
		return nil, e
	} else if ok && n != 1 {
		return nil, unsupportedOrInvalid("best_of", n, "Invalid value for 'best_of': only 1 is supported (send one request per sample).")
	}
	if raw := obj["logprobs"]; !isNull(raw) {
		return nil, invalid("logprobs", "'logprobs' is not supported: the gateway does not return token log probabilities")
	}
	if b, e := boolField(obj, "echo"); e != nil {
		return nil, e
	} else if b {
		return nil, invalid("echo", "'echo' is not supported: the prompt is not repeated in the response")
	}
	if s, e := stringField(obj, "suffix"); e != nil {
		return nil, e
	} else if s != "" {
		return nil, invalid("suffix", "'suffix' is not supported: insertion (fill-in-the-middle) is not served")
	}
	return r, nil
}

func parseChat(body []byte) (*Request, *Error) {
	obj, e := decodeBody(body)
	if e != nil {
		return nil, e
	}
	r := &Request{Chat: true}
	if e := parseCommon(obj, r); e != nil {
		return nil, e
	}
	if r.Prompt, e = messagesField(obj["messages"]); e != nil {
		return nil, e
	}
	// Both limits are validated; max_completion_tokens wins.
	for _, param := range [...]string{"max_tokens", "max_completion_tokens"} {
		n, ok, e := intField(obj, param)
		if e != nil {
			return nil, e
		}
		if ok {
			if r.MaxTokens, e = tokenLimit(param, n); e != nil {
				return nil, e
			}
		}
	}
	if b, e := boolField(obj, "logprobs"); e != nil {
		return nil, e
	} else if b {
		return nil, invalid("logprobs", "'logprobs' is not supported: the gateway does not return token log probabilities")
	}
	if raw := obj["top_logprobs"]; !isNull(raw) {
		return nil, invalid("top_logprobs", "'top_logprobs' is not supported: the gateway does not return token log probabilities")
	}
	for _, param := range [...]string{"tools", "functions"} {
		if raw := obj[param]; !isNull(raw) && !isEmptyArray(raw) {
			return nil, invalid(param, "'"+param+"' is not supported: this server does not call tools")
		}
	}
	for _, param := range [...]string{"tool_choice", "function_call"} {
		if raw := obj[param]; !isNull(raw) {
			var s string
			if json.Unmarshal(raw, &s) != nil || (s != "none" && s != "auto") {
				return nil, invalid(param, "'"+param+"' is not supported: this server does not call tools (only \"none\" and \"auto\" are accepted)")
			}
		}
	}
	if raw := obj["response_format"]; !isNull(raw) {
		rf, e := objectValue(raw, "response_format")
		if e != nil {
			return nil, e
		}
		if t, e := stringField(rf, "type"); e != nil {
			return nil, prefixed(e, "response_format.")
		} else if t != "text" {
			return nil, invalid("response_format", "'response_format' of type "+strconv.Quote(t)+" is not supported: only \"text\"")
		}
	}
	return r, nil
}

// parseCommon reads the fields both endpoints share.
func parseCommon(obj object, r *Request) *Error {
	var e *Error
	if r.Model, e = stringField(obj, "model"); e != nil {
		return e
	}
	if r.Model == "" {
		return invalid("model", "you must provide a model parameter")
	}
	if r.Stream, e = boolField(obj, "stream"); e != nil {
		return e
	}
	if raw := obj["stream_options"]; !isNull(raw) {
		if !r.Stream {
			return invalid("stream_options", "'stream_options' is only allowed when 'stream' is true")
		}
		so, e := objectValue(raw, "stream_options")
		if e != nil {
			return e
		}
		if r.IncludeUsage, e = boolField(so, "include_usage"); e != nil {
			return prefixed(e, "stream_options.")
		}
	}
	if n, ok, e := intField(obj, "seed"); e != nil {
		return e
	} else if ok {
		r.Seed = &n
	}
	if e := numberInRange(obj, "temperature", 0, 2); e != nil {
		return e
	}
	if e := numberInRange(obj, "top_p", 0, 1); e != nil {
		return e
	}
	if n, ok, e := intField(obj, "n"); e != nil {
		return e
	} else if ok && n != 1 {
		return unsupportedOrInvalid("n", n, "Invalid value for 'n': only 1 is supported (send one request per choice).")
	}
	if raw := obj["logit_bias"]; !isNull(raw) {
		lb, e := objectValue(raw, "logit_bias")
		if e != nil {
			return e
		}
		if len(lb) > 0 {
			return invalid("logit_bias", "'logit_bias' is not supported: the gateway decodes without token biases")
		}
	}
	if r.Stop, e = stopField(obj["stop"]); e != nil {
		return e
	}
	if r.User, e = stringField(obj, "user"); e != nil {
		return e
	}
	return nil
}

// decodeBody decodes the top-level object.
func decodeBody(body []byte) (object, *Error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, invalid("", "We could not parse the JSON body of your request: the body is empty. (HINT: send a JSON object with Content-Type: application/json.)")
	}
	if trimmed[0] != '{' {
		return nil, invalid("", "The request body must be a JSON object.")
	}
	var obj object
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil, invalid("", "We could not parse the JSON body of your request: "+strings.TrimPrefix(err.Error(), "json: ")+".")
	}
	return obj, nil
}

// objectValue decodes raw, the value of param, as an object.
func objectValue(raw json.RawMessage, param string) (object, *Error) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, wrongType(param, "an object", raw)
	}
	var o object
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, wrongType(param, "an object", raw)
	}
	return o, nil
}

// isNull reports an absent or null value: OpenAI-compatible servers treat
// both as "not given".
func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

func isEmptyArray(raw json.RawMessage) bool {
	var a []json.RawMessage
	return raw[0] == '[' && json.Unmarshal(raw, &a) == nil && len(a) == 0
}

// stringField returns obj[param] as a string ("" when absent or null).
func stringField(obj object, param string) (string, *Error) {
	raw := obj[param]
	if isNull(raw) {
		return "", nil
	}
	return stringValue(raw, param)
}

func stringValue(raw json.RawMessage, param string) (string, *Error) {
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", wrongType(param, "a string", raw)
	}
	return s, nil
}

// boolField returns obj[param] as a bool (false when absent or null).
func boolField(obj object, param string) (bool, *Error) {
	switch raw := obj[param]; string(raw) {
	case "", "null", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, wrongType(param, "a boolean", raw)
	}
}

// intField returns obj[param] as an integer; ok is false when absent or
// null. A float with no fraction (16.0, 1e2) is accepted, as pydantic does.
func intField(obj object, param string) (n int64, ok bool, e *Error) {
	raw := obj[param]
	if isNull(raw) {
		return 0, false, nil
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return 0, false, wrongType(param, "an integer", raw)
	}
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return n, true, nil
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, false, invalid(param, "Invalid value for '"+param+"': expected an integer (64-bit), got "+clip(raw)+".")
	}
	return int64(f), true, nil
}

// numberInRange checks that obj[param], when given, is a number in [lo, hi].
func numberInRange(obj object, param string, lo, hi float64) *Error {
	raw := obj[param]
	if isNull(raw) {
		return nil
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return wrongType(param, "a number", raw)
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f < lo || f > hi {
		return invalid(param, "Invalid value for '"+param+"': expected a number from "+
			strconv.FormatFloat(lo, 'g', -1, 64)+" to "+strconv.FormatFloat(hi, 'g', -1, 64)+", got "+clip(raw)+".")
	}
	return nil
}

// tokenLimit validates a max_tokens-like value.
func tokenLimit(param string, n int64) (int, *Error) {
	if n < 1 {
		return 0, invalid(param, "Invalid value for '"+param+"': expected at least 1, got "+strconv.FormatInt(n, 10)+".")
	}
	if n > math.MaxInt32 {
		return 0, invalid(param, "Invalid value for '"+param+"': "+strconv.FormatInt(n, 10)+" is too large.")
	}
	return int(n), nil
}

// unsupportedOrInvalid words the error for an integer that must be 1.
func unsupportedOrInvalid(param string, n int64, unsupported string) *Error {
	if n < 1 {
		return invalid(param, "Invalid value for '"+param+"': expected at least 1, got "+strconv.FormatInt(n, 10)+".")
	}
	return invalid(param, unsupported)
}

// promptField reads the completions prompt.
func promptField(raw json.RawMessage) (string, *Error) {
	if isNull(raw) {
		return "", invalid("prompt", "you must provide a prompt parameter")
	}
	switch raw[0] {
	case '"':
		return stringValue(raw, "prompt")
	case '[':
	default:
		return "", wrongType("prompt", "a string or an array of one string", raw)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return "", wrongType("prompt", "a string or an array of one string", raw)
	}
	switch {
	case len(items) == 0:
		return "", invalid("prompt", "Invalid value for 'prompt': the array is empty.")
	case items[0][0] == '[' || items[0][0] == '-' || (items[0][0] >= '0' && items[0][0] <= '9'):
		return "", invalid("prompt", "Invalid value for 'prompt': token-id prompts are not supported, send the prompt as text.")
	case len(items) > 1:
		return "", invalid("prompt", "Invalid value for 'prompt': several prompts in one request are not supported, send one request per prompt.")
	}
	return stringValue(items[0], "prompt[0]")
}

// stopField reads stop: a string or an array of at most MaxStop strings.
// Empty strings stop nothing and are dropped.
func stopField(raw json.RawMessage) ([]string, *Error) {
	if isNull(raw) {
		return nil, nil
	}
	if raw[0] == '"' {
		s, e := stringValue(raw, "stop")
		if e != nil || s == "" {
			return nil, e
		}
		return []string{s}, nil
	}
	var items []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return nil, wrongType("stop", "a string or an array of strings", raw)
	}
	if len(items) > MaxStop {
		return nil, invalid("stop", "Invalid value for 'stop': at most "+strconv.Itoa(MaxStop)+" stop sequences, got "+strconv.Itoa(len(items))+".")
	}
	var stop []string
	for i, item := range items {
		s, e := stringValue(item, "stop["+strconv.Itoa(i)+"]")
		if e != nil {
			return nil, e
		}
		if s != "" {
			stop = append(stop, s)
		}
	}
	return stop, nil
}

// messagesField validates the chat messages and flattens them (ParseChat).
func messagesField(raw json.RawMessage) (string, *Error) {
	if isNull(raw) {
		return "", invalid("messages", "you must provide a messages parameter")
	}
	var msgs []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &msgs) != nil {
		return "", wrongType("messages", "an array", raw)
	}
	switch {
	case len(msgs) == 0:
		return "", invalid("messages", "Invalid value for 'messages': the array is empty; send at least one message.")
	case len(msgs) > MaxMessages:
		return "", invalid("messages", "Invalid value for 'messages': at most "+strconv.Itoa(MaxMessages)+" messages, got "+strconv.Itoa(len(msgs))+".")
	}
	var b strings.Builder
	b.Grow(len(raw))
	for i, m := range msgs {
		param := "messages[" + strconv.Itoa(i) + "]"
		obj, e := objectValue(m, param)
		if e != nil {
			return "", e
		}
		role, e := stringField(obj, "role")
		if e != nil {
			return "", prefixed(e, param+".")
		}
		switch role {
		case "system", "user", "assistant", "tool":
		case "developer":
			role = "system"
		case "":
			return "", invalid(param+".role", "Missing required parameter: '"+param+".role'.")
		default:
			return "", invalid(param+".role", "Invalid value for '"+param+".role': "+strconv.Quote(role)+
				"; expected system, developer, user, assistant or tool.")
		}
		b.WriteString(role)
		b.WriteString(": ")
		if e := appendContent(&b, obj["content"], param+".content", role == "assistant"); e != nil {
			return "", e
		}
		b.WriteByte('\n')
	}
	b.WriteString("assistant:")
	return b.String(), nil
}

// appendContent writes a message's content: a string or text parts.
func appendContent(b *strings.Builder, raw json.RawMessage, param string, nullable bool) *Error {
	if isNull(raw) {
		if nullable {
			return nil
		}
		return invalid(param, "Missing required parameter: '"+param+"'.")
	}
	switch raw[0] {
	case '"':
		s, e := stringValue(raw, param)
		b.WriteString(s)
		return e
	case '[':
	default:
		return wrongType(param, "a string or an array of content parts", raw)
	}
	var parts []json.RawMessage
	if json.Unmarshal(raw, &parts) != nil {
		return wrongType(param, "a string or an array of content parts", raw)
	}
	for j, p := range parts {
		pparam := param + "[" + strconv.Itoa(j) + "]"
		part, e := objectValue(p, pparam)
		if e != nil {
			return e
		}
		typ, e := stringField(part, "type")
		if e != nil {
			return prefixed(e, pparam+".")
		}
		if typ != "text" {
			return invalid(pparam+".type", "Invalid value for '"+pparam+".type': content parts of type "+strconv.Quote(typ)+" are not supported, only \"text\".")
		}
		if isNull(part["text"]) {
			return invalid(pparam+".text", "Missing required parameter: '"+pparam+".text'.")
		}
		text, e := stringValue(part["text"], pparam+".text")
		if e != nil {
			return e
		}
		if j > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(text)
	}
	return nil
}

// wrongType is OpenAI's wording for a value of the wrong JSON type.
func wrongType(param, want string, raw json.RawMessage) *Error {
	return invalid(param, "Invalid type for '"+param+"': expected "+want+", but got "+jsonKind(raw)+" instead.")
}

// prefixed qualifies the param of an error found inside an object.
func prefixed(e *Error, prefix string) *Error {
	e.Message = strings.Replace(e.Message, "'"+e.Param+"'", "'"+prefix+e.Param+"'", 1)
	e.Param = prefix + e.Param
	return e
}

func jsonKind(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// clip returns raw for a message, cut to a readable length.
func clip(raw json.RawMessage) string {
	const max = 32
	if len(raw) > max {
		return strings.ToValidUTF8(string(raw[:max]), "") + "…"
	}
	return string(raw)
}
