package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"github.com/llama-orch/llama-orch/sse"
)

// Params describe the request every client sends.
type Params struct {
	Key    string // API key for the gateway (Authorization: Bearer)
	Model  string // model_ref
	Engine string // engine name, both the gateway's `engine` and the direct protocol
	Tokens int    // max_tokens / n_predict, and the count every stream must deliver
	Prompt string
}

// step says what one stream frame means; a frame may be a token and the
// terminal at once (an engine whose last frame carries text).
type step uint8

const (
	stepToken step = 1 << iota // one token reached the client
	stepEnd                    // the stream's successful terminal event
	stepFail                   // a terminal failure; its error kind comes along
)

// Protocol is one wire dialect the bench drives: the gateway's OrchQueue v1,
// or an engine's native streaming API (NewDirect). Start and Frame run on the
// client's goroutine only.
type Protocol interface {
	// Start sends one streaming request with c's request and response. On
	// success c.resp holds an open body stream and Start returns "";
	// otherwise it returns the error kind and the stream needs no closing.
	Start(c *client) string
	// Frame classifies one SSE frame; kind names the failure for stepFail.
	Frame(f *sse.Frame) (s step, kind string)
}

// Error kinds in report.json's `errors` (besides "http_<status>" and
// "error_event_<code>").
const (
	KindConnect    = "connect"     // no HTTP response: dial refused, connection closed before the status line
	KindTimeout    = "timeout"     // the request's --timeout passed before its terminal event
	KindNoTerminal = "no_terminal" // the stream ended (or broke) without its terminal event
	KindTokenCount = "token_count" // a successful stream with a token count other than --tokens
)

// directProtocols maps an engine name to its native-API protocol. Add an
// engine by adding a constructor here.
var directProtocols = map[string]func(Target, Params) Protocol{
	"llamacpp": func(t Target, p Params) Protocol { return &llamaCpp{t: t, p: p} },
}

