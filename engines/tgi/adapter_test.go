package tgi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
)

// The ENGINES.md §3 frames (TGI v3.3.7 serializer), byte for byte.
var (
	docFrames = []string{
		"data: {\"index\":1,\"token\":{\"id\":12095,\"text\":\" Paris\",\"logprob\":-0.28466797,\"special\":false},\"generated_text\":null,\"details\":null}\n\n",
		"data: {\"index\":2,\"token\":{\"id\":13,\"text\":\".\",\"logprob\":-0.7421875,\"special\":false},\"generated_text\":null,\"details\":null}\n\n",
		"data: {\"index\":3,\"token\":{\"id\":576,\"text\":\" The\",\"logprob\":-1.2080078,\"special\":false},\"generated_text\":null,\"details\":null}\n\n",
		"data: {\"index\":4,\"token\":{\"id\":6722,\"text\":\" capital\",\"logprob\":-0.5996094,\"special\":false},\"generated_text\":\" Paris. The capital\",\"details\":{\"finish_reason\":\"length\",\"generated_tokens\":4,\"seed\":null,\"input_length\":5}}\n\n",
	}
	// Captured pre-2.1 frame: `data:` without the space.
	docLegacyFrame = "data:{\"index\":1,\"token\":{\"id\":89554,\"text\":\" Deep\",\"logprob\":-0.9719473,\"special\":false},\"generated_text\":null,\"details\":null}\n\n"
	docOverloaded  = "data: {\"error\":\"Model is overloaded\",\"error_type\":\"overloaded\"}\n\n"
	docIncomplete  = "data: {\"error\":\"Incomplete generation stream\",\"error_type\":\"incomplete_generation_stream\"}\n\n"
	docValidation  = "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 2048. Given: 2000 `inputs` tokens and 100 `max_new_tokens`"
	docInfo        = `{"model_id":"Qwen/Qwen2.5-1.5B-Instruct","model_sha":"989aa7980e4cf806f80c7fef2b1adb7bc71aa306","model_pipeline_tag":"text-generation","max_concurrent_requests":128,"max_best_of":2,"max_stop_sequences":4,"max_input_tokens":4095,"max_total_tokens":4096,"validation_workers":2,"max_client_batch_size":4,"router":"text-generation-router","version":"3.3.7","sha":"db931fcf42da018a3657580c64bf2720f167f9ab","docker_label":"sha-db931fc"}`
)

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8080", true},          // plain
		{"http://tgi.local:3000/prefix/", true},  // behind a path prefix
		{"https://127.0.0.1:8080", false},        // no TLS
		{"http://127.0.0.1", false},              // port required
		{"http://u:p@127.0.0.1:8080", false},     // credentials
		{"127.0.0.1:8080", false},                // no scheme
		{"http://127.0.0.1:8080/?q=1", false},    // query
		{"http://127.0.0.1:99999", false},        // invalid port
		{"http://[::1]:8080", true},              // IPv6
		{"http://127.0.0.1:8080 /x", false},      // unparsable
		{"http://localhost:80/a/b/c/", true},     // deep prefix
		{"ftp://127.0.0.1:21", false},            // other scheme
		{"http://:8080", false},                  // no host
		{"http://127.0.0.1:8080#frag", false},    // fragment
		{"http://127.0.0.1:0", false},            // port 0
		{"http://127.0.0.1:65535", true},         // highest port
		{"http://127.0.0.1:8080/generate", true}, // any prefix is taken as given
	} {
		a, err := New(tc.url, Options{})
		if (err == nil) != tc.ok {
			t.Errorf("New(%q): err=%v, want ok=%v", tc.url, err, tc.ok)
		}
		if a != nil {
			_ = a.Close()
		}
	}
}

