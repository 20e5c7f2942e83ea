package openai

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func i64(n int64) *int64 { return &n }

// TestParseCompletionAccepts: accepted bodies give exactly these requests.
func TestParseCompletionAccepts(t *testing.T) {
	f := func(body string, want Request) {
		t.Helper()
		got, err := ParseCompletion([]byte(body))
		if err != nil {
			t.Errorf("%s: unexpected error %v", body, err)
			return
		}
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", body, *got, want)
		}
	}
	// The smallest request: OpenAI's default of 16 tokens.
	f(`{"model":"m","prompt":"hi"}`, Request{Model: "m", Prompt: "hi", MaxTokens: 16})
	// ENGINES.md §2's vLLM request, as the official clients send it.
	f(`{"model":"Qwen/Qwen2.5-1.5B-Instruct","prompt":"The capital of France is","max_tokens":3,"temperature":0,"seed":42,"stream":true,"stream_options":{"include_usage":true}}`,
		Request{Model: "Qwen/Qwen2.5-1.5B-Instruct", Prompt: "The capital of France is", MaxTokens: 3, Stream: true, IncludeUsage: true, Seed: i64(42)})
	// An array of exactly one string is one prompt.
	f(`{"model":"m","prompt":["one"]}`, Request{Model: "m", Prompt: "one", MaxTokens: 16})
	// null means "not given", as pydantic-based servers read it.
	f(`{"model":"m","prompt":"x","max_tokens":null,"seed":null,"stop":null,"stream":null,"stream_options":null,"n":null,"logprobs":null,"suffix":null,"echo":null,"user":null}`,
		Request{Model: "m", Prompt: "x", MaxTokens: 16})
	// Harmless values of the unsupported knobs are accepted.
	f(`{"model":"m","prompt":"x","n":1,"best_of":1,"echo":false,"suffix":"","logit_bias":{}}`, Request{Model: "m", Prompt: "x", MaxTokens: 16})
	// Integral floats are integers (pydantic's lax mode); negative seeds are seeds.
	f(`{"model":"m","prompt":"x","max_tokens":8.0,"seed":-7}`, Request{Model: "m", Prompt: "x", MaxTokens: 8, Seed: i64(-7)})
	// A stop string; empty stop strings stop nothing and are dropped.
	f(`{"model":"m","prompt":"x","stop":"\n"}`, Request{Model: "m", Prompt: "x", MaxTokens: 16, Stop: []string{"\n"}})
	f(`{"model":"m","prompt":"x","stop":["a","","b"]}`, Request{Model: "m", Prompt: "x", MaxTokens: 16, Stop: []string{"a", "b"}})
	f(`{"model":"m","prompt":"x","stop":""}`, Request{Model: "m", Prompt: "x", MaxTokens: 16})
	// Unknown and ignored sampling fields pass; temperature and top_p at their bounds.
	f(`{"model":"m","prompt":"x","presence_penalty":1.5,"colour":"red","temperature":2,"top_p":0,"user":"u-1"}`,
		Request{Model: "m", Prompt: "x", MaxTokens: 16, User: "u-1"})
	// include_usage false, other stream options ignored.
	f(`{"model":"m","prompt":"x","stream":true,"stream_options":{"include_usage":false,"continuous_usage_stats":true}}`,
		Request{Model: "m", Prompt: "x", MaxTokens: 16, Stream: true})
	// Invalid UTF-8 and a lone surrogate become U+FFFD; empty prompts are prompts.
	f("{\"model\":\"m\",\"prompt\":\"a\xffb\\ud800\"}", Request{Model: "m", Prompt: "a\uFFFDb\uFFFD", MaxTokens: 16})
	f(`{"model":"m","prompt":""}`, Request{Model: "m", Prompt: "", MaxTokens: 16})
	// Whitespace around the object.
	f(" \n{\"model\":\"m\",\"prompt\":\"x\"}\n", Request{Model: "m", Prompt: "x", MaxTokens: 16})
}

