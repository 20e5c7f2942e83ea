package vllm

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

	"github.com/llama-orch/llama-orch/engines/fake"
	fakevllm "github.com/llama-orch/llama-orch/engines/fake/vllm"
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

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
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
	flushes int
	onToken func(n int) // called after each token with the count so far
}

func (s *recSink) Token(text []byte) {
	s.mu.Lock()
	s.tokens = append(s.tokens, string(text))
	n := len(s.tokens)
	s.mu.Unlock()
	if s.onToken != nil {
		s.onToken(n)
	}
}

func (s *recSink) Flush() {
	s.mu.Lock()
	s.flushes++
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

// newFake starts a vLLM fake on a free loopback port.
func newFake(t testing.TB, o fake.Options) *fakevllm.Server {
	t.Helper()
	s, err := fakevllm.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
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

// ---- wire builders ----

const streamHeader = "HTTP/1.1 200 OK\r\ndate: Fri, 17 Apr 2026 16:57:24 GMT\r\nserver: uvicorn\r\n" +
	"content-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"

// chunked frames parts as an HTTP/1.1 chunked body, one chunk per part, and
// adds the terminating chunk.
func chunked(parts ...string) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		fmt.Fprintf(&b, "%x\r\n%s\r\n", len(p), p)
	}
	b.WriteString("0\r\n\r\n")
	return b.Bytes()
}

// rawChunk frames one part (no terminator).
func rawChunk(p string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(p), p) }

// sseResponse is a vLLM stream response, one chunk per event as uvicorn
// writes it.
func sseResponse(evs ...string) []byte {
	return append([]byte(streamHeader), chunked(evs...)...)
}

// jsonString is s as a JSON string literal.
func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// textEvent is a completion chunk as in ENGINES.md's capture; finish ""
// is null.
func textEvent(text, finish string) string {
	f := "null"
	if finish != "" {
		f = jsonString(finish)
	}
	return `data: {"id":"cmpl-a1fcb98a99df0198","object":"text_completion","created":1776445044,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[{"index":0,"text":` +
		jsonString(text) + `,"logprobs":null,"finish_reason":` + f + `,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"usage":null}` + "\n\n"
}

// usageEvent is the usage-only chunk.
func usageEvent(prompt, completion int) string {
	return fmt.Sprintf(`data: {"id":"cmpl-a1fcb98a99df0198","object":"text_completion","created":1776445044,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[],"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}}`+"\n\n",
		prompt, prompt+completion, completion)
}

const doneEvent = "data: [DONE]\n\n"

// httpResp is a keep-alive JSON response.
func httpResp(status, body string) []byte {
	return fmt.Appendf(nil, "HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s", status, len(body), body)
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

// serveEach answers every request on every connection with resp(n, path),
// n counting requests across connections from 0.
func serveEach(resp func(n int, path string, body []byte) []byte) func(c *srvConn) {
	var n atomic.Int32
	return func(c *srvConn) {
		for {
			req, body, err := c.readRequest()
			if err != nil {
				return
			}
			r := resp(int(n.Add(1)-1), req.URL.Path, body)
			if _, err := c.Write(r); err != nil {
				return
			}
			if bytes.Contains(bytes.ToLower(r), []byte("\r\nconnection: close\r\n")) {
				return
			}
		}
	}
}

// serveOnce answers the first request with resp and closes the connection
// (a response cut short stays cut).
func serveOnce(resp []byte) func(c *srvConn) {
	return func(c *srvConn) {
		if _, _, err := c.readRequest(); err != nil {
			return
		}
		_, _ = c.Write(resp)
	}
}

// serveAlways answers every request with resp.
func serveAlways(resp []byte) func(c *srvConn) {
	return serveEach(func(int, string, []byte) []byte { return resp })
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

// memDialer serves each dial with a memConn over resp, one segment per
// part.
func memDialer(parts ...[]byte) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(context.Context, string, string) (net.Conn, error) {
		return &memConn{segs: parts}, nil
	}
}
