package llamacpp

import (
	"errors"
	"strconv"

	"github.com/llama-orch/llama-orch/engines/internal/jsonscan"
)

// errSyntax is returned by frame.scan for data that is not one valid JSON
// object.
var errSyntax = errors.New("frame is not a valid JSON object")

// frame holds the fields of one llama.cpp /completion event that the adapter
// reads. scan fills it without allocating once its scratch buffers have grown;
// the byte slices point into the scanned data or into those buffers and stay
// valid until the next scan.
type frame struct {
	// content is the decoded `content` string. Escapes are decoded exactly as
	// encoding/json does (lone surrogates become U+FFFD), but raw bytes that
	// are not valid UTF-8 are passed through untouched so that the caller can
	// hold back a character split across frames; text.AppendValid then does
	// encoding/json's per-byte U+FFFD replacement.
	content         []byte
	stop            bool
	tokensPredicted int
	tokensEvaluated int
	idSlot          int
	hasIDSlot       bool
	stopType        []byte
	predictedMs     float64
	hasPredictedMs  bool

	// The `error` member: an object {code,message,type} (or, leniently, a
	// string, taken as the message).
	hasError   bool
	errCode    int
	errMessage []byte
	errType    []byte

	contentBuf  []byte
	stopTypeBuf []byte
	errMsgBuf   []byte
	errTypeBuf  []byte
	keyBuf      []byte
}

func (f *frame) reset() {
	f.content = nil
	f.stop = false
	f.tokensPredicted = 0
	f.tokensEvaluated = 0
	f.idSlot = -1
	f.hasIDSlot = false
	f.stopType = nil
	f.predictedMs = 0
	f.hasPredictedMs = false
	f.hasError = false
	f.errCode = 0
	f.errMessage = nil
	f.errType = nil
}

// scan parses data, which must be exactly one JSON object (surrounded by
// optional whitespace), and fills f from its known members. Unknown members
// are validated and skipped; known members of an unexpected type are treated
// as absent (lenient, like missing and null). It returns errSyntax for
// anything that encoding/json would reject.
//
// The walker is built from package jsonscan's primitives; on this per-token
// path topObject inlines Member and Next by hand.
func (f *frame) scan(data []byte) error {
	f.reset()
	b := data
	i := jsonscan.WS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errSyntax
	}
	i, ok := f.topObject(b, i)
	if !ok || jsonscan.WS(b, i) != len(b) {
		return errSyntax
	}
	return nil
}

func (f *frame) topObject(b []byte, i int) (int, bool) {
	i, more := jsonscan.Open(b, i)
	if !more {
		return i, true
	}
	for {
		// The member's key and colon (jsonscan.Member, inlined by hand: hot path).
		if i >= len(b) || b[i] != '"' {
			return i, false
		}
		end, esc, ok := jsonscan.ScanString(b, i)
		if !ok {
			return i, false
		}
		key := b[i+1 : end-1]
		if esc {
			f.keyBuf = jsonscan.AppendUnescaped(f.keyBuf[:0], key)
			key = f.keyBuf
		}
		if i = jsonscan.WS(b, end); i >= len(b) || b[i] != ':' {
			return i, false
		}
		i = jsonscan.WS(b, i+1)
		switch string(key) {
		case "content":
			f.content = nil
			if i < len(b) && b[i] == '"' {
				end, esc, ok = jsonscan.ScanString(b, i)
				if !ok {
					return i, false
				}
				raw := b[i+1 : end-1]
				if esc {
					f.contentBuf = jsonscan.AppendUnescaped(f.contentBuf[:0], raw)
					raw = f.contentBuf
				}
				f.content, i = raw, end
			} else {
				i, ok = jsonscan.Skip(b, i, 1)
			}
		case "stop":
			f.stop = i < len(b) && b[i] == 't'
			i, ok = jsonscan.Skip(b, i, 1)
		case "tokens_predicted":
			f.tokensPredicted, _, i, ok = jsonscan.Int(b, i, 1)
		case "tokens_evaluated":
			f.tokensEvaluated, _, i, ok = jsonscan.Int(b, i, 1)
		case "id_slot":
			f.idSlot, f.hasIDSlot, i, ok = jsonscan.Int(b, i, 1)
			if !f.hasIDSlot {
				f.idSlot = -1
			}
		case "stop_type":
			f.stopType, i, ok = jsonscan.String(b, i, 1, &f.stopTypeBuf)
		case "timings":
			if i < len(b) && b[i] == '{' {
				i, ok = f.timingsObject(b, i)
			} else {
				i, ok = jsonscan.Skip(b, i, 1)
			}
		case "error":
			switch {
			case i < len(b) && b[i] == '{':
				f.hasError = true
				i, ok = f.errorObject(b, i)
			case i < len(b) && b[i] == '"':
				f.hasError = true
				f.errMessage, i, ok = jsonscan.String(b, i, 1, &f.errMsgBuf)
			default:
				i, ok = jsonscan.Skip(b, i, 1)
			}
		default:
			i, ok = jsonscan.Skip(b, i, 1)
		}
		if !ok {
			return i, false
		}
		// The separator (jsonscan.Next, inlined by hand).
		if i = jsonscan.WS(b, i); i < len(b) && b[i] == ',' {
			i = jsonscan.WS(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			return i + 1, true
		}
		return i, false
	}
}

// timingsObject reads `timings`; only predicted_ms is kept. It runs once per
// stream (final frame), so strconv on a string conversion is fine here.
func (f *frame) timingsObject(b []byte, i int) (int, bool) {
	i, more := jsonscan.Open(b, i)
	if !more {
		return i, true
	}
	for {
		key, j, ok := jsonscan.Member(b, i, &f.keyBuf)
		if !ok {
			return j, false
		}
		i = j
		if string(key) == "predicted_ms" && i < len(b) && jsonscan.IsNumberStart(b[i]) {
			start := i
			if i, ok = jsonscan.Number(b, i); !ok {
				return i, false
			}
			v, err := strconv.ParseFloat(string(b[start:i]), 64)
			if err == nil || errors.Is(err, strconv.ErrRange) {
				f.predictedMs, f.hasPredictedMs = v, true
			}
		} else if i, ok = jsonscan.Skip(b, i, 2); !ok {
			return i, false
		}
		if i, more, ok = jsonscan.Next(b, i); !ok || !more {
			return i, ok
		}
	}
}

func (f *frame) errorObject(b []byte, i int) (int, bool) {
	i, more := jsonscan.Open(b, i)
	if !more {
		return i, true
	}
	for {
		key, j, ok := jsonscan.Member(b, i, &f.keyBuf)
		if !ok {
			return j, false
		}
		i = j
		switch string(key) {
		case "code":
			f.errCode, _, i, ok = jsonscan.Int(b, i, 2)
		case "message":
			f.errMessage, i, ok = jsonscan.String(b, i, 2, &f.errMsgBuf)
		case "type":
			f.errType, i, ok = jsonscan.String(b, i, 2, &f.errTypeBuf)
		default:
			i, ok = jsonscan.Skip(b, i, 2)
		}
		if !ok {
			return i, false
		}
		if i, more, ok = jsonscan.Next(b, i); !ok || !more {
			return i, ok
		}
	}
}
