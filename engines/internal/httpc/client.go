// Package httpc is the lean HTTP/1.1 client every engine adapter streams
// through (SPEC §2, PERFORMANCE.md): fasthttp's client can neither abort a
// request at any moment — the engine frees the slot when the connection
// closes — nor say whether a read would block, which write coalescing needs.
//
// One request is in flight per connection (no pipelining). It knows
// Content-Length, chunked and close-delimited bodies, Connection/Keep-Alive
// semantics, and keeps a LIFO pool of idle connections.
package httpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/llama-orch/llama-orch/engines"
)

// Options tune a Client. The zero value is usable.
type Options struct {
	// DialTimeout bounds connecting to the engine (default 2 s).
	DialTimeout time.Duration
	// MaxIdleConns is the size of the keep-alive pool (default 64; negative
	// disables keep-alive).
	MaxIdleConns int
	// Dial, when set, replaces net.Dialer.DialContext (tests).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

const (
	defaultDialTimeout  = 2 * time.Second
	defaultMaxIdleConns = 64
	// CallTimeout bounds Call when ctx has no deadline.
	CallTimeout = 5 * time.Second
)

// ErrBodyTooLarge is returned by ReadAll when the body exceeds its limit.
var ErrBodyTooLarge = errors.New("httpc: response body exceeds the size limit")

// Client talks to one engine replica. It is safe for concurrent use.
type Client struct {
	addr        string // host:port to dial
	host        string // Host header
	prefix      string // path prefix of the base URL, without trailing slash
	dialTimeout time.Duration
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	pool        pool
}

// New returns a Client for the engine at baseURL: http://host:port with an
// optional path prefix.
func New(baseURL string, o Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("invalid engine URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("engine URL %q: only http:// is supported", baseURL)
	}
	if u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("engine URL %q: want http://host:port[/path] without user, query or fragment", baseURL)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" {
		return nil, fmt.Errorf("engine URL %q: want http://host:port", baseURL)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return nil, fmt.Errorf("engine URL %q: invalid port %q", baseURL, port)
	}
	c := &Client{
		addr:        u.Host,
		host:        u.Host,
		prefix:      strings.TrimRight(u.EscapedPath(), "/"),
		dialTimeout: o.DialTimeout,
		dial:        o.Dial,
	}
	if c.dialTimeout <= 0 {
		c.dialTimeout = defaultDialTimeout
	}
	c.pool.max = o.MaxIdleConns
	if c.pool.max == 0 {
		c.pool.max = defaultMaxIdleConns
	}
	if c.dial == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		c.dial = d.DialContext
	}
	return c, nil
}

// Close closes the idle pooled connections; connections in use are closed
// when their exchange is released. The Client stays usable (without
// keep-alive).
func (c *Client) Close() error {
	c.pool.closeIdle()
	return nil
}

// IdleConns returns the number of pooled idle connections (tests).
func (c *Client) IdleConns() int { return c.pool.idleCount() }

// AppendRequest appends an HTTP/1.1 request for path (after the base URL's
// prefix) with an optional JSON body; stream asks for text/event-stream.
func (c *Client) AppendRequest(dst []byte, method, path string, body []byte, stream bool) []byte {
	dst = append(dst, method...)
	dst = append(dst, ' ')
	dst = append(dst, c.prefix...)
	dst = append(dst, path...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, c.host...)
	dst = append(dst, "\r\nUser-Agent: orchd\r\n"...)
	if stream {
		dst = append(dst, "Accept: text/event-stream\r\n"...)
	}
	if body != nil {
		dst = append(dst, "Content-Type: application/json\r\nContent-Length: "...)
		dst = strconv.AppendInt(dst, int64(len(body)), 10)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "\r\n"...)
	return append(dst, body...)
}

// Exchange is one request and its response. Reuse it (its buffers) across
// requests; it is owned by one goroutine.
type Exchange struct {
	// Status is the response status.
	Status int
	// HasContentType reports a Content-Type header; EventStream that it was
	// text/event-stream.
	HasContentType, EventStream bool
	// Close reports that the connection cannot be reused after this response.
	Close bool
	// Body is the response body, readable between Start and Release.
	Body Body

	resp response
	c    *conn
	stop func() bool
}

func (x *Exchange) setResponse() {
	x.Status, x.HasContentType, x.EventStream, x.Close = x.resp.status, x.resp.contentType, x.resp.eventStream, x.resp.close
}

