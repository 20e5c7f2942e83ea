package triton

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	faketriton "github.com/llama-orch/llama-orch/engines/fake/triton"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startFake starts a fake Triton on a free loopback port, closed at cleanup.
func startFake(t testing.TB, o fake.Options) *faketriton.Server {
	t.Helper()
	s, err := faketriton.New(o)
	if err != nil {
		t.Fatalf("fake: %v", err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("fake: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("fake Close: %v", err)
		}
	})
	return s
}

// newAdapter returns an adapter for url, closed at cleanup; Model defaults
// to the fake's.
func newAdapter(t testing.TB, url string, o Options) *Adapter {
	t.Helper()
	if o.Model == "" {
		o.Model = faketriton.DefaultModel
	}
	a, err := New(url, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// recordSink records tokens (copied) and flushes; onToken, when set, runs
// after each token.
type recordSink struct {
	tokens  []string
	flushes int
	onToken func(n int)
	onFlush func()
}

func (s *recordSink) Token(b []byte) {
	s.tokens = append(s.tokens, string(b))
	if s.onToken != nil {
		s.onToken(len(s.tokens))
	}
}

func (s *recordSink) Flush() {
	s.flushes++
	if s.onFlush != nil {
		s.onFlush()
	}
}

func (s *recordSink) text() string { return strings.Join(s.tokens, "") }

func request(prompt string, maxTokens int, seed int64) *engines.Request {
	return &engines.Request{TaskID: "t1", Prompt: prompt, MaxTokens: maxTokens, Seed: seed}
}

// wantKind checks that err is an *engines.Error of kind.
func wantKind(t testing.TB, err error, kind engines.ErrorKind) *engines.Error {
	t.Helper()
	e, ok := engines.AsError(err)
	if !ok {
		t.Fatalf("error %v (%T), want *engines.Error of kind %s", err, err, kind)
	}
	if e.Kind != kind {
		t.Fatalf("error %v: kind %s, want %s", e, e.Kind, kind)
	}
	return e
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// scripted is a loopback server that answers each request with a handler
// writing raw bytes to the connection, so tests control framing byte for
// byte (cut chunked bodies, odd headers). A handler returning false closes
// the connection.
type scripted struct {
	ln      net.Listener
	wg      sync.WaitGroup
	accepts atomic.Int64
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	// last request seen
	lastPath string
	lastBody string
}

type handler func(s *scripted, r *http.Request, w *bufio.Writer, nc net.Conn) bool

func newScripted(t testing.TB, h handler) *scripted {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			s.mu.Lock()
			s.conns[nc] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer nc.Close()
				br := bufio.NewReader(nc)
				bw := bufio.NewWriter(nc)
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					body, _ := io.ReadAll(r.Body)
					s.mu.Lock()
					s.lastPath, s.lastBody = r.URL.Path, string(body)
					s.mu.Unlock()
					keep := h(s, r, bw, nc)
					if bw.Flush() != nil || !keep {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *scripted) url() string { return "http://" + s.ln.Addr().String() }

func (s *scripted) last() (path, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastPath, s.lastBody
}

// chunk frames p as one HTTP chunk.
func chunk(p string) string { return strconv.FormatInt(int64(len(p)), 16) + "\r\n" + p + "\r\n" }

const lastChunk = "0\r\n\r\n"

// sseHead is Triton's stream header.
func sseHead(status int) string {
	return "HTTP/1.1 " + strconv.Itoa(status) + " " + http.StatusText(status) +
		"\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n"
}

// events turns frames into `data: …\n\n` events, one chunk each.
func events(frames ...string) string {
	var b strings.Builder
	for _, f := range frames {
		b.WriteString(chunk("data: " + f + "\n\n"))
	}
	return b.String()
}

// replay answers every request with raw, keeping the connection.
func replay(raw string) handler {
	return func(_ *scripted, _ *http.Request, w *bufio.Writer, _ net.Conn) bool {
		_, _ = w.WriteString(raw)
		return true
	}
}

// cut answers raw and closes the connection (no last chunk unless raw has
// one).
func cut(raw string) handler {
	return func(_ *scripted, _ *http.Request, w *bufio.Writer, _ net.Conn) bool {
		_, _ = w.WriteString(raw)
		return false
	}
}

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

// runMem decodes a whole in-memory response with the adapter's own header
// parser, de-chunker, SSE reader and decoder.
func runMem(st *streamState, mc *memConn, maxTokens int, sink engines.Sink) (engines.Result, error) {
	mc.reset()
	if err := st.x.ReadResponse(mc); err != nil {
		return engines.Result{}, err
	}
	res, _, err := st.run(context.Background(), maxTokens, sink)
	return res, err
}
