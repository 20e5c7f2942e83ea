package httpc

import (
	"bytes"
	"errors"
	"io"
	"net/http/httputil"
	"os"
	"testing"

	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
)

// streamHeader is a llama.cpp stream response header, as captured.
const streamHeader = "HTTP/1.1 200 OK\r\nServer: llama.cpp\r\nAccess-Control-Allow-Origin: \r\nX-Accel-Buffering: no\r\n" +
	"Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5, max=100\r\n\r\n"

// countConn is a MemConn that counts network reads.
type countConn struct {
	enginetest.MemConn
	reads int
}

func (c *countConn) Read(p []byte) (int, error) {
	c.reads++
	return c.MemConn.Read(p)
}

// readAllChecked reads a body to its end in small reads, checking the
// Buffered promise: when it says n > 0, the next Read returns at least
// min(n, len(p)) bytes without reading from the network.
func readAllChecked(t *testing.T, b *Body, cc *countConn, step int) ([]byte, error) {
	t.Helper()
	var out []byte
	p := make([]byte, step)
	for {
		buffered := b.Buffered()
		reads := cc.reads
		n, err := b.Read(p)
		if buffered > 0 && (cc.reads != reads || n < min(buffered, len(p))) {
			t.Fatalf("Buffered said %d, then Read returned %d bytes with %d network reads", buffered, n, cc.reads-reads)
		}
		out = append(out, p[:n]...)
		if err == io.EOF {
			if !b.done {
				t.Fatal("io.EOF without done")
			}
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

func TestChunkedBody(t *testing.T) {
	f := func(name, in, want string, ok bool) {
		t.Helper()
		for _, step := range []int{1, 3, 4096} {
			cc := &countConn{MemConn: enginetest.MemConn{Segs: [][]byte{[]byte(in)}}}
			c := newConn(cc)
			var b Body
			b.reset(c, &response{chunked: true, length: -1})
			got, err := readAllChecked(t, &b, cc, step)
			if (err == nil) != ok || (ok && string(got) != want) {
				t.Fatalf("%s (step %d): got %q, %v; want %q ok=%v", name, step, got, err, want, ok)
			}
		}
	}
	f("plain", "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", "abcde", true)
	f("hex sizes", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789", true)
	f("extension", "3;name=v\r\nabc\r\n0;x\r\n\r\n", "abc", true)
	f("trailers", "1\r\na\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\n", "a", true)
	f("bare LF", "1\na\n0\n\n", "a", true)
	f("whitespace", "1 \r\na\r\n0\t\r\n\r\n", "a", true)
	f("empty body", "0\r\n\r\n", "", true)
	f("cut in data", "5\r\nab", "", false)
	f("cut in size", "5", "", false)
	f("cut before trailer end", "1\r\na\r\n0\r\n", "", false)
	f("bad size", "x\r\nabc\r\n", "", false)
	f("no size", "\r\nabc\r\n", "", false)
	f("huge size", "1000000000000000\r\n", "", false)
	f("data overrun", "1\r\nab\r\n0\r\n\r\n", "", false)
	f("long size line", string(bytes.Repeat([]byte{'0'}, 5000))+"\r\n", "", false)
}

func TestLengthAndCloseBodies(t *testing.T) {
	for _, tc := range []struct {
		name string
		resp response
		in   string
		want string
		ok   bool
	}{
		{"length", response{length: 3}, "abcdef", "abc", true},     // stops at Content-Length
		{"length short", response{length: 9}, "abc", "abc", false}, // cut: unexpected EOF
		{"length zero", response{length: 0}, "abc", "", true},      // no body
		{"close", response{length: -1, close: true}, "abc", "abc", true},
	} {
		cc := &countConn{MemConn: enginetest.MemConn{Segs: [][]byte{[]byte(tc.in)}}}
		var b Body
		b.reset(newConn(cc), &tc.resp)
		got, err := readAllChecked(t, &b, cc, 2)
		if (err == nil) != tc.ok || string(got) != tc.want {
			t.Fatalf("%s: %q %v", tc.name, got, err)
		}
	}
}

func TestParseHeader(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want response
		ok   bool
	}{
		{"llama stream", streamHeader, response{status: 200, chunked: true, length: -1, contentType: true, eventStream: true, keepAlive: 5e9}, true},
		{"error close", "HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\nConnection: close\r\n\r\n", response{status: 400, length: 2, close: true}, true},
		{"no reason", "HTTP/1.1 400\r\nContent-Length: 2\r\n\r\n", response{status: 400, length: 2}, true},
		{"http 1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", response{status: 200, length: 2, close: true}, true},
		{"http 1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n", response{status: 200, length: 2}, true},
		{"no length", "HTTP/1.1 200 OK\r\n\r\n", response{status: 200, length: -1, close: true}, true},
		{"both", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", response{status: 200, chunked: true, length: -1, close: true}, true},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", response{status: 204, length: 0}, true},
		{"case", "HTTP/1.1 200 OK\r\ncontent-type: TEXT/EVENT-STREAM; charset=utf-8\r\ntransfer-encoding: Chunked\r\n\r\n", response{status: 200, chunked: true, length: -1, contentType: true, eventStream: true}, true},
		{"gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", response{}, false},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", response{}, false},
		{"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", response{}, false},
		{"no colon", "HTTP/1.1 200 OK\r\nbroken\r\n\r\n", response{}, false},
		{"bad status", "HTTP/1.1 2x0 OK\r\n\r\n", response{}, false},
		{"not http", "ICY 200 OK\r\n\r\n", response{}, false},
	} {
		var got response
		err := parseHeader([]byte(tc.in), &got)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("%s: %+v %v, want %+v ok=%v", tc.name, got, err, tc.want, tc.ok)
		}
	}
}

// TestReadResponseInterim skips 1xx responses and bounds the header size.
func TestReadResponseInterim(t *testing.T) {
	c := newConn(&enginetest.MemConn{Segs: [][]byte{[]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")}})
	var r response
	if _, err := c.readResponse(&r); err != nil || r.status != 200 || c.buffered() != 1 {
		t.Fatalf("%+v %v", r, err)
	}
	big := append([]byte("HTTP/1.1 200 OK\r\n"), bytes.Repeat([]byte("X-A: b\r\n"), 4000)...)
	c = newConn(&enginetest.MemConn{Segs: [][]byte{big}})
	if _, err := c.readResponse(&r); !errors.Is(err, errHeaderTooLarge) {
		t.Fatalf("huge header: %v", err)
	}
}

// FuzzChunkedBody checks the de-chunker against net/http/httputil (same
// bytes whenever both accept the input), the Buffered promise, and that it
// never panics, for any input split anywhere.
func FuzzChunkedBody(f *testing.F) {
	f.Add([]byte("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), uint16(3), uint16(9))
	f.Add([]byte("7c\r\ndata: x\n\n\r\n0\r\nT: 1\r\n\r\n"), uint16(1), uint16(40))
	f.Add([]byte("1;e=1\r\na\r\n0\r\n\r\n"), uint16(0), uint16(0))
	// A real llama.cpp capture, when the shared fixtures sit beside the repo.
	if raw, err := os.ReadFile("../../../../shared/fixtures/llamacpp/completion_stream.raw_http.bin"); err == nil {
		f.Add(raw[bytes.Index(raw, []byte("\r\n\r\n"))+4:], uint16(130), uint16(700))
	}
	f.Fuzz(func(t *testing.T, in []byte, cut1, cut2 uint16) {
		cc := &countConn{MemConn: enginetest.MemConn{Segs: enginetest.SplitAt(in, int(cut1), int(cut2))}}
		var b Body
		b.reset(newConn(cc), &response{chunked: true, length: -1})
		got, err := readAllChecked(t, &b, cc, 7)
		want, werr := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(in)))
		if err == nil && werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("de-chunked %q, httputil %q", got, want)
		}
	})
}
