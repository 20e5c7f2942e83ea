package tgi

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/sse"
)

// leakCheck verifies, after the test and all its cleanups, that no goroutine
// was left behind. Call it first so that its cleanup runs last.
func leakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// waitTimeout guards waits in tests so that a bug fails instead of hanging;
// it is never a timing assertion.
const waitTimeout = 10 * time.Second

func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// recSink records what an adapter delivers.
type recSink struct {
	mu      sync.Mutex
	tokens  []string
	log     strings.Builder // "T" per token, "F" per flush
	onToken func(n int)     // called after each token with the count so far
}

func (s *recSink) Token(text []byte) {
	s.mu.Lock()
	s.tokens = append(s.tokens, string(text))
	s.log.WriteByte('T')
	n := len(s.tokens)
	s.mu.Unlock()
	if s.onToken != nil {
		s.onToken(n)
	}
}

func (s *recSink) Flush() {
	s.mu.Lock()
	s.log.WriteByte('F')
	s.mu.Unlock()
}

func (s *recSink) Tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tokens...)
}

// countSink counts calls.
type countSink struct{ tokens, flushes int }

func (s *countSink) Token([]byte) { s.tokens++ }
func (s *countSink) Flush()       { s.flushes++ }

// ---- wire builders ----

// streamHead is TGI's /generate_stream head (axum 0.7 over hyper).
const streamHead = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n" +
	"x-compute-type: gpu+optimized\r\nx-compute-characters: 24\r\nx-accel-buffering: no\r\n" +
	"transfer-encoding: chunked\r\ndate: Thu, 15 Jan 2026 10:00:00 GMT\r\n\r\n"

// chunk frames one part as an HTTP chunk.
func chunk(p string) []byte { return fmt.Appendf(nil, "%x\r\n%s\r\n", len(p), p) }

const lastChunk = "0\r\n\r\n"

// sseResponse is a keep-alive TGI stream, one chunk per event, ended.
func sseResponse(evs ...string) []byte {
	b := []byte(streamHead)
	for _, e := range evs {
		b = append(b, chunk(e)...)
	}
	return append(b, lastChunk...)
}

// ev makes an event of a JSON frame.
func ev(json string) string { return "data: " + json + "\n\n" }

// tok is an intermediate frame.
func tok(index int, text string, special bool) string {
	return ev(fmt.Sprintf(`{"index":%d,"token":{"id":%d,"text":%s,"logprob":-0.5,"special":%v},"generated_text":null,"details":null}`,
		index, 100+index, jsonString(text), special))
}

// final is the last frame.
func final(index int, text string, special bool, generated, reason string, tokens, input int) string {
	return ev(fmt.Sprintf(`{"index":%d,"token":{"id":%d,"text":%s,"logprob":-0.5,"special":%v},"generated_text":%s,"details":{"finish_reason":%q,"generated_tokens":%d,"seed":null,"input_length":%d}}`,
		index, 100+index, jsonString(text), special, jsonString(generated), reason, tokens, input))
}

func errFrame(msg, typ string) string {
	return ev(fmt.Sprintf(`{"error":%s,"error_type":%q}`, jsonString(msg), typ))
}

