package fake

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/llama-orch/llama-orch/engines/fake/internal/faketest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixturesDir is fixtures/llamacpp of the shared tree, relative to this
// package directory (engines/fake); tests that need it skip without it.
func fixturesDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "fixtures", "llamacpp")
	if _, err := os.Stat(filepath.Join(dir, "completion_stream.body.sse")); err != nil {
		t.Skipf("llama.cpp fixtures not found at %s: %v", dir, err)
	}
	return dir
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixturesDir(t), name))
	if err != nil {
		t.Fatalf("cannot read fixture: %v", err)
	}
	return b
}

// startServer starts a fake on a free loopback port, closed at cleanup.
func startServer(t testing.TB, o Options) *Server { return faketest.Start(t, New, o) }

// client is a raw HTTP/1.1 client over one connection, for byte-level
// checks of heads, chunks and abrupt ends.
type client struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, s *Server) *client {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	// A safety net against hangs, far above any test's needs.
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	cl := &client{t: t, c: c, br: bufio.NewReader(c)}
	t.Cleanup(func() { c.Close() })
	return cl
}

// send writes a request the way curl does (Host, User-Agent, Accept, and
// Content-Type/Length with a body); extra header lines are added as given.
func (cl *client) send(method, path, body string, extra ...string) {
	cl.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n", method, path, cl.c.RemoteAddr())
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	if body != "" || method == "POST" {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	if _, err := io.WriteString(cl.c, b.String()); err != nil {
		cl.t.Fatalf("send: %v", err)
	}
}

// response is a response head.
type response struct {
	status int
	head   string // status line and headers, CRLF, with the blank line
	names  []string
	hdr    map[string]string
}

func (cl *client) readHead() *response {
	cl.t.Helper()
	r, err := cl.tryReadHead()
	if err != nil {
		cl.t.Fatal(err)
	}
	return r
}

// tryReadHead is readHead for another goroutine than the test's: it
// returns the error.
func (cl *client) tryReadHead() (*response, error) {
	r := &response{hdr: map[string]string{}}
	var head strings.Builder
	for {
		line, err := cl.br.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("read head: %v (so far %q)", err, head.String())
		}
		head.WriteString(line)
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if r.status == 0 {
			f := strings.Fields(line)
			if len(f) < 2 {
				return nil, fmt.Errorf("bad status line %q", line)
			}
			r.status, _ = strconv.Atoi(f[1])
			continue
		}
		k, v, _ := strings.Cut(line, ": ")
		r.names = append(r.names, k)
		r.hdr[k] = v
	}
	r.head = head.String()
	return r, nil
}

// body reads a Content-Length body.
func (cl *client) body(r *response) []byte {
	cl.t.Helper()
	n, err := strconv.Atoi(r.hdr["Content-Length"])
	if err != nil {
		cl.t.Fatalf("no Content-Length in %q", r.head)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(cl.br, b); err != nil {
		cl.t.Fatalf("read body: %v", err)
	}
	return b
}

var errLastChunk = errors.New("last chunk")

// chunk reads one chunk: errLastChunk at the 0-length chunk, another error
// when the body is cut.
func (cl *client) chunk() ([]byte, error) {
	line, err := cl.br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	n, err := strconv.ParseInt(strings.TrimRight(line, "\r\n"), 16, 32)
	if err != nil {
		return nil, fmt.Errorf("bad chunk size line %q", line)
	}
	if n == 0 {
		if _, err := cl.br.ReadString('\n'); err != nil {
			return nil, err
		}
		return nil, errLastChunk
	}
	b := make([]byte, n+2)
	if _, err := io.ReadFull(cl.br, b); err != nil {
		return nil, err
	}
	if string(b[n:]) != "\r\n" {
		return nil, fmt.Errorf("chunk not followed by CRLF")
	}
	return b[:n], nil
}

// event reads one chunk and checks it is exactly one SSE event
// `data: …\n\n`, returning its data.
func (cl *client) event() ([]byte, error) {
	b, err := cl.chunk()
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(b, []byte("data: ")) || !bytes.HasSuffix(b, []byte("\n\n")) || bytes.Count(b, []byte("\n\n")) != 1 {
		return nil, fmt.Errorf("chunk is not one SSE event: %q", b)
	}
	return b[len("data: ") : len(b)-2], nil
}

// streamResult is a whole stream as read by readStream.
type streamResult struct {
	partials []frameJSON
	raw      [][]byte // every event's data
	final    *frameJSON
	// ended: the 0-length chunk arrived; cut: the body ended without it.
	ended bool
	cut   bool
}

type frameJSON struct {
	Index           int    `json:"index"`
	Content         string `json:"content"`
	Tokens          []int  `json:"tokens"`
	Stop            bool   `json:"stop"`
	IDSlot          int    `json:"id_slot"`
	Model           string `json:"model"`
	TokensPredicted int    `json:"tokens_predicted"`
	TokensEvaluated int    `json:"tokens_evaluated"`
	Prompt          string `json:"prompt"`
	Truncated       bool   `json:"truncated"`
	StopType        string `json:"stop_type"`
	TokensCached    int    `json:"tokens_cached"`
	Timings         struct {
		CacheN      int     `json:"cache_n"`
		PromptN     int     `json:"prompt_n"`
		PredictedN  int     `json:"predicted_n"`
		PredictedMs float64 `json:"predicted_ms"`
	} `json:"timings"`
}

// readStream reads events until the last chunk or the end of the body.
// Events that are not valid JSON are kept in raw only.
func (cl *client) readStream() *streamResult {
	cl.t.Helper()
	res := &streamResult{}
	for {
		data, err := cl.event()
		if errors.Is(err, errLastChunk) {
			res.ended = true
			return res
		}
		if err != nil {
			res.cut = true
			return res
		}
		res.raw = append(res.raw, data)
		var f frameJSON
		if json.Unmarshal(data, &f) != nil {
			continue
		}
		if f.Stop {
			res.final = &f
		} else if !bytes.HasPrefix(data, []byte(`{"error"`)) {
			res.partials = append(res.partials, f)
		}
	}
}

// do sends one request on a fresh connection and returns the head and the
// Content-Length body.
func do(t testing.TB, s *Server, method, path, body string, extra ...string) (*response, []byte) {
	t.Helper()
	cl := dial(t, s)
	cl.send(method, path, body, extra...)
	r := cl.readHead()
	return r, cl.body(r)
}

// stream sends a streaming completion on a fresh connection and reads it.
func stream(t testing.TB, s *Server, body string) (*response, *streamResult) {
	t.Helper()
	cl := dial(t, s)
	cl.send("POST", "/completion", body)
	r := cl.readHead()
	if r.hdr["Transfer-Encoding"] != "chunked" {
		return r, &streamResult{raw: [][]byte{cl.body(r)}}
	}
	return r, cl.readStream()
}
