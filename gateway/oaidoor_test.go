package gateway

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/config"
	"github.com/llama-orch/llama-orch/gateway/openai"
	"github.com/llama-orch/llama-orch/sse"
)

func openAIOn(c *config.Config) { c.OpenAICompat = true }

// TestOpenAIDoorOff: the door is off by default: 404.
func TestOpenAIDoorOff(t *testing.T) {
	e := newEnv(t, nil, fake.Options{})
	for _, path := range []string{"/v1/completions", "/v1/chat/completions"} {
		if r := e.do("POST", path, testKey, `{"model":"m","prompt":"x"}`); r.status != 404 {
			t.Fatalf("%s with the door off: %d %s", path, r.status, r.body)
		}
	}
}

// TestOpenAIDoorShapes checks the wire shapes without a client library.
func TestOpenAIDoorShapes(t *testing.T) {
	e := newEnv(t, openAIOn, fake.Options{})
	// Non-stream completion: the text is the task's tokens.
	r := e.do("POST", "/v1/completions", testKey, `{"model":"m","prompt":"Hello","max_tokens":5,"seed":7}`)
	var c struct {
		Object  string `json:"object"`
		Choices []struct {
			Text         string `json:"text"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage struct{ PromptTokens, CompletionTokens int } `json:"usage"`
	}
	if r.status != 200 || json.Unmarshal(r.body, &c) != nil || c.Object != "text_completion" || len(c.Choices) != 1 ||
		c.Choices[0].Text != fake.Text(7, "Hello", 0)+fake.Text(7, "Hello", 1)+fake.Text(7, "Hello", 2)+fake.Text(7, "Hello", 3)+fake.Text(7, "Hello", 4) {
		t.Fatalf("completion: %d %s", r.status, r.body)
	}
	// Stream: chunks, a finish chunk, usage, [DONE].
	r = e.do("POST", "/v1/chat/completions", testKey, `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}`)
	body := string(r.body)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") ||
		!strings.Contains(body, `"delta":{"role":"assistant"`) || !strings.HasSuffix(body, "data: [DONE]\n\n") ||
		!strings.Contains(body, `"finish_reason":"length"`) || !strings.Contains(body, `"choices":[]`) {
		t.Fatalf("chat stream: %d\n%s", r.status, body)
	}
	// Errors in OpenAI's shape: unknown model, bad params, missing key.
	for _, tc := range []struct {
		body   string
		key    string
		status int
		typ    string
	}{
		{`{"model":"nope","prompt":"x"}`, testKey, 404, "not_found_error"},
		{`{"model":"m","prompt":"x","n":2}`, testKey, 400, "invalid_request_error"},
		{`{"model":"m","prompt":"x"}`, "", 401, "authentication_error"},
		{`{"model":"m","prompt":"x","max_tokens":100000}`, testKey, 400, "invalid_request_error"},
	} {
		r := e.do("POST", "/v1/completions", tc.key, tc.body)
		var eb struct {
			Error struct{ Type, Message string } `json:"error"`
		}
		if r.status != tc.status || json.Unmarshal(r.body, &eb) != nil || eb.Error.Type != tc.typ || eb.Error.Message == "" {
			t.Fatalf("%s: %d %s", tc.body, r.status, r.body)
		}
	}
}

// TestOpenAIDoorRealClient runs the official `openai` npm client
// (scripts/openai-client, installed by `make test`) against the door.
func TestOpenAIDoorRealClient(t *testing.T) {
	dir, _ := filepath.Abs("../scripts/openai-client")
	node, err := exec.LookPath("node")
	if err != nil || !exists(filepath.Join(dir, "node_modules", "openai")) {
		if os.Getenv("ORCH_SKIP_NODE") == "1" {
			t.Skip("ORCH_SKIP_NODE=1")
		}
		t.Fatalf("node or scripts/openai-client/node_modules missing (node: %v): run `make test`, which installs them, or set ORCH_SKIP_NODE=1", err)
	}
	e := newEnv(t, openAIOn, fake.Options{Slots: 4}, fake.Options{Slots: 4})
	cmd := exec.Command(node, "client.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "OPENAI_BASE_URL="+e.url+"/v1", "OPENAI_API_KEY="+testKey, "MODEL=m")
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("the openai client did not finish within 60 s")
	}
	if err != nil {
		t.Fatalf("openai client: %v\n%s", err, out)
	}
	var res map[string]map[string]any
	if err := json.Unmarshal(out[strings.Index(string(out), "{"):], &res); err != nil {
		t.Fatalf("client output: %v\n%s", err, out)
	}
	for _, k := range []string{"completion", "completion_stream", "chat_stream", "chat", "unknown_model"} {
		if res[k] == nil {
			t.Fatalf("client output lacks %s: %s", k, out)
		}
	}
	if res["completion_stream"]["text"] == "" || res["unknown_model"]["status"].(float64) != 404 {
		t.Fatalf("client results: %s", out)
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// memCursor serves prepared canonical event bytes to collect, in one batch.
type memCursor struct {
	data []byte
	wake chan struct{}
}

func (c *memCursor) Next() ([]byte, bool)  { d := c.data; c.data = nil; return d, true }
func (c *memCursor) Wake() <-chan struct{} { return c.wake }

// BenchmarkOpenAIDoorRelay: re-encoding one task's canonical events as
// OpenAI chunks (the door's per-token path), reported per token. Token
// events are read with sse.AppendTokenText into a reused buffer, so the
// allocations are per task (reader, end/metrics decoding), not per token;
// with encoding/json per token it was ~2.2 µs and 7 allocs per token.
func BenchmarkOpenAIDoorRelay(b *testing.B) {
	const n = 256
	var src []byte
	for i := 0; i < n; i++ {
		src = sse.AppendToken(src, uint64(i+1), []byte(" word"), i)
	}
	src = sse.AppendData(src, n+1, sse.KindEnd, []byte(`{"tokens_out":256,"decode_ms":10,"finish_reason":"length"}`))
	st := &openai.Stream{ID: "0b8a8f4e-4c44-4a39-9d2e-3c0f5b9b1a01", Created: 1, Model: "m"}
	var out []byte
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c := &memCursor{data: src}
		res := collect(c, func(text []byte) bool {
			out = st.AppendToken(out[:0], text)
			return true
		}, nil, 0)
		if res.tokensOut != n {
			b.Fatal(res)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/token")
}
