package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestStreamGolden: every encoder's exact bytes, for both endpoints.
func TestStreamGolden(t *testing.T) {
	cmpl := &Stream{ID: "abc", Created: 1700000000, Model: "m"}
	chat := &Stream{ID: "abc", Created: 1700000000, Model: "m", Chat: true}
	f := func(got []byte, want string) {
		t.Helper()
		if string(got) != want {
			t.Errorf("\n got %s\nwant %s", got, want)
		}
	}
	const head = `data: {"id":"cmpl-abc","object":"text_completion","created":1700000000,"model":"m","choices":`
	const chead = `data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":`

	// Completions: no role chunk, token, finish, usage, done.
	f(cmpl.AppendRole(nil), ``)
	f(cmpl.AppendToken(nil, []byte(" Paris")), head+`[{"index":0,"text":" Paris","logprobs":null,"finish_reason":null}]}`+"\n\n")
	f(cmpl.AppendFinish(nil, "length"), head+`[{"index":0,"text":"","logprobs":null,"finish_reason":"length"}]}`+"\n\n")
	f(cmpl.AppendUsage(nil, 5, 3), head+`[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`+"\n\n")
	f(cmpl.AppendDone(nil), "data: [DONE]\n\n")

	// Chat: role chunk first, content deltas, an empty delta on finish.
	f(chat.AppendRole(nil), chead+`[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`+"\n\n")
	f(chat.AppendToken(nil, []byte("Okay")), chead+`[{"index":0,"delta":{"content":"Okay"},"logprobs":null,"finish_reason":null}]}`+"\n\n")
	f(chat.AppendFinish(nil, "stop"), chead+`[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}`+"\n\n")
	f(chat.AppendUsage(nil, 10, 0), chead+`[],"usage":{"prompt_tokens":10,"completion_tokens":0,"total_tokens":10}}`+"\n\n")
	f(chat.AppendDone(nil), "data: [DONE]\n\n")

	// Mid-stream error frame.
	f(chat.AppendError(nil, &Error{Status: 503, Message: "no replica", Type: TypeServer, Code: "replica_exhausted"}),
		`data: {"error":{"message":"no replica","type":"server_error","param":null,"code":"replica_exhausted"}}`+"\n\n")

	// Whole responses.
	f(AppendCompletion(nil, cmpl, []byte(" Paris. It"), "length", 5, 3),
		`{"id":"cmpl-abc","object":"text_completion","created":1700000000,"model":"m","choices":[{"index":0,"text":" Paris. It","logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`)
	f(AppendCompletion(nil, chat, []byte("Hello!"), "stop", 9, 2),
		`{"id":"chatcmpl-abc","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}`)

	// Appends go after what dst holds.
	f(cmpl.AppendDone([]byte(": ping\n\n")), ": ping\n\ndata: [DONE]\n\n")
}

// vLLM frames from ENGINES.md §2 (an Apr-2026 capture for completions, an
// Oct-2025 capture for chat), without their "data: " prefix.
const (
	vllmToken  = `{"id":"cmpl-a1fcb98a99df0198","object":"text_completion","created":1776445044,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[{"index":0,"text":" Paris","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"usage":null}`
	vllmFinish = `{"id":"cmpl-a1fcb98a99df0198","object":"text_completion","created":1776445044,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[{"index":0,"text":" It","logprobs":null,"finish_reason":"length","stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"usage":null}`
	vllmUsage  = `{"id":"cmpl-a1fcb98a99df0198","object":"text_completion","created":1776445044,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[],"usage":{"prompt_tokens":5,"total_tokens":8,"completion_tokens":3}}`
	vllmRole   = `{"id":"chatcmpl-f42e8ae7ddb346e1adfba47e3d710b46","object":"chat.completion.chunk","created":1760031300,"model":"deepseek-ai/DeepSeek-V3.1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":null}`
	vllmDelta  = `{"id":"chatcmpl-f42e8ae7ddb346e1adfba47e3d710b46","object":"chat.completion.chunk","created":1760031300,"model":"deepseek-ai/DeepSeek-V3.1","choices":[{"index":0,"delta":{"content":"Okay"},"logprobs":null,"finish_reason":null,"token_ids":null}]}`
	vllmStop   = `{"id":"chatcmpl-f42e8ae7ddb346e1adfba47e3d710b46","object":"chat.completion.chunk","created":1760031300,"model":"deepseek-ai/DeepSeek-V3.1","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop","stop_reason":null,"token_ids":null}]}`
	vllmError  = `{"error": {"message": "…", "type": "InternalServerError", "param": null, "code": 500}}`
)

