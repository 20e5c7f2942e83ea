package vllm

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/fake/internal/faketest"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
)

// ENGINES.md §2, verbatim: the Apr-2026 completion capture, the chat
// capture, the error bodies.
var (
	docStream = []string{
		`{"id":"cmpl-a1fcb98a99df0198","object":"text_completion","created":1776445044,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[{"index":0,"text":" Paris","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"usage":null}`,
		`{"id":"cmpl-a1fcb98a99df0198","object":"text_completion","created":1776445044,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[{"index":0,"text":".","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"usage":null}`,
		`{"id":"cmpl-a1fcb98a99df0198","object":"text_completion","created":1776445044,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[{"index":0,"text":" It","logprobs":null,"finish_reason":"length","stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"usage":null}`,
		`{"id":"cmpl-a1fcb98a99df0198","object":"text_completion","created":1776445044,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[],"usage":{"prompt_tokens":5,"total_tokens":8,"completion_tokens":3}}`,
		`[DONE]`,
	}
	docChat = []string{
		`{"id":"chatcmpl-f42e8ae7ddb346e1adfba47e3d710b46","object":"chat.completion.chunk","created":1760031300,"model":"deepseek-ai/DeepSeek-V3.1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":null}`,
		`{"id":"chatcmpl-f42e8ae7ddb346e1adfba47e3d710b46","object":"chat.completion.chunk","created":1760031300,"model":"deepseek-ai/DeepSeek-V3.1","choices":[{"index":0,"delta":{"content":"Okay"},"logprobs":null,"finish_reason":null,"token_ids":null}]}`,
		`{"id":"chatcmpl-f42e8ae7ddb346e1adfba47e3d710b46","object":"chat.completion.chunk","created":1760031300,"model":"deepseek-ai/DeepSeek-V3.1","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop","stop_reason":null,"token_ids":null}]}`,
		`[DONE]`,
	}
	docErrCtx = `{"error":{"message":"This model's maximum context length is 4096 tokens. However, your request has 5000 input tokens. Please reduce the length of the input messages.","type":"BadRequestError","param":null,"code":400}}`
	docErrMid = `{"error": {"message": "…", "type": "InternalServerError", "param": null, "code": 500}}`
	docModels = `{"object":"list","data":[{"id":"m","object":"model","created":1,"owned_by":"vllm","root":"m","parent":null,"max_model_len":1,"permission":[{}]}]}`
)

