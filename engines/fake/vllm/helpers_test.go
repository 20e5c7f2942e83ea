package vllm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/llama-orch/llama-orch/engines/fake"
)

// leakCheck verifies, after the test and all its cleanups, that no goroutine
// was left behind. Call it first so that its cleanup runs last.
func leakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// waitTimeout guards waits so that a bug fails instead of hanging; it is
// never a timing assertion.
const waitTimeout = 10 * time.Second

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

// start starts a fake on a free loopback port and returns it with an HTTP
// client whose idle connections are closed at cleanup.
func start(t *testing.T, o fake.Options) (*Server, *http.Client) {
	t.Helper()
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		_ = s.Close()
	})
	return s, &http.Client{Transport: tr, Timeout: waitTimeout}
}

// post sends a JSON body.
func post(t *testing.T, c *http.Client, url, body string) *http.Response {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// readAll reads a whole response and closes it.
func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return b
}

// dataFrames splits an SSE body into its data payloads; every event must
// be exactly one `data: ` line and its blank line.
func dataFrames(t *testing.T, body []byte) []string {
	t.Helper()
	if !bytes.HasSuffix(body, []byte("\n\n")) {
		t.Fatalf("SSE body does not end with a blank line: %q", body)
	}
	var out []string
	for _, ev := range strings.Split(strings.TrimSuffix(string(body), "\n\n"), "\n\n") {
		d, ok := strings.CutPrefix(ev, "data: ")
		if !ok || strings.Contains(d, "\n") {
			t.Fatalf("event %q is not one data line", ev)
		}
		out = append(out, d)
	}
	return out
}

// sseReader reads events one at a time from a live stream.
type sseReader struct{ br *bufio.Reader }

func (r *sseReader) next() (string, error) {
	var ev strings.Builder
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			return ev.String() + line, err
		}
		if line == "\n" {
			return strings.TrimPrefix(strings.TrimSuffix(ev.String(), "\n"), "data: "), nil
		}
		ev.WriteString(line)
	}
}

// shape describes a JSON value's structure: object keys in order, value
// types, nulls; strings and numbers are "s" and "n".
func shape(t *testing.T, data string) string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(data))
	dec.UseNumber()
	var b strings.Builder
	var walk func() error
	walk = func() error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' {
				b.WriteByte('{')
				for i := 0; dec.More(); i++ {
					k, err := dec.Token()
					if err != nil {
						return err
					}
					if i > 0 {
						b.WriteByte(',')
					}
					b.WriteString(k.(string) + ":")
					if err := walk(); err != nil {
						return err
					}
				}
				b.WriteByte('}')
			} else {
				b.WriteByte('[')
				for i := 0; dec.More(); i++ {
					if i > 0 {
						b.WriteByte(',')
					}
					if err := walk(); err != nil {
						return err
					}
				}
				b.WriteByte(']')
			}
			_, err = dec.Token() // the closing delimiter
			return err
		case string:
			b.WriteString("s")
		case json.Number:
			b.WriteString("n")
		case bool:
			b.WriteString("b")
		case nil:
			b.WriteString("null")
		}
		return nil
	}
	if err := walk(); err != nil {
		t.Fatalf("shape(%q): %v", data, err)
	}
	return b.String()
}

// decodeMap decodes a JSON object with numbers as json.Number.
func decodeMap(t *testing.T, data string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decode %q: %v", data, err)
	}
	return m
}

// choice returns choices[0] of a decoded chunk.
func choice(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	cs, ok := m["choices"].([]any)
	if !ok || len(cs) != 1 {
		t.Fatalf("choices %v", m["choices"])
	}
	return cs[0].(map[string]any)
}

// get is a GET with a context.
func get(t *testing.T, c *http.Client, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// jsonNumber and jsonUnmarshal spare the other test files the import.
type jsonNumber = json.Number

var jsonUnmarshal = json.Unmarshal

func newBufReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }
