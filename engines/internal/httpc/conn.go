package httpc

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// A lean HTTP/1.1 client over net.Conn, purpose-built for engine streams
// (SPEC §2): fasthttp's client can neither abort a request at any moment nor
// say whether a read would block. It knows exactly one request in flight per
// connection (no pipelining), Content-Length, chunked and close-delimited
// bodies, and Connection/Keep-Alive semantics.

const (
	readBufSize    = 4096
	maxHeaderBytes = 16 << 10
	maxChunkLine   = 1024
	// defaultIdleTimeout is used when the engine announces no keep-alive
	// timeout (llama.cpp announces timeout=5).
	defaultIdleTimeout = 30 * time.Second
)

var (
	errHeaderTooLarge = errors.New("response header exceeds 16 KiB")
	errMalformed      = errors.New("malformed HTTP response")
	errChunk          = errors.New("malformed chunked body")
)

// protocolError marks a response that is not HTTP/1.1 as this client reads it.
type protocolError struct{ err error }

func (e *protocolError) Error() string { return e.err.Error() }
func (e *protocolError) Unwrap() error { return e.err }

var (
	protoMalformed   error = &protocolError{errMalformed}
	protoChunk       error = &protocolError{errChunk}
	protoHeaderLarge error = &protocolError{errHeaderTooLarge}
)

// conn is one engine connection with its read buffer. It is owned by one
// exchange at a time; only nc.Close may be called concurrently (abort).
type conn struct {
	nc   net.Conn
	buf  []byte
	r, w int
	err  error // sticky read error
	// idleUntil is when a pooled conn is no longer worth reusing (the
	// engine's keep-alive timeout minus a margin).
	idleUntil time.Time
	// abort closes nc; kept as a method value so that arming the cancel hook
	// does not allocate a closure per request.
	abort func()
}

func newConn(nc net.Conn) *conn {
	c := &conn{nc: nc, buf: make([]byte, readBufSize)}
	c.abort = c.close
	return c
}

func (c *conn) close() { _ = c.nc.Close() }

func (c *conn) buffered() int { return c.w - c.r }

// fill reads once from the network into the free end of the buffer. It
// returns an error when nothing could be read; a full buffer must be
// handled by the caller first.
func (c *conn) fill() error {
	if c.err != nil {
		return c.err
	}
	if c.r == c.w {
		c.r, c.w = 0, 0
	} else if c.w == len(c.buf) && c.r > 0 {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	if c.w == len(c.buf) {
		panic("BUG: httpc: fill with a full buffer")
	}
	for range 100 {
		n, err := c.nc.Read(c.buf[c.w:])
		c.w += n
		if err != nil {
			c.err = err
		}
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	c.err = io.ErrNoProgress
	return c.err
}

// response is what the client keeps of a response header.
type response struct {
	status      int
	chunked     bool
	length      int64 // -1 when absent
	close       bool  // the connection cannot be reused after this response
	contentType bool  // a Content-Type header was present
	eventStream bool  // ... and it was text/event-stream
	keepAlive   time.Duration
}

// readResponse reads and parses a response header, skipping 1xx interim
// responses. got reports whether any byte arrived (a reused connection that
// the engine had closed fails with got false).
func (c *conn) readResponse(resp *response) (got bool, err error) {
	for {
		end := headerEnd(c.buf[c.r:c.w])
		if end < 0 {
			if c.w-c.r >= maxHeaderBytes {
				return true, protoHeaderLarge
			}
			if c.w == len(c.buf) {
				if c.r > 0 {
					c.w = copy(c.buf, c.buf[c.r:c.w])
					c.r = 0
				} else {
					nb := make([]byte, min(2*len(c.buf), maxHeaderBytes+readBufSize))
					copy(nb, c.buf[:c.w])
					c.buf = nb
				}
			}
			if err := c.fill(); err != nil {
				return got, err
			}
			got = true
			continue
		}
		got = true
		if err := parseHeader(c.buf[c.r:c.r+end], resp); err != nil {
			return true, err
		}
		c.r += end
		if resp.status >= 100 && resp.status < 200 && resp.status != 101 {
			continue
		}
		return true, nil
	}
}

// headerEnd returns the length of the header block at the start of b,
// including its terminating blank line, or -1 when it is not complete.
func headerEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		k := i + j + 1
		if k < len(b) && b[k] == '\n' {
			return k + 1
		}
		if k+1 < len(b) && b[k] == '\r' && b[k+1] == '\n' {
			return k + 2
		}
		i = k
	}
}