const docRequest = `{"model":"Qwen/Qwen2.5-1.5B-Instruct","prompt":"The capital of France is","max_tokens":3,"temperature":0,"seed":42,"stream":true,"stream_options":{"include_usage":true}}`

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    fake.Options
		err  error
	}{
		{"defaults", fake.Options{}, nil},
		{"vllm", fake.Options{Engine: "vllm"}, nil},
		{"other engine", fake.Options{Engine: "tgi"}, fake.ErrUnsupportedEngine},
		{"bad fail mode", fake.Options{Fail: "explode"}, fake.ErrInvalidOptions},
		{"negative", fake.Options{Slots: -1}, fake.ErrInvalidOptions},
		{"tiny ctx", fake.Options{Ctx: 1}, fake.ErrInvalidOptions},
	} {
		s, err := New(tc.o)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.err)
		}
		if err == nil && (s.o.Model != DefaultModel || s.o.EngineVersion != DefaultEngineVersion || s.o.Slots != fake.DefaultSlots || s.o.Ctx != fake.DefaultCtx) {
			t.Errorf("%s: defaults %+v", tc.name, s.o)
		}
	}
	s, err := New(fake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err == nil {
		t.Fatal("Start after Close: no error")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStreamMatchesDocs compares the fake's frames with ENGINES.md's capture
// field by field: keys, key order, types, nulls; and the values that are a
// function of the request.
func TestStreamMatchesDocs(t *testing.T) {
	leakCheck(t)
	s, c := start(t, fake.Options{})
	resp := post(t, c, s.URL()+"/v1/completions", docRequest)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" ||
		resp.Header.Get("Server") != "uvicorn" || resp.TransferEncoding == nil {
		t.Fatalf("head: %d %v %v", resp.StatusCode, resp.Header, resp.TransferEncoding)
	}
	frames := dataFrames(t, readAll(t, resp))
	if len(frames) != len(docStream) {
		t.Fatalf("%d frames, want %d: %q", len(frames), len(docStream), frames)
	}
	prompt := "The capital of France is"
	g := fake.NewGenerator(42, prompt, false)
	var id, created any
	for i, f := range frames {
		if i == len(frames)-1 {
			if f != "[DONE]" {
				t.Fatalf("last frame %q", f)
			}
			continue
		}
		if got, want := shape(t, f), shape(t, docStream[i]); got != want {
			t.Fatalf("frame %d shape\n got %s\nwant %s", i, got, want)
		}
		m := decodeMap(t, f)
		if i == 0 {
			id, created = m["id"], m["created"]
		}
		if m["id"] != id || m["created"] != created || m["object"] != "text_completion" || m["model"] != DefaultModel {
			t.Fatalf("frame %d: %v", i, m)
		}
		if i < 3 {
			want, _ := g.Token(i)
			if ch := choice(t, m); ch["text"] != want {
				t.Fatalf("frame %d text %q, want %q", i, ch["text"], want)
			}
		}
	}
	if !regexp.MustCompile(`^cmpl-[0-9a-f]{16}$`).MatchString(id.(string)) {
		t.Fatalf("id %q", id)
	}
	u := decodeMap(t, frames[3])["usage"].(map[string]any)
	n := fake.CountTokens(prompt)
	if u["prompt_tokens"] != num(n) || u["completion_tokens"] != num(3) || u["total_tokens"] != num(n+3) {
		t.Fatalf("usage %v", u)
	}
}

// num is n as encoding/json decodes it with UseNumber.
func num(n int) any { return jsonNumber(strconv.Itoa(n)) }

// TestChatMatchesDocs compares the chat route's frames with the chat
// capture.
func TestChatMatchesDocs(t *testing.T) {
	leakCheck(t)
	s, c := start(t, fake.Options{Tokens: 1})
	resp := post(t, c, s.URL()+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true}`)
	frames := dataFrames(t, readAll(t, resp))
	// Role chunk, one token, the EOS chunk with "stop", [DONE] — the
	// capture's frames 1, 2, 3, 4.
	if len(frames) != len(docChat) {
		t.Fatalf("%d frames: %q", len(frames), frames)
	}
	for i, f := range frames[:3] {
		if got, want := shape(t, f), shape(t, docChat[i]); got != want {
			t.Fatalf("chat frame %d shape\n got %s\nwant %s", i, got, want)
		}
	}
	if m := decodeMap(t, frames[0]); m["object"] != "chat.completion.chunk" || !strings.HasPrefix(m["id"].(string), "chatcmpl-") {
		t.Fatalf("role chunk %v", m)
	}
	if frames[3] != "[DONE]" {
		t.Fatalf("last %q", frames[3])
	}
}

func TestErrorsMatchDocs(t *testing.T) {
	leakCheck(t)
	s, c := start(t, fake.Options{Ctx: 8})
	resp := post(t, c, s.URL()+"/v1/completions", `{"prompt":"a b c d e f g h i","max_tokens":1,"stream":true}`)
	body := string(readAll(t, resp))
	if resp.StatusCode != 400 || resp.Header.Get("Content-Type") != "application/json" || shape(t, body) != shape(t, docErrCtx) ||
		!strings.Contains(body, `"message":"This model's maximum context length is 8 tokens. However, your request has 10 input tokens. Please reduce the length of the input messages.","type":"BadRequestError","param":null,"code":400}}`) {
		t.Fatalf("prompt too long: %d %s", resp.StatusCode, body)
	}
	// The mid-stream error frame: json.dumps' separators.
	s2, c2 := start(t, fake.Options{Fail: fake.FailMidstreamError})
	frames := dataFrames(t, readAll(t, post(t, c2, s2.URL()+"/v1/completions", `{"prompt":"x","max_tokens":9,"stream":true}`)))
	if len(frames) != 4 || frames[3] != "[DONE]" {
		t.Fatalf("midstream-error frames %q", frames)
	}
	re := regexp.MustCompile(`^\{"error": \{"message": "[^"]+", "type": "InternalServerError", "param": null, "code": 500\}\}$`)
	if !re.MatchString(frames[2]) || shape(t, frames[2]) != shape(t, docErrMid) {
		t.Fatalf("error frame %q", frames[2])
	}
}

// TestStreamText: the text is the shared fake model's, N tokens give N
// chunks, Tokens caps as EOS.
func TestStreamText(t *testing.T) {
	leakCheck(t)
	for _, tc := range []struct {
		name     string
		o        fake.Options
		body     string
		texts    int    // text chunks
		eos      bool   // then an EOS chunk
		finish   string // on the last chunk
		complete int    // usage.completion_tokens
	}{
		{"max_tokens", fake.Options{}, `{"prompt":"hello world","max_tokens":6,"seed":3,"stream":true,"stream_options":{"include_usage":true}}`, 6, false, "length", 6},
		{"eos cap", fake.Options{Tokens: 2}, `{"prompt":"hello world","max_tokens":6,"seed":3,"stream":true,"stream_options":{"include_usage":true}}`, 2, true, "stop", 3},
		{"ignore_eos", fake.Options{Tokens: 2}, `{"prompt":"hello world","max_tokens":6,"seed":3,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}`, 6, false, "length", 6},
		// max_tokens null: up to max_model_len.
		{"no max_tokens", fake.Options{Ctx: 10}, `{"prompt":"hello world","seed":3,"stream":true,"stream_options":{"include_usage":true}}`, 7, false, "length", 7},
	} {
		s, c := start(t, tc.o)
		frames := dataFrames(t, readAll(t, post(t, c, s.URL()+"/v1/completions", tc.body)))
		g := fake.NewGenerator(3, "hello world", false)
		n := tc.texts
		if tc.eos {
			n++
		}
		if len(frames) != n+2 {
			t.Fatalf("%s: %d frames, want %d", tc.name, len(frames), n+2)
		}
		for i := 0; i < n; i++ {
			ch := choice(t, decodeMap(t, frames[i]))
			want := ""
			if i < tc.texts {
				want, _ = g.Token(i)
			}
			fin := any(nil)
			if i == n-1 {
				fin = tc.finish
			}
			if ch["text"] != want || ch["finish_reason"] != fin {
				t.Fatalf("%s: chunk %d: %v, want text %q finish %v", tc.name, i, ch, want, fin)
			}
		}
		u := decodeMap(t, frames[n])["usage"].(map[string]any)
		if u["completion_tokens"] != num(tc.complete) {
			t.Fatalf("%s: usage %v", tc.name, u)
		}
	}
}

// TestStreamOptions: continuous_usage_stats and return_token_ids.
func TestStreamOptions(t *testing.T) {
	leakCheck(t)
	s, c := start(t, fake.Options{})
	frames := dataFrames(t, readAll(t, post(t, c, s.URL()+"/v1/completions",
		`{"prompt":"hi there","max_tokens":2,"seed":1,"return_token_ids":true,"stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true}}`)))
	if len(frames) != 4 {
		t.Fatalf("frames %q", frames)
	}
	for i := 0; i < 2; i++ {
		m := decodeMap(t, frames[i])
		ch := choice(t, m)
		_, id := fake.NewGenerator(1, "hi there", false).Token(i)
		if ids, _ := ch["token_ids"].([]any); len(ids) != 1 || ids[0] != num(id) {
			t.Fatalf("chunk %d token_ids %v, want [%d]", i, ch["token_ids"], id)
		}
		if pids, _ := ch["prompt_token_ids"].([]any); (i == 0) != (len(pids) == 3) {
			t.Fatalf("chunk %d prompt_token_ids %v", i, ch["prompt_token_ids"])
		}
		if u := m["usage"].(map[string]any); u["completion_tokens"] != num(i+1) {
			t.Fatalf("chunk %d usage %v", i, u)
		}
	}
}

// TestSplitUTF8: as vLLM's incremental detokenizer, a token that ends inside
// a character gets a chunk with text "", the next carries the character.
func TestSplitUTF8(t *testing.T) {
	leakCheck(t)
	s, c := start(t, fake.Options{Fail: fake.FailSplitUTF8})
	frames := dataFrames(t, readAll(t, post(t, c, s.URL()+"/v1/completions", `{"prompt":"p","max_tokens":10,"seed":5,"stream":true}`)))
	g := fake.NewGenerator(5, "p", false)
	w2, _ := g.Token(2)
	w5, _ := g.Token(5)
	want := []string{"", "😀", w2, "", " 😂", w5, "", "ö", "", "日本"}
	if len(frames) != len(want)+1 {
		t.Fatalf("frames %q", frames)
	}
	for i, w := range want {
		if got := choice(t, decodeMap(t, frames[i]))["text"]; got != w {
			t.Fatalf("chunk %d text %q, want %q", i, got, w)
		}
	}
}

// TestFaults checks each fail mode on the wire.
func TestFaults(t *testing.T) {
	leakCheck(t)
	body := `{"prompt":"p","max_tokens":8,"stream":true,"stream_options":{"include_usage":true}}`
	for _, tc := range []struct {
		fail   string
		status int
		typ    string
	}{
		{fake.FailStart500, 500, "InternalServerError"},
		{fake.FailStart503, 503, "ServiceUnavailableError"},
		{fake.FailStart429, 429, "RateLimitError"},
	} {
		s, c := start(t, fake.Options{Fail: tc.fail})
		resp := post(t, c, s.URL()+"/v1/completions", body)
		b := string(readAll(t, resp))
		if resp.StatusCode != tc.status || shape(t, b) != shape(t, docErrCtx) || !strings.Contains(b, `"type":"`+tc.typ+`","param":null,"code":`+strconv.Itoa(tc.status)+`}}`) {
			t.Fatalf("%s: %d %s", tc.fail, resp.StatusCode, b)
		}
		if s.Requests() != 1 || s.InFlight() != 0 {
			t.Fatalf("%s: requests %d in flight %d", tc.fail, s.Requests(), s.InFlight())
		}
	}

	// midstream-disconnect: 3 chunks, then the body is cut.
	s, c := start(t, fake.Options{Fail: fake.FailMidstreamDisconnect})
	resp := post(t, c, s.URL()+"/v1/completions", body)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !errors.Is(err, io.ErrUnexpectedEOF) || strings.Count(string(b), "data: ") != 3 || strings.Contains(string(b), "[DONE]") {
		t.Fatalf("midstream-disconnect: %v %q", err, b)
	}
	faketest.WaitFor(t, "the slot to free", func() bool { return s.InFlight() == 0 })

	// malformed: 2 chunks, a frame that is not JSON, [DONE].
	s, c = start(t, fake.Options{Fail: fake.FailMalformed})
	frames := dataFrames(t, readAll(t, post(t, c, s.URL()+"/v1/completions", body)))
	if len(frames) != 4 || frames[3] != "[DONE]" || validJSON(frames[2]) || !validJSON(frames[1]) {
		t.Fatalf("malformed: %q", frames)
	}

	// stall: 2 chunks, then silence holding the slot until the client goes.
	s, c = start(t, fake.Options{Fail: fake.FailStall, Slots: 1})
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL()+"/v1/completions", strings.NewReader(body))
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := &sseReader{br: newBufReader(resp.Body)}
	for i := 0; i < 2; i++ {
		if ev, err := r.next(); err != nil || !strings.Contains(ev, `"text":`) {
			t.Fatalf("stall chunk %d: %q %v", i, ev, err)
		}
	}
	if s.InFlight() != 1 {
		t.Fatalf("stalled: in flight %d", s.InFlight())
	}
	cancel()
	resp.Body.Close()
	faketest.WaitFor(t, "the stalled slot to free", func() bool { return s.InFlight() == 0 })
}