// TestChunksMatchVLLM: our chunks have vLLM's keys, in vLLM's order, with
// the same values, once vLLM's non-OpenAI extras are set aside. Deliberate
// differences: usage keys are in OpenAI's order (compared as a set), our
// finish chunk is separate from the last text (so its text is ""), and the
// chat finish delta is OpenAI's {} where vLLM writes {"content":""}.
func TestChunksMatchVLLM(t *testing.T) {
	extras := []string{"stop_reason", "prompt_token_ids", "token_ids", "usage=null"}
	cmpl := &Stream{ID: "a1fcb98a99df0198", Created: 1776445044, Model: "Qwen/Qwen2.5-1.5B-Instruct"}
	chat := &Stream{ID: "f42e8ae7ddb346e1adfba47e3d710b46", Created: 1760031300, Model: "deepseek-ai/DeepSeek-V3.1", Chat: true}
	f := func(ours []byte, vllm string, skip ...string) {
		t.Helper()
		got := flatten(t, frameData(t, ours), append(skip, extras...))
		want := flatten(t, []byte(vllm), append(skip, extras...))
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("keys differ from vLLM's\n ours: %s\n vLLM: %s", strings.Join(got, " "), strings.Join(want, " "))
		}
	}
	f(cmpl.AppendToken(nil, []byte(" Paris")), vllmToken)
	f(cmpl.AppendFinish(nil, "length"), vllmFinish, "choices[0].text")
	f(cmpl.AppendUsage(nil, 5, 3), vllmUsage)
	f(chat.AppendRole(nil), vllmRole)
	f(chat.AppendToken(nil, []byte("Okay")), vllmDelta)
	f(chat.AppendFinish(nil, "stop"), vllmStop, "choices[0].delta")
	// The error frame: same keys in the same order (vLLM's values differ).
	e := &Error{Status: 500, Message: "…", Type: "x", Code: "y"}
	got := keysOf(flatten(t, frameData(t, chat.AppendError(nil, e)), nil))
	want := keysOf(flatten(t, []byte(vllmError), nil))
	if got != want {
		t.Errorf("error frame keys %s, vLLM %s", got, want)
	}
}

// frameData checks that b is exactly one `data: …\n\n` event and returns its data.
func frameData(t *testing.T, b []byte) []byte {
	t.Helper()
	data, ok := bytes.CutPrefix(b, []byte("data: "))
	if !ok || !bytes.HasSuffix(data, []byte("\n\n")) || bytes.Count(b, []byte("\n")) != 2 {
		t.Fatalf("not one data event: %q", b)
	}
	return data[:len(data)-2]
}

