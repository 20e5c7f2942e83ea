package vllm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
)

var testReq = &engines.Request{TaskID: "t1", Prompt: "The capital of France is", MaxTokens: 3, Seed: 42}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8000", true},           // plain
		{"http://vllm.local:8000/engine/", true},  // behind a path prefix
		{"https://127.0.0.1:8000", false},         // no TLS
		{"http://127.0.0.1", false},               // port required
		{"127.0.0.1:8000", false},                 // no scheme
		{"http://127.0.0.1:8000/?model=x", false}, // query
	} {
		a, err := New(tc.url, Options{})
		if (err == nil) != tc.ok {
			t.Errorf("New(%q): err=%v, want ok=%v", tc.url, err, tc.ok)
		}
		if a != nil {
			if a.Engine() != engines.VLLM || !a.InterruptibleDecode() {
				t.Errorf("New(%q): engine %q interruptible %v", tc.url, a.Engine(), a.InterruptibleDecode())
			}
			_ = a.Close()
		}
	}
}

// fakeTokens is what the fake generates for (seed, prompt): n plain words.
func fakeTokens(seed int64, prompt string, n int) []string {
	g := fake.NewGenerator(seed, prompt, false)
	out := make([]string, n)
	for i := range out {
		out[i], _ = g.Token(i)
	}
	return out
}

// TestStreamFake runs the adapter against the vLLM fake.
func TestStreamFake(t *testing.T) {
	enginetest.LeakCheck(t)
	prompt := "The capital of France is"
	nIn := fake.CountTokens(prompt)
	for _, tc := range []struct {
		name  string
		o     fake.Options
		max   int
		toks  []string
		out   int
		reson string
	}{
		// max_tokens N: N chunks, the last with finish_reason "length".
		{"length", fake.Options{}, 8, fakeTokens(7, prompt, 8), 8, "length"},
		// One token.
		{"one", fake.Options{}, 1, fakeTokens(7, prompt, 1), 1, "length"},
		// The model's EOS after 3 tokens: an empty EOS chunk with "stop";
		// completion_tokens counts the EOS token.
		{"eos", fake.Options{Tokens: 3}, 8, fakeTokens(7, prompt, 3), 4, "stop"},
		// Multi-byte characters split across tokens: "" chunks, then the
		// whole character.
		{"split utf8", fake.Options{Fail: fake.FailSplitUTF8}, 10, splitTokens(7, prompt, 10), 10, "length"},
		// Several slots, pacing.
		{"paced", fake.Options{Slots: 4, TTFT: time.Millisecond, ITL: time.Millisecond}, 5, fakeTokens(7, prompt, 5), 5, "length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.o)
			a := newAdapter(t, f.URL(), Options{})
			sink := &enginetest.RecSink{}
			res, err := a.Stream(enginetest.Ctx(t), &engines.Request{Prompt: prompt, MaxTokens: tc.max, Seed: 7}, sink)
			if err != nil {
				t.Fatal(err)
			}
			if got := sink.Tokens(); !reflect.DeepEqual(got, tc.toks) {
				t.Fatalf("tokens\n got %q\nwant %q", got, tc.toks)
			}
			want := engines.Result{TokensOut: tc.out, TokensIn: nIn, FinishReason: tc.reson, Slot: -1}
			if res != want {
				t.Fatalf("result %+v, want %+v", res, want)
			}
			if n := f.InFlight(); n != 0 {
				t.Fatalf("fake has %d requests in flight after the stream", n)
			}
		})
	}
}

// splitTokens is the canonical token texts of the split-utf8 fake: the
// complete characters each chunk carries (vLLM sends "" until a character
// completes; a character still open at the end is lost).
func splitTokens(seed int64, prompt string, n int) []string {
	g := fake.NewGenerator(seed, prompt, true)
	var out []string
	var pending []byte
	for i := 0; i < n; i++ {
		p, _ := g.Token(i)
		pending = append(pending, p...)
		if fake.Complete(pending) {
			out = append(out, string(pending))
			pending = pending[:0]
		}
	}
	return out
}

