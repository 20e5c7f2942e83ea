package triton

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	faketriton "github.com/llama-orch/llama-orch/engines/fake/triton"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
)

// Frames documented in ENGINES.md §4.
const (
	docParis   = `{"model_name":"vllm_model","model_version":"1","num_output_tokens":1,"text_output":" Paris"}`
	docDot     = `{"model_name":"vllm_model","model_version":"1","num_output_tokens":1,"text_output":"."}`
	docThe     = `{"model_name":"vllm_model","model_version":"1","num_output_tokens":1,"text_output":" The"}`
	docCapital = `{"model_name":"vllm_model","model_version":"1","num_output_tokens":1,"text_output":" capital"}`
	// The captured TRT-LLM ensemble frame.
	docEnsemble = `{"context_logits":0.0,"cum_log_probs":0.0,"generation_logits":0.0,"model_name":"ensemble","model_version":"1","output_log_probs":[0.0,0.0],"sequence_end":false,"sequence_id":0,"sequence_start":false,"text_output":"To"}`
)

func TestStreamFake(t *testing.T) {
	s := startFake(t, fake.Options{})
	a := newAdapter(t, s.URL(), Options{})
	for _, tc := range []struct {
		name   string
		prompt string
		n      int
		seed   int64
	}{
		{"one token", "The capital of France is", 1, 42},
		{"sixteen tokens", "Hello world ", 16, 7},
		{"negative seed", "x y", 5, -3},
		{"escapes in the prompt", "a \"quoted\"\n\tprompt é", 4, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &enginetest.RecSink{}
			res, err := a.Stream(enginetest.Ctx(t), request(tc.prompt, tc.n, tc.seed), sink)
			if err != nil {
				t.Fatal(err)
			}
			gen := fake.NewGenerator(tc.seed, tc.prompt, false)
			if len(sink.Tokens()) != tc.n {
				t.Fatalf("%d tokens, want %d", len(sink.Tokens()), tc.n)
			}
			for i, tok := range sink.Tokens() {
				if want, _ := gen.Token(i); tok != want {
					t.Errorf("token %d = %q, want %q", i, tok, want)
				}
			}
			want := engines.Result{TokensOut: tc.n, TokensIn: fake.CountTokens(tc.prompt), FinishReason: "length", Slot: -1}
			if res != want {
				t.Errorf("result %+v, want %+v", res, want)
			}
		})
	}
	if s.InFlight() != 0 {
		t.Errorf("fake in flight: %d", s.InFlight())
	}
	if n := a.hc.IdleConns(); n != 1 {
		t.Errorf("%d idle connections after sequential streams, want 1 (keep-alive)", n)
	}
}

func TestStreamTokensCapIsStop(t *testing.T) {
	s := startFake(t, fake.Options{Tokens: 3})
	a := newAdapter(t, s.URL(), Options{})
	sink := &enginetest.RecSink{}
	res, err := a.Stream(enginetest.Ctx(t), request("hi", 10, 1), sink)
	if err != nil {
		t.Fatal(err)
	}
	// The EOS frame has no text but counts: Σ num_output_tokens = 4.
	if len(sink.Tokens()) != 3 || res.TokensOut != 4 || res.FinishReason != "stop" {
		t.Errorf("%d tokens, result %+v; want 3 tokens, TokensOut 4, stop", len(sink.Tokens()), res)
	}
}

func TestStreamSplitUTF8(t *testing.T) {
	s := startFake(t, fake.Options{Fail: fake.FailSplitUTF8})
	a := newAdapter(t, s.URL(), Options{})
	const n = 30
	sink := &enginetest.RecSink{}
	res, err := a.Stream(enginetest.Ctx(t), request("p", n, 5), sink)
	if err != nil {
		t.Fatal(err)
	}
	gen := fake.NewGenerator(5, "p", true)
	var want string
	for i := range n {
		p, _ := gen.Token(i)
		want += p
	}
	for i, tok := range sink.Tokens() {
		if tok == "" || !utf8.ValidString(tok) {
			t.Errorf("token %d %q: empty or invalid UTF-8", i, tok)
		}
	}
	if sink.Text() != want || res.TokensOut != n || len(sink.Tokens()) != n-12 {
		t.Errorf("text %q (%d tokens), TokensOut %d; want %q, %d tokens (empty frames skipped), TokensOut %d",
			sink.Text(), len(sink.Tokens()), res.TokensOut, want, n-12, n)
	}
}

