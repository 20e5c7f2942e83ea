package triton

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	faketriton "github.com/llama-orch/llama-orch/engines/fake/triton"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
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

// scripted is a loopback server that answers each request with a handler
// writing raw bytes to the connection, so tests control framing byte for
// byte (cut chunked bodies, odd headers). A handler returning false closes
// the connection.
type scripted struct {
	*enginetest.Server
	mu sync.Mutex
	// last request seen
	lastPath string
	lastBody string
}

type handler func(s *scripted, r *http.Request, w *bufio.Writer, nc net.Conn) bool

func newScripted(t testing.TB, h handler) *scripted {
	t.Helper()
	s := &scripted{}
	s.Server = enginetest.NewServer(t, func(c *enginetest.Conn) {
		bw := bufio.NewWriter(c)
		for {
			r, body, err := c.ReadRequest()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.lastPath, s.lastBody = r.URL.Path, string(body)
			s.mu.Unlock()
			keep := h(s, r, bw, c.Conn)
			if bw.Flush() != nil || !keep {
				return
			}
		}
	})
	return s
}

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

// runMem decodes a whole in-memory response with the adapter's own header
// parser, de-chunker, SSE reader and decoder.
func runMem(st *streamState, mc *enginetest.MemConn, maxTokens int, sink engines.Sink) (engines.Result, error) {
	mc.Reset()
	if err := st.x.ReadResponse(mc); err != nil {
		return engines.Result{}, err
	}
	res, _, err := st.run(context.Background(), maxTokens, sink)
	return res, err
}