// TestStreamFakeFaults maps every fail mode of the fake to its error.
func TestStreamFakeFaults(t *testing.T) {
	enginetest.LeakCheck(t)
	for _, tc := range []struct {
		name      string
		o         fake.Options
		req       engines.Request
		opts      Options
		kind      engines.ErrorKind
		status    int
		msg       string
		tokens    int
		retriable bool
	}{
		{"start-500", fake.Options{Fail: fake.FailStart500}, *testReq, Options{}, engines.KindUpstream, 500, "fault start-500", 0, true},
		{"start-503", fake.Options{Fail: fake.FailStart503}, *testReq, Options{}, engines.KindUnavailable, 503, "fault start-503", 0, true},
		{"start-429", fake.Options{Fail: fake.FailStart429}, *testReq, Options{}, engines.KindOverloaded, 429, "fault start-429", 0, true},
		{"midstream-disconnect", fake.Options{Fail: fake.FailMidstreamDisconnect}, engines.Request{Prompt: "x", MaxTokens: 8}, Options{}, engines.KindUpstream, 0, "before the engine's [DONE]", 3, false},
		{"malformed", fake.Options{Fail: fake.FailMalformed}, engines.Request{Prompt: "x", MaxTokens: 8}, Options{}, engines.KindProtocol, 0, "not valid JSON", 2, false},
		{"midstream-error", fake.Options{Fail: fake.FailMidstreamError}, engines.Request{Prompt: "x", MaxTokens: 8}, Options{}, engines.KindUpstream, 0, "EngineCore encountered an issue", 2, false},
		// Fewer tokens asked than the fault needs: the fault comes at the end.
		{"midstream-error short", fake.Options{Fail: fake.FailMidstreamError}, engines.Request{Prompt: "x", MaxTokens: 1}, Options{}, engines.KindUpstream, 0, "EngineCore", 1, false},
		// The prompt does not fit max_model_len.
		{"prompt too long", fake.Options{Ctx: 8}, engines.Request{Prompt: "a b c d e f g h i", MaxTokens: 1}, Options{}, engines.KindContextLength, 400, "maximum context length is 8 tokens", 0, false},
		// prompt + max_tokens over max_model_len.
		{"max_tokens too large", fake.Options{Ctx: 16}, engines.Request{Prompt: "a b", MaxTokens: 20}, Options{}, engines.KindContextLength, 400, "'max_tokens' or 'max_completion_tokens' is too large: 20", 0, false},
		// A model the engine does not serve: 404 NotFoundError.
		{"unknown model", fake.Options{}, *testReq, Options{Model: "other/model"}, engines.KindInvalidRequest, 404, "The model `other/model` does not exist.", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.o)
			a := newAdapter(t, f.URL(), tc.opts)
			sink := &enginetest.RecSink{}
			_, err := a.Stream(enginetest.Ctx(t), &tc.req, sink)
			e, ok := engines.AsError(err)
			if !ok {
				t.Fatalf("err %v, want *engines.Error", err)
			}
			if e.Kind != tc.kind || e.Status != tc.status || !strings.Contains(e.Message, tc.msg) ||
				e.AfterFirstToken != (tc.tokens > 0) || e.Retriable() != tc.retriable {
				t.Fatalf("err %+v (retriable %v), want kind %v status %d msg ~%q tokens %d retriable %v",
					e, e.Retriable(), tc.kind, tc.status, tc.msg, tc.tokens, tc.retriable)
			}
			if got := len(sink.Tokens()); got != tc.tokens {
				t.Fatalf("%d tokens, want %d", got, tc.tokens)
			}
			enginetest.Eventually(t, "the fake to free the slot", func() bool { return f.InFlight() == 0 })
		})
	}
}