// TestFailModes runs every fault of the fake through the adapter.
func TestFailModes(t *testing.T) {
	for _, tc := range []struct {
		fail      string
		kind      engines.ErrorKind // 0: success
		status    int
		tokens    int
		afterTok  bool
		msg       string
		ctxBudget time.Duration // stall: the caller's deadline
	}{
		{fail: fake.FailNone, tokens: 8},
		// 8 pieces: 3 end inside a character (empty frames), 5 tokens.
		{fail: fake.FailSplitUTF8, tokens: 5},
		{fail: fake.FailStart500, kind: engines.KindUpstream, status: 500, msg: "Error generating stream: EngineCore encountered an issue"},
		{fail: fake.FailStart503, kind: engines.KindOverloaded, status: 503, msg: "Exceeds maximum queue size"},
		{fail: fake.FailStart429, kind: engines.KindOverloaded, status: 503, msg: "Exceeds maximum queue size"},
		{fail: fake.FailMidstreamDisconnect, kind: engines.KindUpstream, tokens: 3, afterTok: true, msg: "stream cut"},
		{fail: fake.FailMalformed, kind: engines.KindProtocol, tokens: 2, afterTok: true, msg: "not a JSON object"},
		{fail: fake.FailMidstreamError, kind: engines.KindUpstream, tokens: 2, afterTok: true, msg: "Error generating stream: EngineCore"},
		{fail: fake.FailStall, tokens: 2, ctxBudget: 300 * time.Millisecond},
	} {
		t.Run(tc.fail, func(t *testing.T) {
			s := startFake(t, fake.Options{Fail: tc.fail})
			a := newAdapter(t, s.URL(), Options{})
			ctx := enginetest.Ctx(t)
			if tc.ctxBudget > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctxBudget)
				defer cancel()
			}
			sink := &enginetest.RecSink{}
			res, err := a.Stream(ctx, request("x", 8, 1), sink)
			if len(sink.Tokens()) != tc.tokens {
				t.Errorf("%d tokens, want %d", len(sink.Tokens()), tc.tokens)
			}
			switch {
			case tc.ctxBudget > 0:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("err %v, want the caller's deadline", err)
				}
			case tc.kind == 0:
				if err != nil || res.TokensOut != 8 || res.FinishReason != "length" {
					t.Fatalf("result %+v, err %v", res, err)
				}
			default:
				e := wantKind(t, err, tc.kind)
				if e.Status != tc.status || e.AfterFirstToken != tc.afterTok || !strings.Contains(e.Message, tc.msg) {
					t.Errorf("error %+v; want status %d, after first token %v, message containing %q", e, tc.status, tc.afterTok, tc.msg)
				}
				if e.Retriable() != (!tc.afterTok && tc.kind != engines.KindInvalidRequest && tc.kind != engines.KindContextLength) {
					t.Errorf("Retriable() = %v", e.Retriable())
				}
			}
			enginetest.Eventually(t, "the fake's slot freed", func() bool { return s.InFlight() == 0 })
		})
	}
}

func TestErrorsBeforeTheStream(t *testing.T) {
	for _, tc := range []struct {
		name   string
		o      fake.Options
		model  string
		prompt string
		kind   engines.ErrorKind
		status int
		msg    string
	}{
		// vLLM's input validation, reported by the backend as the first
		// response: 500 with an SSE body, mapped by the length heuristic.
		{"prompt over the context", fake.Options{Ctx: 8}, "", "a b c d e f g h i j", engines.KindContextLength, 500,
			"The decoder prompt (length 11) is longer than the maximum model length of 8"},
		{"unknown model", fake.Options{}, "nope", "x", engines.KindInvalidRequest, 404, "Request for unknown model: 'nope' is not found"},
		{"model loading", fake.Options{Load: time.Hour}, "", "x", engines.KindUnavailable, 404, "has no available versions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startFake(t, tc.o)
			a := newAdapter(t, s.URL(), Options{Model: tc.model})
			sink := &enginetest.RecSink{}
			_, err := a.Stream(enginetest.Ctx(t), request(tc.prompt, 4, 1), sink)
			e := wantKind(t, err, tc.kind)
			if e.Status != tc.status || !strings.Contains(e.Message, tc.msg) || len(sink.Tokens()) != 0 {
				t.Errorf("error %+v, %d tokens", e, len(sink.Tokens()))
			}
		})
	}
}

