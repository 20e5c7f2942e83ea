package tgi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/llama-orch/llama-orch/engines/fake"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds waits for state the fake reaches on its own; it is a
// guard against hangs, never a performance assertion.
const waitTimeout = 10 * time.Second

// startFake starts a fake on a free loopback port, closed at cleanup; tune
// runs before Start (tests shorten the keep-alive interval).
func startFake(t testing.TB, o fake.Options, tune ...func(*Server)) *Server {
	t.Helper()
	s, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, f := range tune {
		f(s)
	}
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

// newClient is an HTTP client whose idle connections close at cleanup.
func newClient(t testing.TB) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// post sends a JSON body.
func post(t testing.TB, ctx context.Context, c *http.Client, url, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return resp
}

func get(t testing.TB, c *http.Client, url string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, resp.Header, b
}

// events reads SSE events (each with its blank line) until the body ends;
// err is the read error that ended it (nil at a clean end).
func events(r io.Reader) (evs []string, err error) {
	br := bufio.NewReader(r)
	var cur strings.Builder
	for {
		line, rerr := br.ReadString('\n')
		cur.WriteString(line)
		if line == "\n" {
			evs = append(evs, cur.String())
			cur.Reset()
		}
		if rerr != nil {
			if rerr == io.EOF {
				if cur.Len() > 0 {
					return evs, io.ErrUnexpectedEOF
				}
				return evs, nil
			}
			return evs, rerr
		}
	}
}

// streamOf posts to /generate_stream and reads the whole stream.
func streamOf(t testing.TB, s *Server, body string) (*http.Response, []string, error) {
	t.Helper()
	resp := post(t, context.Background(), newClient(t), s.URL()+"/generate_stream", body)
	defer resp.Body.Close()
	evs, err := events(resp.Body)
	return resp, evs, err
}

// frame is a decoded stream frame.
type frame struct {
	Index int `json:"index"`
	Token *struct {
		ID      int     `json:"id"`
		Text    string  `json:"text"`
		Logprob float64 `json:"logprob"`
		Special bool    `json:"special"`
	} `json:"token"`
	GeneratedText *string `json:"generated_text"`
	Details       *struct {
		FinishReason    string  `json:"finish_reason"`
		GeneratedTokens int     `json:"generated_tokens"`
		Seed            *uint64 `json:"seed"`
		InputLength     int     `json:"input_length"`
	} `json:"details"`
	Error     *string `json:"error"`
	ErrorType string  `json:"error_type"`
}

// data returns an event's data (the event must be one `data: ` line).
func data(t testing.TB, ev string) []byte {
	t.Helper()
	if !strings.HasPrefix(ev, "data: ") || !strings.HasSuffix(ev, "\n\n") || strings.Count(ev, "\n") != 2 {
		t.Fatalf("event %q is not one `data: ` line and a blank line", ev)
	}
	return []byte(ev[len("data: ") : len(ev)-2])
}

func decode(t testing.TB, ev string) frame {
	t.Helper()
	var f frame
	d := json.NewDecoder(bytes.NewReader(data(t, ev)))
	d.DisallowUnknownFields()
	if err := d.Decode(&f); err != nil {
		t.Fatalf("frame %q: %v", ev, err)
	}
	return f
}

// shape renders a JSON document's structure: object keys in order, value
// types, nulls; array elements in full. Values themselves are left out.
func shape(t testing.TB, doc []byte) string {
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
			switch v {
			case '{':
				b.WriteByte('{')
				for i := 0; d.More(); i++ {
					k, err := d.Token()
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
			case '[':
				b.WriteByte('[')
				for i := 0; d.More(); i++ {
					if i > 0 {
						b.WriteByte(',')
					}
					if err := walk(); err != nil {
						return err
					}
				}
				b.WriteByte(']')
			}
			_, err := d.Token() // the closing delimiter
			return err
		case json.Number:
			if strings.ContainsAny(string(v), ".eE") {
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
		t.Fatalf("shape of %s: %v", doc, err)
	}
	return b.String()
}

// waitFor polls cond until it holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// readEvent reads one SSE event from br.
func readEvent(br *bufio.Reader) (string, error) {
	var cur strings.Builder
	for {
		line, err := br.ReadString('\n')
		cur.WriteString(line)
		if err != nil {
			if cur.Len() > 0 && !errors.Is(err, io.EOF) {
				return cur.String(), err
			}
			return cur.String(), err
		}
		if line == "\n" {
			return cur.String(), nil
		}
	}
}
