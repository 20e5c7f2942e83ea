package vllm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/llama-orch/llama-orch/engines/internal/text"
)

// Frames of ENGINES.md §2, verbatim.
const (
	docText1  = `{"id":"cmpl-a1fcb98a99df0198","object":"text_completion","created":1776445044,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[{"index":0,"text":" Paris","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"usage":null}`
	docText2  = `{"id":"cmpl-a1fcb98a99df0198","object":"text_completion","created":1776445044,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[{"index":0,"text":".","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"usage":null}`
	docText3  = `{"id":"cmpl-a1fcb98a99df0198","object":"text_completion","created":1776445044,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[{"index":0,"text":" It","logprobs":null,"finish_reason":"length","stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"usage":null}`
	docUsage  = `{"id":"cmpl-a1fcb98a99df0198","object":"text_completion","created":1776445044,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[],"usage":{"prompt_tokens":5,"total_tokens":8,"completion_tokens":3}}`
	docChat1  = `{"id":"chatcmpl-f42e8ae7ddb346e1adfba47e3d710b46","object":"chat.completion.chunk","created":1760031300,"model":"deepseek-ai/DeepSeek-V3.1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":null}`
	docChat2  = `{"id":"chatcmpl-f42e8ae7ddb346e1adfba47e3d710b46","object":"chat.completion.chunk","created":1760031300,"model":"deepseek-ai/DeepSeek-V3.1","choices":[{"index":0,"delta":{"content":"Okay"},"logprobs":null,"finish_reason":null,"token_ids":null}]}`
	docChat3  = `{"id":"chatcmpl-f42e8ae7ddb346e1adfba47e3d710b46","object":"chat.completion.chunk","created":1760031300,"model":"deepseek-ai/DeepSeek-V3.1","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop","stop_reason":null,"token_ids":null}]}`
	docErrMid = `{"error": {"message": "\u2026", "type": "InternalServerError", "param": null, "code": 500}}`
	docErrCtx = `{"error":{"message":"This model's maximum context length is 4096 tokens. However, your request has 5000 input tokens. Please reduce the length of the input messages.","type":"BadRequestError","param":null,"code":400}}`
	docErrOld = `{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens in the messages, Please reduce the length of the messages.","type":"BadRequestError","param":null,"code":400}`
)