// NewDirect returns the protocol of engine's native streaming API.
func NewDirect(engine string, t Target, p Params) (Protocol, error) {
	mk, ok := directProtocols[engine]
	if !ok {
		names := make([]string, 0, len(directProtocols))
		for n := range directProtocols {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("direct mode does not speak engine %q yet (supported: %v)", engine, names)
	}
	return mk(t, p), nil
}

// NewGateway returns the OrchQueue v1 protocol: one round trip
// (POST /v1/tasks with Accept: text/event-stream, SPEC §3.1) or, with
// twoStep, POST then GET /v1/tasks/{id}/stream.
func NewGateway(t Target, p Params, twoStep bool) Protocol {
	return &orchQueue{t: t, p: p, twoStep: twoStep}
}

// orchQueue drives the gateway and reads the canonical stream (SPEC §3.2).
type orchQueue struct {
	t       Target
	p       Params
	twoStep bool
}

func (o *orchQueue) Start(c *client) string {
	taskID, sessionID := uuid.New(), uuid.New()
	c.body = append(c.body[:0], `{"task_id":"`...)
	c.body = appendUUID(c.body, taskID)
	c.body = append(c.body, `","session_id":"`...)
	c.body = appendUUID(c.body, sessionID)
	c.body = append(c.body, `","model_ref":`...)
	c.body = appendJSONString(c.body, o.p.Model)
	c.body = append(c.body, `,"engine":`...)
	c.body = appendJSONString(c.body, o.p.Engine)
	c.body = append(c.body, `,"prompt":`...)
	c.body = appendJSONString(c.body, o.p.Prompt)
	c.body = append(c.body, `,"max_tokens":`...)
	c.body = strconv.AppendInt(c.body, int64(o.p.Tokens), 10)
	c.body = append(c.body, '}')

	req := c.req
	req.Reset()
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(o.t.Base + "/v1/tasks")
	req.Header.SetHost(o.t.Host)
	req.Header.Set("Authorization", "Bearer "+o.p.Key)
	req.Header.SetContentType("application/json")
	req.SetBodyRaw(c.body)
	req.SetTimeout(c.timeout)
	if !o.twoStep {
		req.Header.Set("Accept", "text/event-stream")
		return c.do(fasthttp.StatusOK)
	}
	// Two step: the POST answers 202 with JSON (read whole), then the stream.
	if err := c.hc.Do(req, c.resp0); err != nil {
		return errKind(err)
	}
	if code := c.resp0.StatusCode(); code != fasthttp.StatusAccepted {
		return "http_" + strconv.Itoa(code)
	}
	req.Reset()
	req.Header.SetMethod(fasthttp.MethodGet)
	c.path = append(append(append(c.path[:0], o.t.Base...), "/v1/tasks/"...), taskID.String()...)
	c.path = append(c.path, "/stream"...)
	req.SetRequestURIBytes(c.path)
	req.Header.SetHost(o.t.Host)
	req.Header.Set("Authorization", "Bearer "+o.p.Key)
	req.Header.Set("Accept", "text/event-stream")
	req.SetTimeout(c.timeout - c.since())
	return c.do(fasthttp.StatusOK)
}

func (o *orchQueue) Frame(f *sse.Frame) (step, string) {
	switch string(f.Event) {
	case "token":
		return stepToken, ""
	case "end":
		return stepEnd, ""
	case "error":
		var e struct {
			Code string `json:"code"`
		}
		if json.Unmarshal(f.Data, &e) != nil || e.Code == "" {
			e.Code = "UNKNOWN"
		}
		return stepFail, "error_event_" + e.Code
	}
	return 0, "" // started, metrics, keep-alive comments
}

// llamaCpp drives llama-server's native `POST /completion` stream
// (ENGINES.md §1): a frame with non-empty "content" is a token, the frame
// with "stop":true ends the stream, `{"error":…}` is a failure.
type llamaCpp struct {
	t Target
	p Params
}

func (l *llamaCpp) Start(c *client) string {
	c.body = append(c.body[:0], `{"prompt":`...)
	c.body = appendJSONString(c.body, l.p.Prompt)
	c.body = append(c.body, `,"n_predict":`...)
	c.body = strconv.AppendInt(c.body, int64(l.p.Tokens), 10)
	c.body = append(c.body, `,"stream":true,"seed":`...)
	c.body = strconv.AppendUint(c.body, uint64(c.rng.Uint32()), 10)
	c.body = append(c.body, '}')
	req := c.req
	req.Reset()
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(l.t.Base + "/completion")
	req.Header.SetHost(l.t.Host)
	req.Header.SetContentType("application/json")
	req.SetBodyRaw(c.body)
	req.SetTimeout(c.timeout)
	return c.do(fasthttp.StatusOK)
}

func (l *llamaCpp) Frame(f *sse.Frame) (step, string) {
	d := f.Data
	if len(d) == 0 {
		return 0, ""
	}
	if bytes.HasPrefix(d, []byte(`{"error"`)) || string(f.Event) == "error" {
		var e struct {
			Error struct {
				Type string `json:"type"`
			} `json:"error"`
		}
		if json.Unmarshal(d, &e) != nil || e.Error.Type == "" {
			e.Error.Type = "unknown"
		}
		return stepFail, "error_event_" + e.Error.Type
	}
	var s step
	if contentNonEmpty(d) {
		s |= stepToken
	}
	if stopTrue(d) {
		s |= stepEnd
	}
	return s, ""
}

// contentNonEmpty reports whether a llama.cpp frame's first "content" value
// is a non-empty string. Inside a JSON string every quote is escaped, so the
// first unescaped `"content":` is the frame's own key.
func contentNonEmpty(d []byte) bool {
	v, ok := valueAfterKey(d, `"content"`)
	return ok && len(v) >= 2 && v[0] == '"' && v[1] != '"'
}

// stopTrue reports whether a llama.cpp frame has "stop":true.
func stopTrue(d []byte) bool {
	for rest := d; ; {
		v, ok := valueAfterKey(rest, `"stop"`)
		if !ok {
			return false
		}
		if bytes.HasPrefix(v, []byte("true")) {
			return true
		}
		rest = v
	}
}

// valueAfterKey returns d from the value of the first `key:` on.
func valueAfterKey(d []byte, key string) ([]byte, bool) {
	for {
		i := bytes.Index(d, []byte(key))
		if i < 0 {
			return nil, false
		}
		d = d[i+len(key):]
		v := bytes.TrimLeft(d, " \t")
		if len(v) > 0 && v[0] == ':' {
			return bytes.TrimLeft(v[1:], " \t"), true
		}
	}
}

// errKind classifies an error of fasthttp's Do: a timeout, or no response.
func errKind(err error) string {
	if isTimeout(err) {
		return KindTimeout
	}
	return KindConnect
}

func isTimeout(err error) bool {
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func appendUUID(dst []byte, u uuid.UUID) []byte {
	var b [36]byte
	hex := "0123456789abcdef"
	j := 0
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b[j] = '-'
			j++
		}
		b[j], b[j+1] = hex[c>>4], hex[c&15]
		j += 2
	}
	return append(dst, b[:]...)
}

func appendJSONString(dst []byte, s string) []byte {
	return sse.AppendJSONString(dst, []byte(s))
}