// Start sends req (from AppendRequest) on a pooled or new connection and
// reads the response header into x. From here until Release, canceling ctx
// closes the connection (the engine sees the client leave). A pooled
// connection that turns out dead (the write fails, or it ends before any
// response byte) is replaced by a new one, once. headerTimeout > 0 bounds the
// wait for the header.
//
// Errors are ctx.Err() when ctx ended, else *engines.Error: KindUnavailable
// when the engine cannot be reached, KindProtocol for a response that is not
// HTTP/1.1, KindUpstream otherwise.
func (c *Client) Start(ctx context.Context, req []byte, headerTimeout time.Duration, x *Exchange) error {
	for attempt := 0; ; attempt++ {
		var cn *conn
		if attempt == 0 {
			cn = c.pool.get(time.Now())
		}
		reused := cn != nil
		if cn == nil {
			dctx, cancel := context.WithTimeout(ctx, c.dialTimeout)
			nc, err := c.dial(dctx, "tcp", c.addr)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return &engines.Error{Kind: engines.KindUnavailable, Message: "cannot connect to the engine", Err: err}
			}
			cn = newConn(nc)
		}
		stop := context.AfterFunc(ctx, cn.abort)
		if headerTimeout > 0 {
			_ = cn.nc.SetReadDeadline(time.Now().Add(headerTimeout))
		}
		got := false
		_, err := cn.nc.Write(req)
		wrote := err == nil
		if wrote {
			got, err = cn.readResponse(&x.resp)
		}
		if err == nil {
			if headerTimeout > 0 {
				_ = cn.nc.SetReadDeadline(time.Time{})
			}
			x.c, x.stop = cn, stop
			x.setResponse()
			x.Body.reset(cn, &x.resp)
			return nil
		}
		stop()
		cn.close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ne net.Error
		timeout := errors.As(err, &ne) && ne.Timeout()
		if reused && !got && !timeout {
			continue // the engine had closed the idle connection
		}
		var pe *protocolError
		switch {
		case errors.As(err, &pe):
			return &engines.Error{Kind: engines.KindProtocol, Message: "malformed response header from the engine", Err: err}
		case timeout:
			return &engines.Error{Kind: engines.KindUpstream, Message: "no response header within " + headerTimeout.String(), Err: err}
		case !wrote:
			return &engines.Error{Kind: engines.KindUpstream, Message: "cannot send the request to the engine", Err: err}
		}
		return &engines.Error{Kind: engines.KindUpstream, Message: "connection ended before the response header", Err: err}
	}
}

// Release disarms the cancel hook and pools the connection if reusable and
// clean, else closes it. It is a no-op when x holds no connection.
func (c *Client) Release(x *Exchange, reusable bool) {
	cn, stop := x.c, x.stop
	x.c, x.stop = nil, nil
	x.Body = Body{}
	if cn == nil {
		return
	}
	if stop != nil && !stop() {
		cn.close() // the cancel hook fired: cn is being closed anyway
		return
	}
	if !reusable || x.resp.close || cn.buffered() != 0 || cn.err != nil {
		cn.close()
		return
	}
	idle := x.resp.keepAlive
	if idle <= 0 {
		idle = defaultIdleTimeout
	}
	if idle > time.Second {
		idle -= time.Second // margin: do not race the engine's own close
	} else {
		idle /= 2
	}
	cn.idleUntil = time.Now().Add(idle)
	c.pool.put(cn)
}

// Abandon closes the connection x holds, if any, without pooling it (a
// panic left the exchange in an unknown state).
func (x *Exchange) Abandon() {
	if x.c == nil {
		return
	}
	if x.stop != nil {
		x.stop()
	}
	x.c.close()
	x.c, x.stop = nil, nil
	x.Body = Body{}
}

// Active reports whether x holds a connection (between Start and Release).
func (x *Exchange) Active() bool { return x.c != nil }

// SetReadDeadline sets the read deadline of x's connection.
func (x *Exchange) SetReadDeadline(t time.Time) {
	if x.c != nil {
		_ = x.c.nc.SetReadDeadline(t)
	}
}