// TestParseChatAccepts: messages are flattened by the documented template.
func TestParseChatAccepts(t *testing.T) {
	f := func(body string, want Request) {
		t.Helper()
		want.Chat = true
		got, err := ParseChat([]byte(body))
		if err != nil {
			t.Errorf("%s: unexpected error %v", body, err)
			return
		}
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", body, *got, want)
		}
	}
	// One user turn; no limit given, so MaxTokens 0 (the caller's default).
	f(`{"model":"m","messages":[{"role":"user","content":"Hi"}]}`, Request{Model: "m", Prompt: "user: Hi\nassistant:"})
	// A conversation: developer is written as system, parts are joined with
	// "\n", an assistant turn with null content is empty, newlines are kept.
	f(`{"model":"m","messages":[
		{"role":"developer","content":"Be terse."},
		{"role":"system","content":[{"type":"text","text":"A"},{"type":"text","text":"B"}]},
		{"role":"user","content":"Hi\nthere","name":"ann"},
		{"role":"assistant","content":null},
		{"role":"assistant","content":"Hello."},
		{"role":"tool","content":"42","tool_call_id":"c1"},
		{"role":"user","content":[]}
	],"max_tokens":5}`, Request{Model: "m", MaxTokens: 5,
		Prompt: "system: Be terse.\nsystem: A\nB\nuser: Hi\nthere\nassistant: \nassistant: Hello.\ntool: 42\nuser: \nassistant:"})
	// max_completion_tokens wins over max_tokens, whichever comes first.
	f(`{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":7,"max_tokens":9}`, Request{Model: "m", Prompt: "user: x\nassistant:", MaxTokens: 7})
	f(`{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":9}`, Request{Model: "m", Prompt: "user: x\nassistant:", MaxTokens: 9})
	// What the official client sends for a stream with usage, plus harmless
	// tool and format settings.
	f(`{"messages":[{"role":"user","content":"x"}],"model":"m","stream":true,"stream_options":{"include_usage":true},"seed":1,"stop":["\n\n"],"user":"u",
		"tools":[],"tool_choice":"none","function_call":"auto","response_format":{"type":"text"},"logprobs":false,"n":1,"temperature":0.7,"top_p":0.9}`,
		Request{Model: "m", Prompt: "user: x\nassistant:", Stream: true, IncludeUsage: true, Seed: i64(1), Stop: []string{"\n\n"}, User: "u"})
}

