package vllm

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/fake/internal/faketest"
)

// leakCheck verifies, after the test and all its cleanups, that no goroutine
// was left behind. Call it first so that its cleanup runs last.
func leakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// start starts a fake on a free loopback port and returns it with an HTTP
// client whose idle connections are closed at cleanup.
func start(t *testing.T, o fake.Options) (*Server, *http.Client) {
	t.Helper()
	c := faketest.Client(t) // registered first: its cleanup runs after Close
	return faketest.Start(t, New, o), c
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

// dataFrames splits an SSE body into its data payloads (faketest.Events).
func dataFrames(t *testing.T, body []byte) []string {
	t.Helper()
	var out []string
	for _, d := range faketest.Events(t, body) {
		out = append(out, string(d))
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

// shape describes a JSON value's structure (faketest.Shape).
func shape(t *testing.T, data string) string { t.Helper(); return faketest.Shape(t, []byte(data)) }

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