func parseHeader(h []byte, resp *response) error {
	*resp = response{length: -1}
	line, h := cutLine(h)
	// HTTP/1.x NNN[ reason]
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' ||
		(len(line) > 12 && line[12] != ' ') {
		return protoMalformed
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return protoMalformed
		}
		resp.status = resp.status*10 + int(c-'0')
	}
	http10 := line[7] == '0'
	keepAlive10 := false
	for len(h) > 0 {
		line, h = cutLine(h)
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			if line[0] == ' ' || line[0] == '\t' {
				continue // obsolete line folding: ignore the continuation
			}
			return protoMalformed
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, ok := parseDecimal(value)
			if !ok || (resp.length >= 0 && resp.length != n) {
				return protoMalformed
			}
			resp.length = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			if !bytes.EqualFold(value, []byte("chunked")) {
				// Nothing else makes sense for an engine (no gzip here).
				return protoMalformed
			}
			resp.chunked = true
		case bytes.EqualFold(name, []byte("Connection")):
			for rest := value; len(rest) > 0; {
				var tok []byte
				tok, rest = cutComma(rest)
				if bytes.EqualFold(tok, []byte("close")) {
					resp.close = true
				} else if bytes.EqualFold(tok, []byte("keep-alive")) {
					keepAlive10 = true
				}
			}
		case bytes.EqualFold(name, []byte("Keep-Alive")):
			resp.keepAlive = parseKeepAliveTimeout(value)
		case bytes.EqualFold(name, []byte("Content-Type")):
			resp.contentType = true
			const es = "text/event-stream"
			resp.eventStream = len(value) >= len(es) && bytes.EqualFold(value[:len(es)], []byte(es))
		}
	}
	if http10 && !keepAlive10 {
		resp.close = true
	}
	if resp.chunked && resp.length >= 0 {
		// RFC 9112 §6.3: chunked wins, but the connection must not be reused.
		resp.length = -1
		resp.close = true
	}
	if resp.status < 200 || resp.status == 204 || resp.status == 304 {
		resp.chunked, resp.length = false, 0
	}
	if !resp.chunked && resp.length < 0 {
		resp.close = true // body ends when the engine closes
	}
	return nil
}

func cutLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	line, rest = b[:i], b[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

// cutComma splits the first element (trimmed) off a comma-separated list.
func cutComma(b []byte) (elem, rest []byte) {
	if i := bytes.IndexByte(b, ','); i >= 0 {
		return trimOWS(b[:i]), b[i+1:]
	}
	return trimOWS(b), nil
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func parseDecimal(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseKeepAliveTimeout reads timeout=N from a Keep-Alive header value.
func parseKeepAliveTimeout(v []byte) time.Duration {
	for len(v) > 0 {
		var p []byte
		p, v = cutComma(v)
		const key = "timeout="
		if len(p) > len(key) && bytes.EqualFold(p[:len(key)], []byte(key)) {
			if n, ok := parseDecimal(p[len(key):]); ok && n < 1<<20 {
				return time.Duration(n) * time.Second
			}
		}
	}
	return 0
}

// Body framing modes.
const (
	bodyLength = iota // Content-Length (including 0)
	bodyChunked
	bodyClose // until the engine closes the connection
)

// Chunked-Body parser states.
const (
	chunkData    = iota // inside chunk data (remaining may be 0 at the start)
	chunkCRLF           // after chunk data: expecting CRLF
	chunkSize           // expecting a chunk-size line
	chunkTrailer        // after the last chunk: trailer lines until a blank one
	chunkDone
)

// Body reads one response body from a connection. For chunked bodies it strips
// the framing; Buffered tells how many body bytes can be read without
// touching the network.
type Body struct {
	c         *conn
	mode      uint8
	state     uint8
	remaining int64 // bytes left in the body (length) or current chunk (chunked)
	done      bool  // the body ended cleanly (io.EOF returned or due)
	err       error
}

func (b *Body) reset(c *conn, resp *response) {
	*b = Body{c: c}
	switch {
	case resp.chunked:
		b.mode, b.state = bodyChunked, chunkSize
	case resp.length >= 0:
		b.mode, b.remaining = bodyLength, resp.length
		b.done = resp.length == 0
	default:
		b.mode = bodyClose
	}
}

// Buffered returns how many body bytes a Read would return without reading
// from the network (0 means the next Read has to wait for the engine).
func (b *Body) Buffered() int {
	if b.err != nil || b.done {
		return 0
	}
	switch b.mode {
	case bodyChunked:
		if b.advance(false) != nil || b.state != chunkData {
			return 0
		}
		return int(min(b.remaining, int64(b.c.buffered())))
	case bodyLength:
		return int(min(b.remaining, int64(b.c.buffered())))
	}
	return b.c.buffered()
}

// Finished reports whether the body has ended, consuming any framing that is
// already buffered (the terminating chunk).
func (b *Body) Finished() bool {
	if b.mode == bodyChunked && !b.done && b.err == nil {
		_ = b.advance(false)
	}
	return b.done
}

// Read implements io.Reader. It returns as many body bytes as are buffered,
// across chunk boundaries, and reads from the network only when nothing is.
func (b *Body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	switch b.mode {
	case bodyLength:
		return b.readLength(p)
	case bodyClose:
		return b.readClose(p)
	}
	n := 0
	for n < len(p) {
		if b.state != chunkData || b.remaining == 0 {
			// Framing: parse what is buffered; block only if nothing was read.
			if err := b.advance(n == 0); err != nil {
				if n > 0 && err == errWouldBlock {
					return n, nil
				}
				return n, b.fail(err)
			}
			if b.done {
				if n > 0 {
					return n, nil
				}
				return 0, io.EOF
			}
			continue
		}
		if b.c.buffered() == 0 {
			if n > 0 {
				return n, nil
			}
			if err := b.c.fill(); err != nil {
				return 0, b.fail(err)
			}
		}
		k := copy(p[n:], b.c.buf[b.c.r:b.c.r+int(min(b.remaining, int64(b.c.buffered())))])
		b.c.r += k
		b.remaining -= int64(k)
		n += k
		if b.remaining == 0 {
			b.state = chunkCRLF
		}
	}
	return n, nil
}

var errWouldBlock = errors.New("would block")

// fail records a terminal body error: a connection that ends inside the body
// is io.ErrUnexpectedEOF.
func (b *Body) fail(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	b.err = err
	return err
}

func (b *Body) readLength(p []byte) (int, error) {
	if b.remaining == 0 {
		b.done = true
		return 0, io.EOF
	}
	if b.c.buffered() == 0 {
		if err := b.c.fill(); err != nil {
			return 0, b.fail(err)
		}
	}
	k := copy(p[:min(int64(len(p)), b.remaining)], b.c.buf[b.c.r:b.c.w])
	b.c.r += k
	b.remaining -= int64(k)
	if b.remaining == 0 {
		b.done = true
	}
	return k, nil
}

func (b *Body) readClose(p []byte) (int, error) {
	if b.c.buffered() == 0 {
		if err := b.c.fill(); err != nil {
			if err == io.EOF {
				b.done = true
				b.err = io.EOF
				return 0, io.EOF
			}
			return 0, b.fail(err)
		}
	}
	k := copy(p, b.c.buf[b.c.r:b.c.w])
	b.c.r += k
	return k, nil
}

// advance parses chunk framing up to the next data byte or the end of the
// body. When block is false it uses only buffered bytes and returns
// errWouldBlock if it needs more.
func (b *Body) advance(block bool) error {
	c := b.c
	for {
		switch b.state {
		case chunkData:
			if b.remaining > 0 {
				return nil
			}
			b.state = chunkCRLF
		case chunkCRLF:
			if c.buffered() >= 1 && c.buf[c.r] == '\n' { // tolerate a bare LF
				c.r++
				b.state = chunkSize
				continue
			}
			if c.buffered() >= 2 {
				if c.buf[c.r] != '\r' || c.buf[c.r+1] != '\n' {
					return protoChunk
				}
				c.r += 2
				b.state = chunkSize
				continue
			}
			if err := b.more(block); err != nil {
				return err
			}
		case chunkSize:
			i := bytes.IndexByte(c.buf[c.r:c.w], '\n')
			if i < 0 {
				if c.buffered() >= maxChunkLine {
					return protoChunk
				}
				if err := b.more(block); err != nil {
					return err
				}
				continue
			}
			size, ok := parseChunkSize(c.buf[c.r : c.r+i])
			if !ok {
				return protoChunk
			}
			c.r += i + 1
			if size == 0 {
				b.state = chunkTrailer
				continue
			}
			b.state, b.remaining = chunkData, size
			return nil
		case chunkTrailer:
			i := bytes.IndexByte(c.buf[c.r:c.w], '\n')
			if i < 0 {
				if c.buffered() >= maxChunkLine {
					return protoChunk
				}
				if err := b.more(block); err != nil {
					return err
				}
				continue
			}
			blank := i == 0 || (i == 1 && c.buf[c.r] == '\r')
			c.r += i + 1
			if blank {
				b.state, b.done = chunkDone, true
				return nil
			}
		case chunkDone:
			return nil
		}
	}
}

// more reads from the network when allowed to block; a buffer holding an
// unfinished framing line is compacted by fill.
func (b *Body) more(block bool) error {
	if !block {
		return errWouldBlock
	}
	return b.c.fill()
}

// parseChunkSize parses a chunk-size line (hex, optional extensions after
// ';', optional trailing whitespace and CR).
func parseChunkSize(line []byte) (int64, bool) {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = trimOWS(line)
	if len(line) == 0 || len(line) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range line {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int64(c)
	}
	return n, true
}

// pool keeps idle keep-alive connections, newest last (LIFO: the newest is
// the least likely to have been closed by the engine).
type pool struct {
	mu     sync.Mutex
	idle   []*conn
	max    int
	closed bool
}

// get returns an idle connection that has not outlived its keep-alive, or
// nil.
func (p *pool) get(now time.Time) *conn {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return nil
		}
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if now.Before(c.idleUntil) {
			return c
		}
		c.close()
	}
}

// put returns c to the pool, or closes it when the pool is full or closed.
func (p *pool) put(c *conn) {
	p.mu.Lock()
	if p.closed || p.max <= 0 {
		p.mu.Unlock()
		c.close()
		return
	}
	var evict *conn
	if len(p.idle) >= p.max {
		evict = p.idle[0]
		copy(p.idle, p.idle[1:])
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
	if evict != nil {
		evict.close()
	}
}

// closeIdle closes all idle connections; later puts close theirs.
func (p *pool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.closed = true
	p.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

func (p *pool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}
