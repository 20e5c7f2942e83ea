package fake

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A small purpose-built HTTP/1.1 server: requests are parsed with
// http.ReadRequest, responses are written byte for byte, so the fake controls
// header order, chunk boundaries (one chunk per SSE event) and can drop a
// connection mid-body. One goroutine per connection, plus one per streaming
// request that watches the socket for the client leaving.

// Keep-alive policy of cpp-httplib as llama-server configures it: an idle
// connection is closed after 5 s, and the 100th response on a connection
// carries `Connection: close`.
const (
	keepAliveTimeout = 5 * time.Second
	keepAliveMax     = 100
	readTimeout      = 600 * time.Second
	keepAliveHeader  = "Keep-Alive: timeout=5, max=100\r\n"
	maxBody          = 64 << 20
)

var aLongTimeAgo = time.Unix(1, 0)

// request is one parsed request; body is fully read.
type request struct {
	method string
	path   string
	query  string
	origin string
	body   []byte
	// keepAlive: the connection may serve another request after this one.
	keepAlive bool
}

// conn is one client connection.
type conn struct {
	s  *Server
	c  net.Conn
	cr connReader
	br *bufio.Reader
	// out is the connection's write buffer, reused across requests.
	out []byte
}

// connReader reads the connection, first returning a byte the watcher took
// off the socket (the start of a pipelined request).
type connReader struct {
	c          net.Conn
	pending    byte
	hasPending bool
}

func (r *connReader) Read(p []byte) (int, error) {
	if r.hasPending {
		if len(p) == 0 {
			return 0, nil
		}
		p[0] = r.pending
		r.hasPending = false
		return 1, nil
	}
	return r.c.Read(p)
}

// serveConn serves one connection's requests; it runs on the server's
// group, which recovers a panic.
func (s *Server) serveConn(c net.Conn) {
	defer s.g.Untrack(c)
	defer c.Close()
	cc := &conn{s: s, c: c}
	cc.cr.c = c
	cc.br = bufio.NewReaderSize(&cc.cr, 4096)
	for n := 1; ; n++ {
		// Idle keep-alive wait, then llama-server's 600 s read timeout for
		// the request itself.
		if err := c.SetReadDeadline(time.Now().Add(keepAliveTimeout)); err != nil {
			return
		}
		if _, err := cc.br.Peek(1); err != nil {
			return
		}
		if err := c.SetReadDeadline(time.Now().Add(readTimeout)); err != nil {
			return
		}
		hr, err := http.ReadRequest(cc.br)
		if err != nil {
			var ne net.Error
			if err != io.EOF && !errors.Is(err, net.ErrClosed) && !(errors.As(err, &ne) && ne.Timeout()) && !errors.Is(err, io.ErrUnexpectedEOF) {
				cc.writeJSON(&request{}, http.StatusBadRequest, errorBody(http.StatusBadRequest, "Bad Request", "invalid_request_error"))
			}
			return
		}
		r := &request{
			method:    hr.Method,
			path:      hr.URL.Path,
			query:     hr.URL.RawQuery,
			origin:    hr.Header.Get("Origin"),
			keepAlive: !hr.Close && n < keepAliveMax && hr.ProtoAtLeast(1, 1),
		}
		if hr.Header.Get("Expect") == "100-continue" && hr.ContentLength != 0 {
			if _, err := c.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n")); err != nil {
				return
			}
		}
		body, err := io.ReadAll(io.LimitReader(hr.Body, maxBody+1))
		if err != nil {
			return
		}
		if len(body) > maxBody {
			cc.writeJSON(r, http.StatusRequestEntityTooLarge, errorBody(http.StatusRequestEntityTooLarge, "Payload Too Large", "invalid_request_error"))
			return
		}
		r.body = body
		if err := c.SetReadDeadline(time.Time{}); err != nil {
			return
		}
		if !s.route(cc, r) {
			return
		}
		if cap(cc.out) > 64<<10 {
			cc.out = nil // don't pin a huge buffer to an idle connection
		}
	}
}

// appendHead appends a response head. extra holds pre-rendered header lines
// placed after Access-Control-Allow-Origin; contentLength < 0 means chunked.
// Errors (status ≥ 400) always close the connection, as cpp-httplib does.
func appendHead(b []byte, r *request, status int, extra, contentType string, contentLength int) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\nServer: llama.cpp\r\nAccess-Control-Allow-Origin: "...)
	b = append(b, sanitizeHeader(r.origin)...)
	b = append(b, "\r\n"...)
	b = append(b, extra...)
	b = append(b, "Content-Type: "...)
	b = append(b, contentType...)
	if contentLength < 0 {
		b = append(b, "\r\nTransfer-Encoding: chunked\r\n"...)
	} else {
		b = append(b, "\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(contentLength), 10)
		b = append(b, "\r\n"...)
	}
	if r.keepAlive && status < 400 {
		b = append(b, keepAliveHeader...)
	} else {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

func sanitizeHeader(v string) string {
	if strings.ContainsAny(v, "\r\n") {
		return ""
	}
	return v
}

// appendChunk appends p as one HTTP chunk.
func appendChunk(b, p []byte) []byte {
	b = strconv.AppendInt(b, int64(len(p)), 16)
	b = append(b, "\r\n"...)
	b = append(b, p...)
	return append(b, "\r\n"...)
}

const lastChunk = "0\r\n\r\n"

const (
	ctypeJSON = "application/json; charset=utf-8"
	ctypeSSE  = "text/event-stream"
)

// writeResponse writes a complete response with a Content-Length body and
// reports whether the connection may be reused.
func (cc *conn) writeResponse(r *request, status int, extra, contentType string, body []byte) bool {
	b := appendHead(cc.out[:0], r, status, extra, contentType, len(body))
	b = append(b, body...)
	cc.out = b
	_, err := cc.c.Write(b)
	return err == nil && r.keepAlive && status < 400
}

func (cc *conn) writeJSON(r *request, status int, body []byte) bool {
	return cc.writeResponse(r, status, "", ctypeJSON, body)
}

// watch tells a request handler when its client has gone. While it runs, a
// goroutine blocks in Read on the socket: EOF or an error means the client
// closed the connection (the request body has been read, so a well-behaved
// client sends nothing until the response ends; a byte that does arrive is
// kept for the next request).
type watch struct {
	cc       *conn
	gone     chan struct{}
	done     chan struct{}
	stopping atomic.Bool
	// wentAway is set before gone is closed.
	wentAway bool
}

// startWatch starts watching cc's socket. With bytes already buffered (a
// pipelining client) it cannot watch; the handler then notices a departure
// only when a write fails.
func (cc *conn) startWatch() *watch {
	w := &watch{cc: cc, gone: make(chan struct{}), done: make(chan struct{})}
	if cc.br.Buffered() > 0 || cc.cr.hasPending {
		close(w.done)
		return w
	}
	started := cc.s.g.Go("socket watcher", func() {
		defer close(w.done)
		var b [1]byte
		n, err := cc.c.Read(b[:])
		if n == 1 {
			cc.cr.pending, cc.cr.hasPending = b[0], true
			return
		}
		var ne net.Error
		if w.stopping.Load() && errors.As(err, &ne) && ne.Timeout() {
			return
		}
		w.wentAway = true
		close(w.gone)
	})
	if !started {
		// The server is closing: it has dropped the connection.
		w.wentAway = true
		close(w.gone)
		close(w.done)
	}
	return w
}

// stop ends the watch and reports whether the connection is still usable.
func (w *watch) stop() bool {
	w.stopping.Store(true)
	_ = w.cc.c.SetReadDeadline(aLongTimeAgo)
	<-w.done
	if w.wentAway {
		return false
	}
	return w.cc.c.SetReadDeadline(time.Time{}) == nil
}

// bufPool holds per-request scratch buffers for SSE events.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}