// TestStreamFrames replays documented and derived frame sequences.
func TestStreamFrames(t *testing.T) {
	enginetest.LeakCheck(t)
	paris := []string{" Paris", ".", " The", " capital"}
	length4 := engines.Result{TokensOut: 4, TokensIn: 5, FinishReason: "length", Slot: -1}
	for _, tc := range []struct {
		name string
		evs  []string
		req  *engines.Request
		toks []string
		res  engines.Result
	}{
		// ENGINES.md §3 example, as is.
		{"documented", docFrames, testReq, paris, length4},
		// Keep-alive comments between frames are ignored.
		{"keep-alives", []string{":\n\n", docFrames[0], ":\n\n", ":\n\n", docFrames[1], docFrames[2], ":\n\n", docFrames[3]}, testReq, paris, length4},
		// TGI ≤ 2.0 wrote `data:` without the space.
		{"no space", []string{docLegacyFrame, strings.Replace(docFrames[3], "data: ", "data:", 1)}, testReq, []string{" Deep", " capital"}, length4},
		// EOS: the special token is counted, not output.
		{"eos", []string{tok(1, " Hi", false), tok(2, "!", false), final(3, "<|im_end|>", true, " Hi!", "eos_token", 3, 7)}, testReq,
			[]string{" Hi", "!"}, engines.Result{TokensOut: 3, TokensIn: 7, FinishReason: "stop", Slot: -1}},
		// A stop sequence ends with "stop".
		{"stop sequence", []string{tok(1, " a", false), final(2, " b", false, " a b", "stop_sequence", 2, 3)}, testReq,
			[]string{" a", " b"}, engines.Result{TokensOut: 2, TokensIn: 3, FinishReason: "stop", Slot: -1}},
		// "" for a partial character, the whole character next (ENGINES.md §5 pitfall 3).
		{"split character", []string{tok(1, "", false), tok(2, "😀", false), tok(3, "", false), tok(4, " 日", false), final(5, "", false, "😀 日\uFFFD", "length", 5, 2)}, testReq,
			[]string{"😀", " 日"}, engines.Result{TokensOut: 5, TokensIn: 2, FinishReason: "length", Slot: -1}},
		// generated_text is a check only: it is never output (nor compared).
		{"generated text not output", []string{tok(1, " x", false), final(2, " y", false, "Hello world x y", "length", 2, 1)}, testReq,
			[]string{" x", " y"}, engines.Result{TokensOut: 2, TokensIn: 1, FinishReason: "length", Slot: -1}},
		// details:null (a proxy dropping them): the index counts; the budget tells the reason.
		{"no details, budget used", []string{tok(1, " a", false), tok(2, " b", false), tok(3, " c", false),
			ev(`{"index":4,"token":{"id":1,"text":" d","logprob":-1.0,"special":false},"generated_text":" a b c d","details":null}`)}, testReq,
			[]string{" a", " b", " c", " d"}, engines.Result{TokensOut: 4, FinishReason: "length", Slot: -1}},
		{"no details, ended early", []string{ev(`{"index":1,"token":{"id":2,"text":"<|im_end|>","logprob":-1.0,"special":true},"generated_text":"","details":null}`)}, testReq,
			nil, engines.Result{TokensOut: 1, FinishReason: "stop", Slot: -1}},
		// top_tokens and unknown fields are ignored; escapes decode.
		{"extra fields", []string{ev(`{"index":1,"token":{"id":1,"text":"a\"\n\u00e9\ud83d\ude00","logprob":-1.0,"special":false},"top_tokens":[{"id":2,"text":"b","logprob":-2.0,"special":false}],"generated_text":null,"details":null,"new":1}`),
			final(2, "", true, "x", "eos_token", 2, 4)}, testReq,
			[]string{"a\"\né😀"}, engines.Result{TokensOut: 2, TokensIn: 4, FinishReason: "stop", Slot: -1}},
		// Frames without index: counted one per token.
		{"no index", []string{ev(`{"token":{"text":"a"}}`), ev(`{"token":{"text":"b"}}`), ev(`{"token":{"text":"c"},"generated_text":"abc"}`)}, testReq,
			[]string{"a", "b", "c"}, engines.Result{TokensOut: 3, FinishReason: "stop", Slot: -1}},
		// Invalid UTF-8 bytes (not TGI's) become U+FFFD; a character cut at the end too.
		{"invalid bytes", []string{tok(1, "a\xffb", false), final(2, "c\xe6", false, "", "length", 2, 1)}, testReq,
			[]string{"a\uFFFDb", "c", "\uFFFD"}, engines.Result{TokensOut: 2, TokensIn: 1, FinishReason: "length", Slot: -1}},
	} {
		srv := enginetest.NewServer(t, enginetest.ServeAlways(sseResponse(tc.evs...)))
		a := newAdapter(t, srv.URL(), Options{})
		sink := &enginetest.RecSink{}
		res, err := a.Stream(enginetest.Ctx(t), tc.req, sink)
		enginetest.CheckStream(t, tc.name, sink, res, err, tc.toks, tc.res)
		srv.Close()
	}
}

