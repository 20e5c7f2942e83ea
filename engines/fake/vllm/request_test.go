package vllm

import "testing"

// FuzzParseRequest: the request parser never panics; what it accepts is
// usable, what it rejects is a 400.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{docRequest,
		`{"prompt":["one"],"max_tokens":null,"seed":-1,"stream":false}`,
		`{"prompt":[1,2,3]}`, `{"prompt":"a","n":2}`, `{"prompt":"a","max_tokens":1e3}`,
		`{"prompt":"a","stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true}}`,
		`{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":4}`, `[]`, `null`, `{`} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, chat bool) {
		req, aerr := parseRequest(body, chat)
		if aerr != nil {
			if req != nil || aerr.status != 400 || aerr.msg == "" || aerr.typ == "" {
				t.Fatalf("parseRequest(%q): %+v %+v", body, req, aerr)
			}
			return
		}
		if req.maxTokens == 0 || req.maxTokens < -1 || req.chat != chat || (req.continuousUsage && !req.includeUsage) || (req.includeUsage && !req.stream) {
			t.Fatalf("parseRequest(%q): %+v", body, req)
		}
	})
}
