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

	"go.uber.org/goleak"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/fake/internal/faketest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
	return faketest.Run(t, s)
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
	resp := post(t, context.Background(), faketest.Client(t), s.URL()+"/generate_stream", body)
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