func TestDecode(t *testing.T) {
	type want struct {
		done, choice, usage, isErr bool
		text, finish               string
		hasFinish                  bool
		ids                        int
		hasIDs                     bool
		completion, prompt         int
		errMsg, errType            string
		errCode                    int
	}
	for _, tc := range []struct {
		name string
		data string
		want want
	}{
		// The capture's first chunk: usage:null, *_token_ids:null.
		{"text", docText1, want{choice: true, text: " Paris"}},
		{"text 2", docText2, want{choice: true, text: "."}},
		// The last text delta carries finish_reason.
		{"finish", docText3, want{choice: true, text: " It", finish: "length", hasFinish: true}},
		// The usage-only chunk: choices:[].
		{"usage", docUsage, want{usage: true, completion: 3, prompt: 5}},
		{"done", "[DONE]", want{done: true}},
		{"done spaced", " [DONE] ", want{done: true}},
		// Current main omits "usage":null.
		{"no usage key", `{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"a","logprobs":null,"finish_reason":null,"stop_reason":null}]}`, want{choice: true, text: "a"}},
		// continuous_usage_stats: usage in a text chunk.
		{"continuous usage", `{"id":"c","choices":[{"index":0,"text":" b","finish_reason":null}],"usage":{"prompt_tokens":5,"total_tokens":7,"completion_tokens":2}}`, want{choice: true, text: " b", usage: true, completion: 2, prompt: 5}},
		// return_token_ids: several tokens in one chunk (speculative decoding).
		{"token ids", `{"choices":[{"index":0,"text":" Paris.","token_ids":[12095,13],"finish_reason":null}],"usage":null}`, want{choice: true, text: " Paris.", ids: 2, hasIDs: true}},
		// A token that ends inside a character: text "".
		{"empty text", `{"choices":[{"index":0,"text":"","finish_reason":null}]}`, want{choice: true}},
		// Escapes and raw UTF-8.
		{"escapes", `{"choices":[{"index":0,"text":"\"q\"\n\t\\ é😀 \ud83d\ude00"}]}`, want{choice: true, text: "\"q\"\n\t\\ é😀 😀"}},
		// Chat: the role chunk, a content chunk, the finish chunk.
		{"chat role", docChat1, want{choice: true}},
		{"chat content", docChat2, want{choice: true, text: "Okay"}},
		{"chat finish", docChat3, want{choice: true, finish: "stop", hasFinish: true}},
		// The mid-stream error frame (json.dumps, with spaces, \u escapes).
		{"error midstream", docErrMid, want{isErr: true, errMsg: "…", errType: "InternalServerError", errCode: 500}},
		{"error http", docErrCtx, want{isErr: true, errMsg: "This model's maximum context length is 4096 tokens. However, your request has 5000 input tokens. Please reduce the length of the input messages.", errType: "BadRequestError", errCode: 400}},
		// Up to v0.9: the flat ErrorResponse.
		{"error flat", docErrOld, want{isErr: true, errMsg: "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens in the messages, Please reduce the length of the messages.", errType: "BadRequestError", errCode: 400}},
		// v0.9 mid-stream: the flat shape wrapped in "error".
		{"error wrapped flat", `{"error": {"object": "error", "message": "boom", "type": "InternalServerError", "param": null, "code": 500}}`, want{isErr: true, errMsg: "boom", errType: "InternalServerError", errCode: 500}},
		{"error string", `{"error":"boom"}`, want{isErr: true, errMsg: "boom"}},
		// Lenient: members of other types are absent.
		{"odd types", `{"choices":[{"index":0,"text":5,"finish_reason":7,"token_ids":{}}],"usage":[1]}`, want{choice: true}},
		{"choices null", `{"choices":null,"usage":null}`, want{}},
		{"choice not object", `{"choices":[1]}`, want{}},
		{"usage floats", `{"choices":[],"usage":{"prompt_tokens":5.0,"completion_tokens":3e0}}`, want{usage: true, completion: 3, prompt: 5}},
		{"error null", `{"error":null,"choices":[{"text":"x"}]}`, want{choice: true, text: "x"}},
	} {
		var d decoder
		var c chunk
		if err := d.decode([]byte(tc.data), &c); err != nil {
			t.Errorf("%s: decode: %v", tc.name, err)
			continue
		}
		got := want{done: c.done, choice: c.hasChoice, usage: c.hasUsage, isErr: c.hasError,
			text: string(c.text), finish: string(c.finish), hasFinish: c.finish != nil,
			ids: c.nTokenIDs, hasIDs: c.hasTokenIDs, completion: c.completionTokens, prompt: c.promptTokens,
			errMsg: string(c.errMessage), errType: string(c.errType), errCode: c.errCode}
		if got != tc.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, data := range []string{
		``, // empty data line
		`{"id":"cmpl-1","choices":[{"index":0,"text":`, // the fake's malformed frame
		`{"a":1}x`,  // trailing garbage
		`[1,2]`,     // not an object
		`"[DONE]"`,  // a string
		`DONE`,      // not JSON
		`{"a":1,}`,  // trailing comma
		`{"a":tru}`, // bad literal
	} {
		var d decoder
		var c chunk
		if err := d.decode([]byte(data), &c); err == nil {
			t.Errorf("decode(%q): no error (%+v)", data, c)
		}
	}
}

// TestDecodeAllocs checks that the per-token path allocates nothing once the
// parser's buffers have grown.
func TestDecodeAllocs(t *testing.T) {
	var d decoder
	var c chunk
	for _, data := range [][]byte{[]byte(docText1), []byte(docText3), []byte(docUsage), []byte(docChat2)} {
		_ = d.decode(data, &c)
		if n := testing.AllocsPerRun(200, func() { _ = d.decode(data, &c) }); n != 0 {
			t.Errorf("decode(%.40s…): %v allocs, want 0", data, n)
		}
	}
}

// FuzzDecode: the decoder never panics, accepts exactly the objects
// encoding/json accepts, and reads the same text, finish reason and counts.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{docText1, docText2, docText3, docUsage, docChat1, docChat2, docChat3,
		docErrMid, docErrCtx, docErrOld, "[DONE]", `{"choices":[{"text":"\ud83d\ude00 é","token_ids":[1,2]}]}`,
		`{"choices":[{"text":"\ud83d"}]}`, `{"error":"x"}`, `{"id":"cmpl-1","choices":[{"index":0,"text":`,
		"{\"choices\":[{\"text\":\"\xF0\x9F\"}]}", `{"choices":[{"delta":{"content":"a\u0000"},"te\u0078t":null}]}`, `null`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var d decoder
		var c chunk
		err := d.decode(data, &c)
		if isDone(data) {
			if err != nil || !c.done {
				t.Fatalf("decode(%q): %v %+v", data, err, c)
			}
			return
		}
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		oerr := dec.Decode(&m)
		if oerr == nil {
			if _, terr := dec.Token(); terr != io.EOF {
				oerr = errors.New("trailing data")
			}
		}
		if oerr == nil && m == nil {
			oerr = errors.New("null")
		}
		if (err == nil) != (oerr == nil) {
			t.Fatalf("decode(%q): %v, encoding/json: %v", data, err, oerr)
		}
		if err != nil {
			return
		}
		var wantText, wantFinish []byte
		hasChoice := false
		if cs, ok := m["choices"].([]any); ok && len(cs) > 0 {
			if ch, ok := cs[0].(map[string]any); ok {
				hasChoice = true
				if s, ok := ch["text"].(string); ok {
					wantText = []byte(s)
				} else if dl, ok := ch["delta"].(map[string]any); ok {
					if s, ok := dl["content"].(string); ok {
						wantText = []byte(s)
					}
				}
				if s, ok := ch["finish_reason"].(string); ok {
					wantFinish = []byte(s)
				}
			}
		}
		if c.hasChoice != hasChoice || !bytes.Equal(text.AppendValid(nil, c.text), wantText) || !bytes.Equal(text.AppendValid(nil, c.finish), wantFinish) {
			t.Fatalf("decode(%q): choice %v text %q finish %q; encoding/json: %v %q %q", data, c.hasChoice, c.text, c.finish, hasChoice, wantText, wantFinish)
		}
		if u, ok := m["usage"].(map[string]any); ok {
			if n, ok := u["completion_tokens"].(json.Number); ok {
				if v, err := n.Int64(); err == nil && v >= 0 && v < 1<<40 && int(v) != c.completionTokens {
					t.Fatalf("decode(%q): completion_tokens %d, encoding/json %d", data, c.completionTokens, v)
				}
			}
		} else if c.hasUsage {
			t.Fatalf("decode(%q): usage where encoding/json has none", data)
		}
	})
}
