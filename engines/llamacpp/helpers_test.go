package llamacpp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
)

// ---- wire builders ----

// events splits an SSE body into its events, each with its blank line.
func events(body []byte) [][]byte {
	var out [][]byte
	for len(body) > 0 {
		i := bytes.Index(body, []byte("\n\n"))
		if i < 0 {
			out = append(out, body)
			break
		}
		out = append(out, body[:i+2])
		body = body[i+2:]
	}
	return out
}

const streamHeader = "HTTP/1.1 200 OK\r\nServer: llama.cpp\r\nAccess-Control-Allow-Origin: \r\nX-Accel-Buffering: no\r\n" +
	"Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5, max=100\r\n\r\n"

// sseResponse is a keep-alive llama.cpp stream response with one chunk per
// event, as llama.cpp writes it.
func sseResponse(evs ...string) []byte {
	parts := make([][]byte, len(evs))
	for i, e := range evs {
		parts[i] = []byte(e)
	}
	return append([]byte(streamHeader), enginetest.Chunked(parts...)...)
}

func tokenEvent(content string, n int) string {
	c, _ := json.Marshal(content)
	return fmt.Sprintf("data: {\"index\":0,\"content\":%s,\"tokens\":[1],\"stop\":false,\"id_slot\":-1,\"tokens_predicted\":%d,\"tokens_evaluated\":2}\n\n", c, n)
}

func finalEvent(n int, stopType string) string {
	return fmt.Sprintf("data: {\"index\":0,\"content\":\"\",\"tokens\":[],\"id_slot\":1,\"stop\":true,\"model\":\"tiny.gguf\",\"tokens_predicted\":%d,\"tokens_evaluated\":2,\"generation_settings\":{\"seed\":4294967295,\"stop\":[]},\"prompt\":\"<s> Hi\",\"stop_type\":%q,\"timings\":{\"predicted_n\":%d,\"predicted_ms\":12.5}}\n\n", n, stopType, n)
}

// httpResp is a keep-alive JSON response.
func httpResp(status, body string) []byte {
	return fmt.Appendf(nil, "HTTP/1.1 %s\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\nKeep-Alive: timeout=5, max=100\r\n\r\n%s", status, len(body), body)
}

// fixtureResponse is a fixture's headers followed by its body.
func fixtureResponse(t testing.TB, stem, bodyExt string) []byte {
	return append(readFixture(t, stem+".headers.txt"), readFixture(t, stem+"."+bodyExt)...)
}

// fixtureStream is a fixture stream re-chunked one event per chunk.
func fixtureStream(t testing.TB, stem string) []byte {
	return append(readFixture(t, stem+".headers.txt"), enginetest.Chunked(events(readFixture(t, stem+".body.sse"))...)...)
}

// expectedStream decodes an SSE body with encoding/json: the texts of the
// token frames and the Result of the final frame.
func expectedStream(t testing.TB, body []byte) ([]string, engines.Result) {
	t.Helper()
	var toks []string
	for _, d := range dataLines(body) {
		var fr struct {
			Content         string
			Stop            bool
			TokensPredicted int    `json:"tokens_predicted"`
			TokensEvaluated int    `json:"tokens_evaluated"`
			IDSlot          int    `json:"id_slot"`
			StopType        string `json:"stop_type"`
			Timings         struct {
				PredictedMs float64 `json:"predicted_ms"`
			}
		}
		if err := json.Unmarshal(d, &fr); err != nil {
			t.Fatal(err)
		}
		if fr.Content != "" {
			toks = append(toks, fr.Content)
		}
		if fr.Stop {
			reason := "stop"
			if fr.StopType == "limit" || fr.StopType == "none" {
				reason = "length"
			}
			return toks, engines.Result{TokensOut: fr.TokensPredicted, TokensIn: fr.TokensEvaluated,
				DecodeMs: int64(fr.Timings.PredictedMs + 0.5), FinishReason: reason, Slot: fr.IDSlot}
		}
	}
	t.Fatal("fixture has no final frame")
	return nil, engines.Result{}
}

// newPipeAdapter returns an adapter whose connections are pipes served by
// script; keep-alive is off unless idle > 0.
func newPipeAdapter(t *testing.T, idle int, script func(c *enginetest.Conn)) (*Adapter, *enginetest.PipeDialer) {
	t.Helper()
	pd := &enginetest.PipeDialer{Script: script}
	if idle == 0 {
		idle = -1
	}
	a, err := New("http://engine.test:8080", Options{Dial: pd.Dial, MaxIdleConns: idle})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = a.Close()
		pd.Wait(t)
	})
	return a, pd
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

// stream makes a's Stream of testReq a StreamFunc.
func stream(a *Adapter) enginetest.StreamFunc {
	return func(ctx context.Context, sink engines.Sink) error {
		_, err := a.Stream(ctx, testReq, sink)
		return err
	}
}