// flatten lists "path=value" for every leaf (and empty object or array) of
// the JSON document, in document order. Entries whose path or entry has a
// prefix in skip are left out; the entries under "usage." are sorted.
func flatten(t *testing.T, doc []byte, skip []string) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var out []string
	var walk func(path string)
	walk = func(path string) {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		switch tok := tok.(type) {
		case json.Delim:
			empty := true
			for i := 0; dec.More(); i++ {
				empty = false
				if tok == '{' {
					key, _ := dec.Token()
					walk(strings.TrimPrefix(path+"."+key.(string), "."))
				} else {
					walk(fmt.Sprintf("%s[%d]", path, i))
				}
			}
			dec.Token() // the closing delimiter
			if empty {
				out = append(out, path+"="+string(tok)+map[json.Delim]string{'{': "}", '[': "]"}[tok])
			}
		case string:
			out = append(out, path+"="+fmt.Sprintf("%q", tok))
		case nil:
			out = append(out, path+"=null")
		default:
			out = append(out, fmt.Sprintf("%s=%v", path, tok))
		}
	}
	walk("")
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("%s: data after the document", doc)
	}
	kept := out[:0]
	for _, kv := range out {
		drop := false
		for _, s := range skip {
			drop = drop || strings.HasPrefix(kv, s) || strings.Contains(kv, "."+s)
		}
		if !drop {
			kept = append(kept, kv)
		}
	}
	var usage []string
	for i := 0; i < len(kept); i++ {
		if strings.HasPrefix(kept[i], "usage.") {
			usage = append(usage, kept[i])
		}
	}
	sort.Strings(usage)
	j := 0
	for i := range kept {
		if strings.HasPrefix(kept[i], "usage.") {
			kept[i] = usage[j]
			j++
		}
	}
	return kept
}

func keysOf(kvs []string) string {
	var keys []string
	for _, kv := range kvs {
		keys = append(keys, kv[:strings.IndexByte(kv, '=')])
	}
	return strings.Join(keys, ",")
}

// trickyTexts are token texts that must still give valid JSON and UTF-8.
var trickyTexts = []string{
	"",
	`say "hi"`,
	`back\slash`,
	"line\nbreak\r\ttab",
	"\x00\x01\x1f\x7f",
	"sep\u2028par\u2029end", // valid JSON, but breaks JavaScript string literals
	"emoji 😀 and 中文",
	"bad \xff byte",
	"split \xe2\x82", // a multi-byte character cut short
	"\xc3",
	"</script><b>&amp;",
	"\ufffd already",
}

// TestEncodersTrickyText: every encoder's output is one valid JSON document
// (or data event) of valid UTF-8 with no raw U+2028/U+2029, and it decodes
// to the text with each invalid byte as U+FFFD (what encoding/json does).
// Tricky ids and models are escaped too.
func TestEncodersTrickyText(t *testing.T) {
	for _, chat := range []bool{false, true} {
		s := &Stream{ID: "id\"\n\xff", Created: 1, Model: "org/m\u2028\\", Chat: chat}
		prefix := "cmpl-"
		if chat {
			prefix = "chatcmpl-"
		}
		for _, text := range trickyTexts {
			var want string
			b, _ := json.Marshal(text)
			json.Unmarshal(b, &want)

			docs := map[string][]byte{
				"token":      frameData(t, s.AppendToken(nil, []byte(text))),
				"finish":     frameData(t, s.AppendFinish(nil, text)),
				"error":      frameData(t, s.AppendError(nil, &Error{Message: text, Type: text, Param: text, Code: text})),
				"completion": AppendCompletion(nil, s, []byte(text), "stop", 1, 2),
			}
			for name, doc := range docs {
				if !json.Valid(doc) || !utf8.Valid(doc) || bytes.ContainsRune(doc, '\u2028') || bytes.ContainsRune(doc, '\u2029') {
					t.Fatalf("chat=%v %s(%q): invalid output %q", chat, name, text, doc)
				}
			}
			chunk := decodeChunk(t, docs["token"])
			got := chunk.Choices[0].Text
			if chat {
				got = chunk.Choices[0].Delta.Content
			}
			if got == nil || *got != want || chunk.ID != prefix+"id\"\n\ufffd" || chunk.Model != "org/m\u2028\\" {
				t.Errorf("chat=%v token %q: decoded %+v", chat, text, chunk)
			}
			chunk = decodeChunk(t, docs["finish"])
			if fr := chunk.Choices[0].FinishReason; fr == nil || *fr != want {
				t.Errorf("chat=%v finish %q: decoded %+v", chat, text, chunk)
			}
			chunk = decodeChunk(t, docs["completion"])
			got = chunk.Choices[0].Text
			if chat {
				got = chunk.Choices[0].Message.Content
			}
			if got == nil || *got != want {
				t.Errorf("chat=%v completion %q: decoded %s", chat, text, docs["completion"])
			}
			var env struct{ Error map[string]*string }
			json.Unmarshal(docs["error"], &env)
			for _, k := range []string{"message", "type", "param", "code"} {
				v := env.Error[k]
				if text == "" && (k == "param" || k == "code") {
					if v != nil {
						t.Errorf("empty %s must be null: %s", k, docs["error"])
					}
				} else if v == nil || *v != want {
					t.Errorf("error %s %q: decoded %s", k, text, docs["error"])
				}
			}
		}
	}
}

