package tgi

import (
	"context"
	"fmt"
	"testing"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
)

// ---- wire builders ----

// streamHead is TGI's /generate_stream head (axum 0.7 over hyper).
const streamHead = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n" +
	"x-compute-type: gpu+optimized\r\nx-compute-characters: 24\r\nx-accel-buffering: no\r\n" +
	"transfer-encoding: chunked\r\ndate: Thu, 15 Jan 2026 10:00:00 GMT\r\n\r\n"

// sseResponse is a keep-alive TGI stream, one chunk per event, ended.
func sseResponse(evs ...string) []byte {
	return append([]byte(streamHead), enginetest.Chunked(evs...)...)
}

// ev makes an event of a JSON frame.
func ev(json string) string { return "data: " + json + "\n\n" }

// tok is an intermediate frame.
func tok(index int, text string, special bool) string {
	return ev(fmt.Sprintf(`{"index":%d,"token":{"id":%d,"text":%s,"logprob":-0.5,"special":%v},"generated_text":null,"details":null}`,
		index, 100+index, enginetest.JSONString(text), special))
}

// final is the last frame.
func final(index int, text string, special bool, generated, reason string, tokens, input int) string {
	return ev(fmt.Sprintf(`{"index":%d,"token":{"id":%d,"text":%s,"logprob":-0.5,"special":%v},"generated_text":%s,"details":{"finish_reason":%q,"generated_tokens":%d,"seed":null,"input_length":%d}}`,
		index, 100+index, enginetest.JSONString(text), special, enginetest.JSONString(generated), reason, tokens, input))
}

func errFrame(msg, typ string) string {
	return ev(fmt.Sprintf(`{"error":%s,"error_type":%q}`, enginetest.JSONString(msg), typ))
}

// httpResp is a keep-alive response with a body.
func httpResp(status, ctype, body string) []byte {
	return fmt.Appendf(nil, "HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s", status, ctype, len(body), body)
}

// newPipeAdapter returns an adapter without keep-alive whose connections
// are pipes served by script.
func newPipeAdapter(t *testing.T, script func(c *enginetest.Conn)) *Adapter {
	t.Helper()
	pd := &enginetest.PipeDialer{Script: script}
	a, err := New("http://engine.test:8080", Options{Dial: pd.Dial, MaxIdleConns: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = a.Close()
		pd.Wait(t)
	})
	return a
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

var testReq = &engines.Request{TaskID: "t1", Prompt: "The capital of France is", MaxTokens: 4, Seed: 42}

// stream makes a's Stream of testReq a StreamFunc.
func stream(a *Adapter) enginetest.StreamFunc {
	return func(ctx context.Context, sink engines.Sink) error {
		_, err := a.Stream(ctx, testReq, sink)
		return err
	}
}