func validJSON(s string) bool {
	var v any
	return jsonUnmarshal([]byte(s), &v) == nil
}

// TestSlots: at most Slots requests run, the others wait FIFO
// (Deferred), and a client that leaves frees its slot or its place.
func TestSlots(t *testing.T) {
	leakCheck(t)
	s, c := start(t, fake.Options{Slots: 1, ITL: 2 * time.Millisecond})
	// Each request streams long enough to hold the slot until canceled;
	// got[i] closes at its first chunk, ended[i] when its goroutine ends.
	var cancels [4]context.CancelFunc
	var got, ended [4]chan struct{}
	defer func() {
		for _, cancel := range cancels {
			if cancel != nil {
				cancel()
			}
		}
		for i, e := range ended {
			if e != nil {
				enginetest.Recv(t, e, "request "+strconv.Itoa(i)+" to end after cancel")
			}
		}
	}()
	// first waits for request i's first chunk.
	first := func(i int, what string) {
		t.Helper()
		select {
		case <-got[i]:
		case <-ended[i]:
			t.Fatalf("%s: request %d ended without a chunk", what, i)
		case <-time.After(faketest.WaitTimeout):
			t.Fatalf("%s: timed out waiting for request %d's first chunk", what, i)
		}
	}
	for i := range 4 {
		if i > 0 {
			faketest.WaitFor(t, "the queue to grow", func() bool { return s.Deferred() == i-1 && s.InFlight() == 1 })
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancels[i], got[i], ended[i] = cancel, make(chan struct{}), make(chan struct{})
		go func() {
			defer close(ended[i])
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL()+"/v1/completions", strings.NewReader(`{"prompt":"a","max_tokens":4000,"stream":true}`))
			resp, err := c.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			r := &sseReader{br: newBufReader(resp.Body)}
			if _, err := r.next(); err == nil {
				close(got[i])
			}
			_, _ = io.Copy(io.Discard, resp.Body)
		}()
		if i == 0 {
			first(0, "the slot holder")
		}
	}
	faketest.WaitFor(t, "three waiting", func() bool { return s.Deferred() == 3 })
	m := metricsText(t, c, s.URL())
	for _, want := range []string{
		`vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5-1.5B-Instruct"} 1.0`,
		`vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen2.5-1.5B-Instruct"} 3.0`,
	} {
		if !strings.Contains(m, want+"\n") {
			t.Fatalf("metrics lack %q:\n%s", want, m)
		}
	}
	// The second in line leaves while waiting; the first runs next.
	cancels[2]()
	faketest.WaitFor(t, "the leaver to go", func() bool { return s.Deferred() == 2 })
	cancels[0]()
	first(1, "the first in line to get the slot")
	if s.InFlight() != 1 || s.Deferred() != 1 {
		t.Fatalf("in flight %d, deferred %d", s.InFlight(), s.Deferred())
	}
	select {
	case <-got[3]:
		t.Fatal("the last in line ran before its turn")
	default:
	}
	cancels[1]()
	first(3, "the last in line to get the slot")
	cancels[3]()
	faketest.WaitFor(t, "idle", func() bool { return s.InFlight() == 0 && s.Deferred() == 0 })
}

