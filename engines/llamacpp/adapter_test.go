package llamacpp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http/httputil"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
)

var testReq = &engines.Request{TaskID: "t1", Prompt: "Hello", MaxTokens: 8, Seed: 42, CachePrompt: true}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		url    string
		ok     bool
		prefix string
	}{
		{"http://127.0.0.1:8080", true, ""},                  // plain
		{"http://127.0.0.1:8080/", true, ""},                 // trailing slash
		{"http://engine.local:18081/llama/", true, "/llama"}, // behind a path prefix
		{"http://[::1]:8080", true, ""},                      // IPv6
		{"https://127.0.0.1:8080", false, ""},                // no TLS
		{"http://127.0.0.1", false, ""},                      // port required
		{"http://127.0.0.1:0", false, ""},                    // invalid port
		{"http://127.0.0.1:99999", false, ""},                // invalid port
		{"http://:8080", false, ""},                          // no host
		{"http://u:p@127.0.0.1:8080", false, ""},             // credentials
		{"http://127.0.0.1:8080/?x=1", false, ""},            // query
		{"127.0.0.1:8080", false, ""},                        // no scheme
		{"http://127.0.0.1:8080 /x", false, ""},              // unparsable
	} {
		a, err := New(tc.url, Options{})
		if (err == nil) != tc.ok {
			t.Errorf("New(%q): err=%v, want ok=%v", tc.url, err, tc.ok)
			continue
		}
		if a != nil {
			if line, _, _ := strings.Cut(string(a.hc.AppendRequest(nil, "GET", "/x", nil, false)), "\r\n"); line != "GET "+tc.prefix+"/x HTTP/1.1" {
				t.Errorf("New(%q): request line %q, want prefix %q", tc.url, line, tc.prefix)
			}
		}
	}
}

// dechunk returns the body of a raw chunked HTTP response.
func dechunk(t *testing.T, raw []byte) []byte {
	t.Helper()
	i := bytes.Index(raw, []byte("\r\n\r\n"))
	b, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(raw[i+4:])))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestStreamFixtures replays real llama.cpp captures byte for byte.
func TestStreamFixtures(t *testing.T) {
	enginetest.LeakCheck(t)
	raw := readFixture(t, "completion_stream.raw_http.bin")
	for _, tc := range []struct {
		name string
		resp []byte
		body []byte // the SSE body, for the encoding/json oracle
	}{
		// The whole raw HTTP response: chunked, one chunk per event, Connection: close.
		{"raw_http", raw, dechunk(t, raw)},
		// The keep-alive capture, re-chunked one event per chunk.
		{"rechunked", fixtureStream(t, "completion_stream"), readFixture(t, "completion_stream.body.sse")},
		// Same request, later runs (cached prompt).
		{"run2", fixtureStream(t, "completion_stream_run2"), readFixture(t, "completion_stream_run2.body.sse")},
		{"run3", fixtureStream(t, "completion_stream_run3"), readFixture(t, "completion_stream_run3.body.sse")},
	} {
		srv := enginetest.NewServer(t, enginetest.ServeAlways(tc.resp))
		a := newAdapter(t, srv.URL(), Options{})
		wantToks, wantRes := expectedStream(t, tc.body)
		sink := &enginetest.RecSink{}
		res, err := a.Stream(enginetest.Ctx(t), testReq, sink)
		enginetest.CheckStream(t, tc.name, sink, res, err, wantToks, wantRes)
		if wantRes.FinishReason != "length" || wantRes.TokensOut != 8 || wantRes.Slot < 0 {
			t.Fatalf("%s: unexpected oracle %+v", tc.name, wantRes)
		}
	}
}