// TestStreamRequest checks what goes on the wire.
func TestStreamRequest(t *testing.T) {
	enginetest.LeakCheck(t)
	type got struct {
		line, host, ctype, accept string
		body                      []byte
	}
	ch := make(chan got, 4)
	srv := enginetest.NewServer(t, func(c *enginetest.Conn) {
		for {
			req, body, err := c.ReadRequest()
			if err != nil {
				return
			}
			ch <- got{req.Method + " " + req.RequestURI + " " + req.Proto, req.Host, req.Header.Get("Content-Type"), req.Header.Get("Accept"), body}
			_, _ = c.Write(sseResponse(final(1, "x", false, "x", "length", 1, 1)))
		}
	})
	a := newAdapter(t, srv.URL()+"/tgi/", Options{})
	prompt := "quote\" back\\ nl\n tab\t ctrl\x01 é 😀 </script>"
	for _, tc := range []struct {
		req    *engines.Request
		params map[string]any
	}{
		// The usual request.
		{&engines.Request{Prompt: prompt, MaxTokens: 16, Seed: 42},
			map[string]any{"max_new_tokens": json.Number("16"), "do_sample": false, "seed": json.Number("42"), "details": true}},
		// A negative seed goes as its u64 two's complement (TGI's seed is a u64).
		{&engines.Request{Prompt: "p", MaxTokens: 1, Seed: -7},
			map[string]any{"max_new_tokens": json.Number("1"), "do_sample": false, "seed": json.Number("18446744073709551609"), "details": true}},
		// No budget: max_new_tokens is left to TGI.
		{&engines.Request{Prompt: "p", Seed: 0},
			map[string]any{"do_sample": false, "seed": json.Number("0"), "details": true}},
	} {
		if _, err := a.Stream(enginetest.Ctx(t), tc.req, &enginetest.RecSink{}); err != nil {
			t.Fatal(err)
		}
		g := enginetest.Recv(t, ch, "the request the engine read")
		if g.line != "POST /tgi/generate_stream HTTP/1.1" || g.host != srv.Addr() || g.ctype != "application/json" || g.accept != "text/event-stream" {
			t.Fatalf("request head: %+v", g)
		}
		var body map[string]any
		dec := json.NewDecoder(bytes.NewReader(g.body))
		dec.UseNumber()
		if err := dec.Decode(&body); err != nil {
			t.Fatalf("request body %q: %v", g.body, err)
		}
		want := map[string]any{"inputs": tc.req.Prompt, "parameters": tc.params}
		if !reflect.DeepEqual(body, want) {
			t.Fatalf("request body\n got %v\nwant %v", body, want)
		}
	}
	if n := srv.Accepts(); n != 1 {
		t.Fatalf("%d connections, want 1 (keep-alive)", n)
	}
}