func metricsText(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp := get(t, c, url+"/metrics")
	return string(readAll(t, resp))
}

// TestLoad: vLLM listens only once loaded.
func TestLoad(t *testing.T) {
	leakCheck(t)
	s, c := start(t, fake.Options{Load: 100 * time.Millisecond})
	if s.Listening() {
		t.Fatal("listening while loading")
	}
	if _, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		t.Fatal("connected while loading")
	}
	faketest.WaitFor(t, "loaded", s.Listening)
	resp := get(t, c, s.URL()+"/health")
	if b := readAll(t, resp); resp.StatusCode != 200 || len(b) != 0 {
		t.Fatalf("health %d %q", resp.StatusCode, b)
	}
	// Closing while loading.
	s2, err := New(fake.Options{Load: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestEndpoints(t *testing.T) {
	leakCheck(t)
	s, c := start(t, fake.Options{Ctx: 4096, EngineVersion: "0.10.1", Model: "org/tiny"})
	for _, tc := range []struct {
		method, path string
		status       int
		body         string // exact, or a regexp when it starts with ^
	}{
		{"GET", "/health", 200, ""},
		{"GET", "/version", 200, `{"version":"0.10.1"}`},
		{"GET", "/v1/models", 200, `^\{"object":"list","data":\[\{"id":"org/tiny","object":"model","created":\d+,"owned_by":"vllm","root":"org/tiny","parent":null,"max_model_len":4096,"permission":\[\{"id":"modelperm-[0-9a-f]{32}","object":"model_permission",`},
		{"GET", "/nope", 404, `{"detail":"Not Found"}`},
		{"GET", "/v1/completions", 405, `{"detail":"Method Not Allowed"}`},
		{"POST", "/health", 405, `{"detail":"Method Not Allowed"}`},
	} {
		req, _ := http.NewRequest(tc.method, s.URL()+tc.path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b := string(readAll(t, resp))
		ok := b == tc.body
		if strings.HasPrefix(tc.body, "^") {
			ok = regexp.MustCompile(tc.body).MatchString(b)
		}
		if resp.StatusCode != tc.status || !ok {
			t.Fatalf("%s %s: %d %s", tc.method, tc.path, resp.StatusCode, b)
		}
		if tc.path == "/v1/models" && !strings.HasPrefix(shape(t, b), strings.TrimSuffix(shape(t, docModels), "{}]}]}")+"{") {
			t.Fatalf("/v1/models shape %s", shape(t, b))
		}
	}
	// Metrics: real names, sorted labels, Python floats.
	m := metricsText(t, c, s.URL())
	sample := regexp.MustCompile(`^(vllm:[a-z_]+)\{engine="0",(finished_reason="[a-z]+",)?model_name="org/tiny"\} -?\d+\.\d+(e[+-]\d+)?$`)
	names := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(m), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		sm := sample.FindStringSubmatch(line)
		if sm == nil {
			t.Fatalf("metrics line %q", line)
		}
		names[sm[1]] = true
	}
	for _, n := range []string{"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:generation_tokens_total"} {
		if !names[n] {
			t.Fatalf("metrics lack %s:\n%s", n, m)
		}
	}
}

// TestValidation: what vLLM's serving layer rejects before streaming.
func TestValidation(t *testing.T) {
	leakCheck(t)
	s, c := start(t, fake.Options{Ctx: 16})
	for _, tc := range []struct {
		name, body string
		status     int
		typ, msg   string
	}{
		{"max_tokens too large", `{"prompt":"a b","max_tokens":20}`, 400, "BadRequestError", "'max_tokens' or 'max_completion_tokens' is too large: 20. This model's maximum context length is 16 tokens and your request has 3 input tokens (20 > 16 - 3)."},
		{"unknown model", `{"model":"x/y","prompt":"a"}`, 404, "NotFoundError", "The model `x/y` does not exist."},
		{"max_tokens 0", `{"prompt":"a","max_tokens":0}`, 400, "BadRequestError", "max_tokens must be at least 1, got 0."},
		{"no prompt", `{"max_tokens":1}`, 400, "BadRequestError", "Either prompt or prompt_embeds must be provided and non-empty."},
		{"stream_options alone", `{"prompt":"a","stream_options":{"include_usage":true}}`, 400, "BadRequestError", "Stream options can only be defined when `stream=True`."},
		{"bad json", `{"prompt":`, 400, "Bad Request", "JSON decode error"},
		{"bad type", `{"prompt":"a","max_tokens":"x"}`, 400, "Bad Request", "valid integer"},
	} {
		resp := post(t, c, s.URL()+"/v1/completions", tc.body)
		m := decodeMap(t, string(readAll(t, resp)))
		e := m["error"].(map[string]any)
		if resp.StatusCode != tc.status || e["type"] != tc.typ || !strings.Contains(e["message"].(string), tc.msg) || e["code"] != num(tc.status) {
			t.Fatalf("%s: %d %v", tc.name, resp.StatusCode, m)
		}
	}
}

// TestNonStream: stream:false gives one body with the whole text.
func TestNonStream(t *testing.T) {
	leakCheck(t)
	s, c := start(t, fake.Options{Tokens: 2})
	m := decodeMap(t, string(readAll(t, post(t, c, s.URL()+"/v1/completions", `{"prompt":"q","max_tokens":5,"seed":9}`))))
	g := fake.NewGenerator(9, "q", false)
	a, _ := g.Token(0)
	b, _ := g.Token(1)
	ch := choice(t, m)
	u := m["usage"].(map[string]any)
	if m["object"] != "text_completion" || ch["text"] != a+b || ch["finish_reason"] != "stop" || u["completion_tokens"] != num(3) {
		t.Fatalf("body %v", m)
	}
	m = decodeMap(t, string(readAll(t, post(t, c, s.URL()+"/v1/chat/completions", `{"messages":[{"role":"user","content":"q"}],"max_completion_tokens":1}`))))
	if m["object"] != "chat.completion" || choice(t, m)["finish_reason"] != "length" {
		t.Fatalf("chat body %v", m)
	}
}

func TestPyFormat(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0, "0.0"}, {1, "1.0"}, {0.25, "0.25"}, {123456789.5, "123456789.5"}, {1e-5, "1e-05"}, {1.7e16, "1.7e+16"}, {-3, "-3.0"},
	} {
		if got := string(appendPyFloat(nil, tc.v)); got != tc.want {
			t.Errorf("appendPyFloat(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"a\"b\\c\n\x01", `"a\"b\\c\n\u0001"`},
		{"é😀\x7f", `"\u00e9\ud83d\ude00\u007f"`},
	} {
		if got := string(appendDumpsString(nil, tc.in)); got != tc.want {
			t.Errorf("appendDumpsString(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
	if got := string(appendPyString(nil, "é\"\t\x1f")); got != "\"é\\\"\\t\\u001f\"" {
		t.Errorf("appendPyString: %s", got)
	}
}