// TestStreamRequest checks what goes on the wire.
func TestStreamRequest(t *testing.T) {
	enginetest.LeakCheck(t)
	type got struct {
		line, host, ctype, accept string
		body                      []byte
	}
	ch := make(chan got, 1)
	srv := enginetest.NewServer(t, func(c *enginetest.Conn) {
		req, body, err := c.ReadRequest()
		if err != nil {
			return
		}
		ch <- got{req.Method + " " + req.RequestURI + " " + req.Proto, req.Host, req.Header.Get("Content-Type"), req.Header.Get("Accept"), body}
		_, _ = c.Write(sseResponse(finalEvent(0, "eos")))
	})
	a := newAdapter(t, srv.URL(), Options{})
	prompt := "quote\" back\\ nl\n tab\t ctrl\x01\x1f del\x7f é 😀 \u2028 </script>"
	req := &engines.Request{Prompt: prompt, MaxTokens: 16, Seed: -7, CachePrompt: false}
	if _, err := a.Stream(enginetest.Ctx(t), req, &enginetest.RecSink{}); err != nil {
		t.Fatal(err)
	}
	g := enginetest.Recv(t, ch, "the request the engine read")
	if g.line != "POST /completion HTTP/1.1" || g.host != srv.Addr() || g.ctype != "application/json" || g.accept != "text/event-stream" {
		t.Fatalf("request head: %+v", g)
	}
	var body map[string]any
	dec := json.NewDecoder(bytes.NewReader(g.body))
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("request body %q: %v", g.body, err)
	}
	want := map[string]any{"prompt": prompt, "n_predict": json.Number("16"), "stream": true,
		"seed": json.Number("-7"), "cache_prompt": false, "id_slot": json.Number("-1")}
	if !reflect.DeepEqual(body, want) {
		t.Fatalf("request body\n got %v\nwant %v", body, want)
	}
}