func TestStreamErrors(t *testing.T) {
	enginetest.LeakCheck(t)
	t1, t2 := tok(1, " a", false), tok(2, " b", false)
	for _, tc := range []struct {
		name      string
		resp      []byte
		kind      engines.ErrorKind
		status    int
		msg       string // substring of the message
		tokens    int
		retriable bool
	}{
		// More than max_concurrent_requests in flight: a 200 stream with one frame.
		{"overloaded", sseResponse(docOverloaded), engines.KindOverloaded, 0, "Model is overloaded", 0, true},
		// The prompt does not fit.
		{"context length", sseResponse(errFrame(docValidation, "validation")), engines.KindContextLength, 0, "must be <= 2048", 0, false},
		// The InputLength variant.
		{"input length", sseResponse(errFrame("Input validation error: `inputs` must have less than 4095 tokens. Given: 5000", "validation")), engines.KindContextLength, 0, "must have less than", 0, false},
		// Any other validation error.
		{"validation", sseResponse(errFrame("Input validation error: `temperature` must be strictly positive", "validation")), engines.KindInvalidRequest, 0, "temperature", 0, false},
		// A generation error after two tokens: not retriable.
		{"generation", sseResponse(t1, t2, errFrame("Request failed during generation: Server error: CUDA OOM", "generation")), engines.KindUpstream, 0, "Request failed during generation", 2, false},
		// The router's own truncation frame.
		{"incomplete", sseResponse(t1, docIncomplete), engines.KindUpstream, 0, "Incomplete generation stream", 1, false},
		// An error type TGI does not send on streams.
		{"unknown type", sseResponse(errFrame("odd", "template_error")), engines.KindUpstream, 0, "odd", 0, true},
		// A clean end without the final frame.
		{"no final frame", sseResponse(t1, t2), engines.KindUpstream, 0, "stream ended before the final frame", 2, false},
		// The connection closes inside the chunked body.
		{"cut", append([]byte(streamHead), append(enginetest.Chunk(t1), enginetest.Chunk(t2)...)...), engines.KindUpstream, 0, "stream ended before the final frame", 2, false},
		// Cut before any token: retriable elsewhere.
		{"cut before tokens", []byte(streamHead), engines.KindUpstream, 0, "stream ended before the final frame", 0, true},
		// Cut inside an event.
		{"cut mid event", append([]byte(streamHead), "40\r\ndata: {\"index\":1"...), engines.KindUpstream, 0, "stream ended before", 0, true},
		// A frame that is not JSON.
		{"malformed", sseResponse(t1, "data: {\"index\":2,\"token\":\n\n"), engines.KindProtocol, 0, "not a TGI frame", 1, false},
		// JSON but not an object.
		{"not an object", sseResponse("data: [1,2]\n\n"), engines.KindProtocol, 0, "not a TGI frame", 0, true},
		// A field of the wrong type.
		{"bad token", sseResponse(`data: {"index":1,"token":"x"}` + "\n\n"), engines.KindProtocol, 0, "not a TGI frame", 0, true},
		// axum's rejections (text/plain).
		{"422 text", httpResp("422 Unprocessable Entity", "text/plain; charset=utf-8", "Failed to deserialize the JSON body into the target type: missing field `inputs`"), engines.KindInvalidRequest, 422, "missing field", 0, false},
		{"415", httpResp("415 Unsupported Media Type", "text/plain; charset=utf-8", "Expected request with `Content-Type: application/json`"), engines.KindInvalidRequest, 415, "Content-Type", 0, false},
		// Statuses of /generate or a proxy, with TGI bodies.
		{"429 json", httpResp("429 Too Many Requests", "application/json", `{"error":"Model is overloaded","error_type":"overloaded"}`), engines.KindOverloaded, 429, "overloaded", 0, true},
		{"422 context", httpResp("422 Unprocessable Entity", "application/json", `{"error":"`+strings.ReplaceAll(docValidation, "`", "`")+`","error_type":"validation"}`), engines.KindContextLength, 422, "must be <=", 0, false},
		{"424 generation", httpResp("424 Failed Dependency", "application/json", `{"error":"Request failed during generation: x","error_type":"generation"}`), engines.KindUpstream, 424, "generation", 0, true},
		{"503", httpResp("503 Service Unavailable", "application/json", `{"error":"unhealthy","error_type":"healthcheck"}`), engines.KindUnavailable, 503, "unhealthy", 0, true},
		{"502 text", httpResp("502 Bad Gateway", "text/html", "bad gateway"), engines.KindUpstream, 502, "bad gateway", 0, true},
		// A 200 that is not an event stream.
		{"not sse", httpResp("200 OK", "application/json", `{"generated_text":"x"}`), engines.KindProtocol, 200, "text/event-stream", 0, true},
		// Not HTTP.
		{"garbage", []byte("SSH-2.0-OpenSSH_9.2\r\n\r\n"), engines.KindProtocol, 0, "malformed response header", 0, true},
		// Broken chunk framing.
		{"bad chunk", append([]byte(streamHead), "zz\r\ndata: x\r\n"...), engines.KindProtocol, 0, "chunked", 0, true},
	} {
		srv := enginetest.NewServer(t, enginetest.ServeOnce(tc.resp))
		a := newAdapter(t, srv.URL(), Options{})
		sink := &enginetest.RecSink{}
		_, err := a.Stream(enginetest.Ctx(t), testReq, sink)
		e, ok := engines.AsError(err)
		if !ok {
			t.Fatalf("%s: error %v (%T), want *engines.Error", tc.name, err, err)
		}
		if e.Kind != tc.kind || e.Status != tc.status || !strings.Contains(e.Message, tc.msg) ||
			e.AfterFirstToken != (tc.tokens > 0) || len(sink.Tokens()) != tc.tokens || e.Retriable() != tc.retriable {
			t.Fatalf("%s: got %v (kind %v, status %d, after %v, %d tokens, retriable %v), want kind %v status %d msg %q, %d tokens, retriable %v",
				tc.name, e, e.Kind, e.Status, e.AfterFirstToken, len(sink.Tokens()), e.Retriable(), tc.kind, tc.status, tc.msg, tc.tokens, tc.retriable)
		}
		srv.Close()
	}
}

