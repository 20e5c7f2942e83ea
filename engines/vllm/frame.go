package vllm

import (
	"bytes"
	"errors"

	"github.com/llama-orch/llama-orch/engines/internal/jsonscan"
)

// errSyntax is returned by decode for data that is not one valid JSON
// object.
var errSyntax = errors.New("vllm: frame is not a valid JSON object")

// chunk is what the adapter reads from one SSE data frame of a vLLM stream
// (ENGINES.md §2). Its byte slices point into the scanned data or the
// decoder's buffers and stay valid until the next decode.
type chunk struct {
	// done is the `[DONE]` terminator.
	done bool
	// hasChoice is set when choices[0] is an object; a usage-only chunk
	// ("choices":[]) has none.
	hasChoice bool
	// text is choices[0].text (completions) or choices[0].delta.content
	// (chat); nil when absent or null.
	text []byte
	// finish is choices[0].finish_reason, nil when null or absent.
	finish []byte
	// nTokenIDs is len(choices[0].token_ids) when hasTokenIDs
	// (return_token_ids).
	nTokenIDs   int
	hasTokenIDs bool

	// usage: absent and null alike leave hasUsage false.
	hasUsage         bool
	completionTokens int
	promptTokens     int

	// The error frame {"error":{"message","type","param","code"}} (also
	// {"error":"…"} and the flat pre-v0.10 {"object":"error","message",…}).
	hasError   bool
	errMessage []byte
	errType    []byte
	errCode    int
}

// decoder scans chunks with package jsonscan's validating scanner, which
// accepts exactly the documents encoding/json accepts (FuzzDecode checks
// that): no allocation per chunk once its scratch buffers have grown.
type decoder struct {
	textBuf, contentBuf, finishBuf  []byte
	msgBuf, typeBuf, objBuf, keyBuf []byte
	topMsgBuf, topTypeBuf           []byte
	// The flat pre-v0.10 error body keeps message, type and code at the top.
	topMessage, topType []byte
	topCode             int
	flat                bool
}

var doneMarker = []byte("[DONE]")

// isDone reports whether data is the `[DONE]` terminator.
func isDone(data []byte) bool {
	return bytes.Equal(bytes.TrimSpace(data), doneMarker)
}

// decode fills c from data: `[DONE]`, a chunk, or an error frame. Members of
// an unexpected type are treated as absent (missing and null alike); data
// that is not exactly one JSON object (as encoding/json reads it) is
// errSyntax. Strings are decoded as encoding/json does, except that raw
// bytes that are not valid UTF-8 are passed through, so that a character
// split across chunks can be joined (text.Carry).
func (d *decoder) decode(data []byte, c *chunk) error {
	*c = chunk{}
	if isDone(data) {
		c.done = true
		return nil
	}
	d.topMessage, d.topType, d.topCode, d.flat = nil, nil, 0, false
	b := data
	i := jsonscan.WS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errSyntax
	}
	i, ok := d.topObject(b, i, c)
	if !ok || jsonscan.WS(b, i) != len(b) {
		*c = chunk{}
		return errSyntax
	}
	if d.flat && !c.hasError {
		c.hasError = true
		c.errMessage, c.errType, c.errCode = d.topMessage, d.topType, d.topCode
	}
	return nil
}

func (d *decoder) topObject(b []byte, i int, c *chunk) (int, bool) {
	i, more := jsonscan.Open(b, i)
	if !more {
		return i, true
	}
	for {
		key, j, ok := jsonscan.Member(b, i, &d.keyBuf)
		if !ok {
			return j, false
		}
		i = j
		switch string(key) {
		case "choices":
			c.hasChoice, c.text, c.finish, c.nTokenIDs, c.hasTokenIDs = false, nil, nil, 0, false
			if i < len(b) && b[i] == '[' {
				i, ok = d.choices(b, i, c)
			} else {
				i, ok = jsonscan.Skip(b, i, 1)
			}
		case "usage":
			c.hasUsage, c.completionTokens, c.promptTokens = false, 0, 0
			if i < len(b) && b[i] == '{' {
				c.hasUsage = true
				i, ok = d.usage(b, i, c)
			} else {
				i, ok = jsonscan.Skip(b, i, 1)
			}
		case "error":
			c.hasError, c.errMessage, c.errType, c.errCode = false, nil, nil, 0
			switch {
			case i < len(b) && b[i] == '{':
				c.hasError = true
				i, ok = d.errorObject(b, i, c)
			case i < len(b) && b[i] == '"':
				c.hasError = true
				c.errMessage, i, ok = jsonscan.String(b, i, 1, &d.msgBuf)
			default:
				i, ok = jsonscan.Skip(b, i, 1)
			}
		case "object":
			var obj []byte
			obj, i, ok = jsonscan.String(b, i, 1, &d.objBuf)
			d.flat = string(obj) == "error"
		case "message":
			d.topMessage, i, ok = jsonscan.String(b, i, 1, &d.topMsgBuf)
		case "type":
			d.topType, i, ok = jsonscan.String(b, i, 1, &d.topTypeBuf)
		case "code":
			d.topCode, _, i, ok = jsonscan.Int(b, i, 1)
		default:
			i, ok = jsonscan.Skip(b, i, 1)
		}
		if !ok {
			return i, false
		}
		if i, more, ok = jsonscan.Next(b, i); !ok || !more {
			return i, ok
		}
	}
}