// TestStreamCancel: canceling mid-stream returns ctx.Err() at once, delivers
// no token after the cancel, and frees the engine's slot (stall included).
func TestStreamCancel(t *testing.T) {
	enginetest.LeakCheck(t)
	for _, tc := range []struct {
		name string
		o    fake.Options
	}{
		// A slow stream canceled after 2 tokens.
		{"paced", fake.Options{Slots: 1, ITL: 20 * time.Millisecond}},
		// The stall fault: 2 tokens, then silence holding the slot.
		{"stall", fake.Options{Slots: 1, Fail: fake.FailStall}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.o)
			a := newAdapter(t, f.URL(), Options{})
			ctx, cancel := context.WithCancel(enginetest.Ctx(t))
			defer cancel()
			var atCancel atomic.Int32
			sink := &enginetest.RecSink{OnToken: func(n int) {
				if n == 2 {
					atCancel.Store(int32(n))
					cancel()
				}
			}}
			_, err := a.Stream(ctx, &engines.Request{Prompt: "x", MaxTokens: 50}, sink)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err %v, want context.Canceled", err)
			}
			if got := len(sink.Tokens()); got != int(atCancel.Load()) {
				t.Fatalf("%d tokens delivered, %d at the cancel", got, atCancel.Load())
			}
			enginetest.Eventually(t, "the fake to free the slot", func() bool { return f.InFlight() == 0 })
			if tc.o.Fail == "" {
				// The slot serves the next request.
				if _, err := a.Stream(enginetest.Ctx(t), &engines.Request{Prompt: "x", MaxTokens: 2}, enginetest.NopSink{}); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	// Canceled before the start: nothing is sent.
	f := newFake(t, fake.Options{})
	a := newAdapter(t, f.URL(), Options{Model: fakeModel})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Stream(ctx, testReq, enginetest.NopSink{}); !errors.Is(err, context.Canceled) || f.Requests() != 0 {
		t.Fatalf("err %v, %d requests, want context.Canceled and none", err, f.Requests())
	}
}

const fakeModel = "Qwen/Qwen2.5-1.5B-Instruct"

// TestStreamQueued: with one slot, a second stream waits in the engine's
// queue (num_requests_waiting) and runs when the first ends.
func TestStreamQueued(t *testing.T) {
	enginetest.LeakCheck(t)
	f := newFake(t, fake.Options{Slots: 1, Ctx: 64, ITL: 5 * time.Millisecond})
	a := newAdapter(t, f.URL(), Options{})
	ctx, cancel := context.WithCancel(enginetest.Ctx(t))
	defer cancel()
	first := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		sink := &enginetest.RecSink{OnToken: func(n int) {
			if n == 1 {
				close(started)
			}
		}}
		_, err := a.Stream(ctx, &engines.Request{Prompt: "a b c", MaxTokens: 40}, sink)
		first <- err
	}()
	select {
	case <-started:
	case err := <-first:
		t.Fatalf("first stream ended before its first token: %v", err)
	case <-time.After(enginetest.WaitTimeout):
		t.Fatal("timed out waiting for the first stream's first token")
	}
	second := make(chan error, 1)
	ctx2 := enginetest.Ctx(t)
	go func() {
		_, err := a.Stream(ctx2, &engines.Request{Prompt: "d", MaxTokens: 2}, enginetest.NopSink{})
		second <- err
	}()
	enginetest.Eventually(t, "the second request to wait", func() bool { return f.Deferred() == 1 })
	l, err := a.ScrapeLoad(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if l.Processing != 1 || l.Deferred != 1 || !l.HasKVCacheUsage || l.KVCacheUsage <= 0 || l.KVCacheUsage > 1 || l.Devices != nil {
		t.Fatalf("load %+v, want 1 running, 1 waiting, some KV usage", l)
	}
	cancel()
	if err := enginetest.Recv(t, first, "the first stream to end after cancel"); !errors.Is(err, context.Canceled) {
		t.Fatalf("first: %v", err)
	}
	if err := enginetest.Recv(t, second, "the queued stream to end"); err != nil {
		t.Fatalf("second: %v", err)
	}
	l, err = a.ScrapeLoad(context.Background())
	if err != nil || l.Processing != 0 || l.Deferred != 0 || !l.HasKVCacheUsage || l.KVCacheUsage != 0 {
		t.Fatalf("idle load %+v, %v", l, err)
	}
}

// TestStreamRequest checks what goes on the wire, and that the model name
// is discovered once from /v1/models.
func TestStreamRequest(t *testing.T) {
	enginetest.LeakCheck(t)
	var models atomic.Int32
	bodies := make(chan []byte, 4)
	srv := enginetest.NewServer(t, enginetest.ServeEach(func(n int, path string, body []byte) []byte {
		if path == "/v1/models" {
			models.Add(1)
			return httpResp("200 OK", `{"object":"list","data":[{"id":"served/one","object":"model","max_model_len":4096},{"id":"alias"}]}`)
		}
		bodies <- body
		return sseResponse(textEvent(" a", "length"), usageEvent(2, 1), doneEvent)
	}))
	a := newAdapter(t, srv.URL(), Options{})
	prompt := "quote\" back\\ nl\n ctrl\x01 é 😀 \u2028 </script>"
	for range 2 {
		if _, err := a.Stream(enginetest.Ctx(t), &engines.Request{Prompt: prompt, MaxTokens: 16, Seed: -7}, enginetest.NopSink{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := models.Load(); n != 1 {
		t.Fatalf("/v1/models fetched %d times, want 1", n)
	}
	var body map[string]any
	dec := json.NewDecoder(bytes.NewReader(enginetest.Recv(t, bodies, "the request body")))
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"model": "served/one", "prompt": prompt, "max_tokens": json.Number("16"),
		"temperature": json.Number("0"), "seed": json.Number("-7"), "stream": true,
		"stream_options": map[string]any{"include_usage": true}}
	if !reflect.DeepEqual(body, want) {
		t.Fatalf("request body\n got %v\nwant %v", body, want)
	}
	if srv.Accepts() != 1 {
		t.Fatalf("%d connections for 3 requests, want 1 (keep-alive)", srv.Accepts())
	}
}

// TestStreamModelRefresh: a 404 for the cached model name makes the adapter
// look the name up again and retry once.
func TestStreamModelRefresh(t *testing.T) {
	enginetest.LeakCheck(t)
	var current atomic.Value
	current.Store("old")
	srv := enginetest.NewServer(t, enginetest.ServeEach(func(n int, path string, body []byte) []byte {
		if path == "/v1/models" {
			return httpResp("200 OK", `{"object":"list","data":[{"id":"`+current.Load().(string)+`"}]}`)
		}
		if !bytes.Contains(body, []byte(`"model":"`+current.Load().(string)+`"`)) {
			return httpResp("404 Not Found", `{"error":{"message":"The model does not exist.","type":"NotFoundError","param":null,"code":404}}`)
		}
		return sseResponse(textEvent(" a", "length"), usageEvent(2, 1), doneEvent)
	}))
	a := newAdapter(t, srv.URL(), Options{})
	if _, err := a.Stream(enginetest.Ctx(t), testReq, enginetest.NopSink{}); err != nil {
		t.Fatal(err)
	}
	current.Store("new")
	if _, err := a.Stream(enginetest.Ctx(t), testReq, enginetest.NopSink{}); err != nil {
		t.Fatalf("after the model changed: %v", err)
	}
	// A fixed Options.Model is never replaced.
	b := newAdapter(t, srv.URL(), Options{Model: "old"})
	_, err := b.Stream(enginetest.Ctx(t), testReq, enginetest.NopSink{})
	if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindInvalidRequest || e.Status != 404 {
		t.Fatalf("fixed model: %v", err)
	}
}

func TestStreamFrames(t *testing.T) {
	enginetest.LeakCheck(t)
	for _, tc := range []struct {
		name string
		evs  []string
		toks []string
		res  engines.Result
	}{
		// ENGINES.md's capture.
		{"capture", []string{"data: " + docText1 + "\n\n", "data: " + docText2 + "\n\n", "data: " + docText3 + "\n\n", "data: " + docUsage + "\n\n", doneEvent},
			[]string{" Paris", ".", " It"}, engines.Result{TokensOut: 3, TokensIn: 5, FinishReason: "length", Slot: -1}},
		// Without the usage chunk: one token per chunk.
		{"no usage", []string{textEvent(" a", ""), textEvent(" b", ""), textEvent("", "stop"), doneEvent},
			[]string{" a", " b"}, engines.Result{TokensOut: 3, FinishReason: "stop", Slot: -1}},
		// Several tokens per chunk, counted by continuous usage stats.
		{"multi-token chunks", []string{
			`data: {"choices":[{"index":0,"text":" Paris.","finish_reason":null}],"usage":{"prompt_tokens":5,"total_tokens":7,"completion_tokens":2}}` + "\n\n",
			`data: {"choices":[{"index":0,"text":" It is","finish_reason":"length"}],"usage":{"prompt_tokens":5,"total_tokens":9,"completion_tokens":4}}` + "\n\n",
			`data: {"choices":[],"usage":{"prompt_tokens":5,"total_tokens":9,"completion_tokens":4}}` + "\n\n", doneEvent},
			[]string{" Paris.", " It is"}, engines.Result{TokensOut: 4, TokensIn: 5, FinishReason: "length", Slot: -1}},
		// Counted by token_ids when there is no usage.
		{"token ids", []string{
			`data: {"choices":[{"index":0,"text":" Paris.","token_ids":[1,2]}]}` + "\n\n",
			`data: {"choices":[{"index":0,"text":"","token_ids":[3],"finish_reason":"stop"}]}` + "\n\n", doneEvent},
			[]string{" Paris."}, engines.Result{TokensOut: 3, FinishReason: "stop", Slot: -1}},
		// Keep-alive comments (--sse-keep-alive-interval) are ignored.
		{"keep-alive", []string{": keep-alive\n\n", textEvent(" a", ""), ": keep-alive\n\n", textEvent(" b", "length"), usageEvent(1, 2), doneEvent},
			[]string{" a", " b"}, engines.Result{TokensOut: 2, TokensIn: 1, FinishReason: "length", Slot: -1}},
		// vLLM's split UTF-8: "" for a token inside a character, then the
		// whole character.
		{"split utf8", []string{textEvent("", ""), textEvent("😀", ""), textEvent(" ö", "length"), usageEvent(1, 3), doneEvent},
			[]string{"😀", " ö"}, engines.Result{TokensOut: 3, TokensIn: 1, FinishReason: "length", Slot: -1}},
		// Raw bytes of one character split across chunks (not valid JSON
		// strings, but held back and joined).
		{"split raw bytes", []string{"data: {\"choices\":[{\"text\":\" \xF0\x9F\"}]}\n\n", "data: {\"choices\":[{\"text\":\"\x98\x80!\",\"finish_reason\":\"length\"}]}\n\n", doneEvent},
			[]string{" ", "😀!"}, engines.Result{TokensOut: 2, FinishReason: "length", Slot: -1}},
		// A character that never completes: U+FFFD per byte at [DONE], as
		// encoding/json.
		{"dangling byte", []string{"data: {\"choices\":[{\"text\":\"a\xF0\x9F\",\"finish_reason\":\"length\"}]}\n\n", doneEvent},
			[]string{"a", "\uFFFD\uFFFD"}, engines.Result{TokensOut: 1, FinishReason: "length", Slot: -1}},
		// The finish reason lost (a proxy?): inferred from the count.
		{"no finish reason", []string{textEvent(" a", ""), textEvent(" b", ""), textEvent(" c", ""), doneEvent},
			[]string{" a", " b", " c"}, engines.Result{TokensOut: 3, FinishReason: "length", Slot: -1}},
		// data: without the space, CRLF line ends.
		{"compact sse", []string{"data:" + docText1 + "\r\n\r\n", "data:[DONE]\r\n\r\n"},
			[]string{" Paris"}, engines.Result{TokensOut: 1, FinishReason: "stop", Slot: -1}},
	} {
		srv := enginetest.NewServer(t, enginetest.ServeAlways(sseResponse(tc.evs...)))
		a := newAdapter(t, srv.URL(), Options{Model: "m"})
		sink := &enginetest.RecSink{}
		res, err := a.Stream(enginetest.Ctx(t), testReq, sink)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := sink.Tokens(); !reflect.DeepEqual(got, tc.toks) {
			t.Fatalf("%s: tokens\n got %q\nwant %q", tc.name, got, tc.toks)
		}
		if res != tc.res {
			t.Fatalf("%s: result %+v, want %+v", tc.name, res, tc.res)
		}
	}
}

func TestStreamErrors(t *testing.T) {
	enginetest.LeakCheck(t)
	tok := textEvent(" w", "")
	for _, tc := range []struct {
		name     string
		resp     []byte
		kind     engines.ErrorKind
		status   int
		msg      string
		tokens   int
		afterTok bool
	}{
		// ENGINES.md: an over-long prompt, checked before streaming.
		{"context length", httpResp("400 Bad Request", docErrCtx), engines.KindContextLength, 400, "maximum context length is 4096", 0, false},
		// Up to v0.9: the flat error body.
		{"context length flat", httpResp("400 Bad Request", docErrOld), engines.KindContextLength, 400, "maximum context length", 0, false},
		// Other 400s.
		{"bad request", httpResp("400 Bad Request", `{"error":{"message":"max_tokens must be at least 1, got 0.","type":"BadRequestError","param":null,"code":400}}`), engines.KindInvalidRequest, 400, "max_tokens must be at least 1", 0, false},
		// Unknown model.
		{"not found", httpResp("404 Not Found", `{"error":{"message":"The model `+"`x`"+` does not exist.","type":"NotFoundError","param":"model","code":404}}`), engines.KindInvalidRequest, 404, "does not exist", 0, false},
		// FastAPI's own 404 (not a vLLM at that URL).
		{"no route", httpResp("404 Not Found", `{"detail":"Not Found"}`), engines.KindInvalidRequest, 404, "Not Found", 0, false},
		// EngineDeadError: 500 with an empty body.
		{"engine dead", []byte("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"), engines.KindUpstream, 500, "HTTP 500", 0, false},
		{"503", httpResp("503 Service Unavailable", `{"error":{"message":"down","type":"ServiceUnavailableError","param":null,"code":503}}`), engines.KindUnavailable, 503, "down", 0, false},
		// vLLM never sends 429; a proxy in front may.
		{"429", []byte("HTTP/1.1 429 Too Many Requests\r\ncontent-length: 4\r\n\r\nslow"), engines.KindOverloaded, 429, "slow", 0, false},
		// The mid-stream error frame, then [DONE].
		{"midstream error", sseResponse(tok, tok, "data: "+docErrMid+"\n\n", doneEvent), engines.KindUpstream, 0, "…", 2, true},
		// An error frame before any token: retriable elsewhere.
		{"error first", sseResponse("data: "+`{"error": {"message": "boom", "type": "InternalServerError", "param": null, "code": 500}}`+"\n\n", doneEvent), engines.KindUpstream, 0, "boom", 0, false},
		// The engine aborted the request.
		{"abort", sseResponse(tok, textEvent("", "abort"), doneEvent), engines.KindUpstream, 0, `finish_reason "abort"`, 1, true},
		// A clean end of the body without [DONE].
		{"no done", sseResponse(tok, textEvent(" x", "length"), usageEvent(1, 2)), engines.KindUpstream, 0, "before the engine's [DONE]", 2, true},
		// The connection closes inside the chunked body.
		{"cut", append([]byte(streamHeader), append(enginetest.Chunk(tok), enginetest.Chunk(tok)...)...), engines.KindUpstream, 0, "before the engine's [DONE]", 2, true},
		// Cut before any chunk.
		{"cut early", []byte(streamHeader), engines.KindUpstream, 0, "before the engine's [DONE]", 0, false},
		// A frame that is not JSON.
		{"malformed", sseResponse(tok, "data: {\"choices\":[{\"text\":\n\n", doneEvent), engines.KindProtocol, 0, "not valid JSON", 1, true},
		// Broken chunk framing.
		{"bad chunk", append([]byte(streamHeader), "zz\r\ndata: x\r\n"...), engines.KindProtocol, 0, "chunked", 0, false},
		// 200 but not an event stream.
		{"json 200", httpResp("200 OK", `{"id":"cmpl-1","choices":[]}`), engines.KindProtocol, 200, "without text/event-stream", 0, false},
		// A 3xx.
		{"redirect", []byte("HTTP/1.1 307 Temporary Redirect\r\nlocation: /x\r\ncontent-length: 0\r\n\r\n"), engines.KindProtocol, 307, "unexpected HTTP status 307", 0, false},
	} {
		srv := enginetest.NewServer(t, enginetest.ServeOnce(tc.resp))
		a := newAdapter(t, srv.URL(), Options{Model: "m"})
		sink := &enginetest.RecSink{}
		_, err := a.Stream(enginetest.Ctx(t), testReq, sink)
		e, ok := engines.AsError(err)
		if !ok {
			t.Fatalf("%s: err %v, want *engines.Error", tc.name, err)
		}
		if e.Kind != tc.kind || e.Status != tc.status || !strings.Contains(e.Message+" "+errString(e.Err), tc.msg) || e.AfterFirstToken != tc.afterTok {
			t.Fatalf("%s: err %+v, want kind %v status %d msg ~%q afterFirstToken %v", tc.name, e, tc.kind, tc.status, tc.msg, tc.afterTok)
		}
		if got := len(sink.Tokens()); got != tc.tokens {
			t.Fatalf("%s: %d tokens, want %d", tc.name, got, tc.tokens)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestStreamFlush: Flush comes before each wait for the engine, once per
// burst, never after [DONE].
func TestStreamFlush(t *testing.T) {
	enginetest.LeakCheck(t)
	head := []byte(streamHeader)
	parts := [][]byte{
		append(head, enginetest.Chunk(textEvent(" a", ""))...),
		append(enginetest.Chunk(textEvent(" b", "")), enginetest.Chunk(textEvent(" c", ""))...),
		enginetest.Chunked(textEvent(" d", "length"), usageEvent(1, 4), doneEvent),
	}
	a := newAdapter(t, "http://vllm.test:8000", Options{Model: "m", Dial: enginetest.MemDialer(parts...)})
	sink := &enginetest.RecSink{}
	res, err := a.Stream(enginetest.Ctx(t), testReq, sink)
	if err != nil {
		t.Fatal(err)
	}
	if len(sink.Tokens()) != 4 || res.TokensOut != 4 {
		t.Fatalf("tokens %q, result %+v", sink.Tokens(), res)
	}
	// After " a" (one read), after " b"+" c" (one read); " d" comes with [DONE].
	if sink.Flushes() != 2 {
		t.Fatalf("%d flushes, want 2", sink.Flushes())
	}
}

func TestHealth(t *testing.T) {
	enginetest.LeakCheck(t)
	// The fake listens only once loaded: connection refused until then.
	f := newFake(t, fake.Options{Load: 150 * time.Millisecond})
	a := newAdapter(t, f.URL(), Options{})
	err := a.Health(context.Background())
	if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindUnavailable {
		t.Fatalf("while loading: %v", err)
	}
	if f.Listening() {
		t.Fatal("fake listens while loading")
	}
	enginetest.Eventually(t, "the fake to load", f.Listening)
	if err := a.Health(context.Background()); err != nil {
		t.Fatalf("loaded: %v", err)
	}
	// A dead engine: 503 with an empty body.
	srv := enginetest.NewServer(t, enginetest.ServeAlways([]byte("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")))
	b := newAdapter(t, srv.URL(), Options{})
	err = b.Health(context.Background())
	if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindUnavailable || e.Status != 503 {
		t.Fatalf("dead engine: %v", err)
	}
	// Any other answer is not ready either.
	srv2 := enginetest.NewServer(t, enginetest.ServeAlways(httpResp("404 Not Found", `{"detail":"Not Found"}`)))
	c := newAdapter(t, srv2.URL(), Options{})
	if e, ok := engines.AsError(c.Health(context.Background())); !ok || e.Kind != engines.KindUnavailable || e.Status != 404 {
		t.Fatalf("404: %v", e)
	}
	// Canceled.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.Health(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
}

func TestProps(t *testing.T) {
	enginetest.LeakCheck(t)
	f := newFake(t, fake.Options{Ctx: 4096, EngineVersion: "0.10.2"})
	a := newAdapter(t, f.URL(), Options{})
	p, err := a.Props(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := engines.Props{CtxMax: 4096, EngineVersion: "0.10.2", Model: fakeModel}
	if p != want {
		t.Fatalf("props %+v, want %+v", p, want)
	}
	// Several served names: Options.Model picks its card.
	srv := enginetest.NewServer(t, enginetest.ServeEach(func(n int, path string, _ []byte) []byte {
		if path == "/version" {
			return httpResp("200 OK", `{"version":"0.11.0"}`)
		}
		return httpResp("200 OK", `{"object":"list","data":[{"id":"a","max_model_len":1024},{"id":"b","max_model_len":2048.0}]}`)
	}))
	for _, tc := range []struct {
		model string
		want  engines.Props
	}{
		{"", engines.Props{Model: "a", CtxMax: 1024, EngineVersion: "0.11.0"}},
		{"b", engines.Props{Model: "b", CtxMax: 2048, EngineVersion: "0.11.0"}},
		// Not served: the engine's first model, which the reload check sees.
		{"c", engines.Props{Model: "a", CtxMax: 1024, EngineVersion: "0.11.0"}},
	} {
		b := newAdapter(t, srv.URL(), Options{Model: tc.model})
		if p, err := b.Props(context.Background()); err != nil || p != tc.want {
			t.Fatalf("Model %q: props %+v, %v, want %+v", tc.model, p, err, tc.want)
		}
	}
	// Broken answers.
	for _, tc := range []struct {
		name, models string
		kind         engines.ErrorKind
	}{
		{"not json", "nope", engines.KindProtocol},
		{"no models", `{"object":"list","data":[]}`, engines.KindProtocol},
	} {
		srv := enginetest.NewServer(t, enginetest.ServeAlways(httpResp("200 OK", tc.models)))
		b := newAdapter(t, srv.URL(), Options{})
		if _, err := b.Props(context.Background()); err == nil {
			t.Fatalf("%s: no error", tc.name)
		} else if e, ok := engines.AsError(err); !ok || e.Kind != tc.kind {
			t.Fatalf("%s: %v", tc.name, err)
		}
	}
}

func TestScrapeLoad(t *testing.T) {
	enginetest.LeakCheck(t)
	for _, tc := range []struct {
		name    string
		metrics string
		want    engines.Load
		kind    engines.ErrorKind
	}{
		// vLLM 0.11: one engine core.
		{"v0.11", `# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5-1.5B-Instruct"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen2.5-1.5B-Instruct"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen2.5-1.5B-Instruct"} 0.4375
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="Qwen/Qwen2.5-1.5B-Instruct"} 0.0
`, engines.Load{Processing: 3, Deferred: 2, KVCacheUsage: 0.4375, HasKVCacheUsage: true}, 0},
		// Data parallel: counts summed, the fullest KV cache.
		{"dp", `vllm:num_requests_running{engine="0",model_name="m"} 1.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
vllm:num_requests_waiting{engine="0",model_name="m"} 0.0
vllm:num_requests_waiting{engine="1",model_name="m"} 4.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.75
`, engines.Load{Processing: 3, Deferred: 4, KVCacheUsage: 0.75, HasKVCacheUsage: true}, 0},
		// Before v0.10: gpu_cache_usage_perc.
		{"old gauge", `vllm:num_requests_running{model_name="m"} 1.0
vllm:num_requests_waiting{model_name="m"} 0.0
vllm:gpu_cache_usage_perc{model_name="m"} 0.5
`, engines.Load{Processing: 1, KVCacheUsage: 0.5, HasKVCacheUsage: true}, 0},
		// No KV gauge: absent, not zero.
		{"no kv", "vllm:num_requests_running 0.0\nvllm:num_requests_waiting 1.0\n", engines.Load{Deferred: 1}, 0},
		// The counts are required.
		{"missing", "vllm:kv_cache_usage_perc 0.1\n", engines.Load{}, engines.KindProtocol},
	} {
		srv := enginetest.NewServer(t, enginetest.ServeAlways(httpResp("200 OK", tc.metrics)))
		a := newAdapter(t, srv.URL(), Options{})
		l, err := a.ScrapeLoad(context.Background())
		if tc.kind != 0 {
			if e, ok := engines.AsError(err); !ok || e.Kind != tc.kind {
				t.Fatalf("%s: err %v, want %v", tc.name, err, tc.kind)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(l, tc.want) {
			t.Fatalf("%s: load %+v, %v, want %+v", tc.name, l, err, tc.want)
		}
	}
	// A non-200 answer.
	srv := enginetest.NewServer(t, enginetest.ServeAlways(httpResp("404 Not Found", `{"detail":"Not Found"}`)))
	a := newAdapter(t, srv.URL(), Options{})
	if _, err := a.ScrapeLoad(context.Background()); err == nil {
		t.Fatal("404: no error")
	}
}
