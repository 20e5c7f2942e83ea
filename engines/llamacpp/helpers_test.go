package llamacpp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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
)

// leakCheck verifies, after the test and all its cleanups, that no goroutine
// was left behind. Call it first so that its cleanup runs last.
func leakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// waitTimeout guards channel waits in tests so that a bug fails instead of
// hanging; it is never a timing assertion.
const waitTimeout = 10 * time.Second

func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// recSink records what an adapter delivers.
type recSink struct {
	mu      sync.Mutex
	tokens  []string
	flushes int
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
	s.flushes++
	s.log.WriteByte('F')
	s.mu.Unlock()
}

func (s *recSink) Tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tokens...)
}

// nopSink discards everything.
type nopSink struct{}

func (nopSink) Token([]byte) {}
func (nopSink) Flush()       {}

// ---- wire builders ----

// chunked frames parts as an HTTP/1.1 chunked body, one chunk per part, and
// adds the terminating chunk.
func chunked(parts ...[]byte) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		fmt.Fprintf(&b, "%x\r\n", len(p))
		b.Write(p)
		b.WriteString("\r\n")
	}
	b.WriteString("0\r\n\r\n")
	return b.Bytes()
}

// chunk frames one part (no terminator).
func chunk(p []byte) []byte {
	return append(fmt.Appendf(nil, "%x\r\n", len(p)), append(p, '\r', '\n')...)
}

// events splits an SSE body into its events, each with its blank line.
func events(body []byte) [][]byte {
	var out [][]byte
	for len(body) > 0 {
		i := bytes.Index(body, []byte("\n\n"))
		if i < 0 {
			out = append(out, body)
			break
		}
		out = append(out, body[:i+2])
		body = body[i+2:]
	}
	return out
}

const streamHeader = "HTTP/1.1 200 OK\r\nServer: llama.cpp\r\nAccess-Control-Allow-Origin: \r\nX-Accel-Buffering: no\r\n" +
	"Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5, max=100\r\n\r\n"

// sseResponse is a keep-alive llama.cpp stream response with one chunk per
// event, as llama.cpp writes it.
func sseResponse(evs ...string) []byte {
	parts := make([][]byte, len(evs))
	for i, e := range evs {
		parts[i] = []byte(e)
	}
	return append([]byte(streamHeader), chunked(parts...)...)
}

func tokenEvent(content string, n int) string {
	c, _ := json.Marshal(content)
	return fmt.Sprintf("data: {\"index\":0,\"content\":%s,\"tokens\":[1],\"stop\":false,\"id_slot\":-1,\"tokens_predicted\":%d,\"tokens_evaluated\":2}\n\n", c, n)
}

func finalEvent(n int, stopType string) string {
	return fmt.Sprintf("data: {\"index\":0,\"content\":\"\",\"tokens\":[],\"id_slot\":1,\"stop\":true,\"model\":\"tiny.gguf\",\"tokens_predicted\":%d,\"tokens_evaluated\":2,\"generation_settings\":{\"seed\":4294967295,\"stop\":[]},\"prompt\":\"<s> Hi\",\"stop_type\":%q,\"timings\":{\"predicted_n\":%d,\"predicted_ms\":12.5}}\n\n", n, stopType, n)
}

// httpResp is a keep-alive JSON response.
func httpResp(status, body string) []byte {
	return fmt.Appendf(nil, "HTTP/1.1 %s\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\nKeep-Alive: timeout=5, max=100\r\n\r\n%s", status, len(body), body)
}

// fixtureResponse is a fixture's headers followed by its body.
func fixtureResponse(t testing.TB, stem, bodyExt string) []byte {
	return append(readFixture(t, stem+".headers.txt"), readFixture(t, stem+"."+bodyExt)...)
}

// fixtureStream is a fixture stream re-chunked one event per chunk.
func fixtureStream(t testing.TB, stem string) []byte {
	return append(readFixture(t, stem+".headers.txt"), chunked(events(readFixture(t, stem+".body.sse"))...)...)
}

// expectedStream decodes an SSE body with encoding/json: the texts of the
// token frames and the Result of the final frame.
func expectedStream(t testing.TB, body []byte) ([]string, engines.Result) {
	t.Helper()
	var toks []string
	for _, d := range dataLines(body) {
		var fr struct {
			Content         string
			Stop            bool
			TokensPredicted int    `json:"tokens_predicted"`
			TokensEvaluated int    `json:"tokens_evaluated"`
			IDSlot          int    `json:"id_slot"`
			StopType        string `json:"stop_type"`
			Timings         struct {
				PredictedMs float64 `json:"predicted_ms"`
			}
		}
		if err := json.Unmarshal(d, &fr); err != nil {
			t.Fatal(err)
		}
		if fr.Content != "" {
			toks = append(toks, fr.Content)
		}
		if fr.Stop {
			reason := "stop"
			if fr.StopType == "limit" || fr.StopType == "none" {
				reason = "length"
			}
			return toks, engines.Result{TokensOut: fr.TokensPredicted, TokensIn: fr.TokensEvaluated,
				DecodeMs: int64(fr.Timings.PredictedMs + 0.5), FinishReason: reason, Slot: fr.IDSlot}
		}
	}
	t.Fatal("fixture has no final frame")
	return nil, engines.Result{}
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

// serveEach answers every request on every connection with resp(n), n
// counting requests across connections from 0; the connection is closed
// after a response that says Connection: close.
func serveEach(resp func(n int) []byte) func(c *srvConn) {
	var n atomic.Int32
	return func(c *srvConn) {
		for {
			if _, _, err := c.readRequest(); err != nil {
				return
			}
			r := resp(int(n.Add(1) - 1))
			if _, err := c.Write(r); err != nil {
				return
			}
			if bytes.Contains(r, []byte("\r\nConnection: close\r\n")) {
				return
			}
		}
	}
}

func serveAlways(resp []byte) func(c *srvConn) {
	return serveEach(func(int) []byte { return resp })
}

// pipeDialer serves each dial with script over net.Pipe: every Write of the
// script reaches the client as exactly one read (or less), which makes TCP
// segmentation deterministic.
type pipeDialer struct {
	dials  atomic.Int32
	script func(c *srvConn)
	wg     sync.WaitGroup
}

func (p *pipeDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	p.dials.Add(1)
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

// newPipeAdapter returns an adapter whose connections are pipes served by
// script; keep-alive is off unless idle > 0.
func newPipeAdapter(t *testing.T, idle int, script func(c *srvConn)) (*Adapter, *pipeDialer) {
	t.Helper()
	pd := &pipeDialer{script: script}
	if idle == 0 {
		idle = -1
	}
	a, err := New("http://engine.test:8080", Options{Dial: pd.dial, MaxIdleConns: idle})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = a.Close()
		pd.wg.Wait()
	})
	return a, pd
}

func newAdapter(t *testing.T, url string, o Options) *Adapter {
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