// choices reads the array: its first element, if an object, is the choice
// (n=1); the rest are validated and skipped.
func (d *decoder) choices(b []byte, i int, c *chunk) (int, bool) {
	i, more := jsonscan.OpenArray(b, i)
	for n := 0; more; n++ {
		var ok bool
		if n == 0 && i < len(b) && b[i] == '{' {
			c.hasChoice = true
			i, ok = d.choice(b, i, c)
		} else {
			i, ok = jsonscan.Skip(b, i, 2)
		}
		if !ok {
			return i, false
		}
		if i, more, ok = jsonscan.NextElem(b, i); !ok {
			return i, false
		}
	}
	return i, true
}

// choice reads choices[0]: text (completions) or delta.content (chat),
// finish_reason, token_ids.
func (d *decoder) choice(b []byte, i int, c *chunk) (int, bool) {
	i, more := jsonscan.Open(b, i)
	var text, content []byte
	hasText := false
	for more {
		key, j, ok := jsonscan.Member(b, i, &d.keyBuf)
		if !ok {
			return j, false
		}
		i = j
		switch string(key) {
		case "text":
			text, i, ok = jsonscan.String(b, i, 3, &d.textBuf)
			hasText = i > j && b[j] == '"'
		case "delta":
			content = nil
			if i < len(b) && b[i] == '{' {
				content, i, ok = d.delta(b, i)
			} else {
				i, ok = jsonscan.Skip(b, i, 3)
			}
		case "finish_reason":
			c.finish, i, ok = jsonscan.String(b, i, 3, &d.finishBuf)
		case "token_ids":
			c.nTokenIDs, c.hasTokenIDs = 0, false
			if i < len(b) && b[i] == '[' {
				c.hasTokenIDs = true
				c.nTokenIDs, i, ok = jsonscan.CountArray(b, i, 3)
			} else {
				i, ok = jsonscan.Skip(b, i, 3)
			}
		default:
			i, ok = jsonscan.Skip(b, i, 3)
		}
		if !ok {
			return i, false
		}
		if i, more, ok = jsonscan.Next(b, i); !ok {
			return i, false
		}
	}
	if hasText {
		c.text = text
	} else {
		c.text = content
	}
	return i, true
}

// delta reads a chat delta object; only content is kept.
func (d *decoder) delta(b []byte, i int) (content []byte, j int, ok bool) {
	i, more := jsonscan.Open(b, i)
	for more {
		key, k, ok := jsonscan.Member(b, i, &d.keyBuf)
		if !ok {
			return nil, k, false
		}
		i = k
		if string(key) == "content" {
			content, i, ok = jsonscan.String(b, i, 4, &d.contentBuf)
		} else {
			i, ok = jsonscan.Skip(b, i, 4)
		}
		if !ok {
			return nil, i, false
		}
		if i, more, ok = jsonscan.Next(b, i); !ok {
			return nil, i, false
		}
	}
	return content, i, true
}

func (d *decoder) usage(b []byte, i int, c *chunk) (int, bool) {
	i, more := jsonscan.Open(b, i)
	for more {
		key, j, ok := jsonscan.Member(b, i, &d.keyBuf)
		if !ok {
			return j, false
		}
		i = j
		switch string(key) {
		case "completion_tokens":
			c.completionTokens, _, i, ok = jsonscan.Int(b, i, 2)
		case "prompt_tokens":
			c.promptTokens, _, i, ok = jsonscan.Int(b, i, 2)
		default:
			i, ok = jsonscan.Skip(b, i, 2)
		}
		if !ok {
			return i, false
		}
		if i, more, ok = jsonscan.Next(b, i); !ok {
			return i, false
		}
	}
	return i, true
}

func (d *decoder) errorObject(b []byte, i int, c *chunk) (int, bool) {
	i, more := jsonscan.Open(b, i)
	for more {
		key, j, ok := jsonscan.Member(b, i, &d.keyBuf)
		if !ok {
			return j, false
		}
		i = j
		switch string(key) {
		case "message":
			c.errMessage, i, ok = jsonscan.String(b, i, 2, &d.msgBuf)
		case "type":
			c.errType, i, ok = jsonscan.String(b, i, 2, &d.typeBuf)
		case "code":
			c.errCode, _, i, ok = jsonscan.Int(b, i, 2)
		default:
			i, ok = jsonscan.Skip(b, i, 2)
		}
		if !ok {
			return i, false
		}
		if i, more, ok = jsonscan.Next(b, i); !ok {
			return i, false
		}
	}
	return i, true
}