// chunk is the part of a chunk or response the tests read back.
type chunk struct {
	ID      string
	Model   string
	Choices []struct {
		Text         *string
		Delta        struct{ Content *string }
		Message      struct{ Content *string }
		FinishReason *string `json:"finish_reason"`
	}
}

func decodeChunk(t *testing.T, doc []byte) *chunk {
	t.Helper()
	var c chunk
	if err := json.Unmarshal(doc, &c); err != nil || len(c.Choices) != 1 {
		t.Fatalf("%s: %v", doc, err)
	}
	return &c
}

// TestAppendAllocs: once dst has room, no encoder allocates, whatever the
// lengths of id and model (longer than the 32 bytes a copying
// []byte(string) conversion could keep on the stack).
func TestAppendAllocs(t *testing.T) {
	text := []byte(" Paris \"quoted\"\n😀")
	e := &Error{Status: 500, Message: "engine failed after the first token", Type: TypeServer, Code: "worker_reset"}
	for _, chat := range []bool{false, true} {
		s := &Stream{ID: "6f1c2b8e-0a7d-4c1e-9b3a-2f4d5e6a7b8c", Created: 1776445044, Model: "meta-llama/Llama-3.1-8B-Instruct-with-a-long-name", Chat: chat}
		buf := make([]byte, 0, 4096)
		for name, fn := range map[string]func(){
			"AppendToken":      func() { buf = s.AppendToken(buf[:0], text) },
			"AppendRole":       func() { buf = s.AppendRole(buf[:0]) },
			"AppendFinish":     func() { buf = s.AppendFinish(buf[:0], "length") },
			"AppendUsage":      func() { buf = s.AppendUsage(buf[:0], 123, 456) },
			"AppendDone":       func() { buf = s.AppendDone(buf[:0]) },
			"AppendError":      func() { buf = s.AppendError(buf[:0], e) },
			"AppendCompletion": func() { buf = AppendCompletion(buf[:0], s, text, "stop", 1, 2) },
		} {
			if n := testing.AllocsPerRun(200, fn); n != 0 {
				t.Errorf("chat=%v %s: %v allocs per run, want 0", chat, name, n)
			}
		}
	}
}

// BenchmarkAppendToken: the per-token cost of the stream rewrite.
func BenchmarkAppendToken(b *testing.B) {
	text := []byte(" Paris")
	for _, chat := range []bool{false, true} {
		name := "completions"
		if chat {
			name = "chat"
		}
		b.Run(name, func(b *testing.B) {
			s := &Stream{ID: "6f1c2b8e-0a7d-4c1e-9b3a-2f4d5e6a7b8c", Created: 1776445044, Model: "Qwen/Qwen2.5-1.5B-Instruct", Chat: chat}
			buf := make([]byte, 0, 1024)
			b.ReportAllocs()
			b.SetBytes(int64(len(s.AppendToken(nil, text))))
			for b.Loop() {
				buf = s.AppendToken(buf[:0], text)
			}
		})
	}
}