// TestCancel: canceling ctx returns ctx.Err() at once, delivers no token
// after the cancel, and the fake's slot is freed (the connection closes).
func TestCancel(t *testing.T) {
	for _, tc := range []struct {
		name    string
		o       fake.Options
		afterN  int // cancel from the sink after this many tokens (0: from outside)
		wantTok int
	}{
		{"from the sink mid-stream", fake.Options{}, 2, 2},
		{"mid-stream, engine slow", fake.Options{ITL: time.Hour}, 1, 1},
		{"before the first response", fake.Options{TTFT: time.Hour}, 0, 0},
		{"while queued", fake.Options{Slots: 1, TTFT: time.Hour}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startFake(t, tc.o)
			a := newAdapter(t, s.URL(), Options{})
			if tc.name == "while queued" {
				// Occupy the one slot.
				hold, release := context.WithCancel(enginetest.Ctx(t))
				done := make(chan struct{})
				go func() {
					defer close(done)
					_, _ = a.Stream(hold, request("holder", 4, 1), &enginetest.RecSink{})
				}()
				defer func() { release(); enginetest.Wait(t, done, "the holder's stream to end") }()
				enginetest.Eventually(t, "slot held", func() bool { return s.InFlight() == 1 })
			}
			ctx, cancel := context.WithCancel(enginetest.Ctx(t))
			defer cancel()
			sink := &enginetest.RecSink{}
			if tc.afterN > 0 {
				sink.OnToken = func(n int) {
					if n == tc.afterN {
						cancel()
					}
				}
			} else {
				want := 1 + btoi(tc.name == "while queued")
				go func() {
					// Cancels in any case; polls without t (t.Fatal is for
					// the test's goroutine). Should the request never reach
					// the engine, ctx expires and Stream's error says so.
					defer cancel()
					for s.InFlight()+s.Deferred() < want && ctx.Err() == nil {
						time.Sleep(2 * time.Millisecond)
					}
				}()
			}
			_, err := a.Stream(ctx, request("x", 100, 1), sink)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err %v, want context.Canceled", err)
			}
			if len(sink.Tokens()) != tc.wantTok {
				t.Errorf("%d tokens, want %d (none after the cancel)", len(sink.Tokens()), tc.wantTok)
			}
			if tc.name == "while queued" {
				enginetest.Eventually(t, "queue left", func() bool { return s.Deferred() == 0 })
				return
			}
			enginetest.Eventually(t, "slot freed", func() bool { return s.InFlight() == 0 })
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestStreamAlreadyCanceled(t *testing.T) {
	s := startFake(t, fake.Options{})
	a := newAdapter(t, s.URL(), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Stream(ctx, request("x", 1, 1), &enginetest.RecSink{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if s.Requests() != 0 {
		t.Errorf("a canceled request reached the engine")
	}
}

// TestDocumentedFrames streams the frame shapes ENGINES.md §4 documents.
func TestDocumentedFrames(t *testing.T) {
	for _, tc := range []struct {
		name      string
		body      string
		maxTokens int
		tokens    []string
		res       engines.Result
	}{
		{"vLLM backend, no finish_reason: length from the count",
			events(docParis, docDot, docThe, docCapital) + lastChunk, 4,
			[]string{" Paris", ".", " The", " capital"},
			engines.Result{TokensOut: 4, FinishReason: "length", Slot: -1}},
		{"vLLM backend, fewer tokens than asked: stop",
			events(docParis, docDot) + lastChunk, 16,
			[]string{" Paris", "."},
			engines.Result{TokensOut: 2, FinishReason: "stop", Slot: -1}},
		{"finish_reason and input count",
			events(`{"finish_reason":"None","model_name":"vllm_model","model_version":"1","num_input_tokens":6,"num_output_tokens":1,"text_output":" Paris"}`,
				`{"finish_reason":"stop","model_name":"vllm_model","model_version":"1","num_input_tokens":6,"num_output_tokens":1,"text_output":""}`) + lastChunk, 16,
			[]string{" Paris"},
			engines.Result{TokensOut: 2, TokensIn: 6, FinishReason: "stop", Slot: -1}},
		{"several tokens per frame (speculative decoding)",
			events(`{"finish_reason":"None","model_name":"m","model_version":"1","num_output_tokens":3,"text_output":" a b c"}`,
				`{"finish_reason":"length","model_name":"m","model_version":"1","num_output_tokens":2,"text_output":" d e"}`) + lastChunk, 5,
			[]string{" a b c", " d e"},
			engines.Result{TokensOut: 5, FinishReason: "length", Slot: -1}},
		{"TRT-LLM ensemble: extras ignored, frames counted",
			events(docEnsemble, strings.Replace(docEnsemble, `"To"`, `" be"`, 1)) + lastChunk, 2,
			[]string{"To", " be"},
			engines.Result{TokensOut: 2, FinishReason: "length", Slot: -1}},
		{"tensors as arrays, request id echoed",
			events(`{"id":"42","model_name":"m","model_version":"1","num_output_tokens":[1],"text_output":["x","y"]}`) + lastChunk, 9,
			[]string{"x"},
			engines.Result{TokensOut: 1, FinishReason: "stop", Slot: -1}},
		{"keep-alive comments and CRLF are ignored",
			chunk(":\n\n") + chunk("data: "+docParis+"\r\n\r\n") + chunk(": ping\n\n") + events(docDot) + lastChunk, 2,
			[]string{" Paris", "."},
			engines.Result{TokensOut: 2, FinishReason: "length", Slot: -1}},
		{"one event split over chunks, several events in one chunk",
			chunk("data: {\"model_name\":\"m\",\"model_version\":\"1\",\"text_ou") + chunk("tput\":\"ab\"}\n\ndata: {\"text_output\":\"cd\"}\n") + chunk("\n") + lastChunk, 3,
			[]string{"ab", "cd"},
			engines.Result{TokensOut: 2, FinishReason: "stop", Slot: -1}},
		{"split UTF-8 between frames, JSON escapes",
			events(`{"text_output":"caf\u00c3"}`, `{"text_output":"\u00a9 \ud83d\ude00\n"}`) + lastChunk, 2,
			[]string{"cafÃ", "© 😀\n"},
			engines.Result{TokensOut: 2, FinishReason: "length", Slot: -1}},
		{"raw bytes split inside a character are held back",
			events("{\"text_output\":\"a\xe6\x97\"}", "{\"text_output\":\"\xa5b\"}") + lastChunk, 2,
			[]string{"a", "日b"},
			engines.Result{TokensOut: 2, FinishReason: "length", Slot: -1}},
		{"a character never completed becomes U+FFFD at the end (one per byte, as encoding/json)",
			events("{\"text_output\":\"a\xf0\x9f\"}") + lastChunk, 1,
			[]string{"a", "\uFFFD\uFFFD"},
			engines.Result{TokensOut: 1, FinishReason: "length", Slot: -1}},
		{"null and missing outputs",
			events(`{"model_name":"m","model_version":"1","text_output":null,"num_output_tokens":null,"finish_reason":null}`, `{"text_output":"z"}`) + lastChunk, 0,
			[]string{"z"},
			engines.Result{TokensOut: 2, FinishReason: "stop", Slot: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newScripted(t, replay(sseHead(200)+tc.body))
			a := newAdapter(t, srv.URL(), Options{})
			sink := &enginetest.RecSink{}
			res, err := a.Stream(enginetest.Ctx(t), request("p", tc.maxTokens, 1), sink)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(sink.Tokens(), "|") != strings.Join(tc.tokens, "|") {
				t.Errorf("tokens %q, want %q", sink.Tokens(), tc.tokens)
			}
			if res != tc.res {
				t.Errorf("result %+v, want %+v", res, tc.res)
			}
			// The body ended cleanly: the connection is pooled.
			if _, err := a.Stream(enginetest.Ctx(t), request("p", tc.maxTokens, 1), &enginetest.RecSink{}); err != nil || srv.Accepts() != 1 {
				t.Errorf("second stream: %v, %d connections (want 1)", err, srv.Accepts())
			}
		})
	}
}

// TestStreamEnds covers how a 2xx body may end, and what the adapter makes
// of it.
func TestStreamEnds(t *testing.T) {
	finalFrame := `{"finish_reason":"length","model_name":"m","model_version":"1","num_output_tokens":1,"text_output":"!"}`
	for _, tc := range []struct {
		name   string
		h      handler
		kind   engines.ErrorKind // 0: success
		tokens int
		after  bool
		msg    string
	}{
		{"cut before the last chunk", cut(sseHead(200) + events(docParis, docDot)), engines.KindUpstream, 2, true, "stream cut"},
		{"cut inside an event", cut(sseHead(200) + events(docParis) + chunk("data: {\"text_ou")), engines.KindUpstream, 1, true, "stream cut"},
		{"cut inside a chunk", cut(sseHead(200) + events(docParis) + "40\r\ndata: {"), engines.KindUpstream, 1, true, "stream cut"},
		{"cut after the finishing frame: complete", cut(sseHead(200) + events(docParis, finalFrame)), 0, 2, false, ""},
		{"no response at all", replay(sseHead(200) + lastChunk), engines.KindProtocol, 0, false, "without any response"},
		{"connection closed before the header", cut(""), engines.KindUpstream, 0, false, "before the response header"},
		{"error frame after the 200", replay(sseHead(200) + events(docParis, `{"error":"Error generating stream: CUDA out of memory"}`) + lastChunk),
			engines.KindUpstream, 1, true, "Error generating stream: CUDA out of memory"},
		{"error frame as the first frame of a 200", replay(sseHead(200) + events(`{"error":"boom"}`) + lastChunk),
			engines.KindUpstream, 0, false, "boom"},
		{"finish_reason abort", replay(sseHead(200) + events(docParis, `{"finish_reason":"abort","text_output":""}`) + lastChunk),
			engines.KindUpstream, 1, true, `finish_reason "abort"`},
		{"frame not JSON", replay(sseHead(200) + events(docParis, `{"text_output":`) + lastChunk), engines.KindProtocol, 1, true, "not a JSON object"},
		{"frame is a JSON array", replay(sseHead(200) + events(`["x"]`) + lastChunk), engines.KindProtocol, 0, false, "not a JSON object"},
		{"bad chunk framing", cut(sseHead(200) + events(docParis) + "zz\r\n"), engines.KindProtocol, 1, true, "malformed chunked body"},
		{"200 with JSON instead of SSE", replay("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"),
			engines.KindProtocol, 0, false, "without text/event-stream"},
		{"close-delimited body: EOF is the end", cut("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: " + docParis + "\n\n"), 0, 1, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newScripted(t, tc.h)
			a := newAdapter(t, srv.URL(), Options{})
			sink := &enginetest.RecSink{}
			res, err := a.Stream(enginetest.Ctx(t), request("p", 8, 1), sink)
			if len(sink.Tokens()) != tc.tokens {
				t.Errorf("%d tokens %q, want %d", len(sink.Tokens()), sink.Tokens(), tc.tokens)
			}
			if tc.kind == 0 {
				if err != nil {
					t.Fatalf("err %v", err)
				}
				if res.TokensOut != tc.tokens {
					t.Errorf("result %+v", res)
				}
				return
			}
			e := wantKind(t, err, tc.kind)
			if e.AfterFirstToken != tc.after || !strings.Contains(e.Message, tc.msg) {
				t.Errorf("error %+v; want after first token %v, message containing %q", e, tc.after, tc.msg)
			}
		})
	}
}

// TestStatusErrors maps non-2xx answers (plain JSON, or the first-response
// SSE error) to error kinds.
func TestStatusErrors(t *testing.T) {
	sseErr := func(status int, msg string) string {
		return sseHead(status) + events(`{"error":"`+msg+`"}`) + lastChunk
	}
	jsonErr := func(status int, body string) string {
		return "HTTP/1.1 " + itoa(status) + " X\r\nContent-Type: application/json\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body
	}
	for _, tc := range []struct {
		name string
		raw  string
		kind engines.ErrorKind
		msg  string
	}{
		{"400 invalid argument", jsonErr(400, `{"error":"Unable to parse 'stream': expected a boolean"}`), engines.KindInvalidRequest, "Unable to parse 'stream'"},
		{"404 unknown model", jsonErr(404, `{"error":"Request for unknown model: 'x' is not found"}`), engines.KindInvalidRequest, "unknown model"},
		{"404 model not loaded here", jsonErr(404, `{"error":"Request for unknown model: 'x' has no available versions"}`), engines.KindUnavailable, "no available versions"},
		{"503 UNAVAILABLE is overload", jsonErr(503, `{"error":"Exceeds maximum queue size"}`), engines.KindOverloaded, "Exceeds maximum queue size"},
		{"501 unsupported", jsonErr(501, `{"error":"not supported"}`), engines.KindUpstream, "not supported"},
		{"500 first-response error", sseErr(500, "Error generating stream: EngineCore encountered an issue."), engines.KindUpstream, "EngineCore"},
		{"500 vLLM prompt too long", sseErr(500, "Error generating stream: The decoder prompt (length 9000) is longer than the maximum model length of 8192. Make sure that `max_model_len` is no smaller than the number of text tokens."),
			engines.KindContextLength, "maximum model length of 8192"},
		{"400 first-response error (older servers)", sseErr(400, "Error generating stream: This model's maximum context length is 4096 tokens."), engines.KindContextLength, "maximum context length"},
		{"400 TRT-LLM input too long", jsonErr(400, `{"error":"Prompt length (5000) exceeds maximum input length (4096)."}`), engines.KindContextLength, "maximum input length"},
		{"404 mentioning a context length stays a 404", jsonErr(404, `{"error":"context length model 'x' is not found"}`), engines.KindInvalidRequest, "not found"},
		{"body not Triton's", jsonErr(502, `<html>bad gateway</html>`), engines.KindUpstream, "<html>bad gateway</html>"},
		{"empty body", jsonErr(500, ``), engines.KindUpstream, "HTTP 500"},
		{"3xx", jsonErr(302, ``), engines.KindProtocol, "unexpected HTTP status 302"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newScripted(t, replay(tc.raw))
			a := newAdapter(t, srv.URL(), Options{})
			_, err := a.Stream(enginetest.Ctx(t), request("p", 8, 1), &enginetest.RecSink{})
			e := wantKind(t, err, tc.kind)
			if !strings.Contains(e.Message, tc.msg) || e.AfterFirstToken {
				t.Errorf("error %+v, want message containing %q", e, tc.msg)
			}
			// The error body was read whole: the connection is reused.
			_, _ = a.Stream(enginetest.Ctx(t), request("p", 8, 1), &enginetest.RecSink{})
			if srv.Accepts() != 1 {
				t.Errorf("%d connections, want 1", srv.Accepts())
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestRequest checks what the adapter sends.
func TestRequest(t *testing.T) {
	srv := newScripted(t, replay(sseHead(200)+events(docParis)+lastChunk))
	for _, tc := range []struct {
		model, path string
		req         *engines.Request
		body        string
	}{
		{"vllm_model", "/v2/models/vllm_model/generate_stream", request("The capital of France is", 4, 42),
			`{"text_input":"The capital of France is","parameters":{"stream":true,"temperature":0,"max_tokens":4,"seed":42,"return_num_output_tokens":true,"return_finish_reason":true,"return_num_input_tokens":true}}`},
		{"my model", "/v2/models/my model/generate_stream", request("q\"\n", 0, -7),
			`{"text_input":"q\"\n","parameters":{"stream":true,"temperature":0,"seed":-7,"return_num_output_tokens":true,"return_finish_reason":true,"return_num_input_tokens":true}}`},
	} {
		a := newAdapter(t, srv.URL(), Options{Model: tc.model})
		if _, err := a.Stream(enginetest.Ctx(t), tc.req, &enginetest.RecSink{}); err != nil {
			t.Fatal(err)
		}
		path, body := srv.last()
		if path != tc.path || body != tc.body {
			t.Errorf("sent %s %s\nwant %s %s", path, body, tc.path, tc.body)
		}
	}
}

// TestFlushCoalescing: Flush comes before each wait for the engine when
// tokens were delivered, never after the frame that finished the request.
func TestFlushCoalescing(t *testing.T) {
	final := `{"finish_reason":"length","text_output":" end"}`
	t.Run("burst", func(t *testing.T) {
		srv := newScripted(t, replay(sseHead(200)+events(docParis, docDot, docThe, final)+lastChunk))
		a := newAdapter(t, srv.URL(), Options{})
		sink := &enginetest.RecSink{}
		if _, err := a.Stream(enginetest.Ctx(t), request("p", 4, 1), sink); err != nil {
			t.Fatal(err)
		}
		if len(sink.Tokens()) != 4 || sink.Flushes() != 0 {
			t.Errorf("%d tokens, %d flushes; want 4 tokens in one burst and no flush (the caller publishes at the end)", len(sink.Tokens()), sink.Flushes())
		}
	})
	t.Run("paced", func(t *testing.T) {
		flushed := make(chan struct{}, 8)
		srv := newScripted(t, func(_ *scripted, _ *http.Request, w *bufio.Writer, _ net.Conn) bool {
			_, _ = w.WriteString(sseHead(200))
			for _, f := range []string{docParis, docDot, final} {
				_, _ = w.WriteString(events(f))
				if w.Flush() != nil {
					return false
				}
				if f != final {
					select {
					case <-flushed: // the adapter flushed before waiting for more
					case <-time.After(5 * time.Second):
						return false
					}
				}
			}
			// The last chunk only after a pause: a flush here would be late.
			time.Sleep(20 * time.Millisecond)
			_, _ = w.WriteString(lastChunk)
			return true
		})
		a := newAdapter(t, srv.URL(), Options{})
		sink := &enginetest.RecSink{OnFlush: func() {
			select {
			case flushed <- struct{}{}:
			default: // more flushes than the engine waits for: the count tells
			}
		}}
		res, err := a.Stream(enginetest.Ctx(t), request("p", 3, 1), sink)
		if err != nil {
			t.Fatal(err)
		}
		if len(sink.Tokens()) != 3 || sink.Flushes() != 2 || res.FinishReason != "length" {
			t.Errorf("%d tokens, %d flushes, %+v; want 3 tokens and 2 flushes (none after the finishing frame)", len(sink.Tokens()), sink.Flushes(), res)
		}
	})
}

// TestFinishedFrameThenSilence: after the finishing frame the body's end is
// due at once; an engine that holds the connection open does not hold the
// stream (it succeeds after drainTimeout, and the connection is dropped).
func TestFinishedFrameThenSilence(t *testing.T) {
	release := make(chan struct{})
	srv := newScripted(t, func(_ *scripted, _ *http.Request, w *bufio.Writer, _ net.Conn) bool {
		_, _ = w.WriteString(sseHead(200) + events(`{"finish_reason":"stop","num_output_tokens":1,"text_output":"x"}`))
		_ = w.Flush()
		<-release
		return false
	})
	defer close(release)
	a := newAdapter(t, srv.URL(), Options{})
	res, err := a.Stream(enginetest.Ctx(t), request("p", 3, 1), &enginetest.RecSink{})
	if err != nil || res.FinishReason != "stop" || res.TokensOut != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	if a.hc.IdleConns() != 0 {
		t.Error("a connection with an unfinished body was pooled")
	}
}

func TestHeaderTimeout(t *testing.T) {
	s := startFake(t, fake.Options{TTFT: time.Hour})
	a := newAdapter(t, s.URL(), Options{HeaderTimeout: 50 * time.Millisecond})
	_, err := a.Stream(enginetest.Ctx(t), request("x", 4, 1), &enginetest.RecSink{})
	e := wantKind(t, err, engines.KindUpstream)
	if !strings.Contains(e.Message, "no response header") {
		t.Errorf("error %v", e)
	}
	enginetest.Eventually(t, "slot freed", func() bool { return s.InFlight() == 0 })
}

func TestConnectionRefused(t *testing.T) {
	a := newAdapter(t, enginetest.RefusedURL(t), Options{})
	_, err := a.Stream(enginetest.Ctx(t), request("x", 1, 1), &enginetest.RecSink{})
	wantKind(t, err, engines.KindUnavailable)
	wantKind(t, a.Health(context.Background()), engines.KindUnavailable)
	wantKind(t, a.Live(context.Background()), engines.KindUnavailable)
}

func TestHealthAndProps(t *testing.T) {
	s := startFake(t, fake.Options{Load: 300 * time.Millisecond, EngineVersion: "2.73.0dev"})
	a := newAdapter(t, s.URL(), Options{})
	other := newAdapter(t, s.URL(), Options{Model: "other"})
	ctx := context.Background()
	// Loading: live, not ready, model not ready.
	if err := a.Live(ctx); err != nil {
		t.Errorf("Live while loading: %v", err)
	}
	e := wantKind(t, a.Health(ctx), engines.KindUnavailable)
	if e.Status != 400 {
		t.Errorf("Health while loading: %+v", e)
	}
	p, err := a.Props(ctx)
	if err != nil || p.Model != "" || p.EngineVersion != "2.73.0dev" {
		t.Errorf("Props while loading: %+v %v", p, err)
	}
	enginetest.Eventually(t, "ready", func() bool { return a.Health(ctx) == nil })
	p, err = a.Props(ctx)
	want := engines.Props{EngineVersion: "2.73.0dev", Model: faketriton.DefaultModel}
	if err != nil || p != want {
		t.Errorf("Props = %+v, %v; want %+v", p, err, want)
	}
	// A model the server does not serve is not reported.
	if p, err := other.Props(ctx); err != nil || p.Model != "" {
		t.Errorf("Props of another model = %+v, %v", p, err)
	}
}

func TestProbeErrors(t *testing.T) {
	srv := newScripted(t, replay("HTTP/1.1 500 X\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"error\":\"oops!\"}"))
	a := newAdapter(t, srv.URL(), Options{})
	e := wantKind(t, a.Health(context.Background()), engines.KindUnavailable)
	if e.Status != 500 || e.Message != "oops!" {
		t.Errorf("Health: %+v", e)
	}
	_, err := a.Props(context.Background())
	wantKind(t, err, engines.KindUpstream)
	_, err = a.ScrapeLoad(context.Background())
	wantKind(t, err, engines.KindUpstream)
	bad := newScripted(t, replay("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{x}"))
	_, err = newAdapter(t, bad.URL(), Options{}).Props(context.Background())
	wantKind(t, err, engines.KindProtocol)
	_, err = newAdapter(t, bad.URL(), Options{}).ScrapeLoad(context.Background())
	wantKind(t, err, engines.KindProtocol)
}

func TestScrapeLoadFake(t *testing.T) {
	s := startFake(t, fake.Options{Slots: 1, Ctx: 100, TTFT: time.Hour})
	a := newAdapter(t, s.URL(), Options{})
	viaURL := newAdapter(t, "http://127.0.0.1:1", Options{MetricsURL: s.URL() + "/metrics"})
	ctx, cancel := context.WithCancel(enginetest.Ctx(t))
	done := make(chan struct{})
	for i := range 2 {
		go func() {
			defer func() { done <- struct{}{} }()
			_, _ = a.Stream(ctx, request("a b c", 4, int64(i)), &enginetest.RecSink{})
		}()
	}
	defer func() {
		cancel()
		enginetest.Wait(t, done, "a stream to end")
		enginetest.Wait(t, done, "the other stream to end")
	}()
	enginetest.Eventually(t, "1 running, 1 queued", func() bool { return s.InFlight() == 1 && s.Deferred() == 1 })
	for _, ad := range []*Adapter{a, viaURL} {
		l, err := ad.ScrapeLoad(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if l.Processing != 1 || l.Deferred != 1 || !l.HasKVCacheUsage || l.KVCacheUsage != 0.04 ||
			len(l.Devices) != 1 || !l.Devices[0].HasUtilization || l.Devices[0].Utilization != 1 ||
			!l.Devices[0].HasVRAMUsed || l.Devices[0].VRAMUsedBytes <= 0 || !strings.HasPrefix(l.Devices[0].Device, "GPU-") {
			t.Errorf("load %+v", l)
		}
	}
	// A metrics URL that is not Triton's.
	nope := newAdapter(t, s.URL(), Options{MetricsURL: s.URL() + "/nope"})
	_, err := nope.ScrapeLoad(context.Background())
	wantKind(t, err, engines.KindInvalidRequest)
}

func TestParseLoad(t *testing.T) {
	trt := `# HELP nv_trt_llm_request_metrics TRT LLM request metrics
# TYPE nv_trt_llm_request_metrics gauge
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="context",version="1"} 1
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="scheduled",version="1"} 3
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="max",version="1"} 512
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="active",version="1"} 3
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="waiting",version="1"} 2
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction",model="tensorrt_llm",version="1"} 0.25
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max",model="tensorrt_llm",version="1"} 4096
nv_inference_pending_request_count{model="ensemble",version="1"} 4
nv_inference_pending_request_count{model="tensorrt_llm",version="1"} 7
nv_gpu_utilization{gpu_uuid="GPU-a"} 0.5
nv_gpu_utilization{gpu_uuid="GPU-b"} 0.75
nv_gpu_memory_used_bytes{gpu_uuid="GPU-b"} 1.2e+10
`
	for _, tc := range []struct {
		name  string
		data  string
		model string
		want  engines.Load
		ok    bool
	}{
		{"TRT-LLM ensemble", trt, "ensemble", engines.Load{Processing: 3, Deferred: 6, KVCacheUsage: 0.25, HasKVCacheUsage: true,
			Devices: []engines.DeviceLoad{{Device: "GPU-a", Utilization: 0.5, HasUtilization: true},
				{Device: "GPU-b", Utilization: 0.75, HasUtilization: true, VRAMUsedBytes: 1.2e10, HasVRAMUsed: true}}}, true},
		{"vLLM backend, newer KV gauge wins", `nv_inference_pending_request_count{model="vllm_model",version="1"} 0
vllm:num_requests_running{model="vllm_model",version="1"} 5
vllm:num_requests_waiting{model="vllm_model",version="1"} 2
vllm:gpu_cache_usage_perc{model="vllm_model",version="1"} 0.1
vllm:kv_cache_usage_perc{model="vllm_model",version="1"} 0.3
`, "vllm_model", engines.Load{Processing: 5, Deferred: 2, KVCacheUsage: 0.3, HasKVCacheUsage: true}, true},
		{"core only: no KV, no GPU", `nv_inference_pending_request_count{model="m",version="1"} 3` + "\n", "m",
			engines.Load{Deferred: 3}, true},
		{"another model's queue is not ours", `nv_inference_pending_request_count{model="x",version="1"} 3` + "\n", "m",
			engines.Load{}, false},
		{"nothing known", "# just a comment\nfoo 1\n", "m", engines.Load{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseLoad([]byte(tc.data), tc.model)
			if ok != tc.ok || !loadEqual(got, tc.want) {
				t.Errorf("parseLoad = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func loadEqual(a, b engines.Load) bool {
	if a.Processing != b.Processing || a.Deferred != b.Deferred || a.KVCacheUsage != b.KVCacheUsage ||
		a.HasKVCacheUsage != b.HasKVCacheUsage || len(a.Devices) != len(b.Devices) {
		return false
	}
	for i := range a.Devices {
		if a.Devices[i] != b.Devices[i] {
			return false
		}
	}
	return true
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		url string
		o   Options
	}{
		{"http://127.0.0.1:8000", Options{}},                                   // no model
		{"https://127.0.0.1:8000", Options{Model: "m"}},                        // not http
		{"http://127.0.0.1", Options{Model: "m"}},                              // no port
		{"http://127.0.0.1:8000", Options{Model: "m", MetricsURL: ":8002"}},    // not a URL with a host
		{"http://127.0.0.1:8000", Options{Model: "m", MetricsURL: "http://h"}}, // no port
		{"http://127.0.0.1:8000", Options{Model: "m", MetricsURL: "http://h:8002/metrics?x=1"}},
	} {
		if _, err := New(tc.url, tc.o); err == nil {
			t.Errorf("New(%q, %+v) accepted", tc.url, tc.o)
		}
	}
	if _, err := New("http://127.0.0.1:8000", Options{}); !errors.Is(err, ErrNoModel) {
		t.Errorf("no model: %v", err)
	}
	a, err := New("http://127.0.0.1:8000/prefix/", Options{Model: "m", MetricsURL: "http://127.0.0.1:8002/metrics"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Engine() != engines.Triton || !a.InterruptibleDecode() || a.Model() != "m" || a.metricsPath != "/metrics" || a.mc == a.hc {
		t.Errorf("adapter %+v", a)
	}
}
