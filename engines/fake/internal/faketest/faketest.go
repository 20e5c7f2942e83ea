// Package faketest holds what the fake engines' tests share: starting a
// replica on a loopback port for the length of a test, an HTTP client that
// leaves no idle connection behind (goleak), polling for state the fake
// reaches on its own, bounded channel receives, splitting SSE bodies and
// rendering a JSON document's shape to compare a fake's output with an
// engine's documented capture.
package faketest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
)

// WaitTimeout bounds every wait for state a fake reaches on its own: a
// guard against hangs, never a performance assertion.
const WaitTimeout = enginetest.WaitTimeout

// Server is a fake engine replica.
type Server interface {
	Start(addr string) error
	Close() error
}

// Start creates a replica with newServer(o) and runs it (see Run).
func Start[O any, S Server](t testing.TB, newServer func(O) (S, error), o O) S {
	t.Helper()
	s, err := newServer(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return Run(t, s)
}

// Run starts s on a free loopback port and closes it at cleanup; a failing
// Close fails the test.
func Run[S Server](t testing.TB, s S) S {
	t.Helper()
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// Client returns an HTTP client whose idle connections are closed at
// cleanup, so that goleak finds no connection goroutine left.
func Client(t testing.TB) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 3 * WaitTimeout}
}

// WaitFor polls cond until it holds, failing the test after WaitTimeout
// (enginetest.Eventually).
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	enginetest.Eventually(t, what, cond)
}

// Events splits a whole SSE body into its events' data, failing the test
// unless every event is exactly one `data: ` line and its blank line.
func Events(t testing.TB, body []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(body) > 0 {
		i := bytes.Index(body, []byte("\n\n"))
		if i < 0 {
			t.Fatalf("unterminated event %q", body)
		}
		ev := body[:i]
		body = body[i+2:]
		d, ok := bytes.CutPrefix(ev, []byte("data: "))
		if !ok || bytes.IndexByte(d, '\n') >= 0 {
			t.Fatalf("event %q is not one `data: ` line", ev)
		}
		out = append(out, d)
	}
	return out
}

// Shape renders a JSON document's structure: object keys in their order
// with the shapes of their values, arrays element by element, and the
// kinds of scalars (string, int, float, bool, null); values are left out.
// A document that is not JSON fails the test.
func Shape(t testing.TB, doc []byte) string {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	var b strings.Builder
	var walk func() error
	walk = func() error {
		tok, err := d.Token()
		if err != nil {
			return err
		}
		switch v := tok.(type) {
		case json.Delim:
			open, end := byte('{'), byte('}')
			if v == '[' {
				open, end = '[', ']'
			}
			b.WriteByte(open)
			for i := 0; d.More(); i++ {
				if i > 0 {
					b.WriteByte(',')
				}
				if open == '{' {
					k, err := d.Token()
					if err != nil {
						return err
					}
					b.WriteString(k.(string) + ":")
				}
				if err := walk(); err != nil {
					return err
				}
			}
			b.WriteByte(end)
			_, err := d.Token() // the closing delimiter
			return err
		case json.Number:
			if strings.ContainsAny(v.String(), ".eE") {
				b.WriteString("float")
			} else {
				b.WriteString("int")
			}
		case string:
			b.WriteString("string")
		case bool:
			b.WriteString("bool")
		case nil:
			b.WriteString("null")
		}
		return nil
	}
	if err := walk(); err != nil {
		t.Fatalf("shape of %q: %v", doc, err)
	}
	if d.More() {
		t.Fatalf("shape of %q: more than one JSON value", doc)
	}
	return b.String()
}