func TestStreamErrors(t *testing.T) {
	enginetest.LeakCheck(t)
	tok := func(n int) string { return tokenEvent(" w", n) }
	midstream := fixtureStream(t, "error_midstream_completion")
	for _, tc := range []struct {
		name     string
		resp     []byte
		kind     engines.ErrorKind
		status   int
		msg      string // substring of the message
		tokens   int
		afterTok bool
	}{
		// 400 exceed_context_size_error: the prompt does not fit (plain JSON even with stream:true).
		{"prompt too long", fixtureResponse(t, "error_prompt_too_long_stream", "body.json"), engines.KindContextLength, 400, "exceeds the available context size (1024 tokens)", 0, false},
		// 400 invalid_request_error.
		{"bad n_predict", fixtureResponse(t, "error_bad_n_predict", "body.json"), engines.KindInvalidRequest, 400, "type must be number", 0, false},
		// 500 before the stream.
		{"500", fixtureResponse(t, "error_500_completion_nonstream", "body.json"), engines.KindUpstream, 500, "does not match the expected", 0, false},
		// 500 for a bad JSON body (llama.cpp does not say 400).
		{"500 bad json", fixtureResponse(t, "error_bad_json", "body.json"), engines.KindUpstream, 500, "parse error", 0, false},
		// 404 (middleware key order: message, type, code).
		{"404", fixtureResponse(t, "not_found", "body.txt"), engines.KindInvalidRequest, 404, "File Not Found", 0, false},
		// 503 while loading.
		{"loading", fixtureResponse(t, "health_loading", "body.json"), engines.KindUnavailable, 503, "Loading model", 0, false},
		// 429 (llama.cpp never sends it, a proxy in front might).
		{"429", []byte("HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\nno"), engines.KindOverloaded, 429, "no", 0, false},
		// A 5xx with a non-JSON body keeps the text.
		{"502 text", []byte("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 11\r\nConnection: close\r\n\r\nbad gateway"), engines.KindUpstream, 502, "bad gateway", 0, false},
		// HTTP 200, four tokens, then a data: {"error":...} frame.
		{"midstream error", midstream, engines.KindUpstream, 0, "does not match the expected Content-only format", 4, true},
		// The connection closes after two tokens, inside the chunked body.
		{"cut", append([]byte(streamHeader), append(enginetest.Chunk([]byte(tok(1))), enginetest.Chunk([]byte(tok(2)))...)...), engines.KindUpstream, 0, "stream ended before the engine's final frame", 2, true},
		// A clean end of the body, but without the stop:true frame.
		{"no final frame", sseResponse(tok(1), tok(2)), engines.KindUpstream, 0, "stream ended before the engine's final frame", 2, true},
		// Cut before any token: retriable elsewhere.
		{"cut before tokens", []byte(streamHeader), engines.KindUpstream, 0, "stream ended before the engine's final frame", 0, false},
		// Cut inside an event.
		{"cut mid event", append([]byte(streamHeader), []byte("40\r\ndata: {\"content\":\"x\"")...), engines.KindUpstream, 0, "stream ended before", 0, false},
		// A frame that is not JSON.
		{"malformed frame", sseResponse(tok(1), "data: {\"content\":\"a\"\n\n", finalEvent(2, "eos")), engines.KindProtocol, 0, "not valid JSON", 1, true},
		// Very old builds: an `error:` line.
		{"legacy error line", sseResponse(tok(1), "error: {\"code\":500,\"message\":\"boom\",\"type\":\"server_error\"}\n\n"), engines.KindUpstream, 0, "boom", 1, true},
		// Broken chunk framing.
		{"bad chunk size", append([]byte(streamHeader), "zz\r\ndata: x\r\n"...), engines.KindProtocol, 0, "chunked", 0, false},
		// A 200 that is not an event stream.
		{"not sse", []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"), engines.KindProtocol, 200, "text/event-stream", 0, false},
		// Not HTTP at all.
		{"garbage", []byte("SSH-2.0-OpenSSH_9.2\r\n\r\n"), engines.KindProtocol, 0, "malformed response header", 0, false},
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
			e.AfterFirstToken != tc.afterTok || len(sink.Tokens()) != tc.tokens {
			t.Fatalf("%s: got %v (kind %v, status %d, after %v, %d tokens), want kind %v status %d msg %q after %v, %d tokens",
				tc.name, e, e.Kind, e.Status, e.AfterFirstToken, len(sink.Tokens()), tc.kind, tc.status, tc.msg, tc.afterTok, tc.tokens)
		}
		srv.Close()
	}
}

func TestStreamMidstreamFixtureTokens(t *testing.T) {
	enginetest.LeakCheck(t)
	srv := enginetest.NewServer(t, enginetest.ServeOnce(fixtureStream(t, "error_midstream_completion")))
	a := newAdapter(t, srv.URL(), Options{})
	sink := &enginetest.RecSink{}
	_, err := a.Stream(enginetest.Ctx(t), testReq, sink)
	if e, ok := engines.AsError(err); !ok || e.Retriable() {
		t.Fatalf("err %v: want a non-retriable *engines.Error", err)
	}
	if want := []string{" Laz", " obviously", " thoroughly", " kernel"}; !reflect.DeepEqual(sink.Tokens(), want) {
		t.Fatalf("tokens %q, want %q", sink.Tokens(), want)
	}
}

func TestStreamConnectRefused(t *testing.T) {
	enginetest.LeakCheck(t)
	a := newAdapter(t, enginetest.RefusedURL(t), Options{})
	_, err := a.Stream(enginetest.Ctx(t), testReq, &enginetest.RecSink{})
	if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindUnavailable || !e.Retriable() {
		t.Fatalf("err %v, want KindUnavailable", err)
	}
}

// TestStreamSplitEveryByte cuts a real stream (header and body) at every
// byte position into two writes.
func TestStreamSplitEveryByte(t *testing.T) {
	enginetest.LeakCheck(t)
	resp := fixtureStream(t, "completion_stream")
	wantToks, wantRes := expectedStream(t, readFixture(t, "completion_stream.body.sse"))
	var cut atomic.Int32
	a, _ := newPipeAdapter(t, 0, func(c *enginetest.Conn) {
		k := int(cut.Load())
		enginetest.WriteParts(resp[:k], resp[k:])(c)
	})
	for k := 1; k < len(resp); k++ {
		cut.Store(int32(k))
		sink := &enginetest.RecSink{}
		res, err := a.Stream(enginetest.Ctx(t), testReq, sink)
		enginetest.CheckStream(t, "cut at "+strconv.Itoa(k), sink, res, err, wantToks, wantRes)
	}
	// The same over loopback TCP, every request on one keep-alive connection.
	srv := enginetest.NewServer(t, func(c *enginetest.Conn) {
		for {
			if _, _, err := c.ReadRequest(); err != nil {
				return
			}
			k := int(cut.Load())
			if _, err := c.Write(resp[:k]); err != nil {
				return
			}
			if _, err := c.Write(resp[k:]); err != nil {
				return
			}
		}
	})
	tcp := newAdapter(t, srv.URL(), Options{})
	for k := 1; k < len(resp); k++ {
		cut.Store(int32(k))
		sink := &enginetest.RecSink{}
		res, err := tcp.Stream(enginetest.Ctx(t), testReq, sink)
		enginetest.CheckStream(t, "tcp cut at "+strconv.Itoa(k), sink, res, err, wantToks, wantRes)
	}
	if n := srv.Accepts(); n != 1 {
		t.Fatalf("%d TCP connections, want 1", n)
	}
	// And one byte per write.
	parts := make([][]byte, len(resp))
	for i := range resp {
		parts[i] = resp[i : i+1]
	}
	b, _ := newPipeAdapter(t, 0, enginetest.WriteParts(parts...))
	sink := &enginetest.RecSink{}
	res, err := b.Stream(enginetest.Ctx(t), testReq, sink)
	enginetest.CheckStream(t, "byte by byte", sink, res, err, wantToks, wantRes)
}

// TestStreamFlushPerBatch checks that Flush comes once per burst of frames
// that arrived together, before waiting for more.
func TestStreamFlushPerBatch(t *testing.T) {
	enginetest.LeakCheck(t)
	ev := func(n int) []byte { return enginetest.Chunk([]byte(tokenEvent(" t", n))) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tc := range []struct {
		name  string
		parts [][]byte
		log   string
	}{
		// Three events in one write, one alone, two together, then the final frame.
		{"batches", [][]byte{[]byte(streamHeader), cat(ev(1), ev(2), ev(3)), ev(4), cat(ev(5), ev(6)), enginetest.Chunk([]byte(finalEvent(6, "eos"))), []byte("0\r\n\r\n")}, "TTTFTFTTF"},
		// Header and all frames in one write: nothing to flush before the end.
		{"one write", [][]byte{cat([]byte(streamHeader), ev(1), ev(2), enginetest.Chunk([]byte(finalEvent(2, "eos"))), []byte("0\r\n\r\n"))}, "TT"},
		// A batch that ends inside an event: flush before waiting for its rest.
		{"partial event", [][]byte{[]byte(streamHeader), cat(ev(1), ev(2)[:20]), cat(ev(2)[20:], enginetest.Chunk([]byte(finalEvent(2, "eos"))), []byte("0\r\n\r\n"))}, "TFT"},
		// Empty-content frames deliver nothing and need no flush.
		{"empty frames", [][]byte{[]byte(streamHeader), enginetest.Chunk([]byte(tokenEvent("", 1))), ev(2), enginetest.Chunk([]byte(tokenEvent("", 3))), enginetest.Chunk([]byte(finalEvent(3, "eos"))), []byte("0\r\n\r\n")}, "TF"},
	} {
		a, _ := newPipeAdapter(t, 0, enginetest.WriteParts(tc.parts...))
		sink := &enginetest.RecSink{}
		if _, err := a.Stream(enginetest.Ctx(t), testReq, sink); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := sink.Log(); got != tc.log {
			t.Errorf("%s: sink saw %q, want %q (T token, F flush)", tc.name, got, tc.log)
		}
	}
}

func TestStreamUTF8(t *testing.T) {
	enginetest.LeakCheck(t)
	for _, tc := range []struct {
		name   string
		events []string
		want   []string
	}{
		// ENGINES.md §1 capture: llama.cpp withholds the split token; the next frame carries both.
		{"engines example", []string{
			"data: {\"index\":0,\"content\":\"😀\",\"tokens\":[141334],\"stop\":false,\"id_slot\":-1,\"tokens_predicted\":1,\"tokens_evaluated\":26}\n\n",
			"data: {\"index\":0,\"content\":\" 😂\",\"tokens\":[224],\"stop\":false,\"id_slot\":-1,\"tokens_predicted\":3,\"tokens_evaluated\":26}\n\n",
		}, []string{"😀", " 😂"}},
		// Defensive: raw bytes of one character split over two frames are joined.
		{"split raw", []string{"data: {\"content\":\"a\xF0\x9F\"}\n\n", "data: {\"content\":\"\x98\x80b\"}\n\n"}, []string{"a", "😀b"}},
		// Split over three frames, with an empty frame between.
		{"split thrice", []string{"data: {\"content\":\"\xF0\"}\n\n", "data: {\"content\":\"\"}\n\n", "data: {\"content\":\"\x9F\"}\n\n", "data: {\"content\":\"\x98\x80\"}\n\n"}, []string{"😀"}},
		// A character that never completes becomes U+FFFD at the end.
		{"never completed", []string{"data: {\"content\":\"x\xE2\x82\"}\n\n"}, []string{"x", "\uFFFD\uFFFD"}},
		// Invalid bytes inside a frame become U+FFFD at once.
		{"invalid", []string{"data: {\"content\":\"a\xFFb\"}\n\n"}, []string{"a\uFFFDb"}},
		// Escaped surrogate pairs decode; lone ones are U+FFFD, as encoding/json.
		{"escaped", []string{"data: {\"content\":\"\\ud83d\\ude00\\ud83d\"}\n\n"}, []string{"😀\uFFFD"}},
	} {
		evs := append(tc.events, finalEvent(4, "eos"))
		srv := enginetest.NewServer(t, enginetest.ServeAlways(sseResponse(evs...)))
		a := newAdapter(t, srv.URL(), Options{})
		sink := &enginetest.RecSink{}
		if _, err := a.Stream(enginetest.Ctx(t), testReq, sink); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := sink.Tokens(); !reflect.DeepEqual(got, tc.want) {
			t.Fatalf("%s: tokens %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestStreamFinishReason(t *testing.T) {
	enginetest.LeakCheck(t)
	for _, tc := range []struct{ stopType, want string }{
		{"eos", "stop"},     // end of sequence
		{"word", "stop"},    // stop string
		{"limit", "length"}, // n_predict reached
		{"none", "length"},  // as ENGINES.md maps it
	} {
		srv := enginetest.NewServer(t, enginetest.ServeAlways(sseResponse(tokenEvent("a", 1), finalEvent(1, tc.stopType))))
		a := newAdapter(t, srv.URL(), Options{})
		res, err := a.Stream(enginetest.Ctx(t), testReq, &enginetest.RecSink{})
		want := engines.Result{TokensOut: 1, TokensIn: 2, DecodeMs: 13, FinishReason: tc.want, Slot: 1}
		if err != nil || res != want {
			t.Fatalf("stop_type %s: %+v %v, want %+v", tc.stopType, res, err, want)
		}
	}
}

// TestStreamCancel aborts while the engine is silent before its header and
// in the middle of the body: Stream returns context.Canceled and the engine
// sees the connection close.
func TestStreamCancel(t *testing.T) {
	enginetest.LeakCheck(t)
	enginetest.CheckCancel(t, []enginetest.CancelPoint{
		{Name: "waiting for header"}, // prefill: nothing sent yet
		{Name: "mid body", Write: append([]byte(streamHeader), append(enginetest.Chunk(tokenEvent("a", 1)), enginetest.Chunk(tokenEvent("b", 2))...)...), Tokens: 2},
	}, func(url string) enginetest.StreamFunc {
		a := newAdapter(t, url, Options{})
		return func(ctx context.Context, sink engines.Sink) error {
			_, err := a.Stream(ctx, testReq, sink)
			if n := a.hc.IdleConns(); n != 0 {
				t.Errorf("%d pooled connections after cancel", n)
			}
			return err
		}
	})
}

func TestStreamCanceledBeforeStart(t *testing.T) {
	enginetest.LeakCheck(t)
	a, pd := newPipeAdapter(t, 0, enginetest.WriteParts())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Stream(ctx, testReq, &enginetest.RecSink{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if pd.Dials() != 0 {
		t.Fatal("dialed for a canceled request")
	}
}

func TestStreamHeaderTimeout(t *testing.T) {
	enginetest.LeakCheck(t)
	srv := enginetest.NewServer(t, func(c *enginetest.Conn) {
		if _, _, err := c.ReadRequest(); err == nil {
			c.WaitClosed() // silent engine
		}
	})
	a := newAdapter(t, srv.URL(), Options{HeaderTimeout: 20 * time.Millisecond})
	_, err := a.Stream(enginetest.Ctx(t), testReq, &enginetest.RecSink{})
	var ne net.Error
	if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindUpstream || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err %v, want KindUpstream wrapping a timeout", err)
	}
}

// TestStreamKeepAlive checks that connections are reused after a fully read
// body, and not after Connection: close or trailing garbage.
func TestStreamKeepAlive(t *testing.T) {
	enginetest.LeakCheck(t)
	good := sseResponse(tokenEvent("a", 1), finalEvent(1, "eos"))
	for _, tc := range []struct {
		name    string
		resp    []byte
		accepts int
	}{
		// Keep-alive chunked stream: one connection for both requests.
		{"reused", good, 1},
		// The real capture says Connection: close.
		{"connection close", readFixture(t, "completion_stream.raw_http.bin"), 2},
		// An extra frame after the final one: the stream succeeds, the conn is dropped.
		{"extra frame", sseResponse(tokenEvent("a", 1), finalEvent(1, "eos"), tokenEvent("b", 2)), 2},
		// Bytes after the end of the chunked body.
		{"trailing garbage", append(append([]byte(nil), good...), "junk"...), 2},
		// Errors with a keep-alive Content-Length body are reused too.
		{"error body", []byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\n{}"), 1},
	} {
		srv := enginetest.NewServer(t, enginetest.ServeAlways(tc.resp))
		a := newAdapter(t, srv.URL(), Options{})
		for i := range 2 {
			_, err := a.Stream(enginetest.Ctx(t), testReq, &enginetest.RecSink{})
			if tc.name == "error body" {
				if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindInvalidRequest {
					t.Fatalf("%s: err %v", tc.name, err)
				}
			} else if err != nil {
				t.Fatalf("%s #%d: %v", tc.name, i, err)
			}
		}
		if got := srv.Accepts(); got != tc.accepts {
			t.Fatalf("%s: %d connections, want %d", tc.name, got, tc.accepts)
		}
		if tc.accepts == 1 {
			if n := a.hc.IdleConns(); n != 1 {
				t.Fatalf("%s: %d idle, want 1", tc.name, n)
			}
			_ = a.Close()
			if n := a.hc.IdleConns(); n != 0 {
				t.Fatalf("%s: %d idle after Close", tc.name, n)
			}
		}
		srv.Close()
	}
}

// TestStreamRedial: a pooled connection the engine has closed is replaced
// by a new one without reporting a failure; if the engine is gone the error
// is KindUnavailable.
func TestStreamRedial(t *testing.T) {
	enginetest.LeakCheck(t)
	resp := sseResponse(tokenEvent("a", 1), finalEvent(1, "eos"))
	closed := make(chan struct{}, 4)
	srv := enginetest.NewServer(t, func(c *enginetest.Conn) {
		if _, _, err := c.ReadRequest(); err != nil {
			return
		}
		_, _ = c.Write(resp)
		_ = c.Close() // idle close, without Connection: close
		closed <- struct{}{}
	})
	a := newAdapter(t, srv.URL(), Options{})
	for i := range 2 {
		if _, err := a.Stream(enginetest.Ctx(t), testReq, &enginetest.RecSink{}); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		enginetest.Wait(t, closed, "the engine's close")
		// The conn was pooled: the next stream finds it dead and redials.
		if n := a.hc.IdleConns(); n != 1 {
			t.Fatalf("stream %d: %d idle connections, want 1", i, n)
		}
	}
	if got := srv.Accepts(); got != 2 {
		t.Fatalf("%d connections, want 2", got)
	}
	// The engine goes away: the dead pooled conn is redialed once, refused.
	srv.Close()
	_, err := a.Stream(enginetest.Ctx(t), testReq, &enginetest.RecSink{})
	if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindUnavailable {
		t.Fatalf("err %v, want KindUnavailable", err)
	}
}

// TestStreamNoRedialFresh: a new connection that ends before the header is
// an upstream failure, not retried by the adapter.
func TestStreamNoRedialFresh(t *testing.T) {
	enginetest.LeakCheck(t)
	srv := enginetest.NewServer(t, func(c *enginetest.Conn) { _, _, _ = c.ReadRequest() })
	a := newAdapter(t, srv.URL(), Options{})
	_, err := a.Stream(enginetest.Ctx(t), testReq, &enginetest.RecSink{})
	if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindUpstream {
		t.Fatalf("err %v, want KindUpstream", err)
	}
	if got := srv.Accepts(); got != 1 {
		t.Fatalf("%d connections, want 1", got)
	}
}

func TestHealth(t *testing.T) {
	enginetest.LeakCheck(t)
	enginetest.CheckHealth(t, []enginetest.HealthCase{
		{Name: "ready", Resp: fixtureResponse(t, "health", "body.json"), OK: true},                                      // 200 {"status":"ok"}
		{Name: "loading", Resp: fixtureResponse(t, "health_loading", "body.json"), Msg: "Loading model"},                // 503 while loading
		{Name: "500", Resp: []byte("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"), Msg: "HTTP 500"}, // anything else: not ready
	}, func(url string) func(context.Context) error { return newAdapter(t, url, Options{}).Health })
}

func TestProps(t *testing.T) {
	enginetest.LeakCheck(t)
	var paths []string
	props := fixtureResponse(t, "props", "body.json") // read (or skip) on the test goroutine
	srv := enginetest.NewServer(t, func(c *enginetest.Conn) {
		for {
			req, _, err := c.ReadRequest()
			if err != nil {
				return
			}
			paths = append(paths, req.Method+" "+req.RequestURI)
			_, _ = c.Write(props)
		}
	})
	a := newAdapter(t, srv.URL()+"/", Options{})
	p, err := a.Props(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := engines.Props{Slots: 2, CtxMax: 1024, EngineVersion: "b10470-34af94cd9", Model: "tiny.gguf"}
	if p != want {
		t.Fatalf("props %+v, want %+v", p, want)
	}
	// Health and Props share the keep-alive connection.
	if _, err := a.Props(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if got := srv.Accepts(); got != 1 || !reflect.DeepEqual(paths, []string{"GET /props", "GET /props"}) {
		t.Fatalf("%d connections, paths %v", got, paths)
	}

	// model_path when there is no alias; float-printed numbers.
	srv2 := enginetest.NewServer(t, enginetest.ServeAlways(httpResp("200 OK",
		`{"default_generation_settings":{"n_ctx":4096.0},"total_slots":4,"model_path":"/m/q.gguf","model_alias":null}`)))
	p, err = newAdapter(t, srv2.URL(), Options{}).Props(context.Background())
	if want := (engines.Props{Slots: 4, CtxMax: 4096, Model: "/m/q.gguf"}); err != nil || p != want {
		t.Fatalf("props %+v %v, want %+v", p, err, want)
	}
	// Loading.
	srv3 := enginetest.NewServer(t, enginetest.ServeAlways(fixtureResponse(t, "health_loading", "body.json")))
	_, err = newAdapter(t, srv3.URL(), Options{}).Props(context.Background())
	if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindUnavailable {
		t.Fatalf("loading: %v", err)
	}
}

func TestEraseSlot(t *testing.T) {
	enginetest.LeakCheck(t)
	reqs := make(chan string, 4)
	srv := enginetest.NewServer(t, func(c *enginetest.Conn) {
		for {
			req, body, err := c.ReadRequest()
			if err != nil {
				return
			}
			reqs <- req.Method + " " + req.RequestURI + " " + string(body)
			if strings.HasPrefix(req.RequestURI, "/slots/9") {
				_, _ = c.Write(httpResp("400 Bad Request", `{"error":{"code":400,"message":"Invalid slot ID","type":"invalid_request_error"}}`))
				continue
			}
			_, _ = c.Write(httpResp("200 OK", `{"id_slot":1,"n_erased":7}`))
		}
	})
	a := newAdapter(t, srv.URL(), Options{})
	if err := a.EraseSlot(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if got := enginetest.Recv(t, reqs, "the erase request"); got != "POST /slots/1?action=erase {}" {
		t.Fatalf("request %q", got)
	}
	err := a.EraseSlot(context.Background(), 9)
	if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindInvalidRequest || e.Message != "Invalid slot ID" {
		t.Fatalf("slot 9: %v", err)
	}
	if e, ok := engines.AsError(a.EraseSlot(context.Background(), -1)); !ok || e.Kind != engines.KindInvalidRequest {
		t.Fatalf("slot -1: %v", e)
	}
}

// TestCallCanceled: probes honour ctx.
func TestCallCanceled(t *testing.T) {
	enginetest.LeakCheck(t)
	gotReq := make(chan struct{})
	srv := enginetest.NewServer(t, func(c *enginetest.Conn) {
		if _, _, err := c.ReadRequest(); err == nil {
			close(gotReq)
			c.WaitClosed()
		}
	})
	a := newAdapter(t, srv.URL(), Options{})
	ctx, cancel := context.WithCancel(enginetest.Ctx(t))
	defer cancel()
	go func() {
		select {
		case <-gotReq:
			cancel()
		case <-ctx.Done(): // Health returned without the engine reading the request
		}
	}()
	if err := a.Health(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

// TestStreamSinkPanic: a panicking sink does not leak the engine connection.
func TestStreamSinkPanic(t *testing.T) {
	enginetest.LeakCheck(t)
	enginetest.CheckSinkPanic(t, append([]byte(streamHeader), enginetest.Chunk(tokenEvent("a", 1))...), func(url string) enginetest.StreamFunc {
		return stream(newAdapter(t, url, Options{}))
	})
}

// TestStreamNoTokenAfterCancel: frames already buffered when ctx is
// canceled are not delivered.
func TestStreamNoTokenAfterCancel(t *testing.T) {
	enginetest.LeakCheck(t)
	var evs []string
	for i := range 5 {
		evs = append(evs, tokenEvent("w", i+1))
	}
	a, _ := newPipeAdapter(t, 0, enginetest.WriteParts(sseResponse(append(evs, finalEvent(5, "eos"))...)))
	enginetest.CheckNoTokenAfterCancel(t, stream(a))
}
