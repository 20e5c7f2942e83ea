package fake

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
)

// Parsing of llama.cpp /completion bodies, with its error wording.

// completionRequest is a parsed /completion body.
type completionRequest struct {
	prompt      string
	textSeed    int64
	cachePrompt bool
	idSlot      int
	p           params
}

// apiError is an error answered as `{"error":{"code","message","type"}}`.
type apiError struct {
	status int
	msg    string
	typ    string
}

func (e *apiError) Error() string { return e.msg }

func jsonTypeName(raw json.RawMessage) string {
	switch raw[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

func typeError(field, want string, raw json.RawMessage) *apiError {
	return &apiError{http.StatusBadRequest,
		"Field '" + field + "': [json.exception.type_error.302] type must be " + want + ", but is " + jsonTypeName(raw),
		"invalid_request_error"}
}

// parseCompletion parses a /completion body the way llama.cpp's
// params_from_json does for the fields the fake honours; other fields are
// accepted and ignored.
func parseCompletion(body []byte) (*completionRequest, *apiError) {
	var m map[string]json.RawMessage
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return nil, parseError(body, err)
	}
	if d.More() {
		return nil, &apiError{http.StatusInternalServerError,
			"[json.exception.parse_error.101] parse error: syntax error while parsing value - unexpected token after the end of the value; expected end of input",
			"server_error"}
	}
	get := func(k string) json.RawMessage {
		if v, ok := m[k]; ok && len(v) > 0 && string(v) != "null" {
			return v
		}
		return nil
	}
	num := func(k string) (float64, json.RawMessage, *apiError) {
		v := get(k)
		if v == nil {
			return 0, nil, nil
		}
		if jsonTypeName(v) != "number" {
			return 0, nil, typeError(k, "number", v)
		}
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return 0, nil, typeError(k, "number", v)
		}
		return f, v, nil
	}
	boolean := func(k string, def bool) (bool, *apiError) {
		v := get(k)
		if v == nil {
			return def, nil
		}
		if jsonTypeName(v) != "boolean" {
			return false, typeError(k, "boolean", v)
		}
		return v[0] == 't', nil
	}
	req := &completionRequest{p: defaultParams(), idSlot: -1, textSeed: math.MaxUint32}
	var err *apiError
	pr := get("prompt")
	if pr == nil {
		return nil, &apiError{http.StatusInternalServerError, "[json.exception.out_of_range.403] key 'prompt' not found", "server_error"}
	}
	if jsonTypeName(pr) != "string" {
		return nil, &apiError{http.StatusBadRequest,
			`"prompt" must be a string (orch-fake-engine does not take token or multiple prompts)`, "invalid_request_error"}
	}
	if e := json.Unmarshal(pr, &req.prompt); e != nil {
		return nil, &apiError{http.StatusBadRequest, "invalid prompt: " + e.Error(), "invalid_request_error"}
	}
	// n_predict, else max_tokens, else -1.
	key := "n_predict"
	if get(key) == nil {
		key = "max_tokens"
	}
	f, raw, err := num(key)
	if err != nil {
		return nil, err
	}
	if raw != nil {
		req.p.nPredict = clampInt(f)
	}
	if f, raw, err = num("seed"); err != nil {
		return nil, err
	} else if raw != nil {
		if i, e := strconv.ParseInt(string(raw), 10, 64); e == nil {
			req.textSeed = i
		} else if u, e := strconv.ParseUint(string(raw), 10, 64); e == nil {
			req.textSeed = int64(u)
		} else {
			req.textSeed = int64(f)
		}
		req.p.seed = uint32(req.textSeed)
	}
	if f, raw, err = num("temperature"); err != nil {
		return nil, err
	} else if raw != nil {
		req.p.temperature = float32(f)
	}
	if f, raw, err = num("top_k"); err != nil {
		return nil, err
	} else if raw != nil {
		req.p.topK = clampInt(f)
	}
	if f, raw, err = num("top_p"); err != nil {
		return nil, err
	} else if raw != nil {
		req.p.topP = float32(f)
	}
	if f, raw, err = num("min_p"); err != nil {
		return nil, err
	} else if raw != nil {
		req.p.minP = float32(f)
	}
	if f, raw, err = num("id_slot"); err != nil {
		return nil, err
	} else if raw != nil {
		req.idSlot = clampInt(f)
	}
	if req.p.stream, err = boolean("stream", false); err != nil {
		return nil, err
	}
	if req.cachePrompt, err = boolean("cache_prompt", true); err != nil {
		return nil, err
	}
	if req.p.ignoreEOS, err = boolean("ignore_eos", false); err != nil {
		return nil, err
	}
	if v := get("stop"); v != nil {
		if jsonTypeName(v) != "array" || json.Unmarshal(v, &req.p.stop) != nil {
			return nil, typeError("stop", "array of strings", v)
		}
	}
	return req, nil
}

func clampInt(f float64) int {
	switch {
	case f >= math.MaxInt32:
		return math.MaxInt32
	case f <= math.MinInt32:
		return math.MinInt32
	}
	return int(f)
}

// parseError words a JSON syntax error like nlohmann's parse_error.101.
func parseError(body []byte, err error) *apiError {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return &apiError{http.StatusInternalServerError,
			"[json.exception.type_error.302] type must be object, but is " + te.Value, "server_error"}
	}
	off := int64(len(body))
	detail := endOfInputDetail(body)
	var se *json.SyntaxError
	if errors.As(err, &se) && se.Offset < int64(len(body)) {
		off = se.Offset
		detail = "syntax error while parsing value - " + se.Error()
	}
	line, col := 1, 1
	for i := int64(0); i < off; i++ {
		if body[i] == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return &apiError{http.StatusInternalServerError,
		"[json.exception.parse_error.101] parse error at line " + strconv.Itoa(line) + ", column " + strconv.Itoa(col) + ": " + detail,
		"server_error"}
}

// endOfInputDetail words a body that ends too early as nlohmann does:
// after "{" or "," inside an object it wanted a key.
func endOfInputDetail(body []byte) string {
	var stack []byte
	inStr, esc := false, false
	var last byte
	for _, c := range body {
		switch {
		case inStr:
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
			last = '"'
			continue
		case c == '"':
			inStr = true
		case c == '{' || c == '[':
			stack = append(stack, c)
		case (c == '}' || c == ']') && len(stack) > 0:
			stack = stack[:len(stack)-1]
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		}
		last = c
	}
	if !inStr && len(stack) > 0 && stack[len(stack)-1] == '{' && (last == '{' || last == ',') {
		return "syntax error while parsing object key - unexpected end of input; expected string literal"
	}
	return "syntax error while parsing value - unexpected end of input"
}