// ReadAll appends the whole body to dst, up to limit bytes (ErrBodyTooLarge
// beyond).
func (x *Exchange) ReadAll(dst []byte, limit int) ([]byte, error) {
	b := &x.Body
	for {
		if len(dst) == cap(dst) {
			if len(dst) >= limit {
				return dst, ErrBodyTooLarge
			}
			dst = append(dst, make([]byte, max(512, len(dst)))...)[:len(dst)]
		}
		n, err := b.Read(dst[len(dst):min(cap(dst), limit)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
		if len(dst) >= limit && !b.Finished() {
			return dst, ErrBodyTooLarge
		}
	}
}

// Drain reads and discards the rest of the body within timeout (after a
// stream's terminal frame) and reports whether it ended cleanly, which makes
// the connection reusable.
func (x *Exchange) Drain(timeout time.Duration) bool {
	if x.c == nil {
		return false
	}
	if x.Body.Finished() {
		return true
	}
	x.SetReadDeadline(time.Now().Add(timeout))
	defer x.SetReadDeadline(time.Time{})
	var scratch [512]byte
	for {
		_, err := x.Body.Read(scratch[:])
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
	}
}

// ReadResponse reads a response header from nc into x, reusing x's buffers
// when nc is the connection x last read (in-memory decoding benchmarks and
// tests). The result is not pooled: release it with Abandon or discard it.
func (x *Exchange) ReadResponse(nc net.Conn) error {
	x.attach(nc)
	if _, err := x.c.readResponse(&x.resp); err != nil {
		return err
	}
	x.setResponse()
	x.Body.reset(x.c, &x.resp)
	return nil
}

// BodyUntilClose makes x read nc as a 200 close-delimited body with no
// header (decoder tests).
func (x *Exchange) BodyUntilClose(nc net.Conn) {
	x.attach(nc)
	x.resp = response{status: 200, length: -1, close: true}
	x.setResponse()
	x.Body.reset(x.c, &x.resp)
}

func (x *Exchange) attach(nc net.Conn) {
	if x.c == nil || x.c.nc != nc {
		x.c = newConn(nc)
	} else {
		x.c.r, x.c.w, x.c.err = 0, 0, nil
	}
	x.stop = nil
}

// Call makes one small request (probes) and returns the status and body, at
// most limit bytes. It is bounded by CallTimeout when ctx has no deadline.
// Errors are ctx.Err() when the caller's ctx ended, else *engines.Error.
func (c *Client) Call(ctx context.Context, method, path string, reqBody []byte, limit int) (int, []byte, error) {
	parent := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, CallTimeout)
		defer cancel()
	}
	var x Exchange
	err := c.Start(ctx, c.AppendRequest(nil, method, path, reqBody, false), 0, &x)
	if err == nil {
		var data []byte
		data, err = x.ReadAll(nil, limit)
		status := x.Status
		c.Release(&x, err == nil)
		if err == nil {
			return status, data, nil
		}
		if errors.Is(err, ErrBodyTooLarge) {
			err = &engines.Error{Kind: engines.KindProtocol, Status: status, Message: "engine response body too large", Err: err}
		} else if ctx.Err() == nil {
			err = &engines.Error{Kind: engines.KindUpstream, Status: status, Message: "cannot read the engine's response", Err: err}
		}
	}
	if perr := parent.Err(); perr != nil {
		return 0, nil, perr
	}
	if ctx.Err() != nil {
		return 0, nil, &engines.Error{Kind: engines.KindUnavailable, Message: "no answer from the engine within " + CallTimeout.String(), Err: ctx.Err()}
	}
	return 0, nil, err
}

// IsProtocolError reports whether err is a malformed-HTTP error from this
// client (a body that is not valid chunked framing, say).
func IsProtocolError(err error) bool {
	var pe *protocolError
	return errors.As(err, &pe)
}

// Source is the io.Reader an SSE decoder pulls a stream body through.
// Before a read that has to wait for the engine (nothing is buffered), it
// flushes the sink when tokens were delivered since the last flush: a burst
// of frames that arrived together is published once.
type Source struct {
	Body *Body
	Sink engines.Sink
	// Dirty is set by the decoder when it delivered a token.
	Dirty bool
	// Final is set once the terminal frame was seen: the caller publishes
	// from then on.
	Final bool
}

// Read implements io.Reader.
func (s *Source) Read(p []byte) (int, error) {
	if s.Dirty && !s.Final && s.Body.Buffered() == 0 {
		s.Dirty = false
		s.Sink.Flush()
	}
	return s.Body.Read(p)
}
