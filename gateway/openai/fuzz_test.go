package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// Seeds: the bodies the official clients and ENGINES.md send, and edges.
var completionSeeds = []string{
	`{"model":"Qwen/Qwen2.5-1.5B-Instruct","prompt":"The capital of France is","max_tokens":3,"temperature":0,"seed":42,"stream":true,"stream_options":{"include_usage":true}}`,
	`{"model":"m","prompt":["one"],"stop":["\n","###"],"user":"u","n":1,"best_of":1,"echo":false,"logprobs":null}`,
	`{"model":"m","prompt":[1,2,3],"max_tokens":1e2}`,
	`{"model":"m","prompt":"a\ud800\u2028","max_tokens":16.0,"seed":-9223372036854775808}`,
	`{"model":"m","prompt":"x","stream":false,"stream_options":{"include_usage":true}}`,
	`{"model":"m","prompt":"x","suffix":"y","temperature":3}`,
	`{}`, `[]`, ``, `{"prompt":{}}`,
}

var chatSeeds = []string{
	`{"model":"deepseek-ai/DeepSeek-V3.1","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":8,"seed":1}`,
	`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}}]}]}`,
	`{"model":"m","messages":[{"role":"developer","content":"d"},{"role":"assistant","content":null},{"role":"tool","content":"t"}],"tools":[],"tool_choice":"none","response_format":{"type":"text"}}`,
	`{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":2}`,
	`{"model":"m","messages":[{"role":"robot"}],"stop":"\n"}`,
	`{"model":"m","messages":[]}`, `{"messages":"hi"}`,
}

// checkError: a rejection is a well-formed 400 whose JSON is valid.
func checkError(t *testing.T, err error) {
	var e *Error
	if !errors.As(err, &e) || e.Status != 400 || e.Type != TypeInvalidRequest || e.Message == "" {
		t.Fatalf("bad error %#v", err)
	}
	if b := e.AppendJSON(nil); !json.Valid(b) || !utf8.Valid(b) {
		t.Fatalf("invalid error JSON %q", b)
	}
}

// checkRequest: the invariants every accepted request keeps, and its
// chunks encode to valid JSON.
func checkRequest(t *testing.T, r *Request) {
	if r.Model == "" || !utf8.ValidString(r.Model) || !utf8.ValidString(r.Prompt) || !utf8.ValidString(r.User) ||
		r.MaxTokens < 0 || r.MaxTokens > math.MaxInt32 || (r.MaxTokens == 0 && !r.Chat) ||
		(r.IncludeUsage && !r.Stream) || len(r.Stop) > MaxStop {
		t.Fatalf("accepted a bad request %+v", r)
	}
	for _, s := range r.Stop {
		if s == "" || !utf8.ValidString(s) {
			t.Fatalf("bad stop %q", r.Stop)
		}
	}
	s := &Stream{ID: r.User, Model: r.Model, Chat: r.Chat}
	if !json.Valid(frameData(t, s.AppendToken(nil, []byte(r.Prompt)))) || !json.Valid(AppendCompletion(nil, s, []byte(r.Prompt), "stop", 1, 1)) {
		t.Fatalf("chunk of %+v is not valid JSON", r)
	}
}

// completionBody re-encodes r as a /v1/completions body.
func completionBody(t *testing.T, r *Request, prompt any) []byte {
	m := map[string]any{"model": r.Model, "prompt": prompt, "stream": r.Stream, "user": r.User}
	if r.MaxTokens > 0 {
		m["max_tokens"] = r.MaxTokens
	}
	if r.Stream {
		m["stream_options"] = map[string]bool{"include_usage": r.IncludeUsage}
	}
	if r.Seed != nil {
		m["seed"] = *r.Seed
	}
	if r.Stop != nil {
		m["stop"] = r.Stop
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzParseCompletion: nothing panics; a body gives a request or a 400; an
// accepted request re-encodes to a body that parses to the same request.
func FuzzParseCompletion(f *testing.F) {
	for _, s := range completionSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseCompletion(body)
		if (r == nil) == (err == nil) {
			t.Fatalf("want exactly one of request and error: %v, %v", r, err)
		}
		if err != nil {
			checkError(t, err)
			return
		}
		checkRequest(t, r)
		again, err := ParseCompletion(completionBody(t, r, r.Prompt))
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("round trip:\n got %+v, %v\nwant %+v", again, err, r)
		}
	})
}

// FuzzParseChat: as FuzzParseCompletion; an accepted request's prompt ends
// with the open assistant turn, sending it back as a completion keeps every
// field, and sending it as one user message wraps it in the template.
func FuzzParseChat(f *testing.F) {
	for _, s := range chatSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseChat(body)
		if (r == nil) == (err == nil) {
			t.Fatalf("want exactly one of request and error: %v, %v", r, err)
		}
		if err != nil {
			checkError(t, err)
			return
		}
		checkRequest(t, r)
		if !r.Chat || !strings.HasSuffix(r.Prompt, "\nassistant:") {
			t.Fatalf("prompt %q", r.Prompt)
		}
		cmpl, err := ParseCompletion(completionBody(t, r, []string{r.Prompt}))
		want := *r
		want.Chat = false
		if r.MaxTokens == 0 {
			want.MaxTokens = DefaultMaxTokens
		}
		if err != nil || !reflect.DeepEqual(*cmpl, want) {
			t.Fatalf("as completion:\n got %+v, %v\nwant %+v", cmpl, err, want)
		}
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(completionBody(t, r, nil)))
		dec.UseNumber() // keep 64-bit seeds exact
		dec.Decode(&m)
		delete(m, "prompt")
		m["messages"] = []map[string]any{{"role": "user", "content": []map[string]string{{"type": "text", "text": r.Prompt}}}}
		b, _ := json.Marshal(m)
		wrapped, err := ParseChat(b)
		want = *r
		want.Prompt = "user: " + r.Prompt + "\nassistant:"
		if err != nil || !reflect.DeepEqual(*wrapped, want) {
			t.Fatalf("as one message:\n got %+v, %v\nwant %+v", wrapped, err, want)
		}
	})
}
