package vllm

import (
	"fmt"
	"testing"

	"github.com/llama-orch/llama-orch/engines/fake"
	fakevllm "github.com/llama-orch/llama-orch/engines/fake/vllm"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
)

// newFake starts a vLLM fake on a free loopback port.
func newFake(t testing.TB, o fake.Options) *fakevllm.Server {
	t.Helper()
	s, err := fakevllm.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newAdapter(t testing.TB, url string, o Options) *Adapter {
	t.Helper()
	a, err := New(url, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// ---- wire builders ----

const streamHeader = "HTTP/1.1 200 OK\r\ndate: Fri, 17 Apr 2026 16:57:24 GMT\r\nserver: uvicorn\r\n" +
	"content-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"

// sseResponse is a vLLM stream response, one chunk per event as uvicorn
// writes it.
func sseResponse(evs ...string) []byte {
	return append([]byte(streamHeader), enginetest.Chunked(evs...)...)
}

// textEvent is a completion chunk as in ENGINES.md's capture; finish ""
// is null.
func textEvent(text, finish string) string {
	f := "null"
	if finish != "" {
		f = enginetest.JSONString(finish)
	}
	return `data: {"id":"cmpl-a1fcb98a99df0198","object":"text_completion","created":1776445044,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[{"index":0,"text":` +
		enginetest.JSONString(text) + `,"logprobs":null,"finish_reason":` + f + `,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"usage":null}` + "\n\n"
}

// usageEvent is the usage-only chunk.
func usageEvent(prompt, completion int) string {
	return fmt.Sprintf(`data: {"id":"cmpl-a1fcb98a99df0198","object":"text_completion","created":1776445044,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[],"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}}`+"\n\n",
		prompt, prompt+completion, completion)
}

const doneEvent = "data: [DONE]\n\n"

// httpResp is a keep-alive JSON response.
func httpResp(status, body string) []byte {
	return fmt.Appendf(nil, "HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s", status, len(body), body)
}