// TestStreamReuse: the connection is pooled after a final or error frame
// that ends the body cleanly, and not after a cut.
func TestStreamReuse(t *testing.T) {
	enginetest.LeakCheck(t)
	for _, tc := range []struct {
		name    string
		resp    []byte
		accepts int
	}{
		{"final frame", sseResponse(docFrames...), 1},
		{"error frame", sseResponse(docOverloaded), 1},
		{"extra bytes after the body", append(sseResponse(docFrames...), "junk"...), 2},
		{"connection close", bytes.Replace(sseResponse(docFrames...), []byte("date:"), []byte("connection: close\r\ndate:"), 1), 2},
	} {
		srv := enginetest.NewServer(t, enginetest.ServeAlways(tc.resp))
		a := newAdapter(t, srv.URL(), Options{})
		for range 2 {
			_, _ = a.Stream(enginetest.Ctx(t), testReq, &enginetest.RecSink{})
		}
		if got := srv.Accepts(); got != tc.accepts {
			t.Fatalf("%s: %d connections, want %d", tc.name, got, tc.accepts)
		}
		srv.Close()
	}
}

// TestStreamFlushPerBatch checks that Flush comes once per burst of frames
// that arrived together, before waiting for more, and not after the end.
func TestStreamFlushPerBatch(t *testing.T) {
	enginetest.LeakCheck(t)
	c := func(evs ...string) []byte {
		var b []byte
		for _, e := range evs {
			b = append(b, enginetest.Chunk(e)...)
		}
		return b
	}
	fin := final(7, " g", false, "x", "length", 7, 1)
	for _, tc := range []struct {
		name  string
		parts [][]byte
		log   string
	}{
		// Three frames together, one alone, two together, then the final frame.
		{"batches", [][]byte{[]byte(streamHead), c(tok(1, "a", false), tok(2, "b", false), tok(3, "c", false)), c(tok(4, "d", false)),
			c(tok(5, "e", false), tok(6, "f", false)), append(c(fin), enginetest.LastChunk...)}, "TTTFTFTTFT"},
		// Everything in one write.
		{"one write", [][]byte{append([]byte(streamHead), append(c(tok(1, "a", false), fin), enginetest.LastChunk...)...)}, "TT"},
		// Partial-character and keep-alive frames deliver nothing and need no flush.
		{"empty frames", [][]byte{[]byte(streamHead), c(tok(1, "", false)), c(":\n\n"), c(tok(2, "b", false)), c(tok(3, "", false)), append(c(fin), enginetest.LastChunk...)}, "TFT"},
	} {
		a := newPipeAdapter(t, enginetest.WriteParts(tc.parts...))
		sink := &enginetest.RecSink{}
		if _, err := a.Stream(enginetest.Ctx(t), testReq, sink); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := sink.Log(); got != tc.log {
			t.Errorf("%s: sink saw %q, want %q (T token, F flush)", tc.name, got, tc.log)
		}
	}
}