// jsonString quotes s as serde_json would, keeping any invalid UTF-8 bytes
// raw (tests feed them to the decoder on purpose).
func jsonString(s string) string {
	var b bytes.Buffer
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
		case c < 0x20:
			fmt.Fprintf(&b, `\u%04x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// httpResp is a keep-alive response with a body.
func httpResp(status, ctype, body string) []byte {
	return fmt.Appendf(nil, "HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s", status, ctype, len(body), body)
}

// ---- servers ----

// server is a loopback replay server: handle runs once per accepted
// connection (in its own goroutine) and owns it.
type server struct {
	ln      net.Listener
	accepts atomic.Int32
	handle  func(c *srvConn)
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

type srvConn struct {
	net.Conn
	br *bufio.Reader
}

// readRequest reads one request and its body; io.EOF when the client closed.
func (c *srvConn) readRequest() (*http.Request, []byte, error) {
	req, err := http.ReadRequest(c.br)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(req.Body)
	return req, body, err
}

// waitClosed blocks until the client closes the connection.
func (c *srvConn) waitClosed() { _, _ = io.Copy(io.Discard, c.br) }

func newServer(t testing.TB, handle func(c *srvConn)) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, handle: handle}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.close)
	return s
}

func (s *server) url() string { return "http://" + s.ln.Addr().String() }

func (s *server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepts.Add(1)
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.handle(&srvConn{Conn: c, br: bufio.NewReader(c)})
		}()
	}
}

func (s *server) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// serveAlways answers every request on every connection with resp.
func serveAlways(resp []byte) func(c *srvConn) {
	return func(c *srvConn) {
		for {
			if _, _, err := c.readRequest(); err != nil {
				return
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	}
}

// serveOnce answers the first request with resp and closes the connection.
func serveOnce(resp []byte) func(c *srvConn) {
	return func(c *srvConn) {
		if _, _, err := c.readRequest(); err != nil {
			return
		}
		_, _ = c.Write(resp)
	}
}

// pipeDialer serves each dial with script over net.Pipe: every Write of the
// script reaches the client as one read, which makes segmentation
// deterministic.
type pipeDialer struct {
	script func(c *srvConn)
	wg     sync.WaitGroup
}

func (p *pipeDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	cli, srv := net.Pipe()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer srv.Close()
		p.script(&srvConn{Conn: srv, br: bufio.NewReader(srv)})
	}()
	return cli, nil
}

// writeParts is a pipe script: read the request, then write each part.
func writeParts(parts ...[]byte) func(c *srvConn) {
	return func(c *srvConn) {
		if _, _, err := c.readRequest(); err != nil {
			return
		}
		for _, p := range parts {
			if _, err := c.Write(p); err != nil {
				return
			}
		}
		c.waitClosed()
	}
}

// newPipeAdapter returns an adapter without keep-alive whose connections
// are pipes served by script.
func newPipeAdapter(t *testing.T, script func(c *srvConn)) *Adapter {
	t.Helper()
	pd := &pipeDialer{script: script}
	a, err := New("http://engine.test:8080", Options{Dial: pd.dial, MaxIdleConns: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = a.Close()
		pd.wg.Wait()
	})
	return a
}

func newAdapter(t testing.TB, url string, o Options) *Adapter {
	t.Helper()
	a, err := New(url, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// ---- in-memory conn for benchmarks and fuzzing ----

// memConn is a net.Conn reading from fixed segments: one Read returns at
// most the rest of the current segment.
type memConn struct {
	segs [][]byte
	i    int
	off  int
}

func (m *memConn) reset() { m.i, m.off = 0, 0 }

func (m *memConn) Read(p []byte) (int, error) {
	for m.i < len(m.segs) && m.off == len(m.segs[m.i]) {
		m.i++
		m.off = 0
	}
	if m.i >= len(m.segs) {
		return 0, io.EOF
	}
	n := copy(p, m.segs[m.i][m.off:])
	m.off += n
	return n, nil
}

func (m *memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (m *memConn) Close() error                     { return nil }
func (m *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (m *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (m *memConn) SetDeadline(time.Time) error      { return nil }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }

// memHarness decodes a whole in-memory response with the adapter's own
// header parser, de-chunker, SSE reader and frame decoder, reusing
// everything.
type memHarness struct {
	mc *memConn
	st *streamState
}

func newMemHarness(segs [][]byte) *memHarness {
	return &memHarness{mc: &memConn{segs: segs}, st: &streamState{rd: sse.NewReader(nil, 0)}}
}

func (h *memHarness) run(sink engines.Sink) (engines.Result, error) {
	h.mc.reset()
	if err := h.st.x.ReadResponse(h.mc); err != nil {
		return engines.Result{}, err
	}
	res, _, err := h.st.run(context.Background(), testReq, sink)
	return res, err
}

var testReq = &engines.Request{TaskID: "t1", Prompt: "The capital of France is", MaxTokens: 4, Seed: 42}