// TestParseErrors: every rejection is a 400 invalid_request_error whose
// Param names the parameter at fault (and whose message names it too), so
// a client can tell what to fix. Only a body that is no JSON object has no
// param.
func TestParseErrors(t *testing.T) {
	f := func(chat bool, body, param, msg string) {
		t.Helper()
		var err error
		if chat {
			_, err = ParseChat([]byte(body))
		} else {
			_, err = ParseCompletion([]byte(body))
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%s: got %v, want an *Error", body, err)
			return
		}
		if e.Status != 400 || e.Type != TypeInvalidRequest || e.Param != param || !strings.Contains(e.Message, msg) {
			t.Errorf("%s:\n got %d %s param=%q %q\nwant 400 invalid_request_error param=%q containing %q", body, e.Status, e.Type, e.Param, e.Message, param, msg)
		}
		if param != "" && !strings.Contains(e.Message, param) {
			t.Errorf("%s: message %q does not name %q", body, e.Message, param)
		}
	}
	const cm = false // /v1/completions
	const ch = true  // /v1/chat/completions
	const msgs = `"messages":[{"role":"user","content":"x"}]`

	// Bodies that are no JSON object.
	f(cm, ``, "", "empty")
	f(cm, `[{"model":"m"}]`, "", "JSON object")
	f(cm, `null`, "", "JSON object")
	f(cm, `{"model":"m","prompt":"x"`, "", "could not parse")
	f(cm, `{"model":"m","prompt":"x"} {}`, "", "could not parse") // trailing data
	f(ch, `"hi"`, "", "JSON object")

	// model.
	f(cm, `{"prompt":"x"}`, "model", "provide a model")
	f(cm, `{"model":"","prompt":"x"}`, "model", "provide a model")
	f(cm, `{"model":7,"prompt":"x"}`, "model", "expected a string, but got a number")
	f(ch, `{`+msgs+`}`, "model", "provide a model")

	// prompt.
	f(cm, `{"model":"m"}`, "prompt", "provide a prompt")
	f(cm, `{"model":"m","prompt":[]}`, "prompt", "empty")
	f(cm, `{"model":"m","prompt":[1,2,3]}`, "prompt", "token-id")
	f(cm, `{"model":"m","prompt":[[1,2]]}`, "prompt", "token-id")
	f(cm, `{"model":"m","prompt":["a","b"]}`, "prompt", "several prompts")
	f(cm, `{"model":"m","prompt":{"text":"x"}}`, "prompt", "but got an object")
	f(cm, `{"model":"m","prompt":[true]}`, "prompt[0]", "expected a string, but got a boolean")

	// max_tokens and max_completion_tokens.
	f(cm, `{"model":"m","prompt":"x","max_tokens":0}`, "max_tokens", "at least 1")
	f(cm, `{"model":"m","prompt":"x","max_tokens":-3}`, "max_tokens", "at least 1")
	f(cm, `{"model":"m","prompt":"x","max_tokens":"8"}`, "max_tokens", "expected an integer, but got a string")
	f(cm, `{"model":"m","prompt":"x","max_tokens":1.5}`, "max_tokens", "expected an integer")
	f(cm, `{"model":"m","prompt":"x","max_tokens":4294967296}`, "max_tokens", "too large")
	f(cm, `{"model":"m","prompt":"x","max_tokens":1e400}`, "max_tokens", "expected an integer")
	f(ch, `{"model":"m",`+msgs+`,"max_completion_tokens":0}`, "max_completion_tokens", "at least 1")
	f(ch, `{"model":"m",`+msgs+`,"max_tokens":[]}`, "max_tokens", "but got an array")

	// stream and stream_options.
	f(cm, `{"model":"m","prompt":"x","stream":"yes"}`, "stream", "expected a boolean")
	f(cm, `{"model":"m","prompt":"x","stream_options":{"include_usage":true}}`, "stream_options", "only allowed when 'stream' is true")
	f(cm, `{"model":"m","prompt":"x","stream":true,"stream_options":true}`, "stream_options", "expected an object")
	f(ch, `{"model":"m",`+msgs+`,"stream":true,"stream_options":{"include_usage":1}}`, "stream_options.include_usage", "expected a boolean")

	// seed, temperature, top_p, n, logit_bias, stop, user.
	f(cm, `{"model":"m","prompt":"x","seed":"42"}`, "seed", "expected an integer")
	f(cm, `{"model":"m","prompt":"x","seed":1e19}`, "seed", "64-bit")
	f(cm, `{"model":"m","prompt":"x","temperature":2.5}`, "temperature", "from 0 to 2")
	f(cm, `{"model":"m","prompt":"x","temperature":-0.1}`, "temperature", "from 0 to 2")
	f(cm, `{"model":"m","prompt":"x","temperature":"hot"}`, "temperature", "expected a number")
	f(ch, `{"model":"m",`+msgs+`,"top_p":1.01}`, "top_p", "from 0 to 1")
	f(cm, `{"model":"m","prompt":"x","n":2}`, "n", "only 1 is supported")
	f(ch, `{"model":"m",`+msgs+`,"n":0}`, "n", "at least 1")
	f(cm, `{"model":"m","prompt":"x","logit_bias":{"50256":-100}}`, "logit_bias", "not supported")
	f(cm, `{"model":"m","prompt":"x","logit_bias":[1]}`, "logit_bias", "expected an object")
	f(cm, `{"model":"m","prompt":"x","stop":["a","b","c","d","e"]}`, "stop", "at most 4")
	f(cm, `{"model":"m","prompt":"x","stop":5}`, "stop", "expected a string or an array of strings")
	f(ch, `{"model":"m",`+msgs+`,"stop":["a",1]}`, "stop[1]", "expected a string")
	f(cm, `{"model":"m","prompt":"x","user":{}}`, "user", "expected a string")

	// Completions-only features that would change the response.
	f(cm, `{"model":"m","prompt":"x","best_of":3}`, "best_of", "only 1 is supported")
	f(cm, `{"model":"m","prompt":"x","logprobs":5}`, "logprobs", "not supported")
	f(cm, `{"model":"m","prompt":"x","logprobs":0}`, "logprobs", "not supported")
	f(cm, `{"model":"m","prompt":"x","echo":true}`, "echo", "not supported")
	f(cm, `{"model":"m","prompt":"x","echo":"no"}`, "echo", "expected a boolean")
	f(cm, `{"model":"m","prompt":"x","suffix":"end"}`, "suffix", "not supported")

	// messages.
	f(ch, `{"model":"m"}`, "messages", "provide a messages")
	f(ch, `{"model":"m","messages":[]}`, "messages", "empty")
	f(ch, `{"model":"m","messages":{"role":"user"}}`, "messages", "expected an array")
	f(ch, `{"model":"m","messages":[`+strings.Repeat(`{"role":"user","content":"x"},`, MaxMessages)+`{"role":"user","content":"x"}]}`, "messages", "at most 1024")
	f(ch, `{"model":"m","messages":["hi"]}`, "messages[0]", "expected an object, but got a string")
	f(ch, `{"model":"m","messages":[{"content":"x"}]}`, "messages[0].role", "Missing required")
	f(ch, `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"robot","content":"x"}]}`, "messages[1].role", `"robot"`)
	f(ch, `{"model":"m","messages":[{"role":5,"content":"x"}]}`, "messages[0].role", "expected a string")
	f(ch, `{"model":"m","messages":[{"role":"user"}]}`, "messages[0].content", "Missing required")
	f(ch, `{"model":"m","messages":[{"role":"user","content":null}]}`, "messages[0].content", "Missing required")
	f(ch, `{"model":"m","messages":[{"role":"user","content":3}]}`, "messages[0].content", "but got a number")
	f(ch, `{"model":"m","messages":[{"role":"user","content":["x"]}]}`, "messages[0].content[0]", "expected an object")
	f(ch, `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"http://x"}}]}]}`, "messages[0].content[0].type", `"image_url"`)
	f(ch, `{"model":"m","messages":[{"role":"user","content":[{"text":"x"}]}]}`, "messages[0].content[0].type", "not supported")
	f(ch, `{"model":"m","messages":[{"role":"user","content":[{"type":1}]}]}`, "messages[0].content[0].type", "expected a string")
	f(ch, `{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}`, "messages[0].content[0].text", "Missing required")
	f(ch, `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":[]}]}]}`, "messages[0].content[0].text", "expected a string")

	// Chat-only features that would change the response.
	f(ch, `{"model":"m",`+msgs+`,"logprobs":true}`, "logprobs", "not supported")
	f(ch, `{"model":"m",`+msgs+`,"logprobs":1}`, "logprobs", "expected a boolean")
	f(ch, `{"model":"m",`+msgs+`,"top_logprobs":2}`, "top_logprobs", "not supported")
	f(ch, `{"model":"m",`+msgs+`,"tools":[{"type":"function","function":{"name":"f"}}]}`, "tools", "does not call tools")
	f(ch, `{"model":"m",`+msgs+`,"functions":[{"name":"f"}]}`, "functions", "does not call tools")
	f(ch, `{"model":"m",`+msgs+`,"tool_choice":"required"}`, "tool_choice", "not supported")
	f(ch, `{"model":"m",`+msgs+`,"tool_choice":{"type":"function","function":{"name":"f"}}}`, "tool_choice", "not supported")
	f(ch, `{"model":"m",`+msgs+`,"function_call":{"name":"f"}}`, "function_call", "not supported")
	f(ch, `{"model":"m",`+msgs+`,"response_format":{"type":"json_object"}}`, "response_format", `"json_object"`)
	f(ch, `{"model":"m",`+msgs+`,"response_format":"json"}`, "response_format", "expected an object")
	f(ch, `{"model":"m",`+msgs+`,"response_format":{"type":2}}`, "response_format.type", "expected a string")
}

// TestParseErrorIsTyped: the returned error is an *Error, never a typed nil,
// and a success returns a nil error interface.
func TestParseErrorIsTyped(t *testing.T) {
	r, err := ParseCompletion([]byte(`{"model":"m","prompt":"x"}`))
	if err != nil || r == nil {
		t.Fatalf("got %v, %v", r, err)
	}
	r, err = ParseChat([]byte(`{}`))
	var e *Error
	if r != nil || !errors.As(err, &e) || e == nil || e.Param != "model" {
		t.Fatalf("got %v, %#v", r, err)
	}
}

// TestMessagesBound: exactly MaxMessages messages are accepted.
func TestMessagesBound(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"model":"m","messages":[`)
	for i := range MaxMessages {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"role":"user","content":"` + strconv.Itoa(i) + `"}`)
	}
	b.WriteString(`]}`)
	r, err := ParseChat([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.Prompt, "user: 0\nuser: 1\n") || !strings.HasSuffix(r.Prompt, "user: 1023\nassistant:") {
		t.Fatalf("prompt %q…", r.Prompt[:40])
	}
}