// TestStreamCancel aborts before the header and mid-body: Stream returns
// context.Canceled at once and the engine sees the connection close.
func TestStreamCancel(t *testing.T) {
	enginetest.LeakCheck(t)
	enginetest.CheckCancel(t, []enginetest.CancelPoint{
		{Name: "waiting for header"},
		{Name: "mid body", Write: append([]byte(streamHead), append(enginetest.Chunk(tok(1, "a", false)), enginetest.Chunk(tok(2, "b", false))...)...), Tokens: 2},
	}, func(url string) enginetest.StreamFunc { return stream(newAdapter(t, url, Options{})) })
}

// TestStreamNoTokenAfterCancel: frames already buffered when ctx is
// canceled are not delivered.
func TestStreamNoTokenAfterCancel(t *testing.T) {
	enginetest.LeakCheck(t)
	a := newPipeAdapter(t, enginetest.WriteParts(sseResponse(tok(1, "a", false), tok(2, "b", false), tok(3, "c", false), final(4, "d", false, "abcd", "length", 4, 1))))
	enginetest.CheckNoTokenAfterCancel(t, stream(a))
	pre, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Stream(pre, testReq, &enginetest.RecSink{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled before start: %v", err)
	}
}

func TestHealth(t *testing.T) {
	enginetest.LeakCheck(t)
	enginetest.CheckHealth(t, []enginetest.HealthCase{
		{Name: "ready", Resp: []byte("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), OK: true},                                                                  // 200, empty body
		{Name: "unhealthy", Resp: httpResp("503 Service Unavailable", "application/json", `{"error":"unhealthy","error_type":"healthcheck"}`), Msg: "unhealthy"}, // a shard failed
		{Name: "500", Resp: []byte("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"), Msg: "HTTP 500"},                                          // anything else
	}, func(url string) func(context.Context) error { return newAdapter(t, url, Options{}).Health })
	// Nothing listening (TGI while it loads): a retriable stream error too.
	a := newAdapter(t, enginetest.RefusedURL(t), Options{})
	if _, err := a.Stream(enginetest.Ctx(t), testReq, &enginetest.RecSink{}); err == nil {
		t.Fatal("stream to a refused port succeeded")
	} else if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindUnavailable || !e.Retriable() {
		t.Fatalf("stream refused: %v", err)
	}
}

func TestProps(t *testing.T) {
	enginetest.LeakCheck(t)
	for _, tc := range []struct {
		name string
		resp []byte
		want engines.Props
		kind engines.ErrorKind
	}{
		// ENGINES.md §3 /info.
		{"documented", httpResp("200 OK", "application/json", docInfo), engines.Props{Slots: 128, CtxMax: 4096, EngineVersion: "3.3.7",
			Model: "Qwen/Qwen2.5-1.5B-Instruct", ModelDigest: "989aa7980e4cf806f80c7fef2b1adb7bc71aa306"}, 0},
		// Local weights: model_sha null.
		{"local model", httpResp("200 OK", "application/json", `{"model_id":"/data/m","model_sha":null,"max_concurrent_requests":4,"max_total_tokens":2048,"version":"2.4.1"}`),
			engines.Props{Slots: 4, CtxMax: 2048, EngineVersion: "2.4.1", Model: "/data/m"}, 0},
		// Not JSON.
		{"garbage", httpResp("200 OK", "text/html", "<html>"), engines.Props{}, engines.KindProtocol},
		// Not found (not a TGI).
		{"404", []byte("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"), engines.Props{}, engines.KindInvalidRequest},
	} {
		srv := enginetest.NewServer(t, enginetest.ServeAlways(tc.resp))
		p, err := newAdapter(t, srv.URL(), Options{}).Props(context.Background())
		if tc.kind != 0 {
			if e, ok := engines.AsError(err); !ok || e.Kind != tc.kind {
				t.Fatalf("%s: %v, want %v", tc.name, err, tc.kind)
			}
		} else if err != nil || p != tc.want {
			t.Fatalf("%s: %+v %v, want %+v", tc.name, p, err, tc.want)
		}
		srv.Close()
	}
}

func TestScrapeLoad(t *testing.T) {
	enginetest.LeakCheck(t)
	const busy = "# TYPE tgi_request_count counter\ntgi_request_count 9\n\n# TYPE tgi_queue_size gauge\ntgi_queue_size 3\n\n" +
		"# TYPE tgi_batch_current_size gauge\ntgi_batch_current_size 5\n\n# TYPE tgi_request_failure counter\ntgi_request_failure{err=\"dropped\"} 1\n"
	for _, tc := range []struct {
		name string
		body string
		want engines.Load
		kind engines.ErrorKind
	}{
		{"gauges", busy, engines.Load{Processing: 5, Deferred: 3}, 0},
		// A fresh router has registered no gauge yet.
		{"fresh", "", engines.Load{}, 0},
		// Requests refused before the queue: counters only.
		{"counters only", "# TYPE tgi_request_count counter\ntgi_request_count 2\n", engines.Load{}, 0},
		// Someone else's metrics.
		{"not tgi", "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 1\n", engines.Load{}, engines.KindProtocol},
	} {
		srv := enginetest.NewServer(t, enginetest.ServeAlways(httpResp("200 OK", "text/plain; version=0.0.4", tc.body)))
		l, err := newAdapter(t, srv.URL(), Options{}).ScrapeLoad(context.Background())
		if tc.kind != 0 {
			if e, ok := engines.AsError(err); !ok || e.Kind != tc.kind {
				t.Fatalf("%s: %v, want %v", tc.name, err, tc.kind)
			}
		} else if err != nil || !reflect.DeepEqual(l, tc.want) {
			t.Fatalf("%s: %+v %v, want %+v", tc.name, l, err, tc.want)
		}
		srv.Close()
	}
}

// TestStreamSinkPanic: a panicking sink does not leak the engine connection.
func TestStreamSinkPanic(t *testing.T) {
	enginetest.LeakCheck(t)
	enginetest.CheckSinkPanic(t, append([]byte(streamHead), enginetest.Chunk(tok(1, "a", false))...), func(url string) enginetest.StreamFunc {
		return stream(newAdapter(t, url, Options{}))
	})
}

func TestEngineAndInterruptible(t *testing.T) {
	a, err := New("http://127.0.0.1:3000", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Engine() != engines.TGI || !a.InterruptibleDecode() {
		t.Fatalf("Engine %q, Interruptible %v", a.Engine(), a.InterruptibleDecode())
	}
}
