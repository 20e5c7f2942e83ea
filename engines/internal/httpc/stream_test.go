package httpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
	"github.com/llama-orch/llama-orch/sse"
)

// memClient is a Client whose every connection replays resp.
func memClient(t *testing.T, resp string) *Client {
	t.Helper()
	c, err := New("http://engine.test:8080", Options{Dial: enginetest.MemDialer([]byte(resp))})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestStartStream(t *testing.T) {
	const errJSON = `{"error":{"code":400,"message":"bad"}}`
	for _, tc := range []struct {
		name    string
		resp    string
		ok      bool
		status  int
		errBody string
		kind    engines.ErrorKind // of err; 0: no error
	}{
		// A 2xx event stream: the caller decodes it.
		{"stream", streamHeader, true, 200, "", 0},
		// No Content-Type at all is taken as a stream too.
		{"no content type", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, 200, "", 0},
		// A non-2xx answer: its body for the caller to map.
		{"status", fmt.Sprintf("HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s", len(errJSON), errJSON), false, 400, errJSON, 0},
		// A 2xx answer that is not an event stream.
		{"json 200", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", false, 200, "", engines.KindProtocol},
		// Not HTTP: Start's error.
		{"garbage", "ICY 200 OK\r\n\r\n", false, 0, "", engines.KindProtocol},
	} {
		c := memClient(t, tc.resp)
		var x Exchange
		buf := make([]byte, 0, 8)
		body, ok, err := c.StartStream(enginetest.Ctx(t), []byte("GET / HTTP/1.1\r\n\r\n"), 0, &x, &buf, 1<<10)
		if ok != tc.ok || string(body) != tc.errBody || (tc.status != 0 && x.Status != tc.status) {
			t.Errorf("%s: ok=%v status %d body %q, want ok=%v status %d body %q", tc.name, ok, x.Status, body, tc.ok, tc.status, tc.errBody)
		}
		if e, isE := engines.AsError(err); (err != nil) != (tc.kind != 0) || (err != nil && (!isE || e.Kind != tc.kind)) {
			t.Errorf("%s: err %v, want kind %v", tc.name, err, tc.kind)
		}
		if ok != x.Active() {
			t.Errorf("%s: ok=%v but Active=%v (released only when not ok)", tc.name, ok, x.Active())
		}
		if tc.errBody != "" && cap(buf) < len(tc.errBody) {
			t.Errorf("%s: the grown error buffer was not kept (cap %d)", tc.name, cap(buf))
		}
		c.Release(&x, false)
	}
}

func TestStreamError(t *testing.T) {
	cause := errors.New("cause")
	err := StreamError(context.Background(), true, engines.KindUpstream, "cut", cause)
	if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindUpstream || e.Message != "cut" || !e.AfterFirstToken || !errors.Is(err, cause) {
		t.Errorf("StreamError = %#v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := StreamError(ctx, true, engines.KindUpstream, "cut", cause); err != context.Canceled {
		t.Errorf("StreamError after cancel = %v, want context.Canceled", err)
	}
}

func TestReadError(t *testing.T) {
	f := func(name string, in error, kind engines.ErrorKind, msg string) {
		t.Helper()
		err := ReadError(context.Background(), in, false, "stream ended early")
		if e, ok := engines.AsError(err); !ok || e.Kind != kind || e.Message != msg || !errors.Is(err, in) {
			t.Errorf("%s: %v, want kind %v %q", name, err, kind, msg)
		}
	}
	f("too large", sse.ErrFrameTooLarge, engines.KindProtocol, "engine event exceeds the size limit")
	f("chunking", protoChunk, engines.KindProtocol, "malformed chunked body from the engine")
	f("eof", io.ErrUnexpectedEOF, engines.KindUpstream, "stream ended early")
}

func TestStatusError(t *testing.T) {
	f := func(status int, msg, body string, kind engines.ErrorKind, wantMsg string) {
		t.Helper()
		e := StatusError(status, msg, []byte(body))
		if e.Kind != kind || e.Status != status || e.Message != wantMsg {
			t.Errorf("StatusError(%d, %q, %q) = %v %d %q, want %v %q", status, msg, body, e.Kind, e.Status, e.Message, kind, wantMsg)
		}
	}
	f(503, "Loading model", "", engines.KindUnavailable, "Loading model")
	f(429, "", "too many", engines.KindOverloaded, "too many") // the body's excerpt
	f(400, "bad", "ignored", engines.KindInvalidRequest, "bad")
	f(404, "", " \n", engines.KindInvalidRequest, "HTTP 404") // nothing printable
	f(500, "boom", "", engines.KindUpstream, "boom")
	f(502, "", "<html>bad gateway</html>", engines.KindUpstream, "<html>bad gateway</html>")
	f(302, "", "", engines.KindProtocol, "unexpected HTTP status 302: HTTP 302")
	if m := ErrorMessage(500, "", []byte(strings.Repeat("x", 5000))); len(m) >= 5000 {
		t.Errorf("ErrorMessage kept a %d-byte body whole, want an excerpt", len(m))
	}
}

func TestDrainEvents(t *testing.T) {
	f := func(name, body string, want bool) {
		t.Helper()
		var x Exchange
		x.BodyUntilClose(&enginetest.MemConn{Segs: [][]byte{[]byte(body)}})
		rd := sse.NewReader(&x.Body, 0)
		var ev sse.Frame
		if err := rd.Next(&ev); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := x.DrainEvents(rd, &ev, 0); got != want {
			t.Errorf("%s: DrainEvents = %v, want %v", name, got, want)
		}
	}
	f("clean end", "data: final\n\n", true)
	f("comment after", "data: final\n\n: ping\n\n", false)
	f("event after", "data: final\n\ndata: more\n\n", false)
}
