package triton

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/goleak"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/fake/internal/faketest"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startServer starts a fake on a free loopback port, closed at cleanup.
func startServer(t testing.TB, o fake.Options) *Server { return faketest.Start(t, New, o) }

type response struct {
	status int
	ctype  string
	body   []byte
}

func do(t testing.TB, c *http.Client, method, url, body string) response {
	t.Helper()
	r, err := tryDo(c, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryDo is do for another goroutine than the test's: it returns the error.
func tryDo(c *http.Client, method, url, body string) (response, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: reading the body: %w", method, url, err)
	}
	return response{resp.StatusCode, resp.Header.Get("Content-Type"), b}, nil
}

// tframe is a decoded generate_stream frame.
type tframe struct {
	FinishReason    *string `json:"finish_reason"`
	ModelName       string  `json:"model_name"`
	ModelVersion    string  `json:"model_version"`
	NumInputTokens  *int    `json:"num_input_tokens"`
	NumOutputTokens *int    `json:"num_output_tokens"`
	TextOutput      *string `json:"text_output"`
	Error           *string `json:"error"`
}

func decode(t testing.TB, data []byte) tframe {
	t.Helper()
	var f tframe
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("frame %s: %v", data, err)
	}
	return f
}

func streamBody(prompt string, maxTokens int, seed int64, extra string) string {
	p, _ := json.Marshal(prompt)
	return `{"text_input":` + string(p) + `,"parameters":{"stream":true,"temperature":0,"max_tokens":` +
		strconv.Itoa(maxTokens) + `,"seed":` + strconv.FormatInt(seed, 10) +
		`,"return_num_output_tokens":true,"return_finish_reason":true,"return_num_input_tokens":true` + extra + `}}`
}

func genURL(s *Server, route string) string {
	return s.URL() + "/v2/models/" + DefaultModel + "/" + route
}

// keysOf returns the keys of a JSON object in document order.
func keysOf(t testing.TB, data []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", data)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

func TestStreamText(t *testing.T) {
	s := startServer(t, fake.Options{})
	c := faketest.Client(t)
	for _, tc := range []struct {
		name   string
		n      int
		seed   int64
		prompt string
	}{
		{"one token", 1, 42, "The capital of France is"},
		{"several tokens", 7, 7, "Hello world "},
		{"negative seed", 3, -5, "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, c, "POST", genURL(s, "generate_stream"), streamBody(tc.prompt, tc.n, tc.seed, ""))
			if r.status != 200 || r.ctype != ctypeSSE {
				t.Fatalf("status %d, content type %q: %s", r.status, r.ctype, r.body)
			}
			evs := faketest.Events(t, r.body)
			if len(evs) != tc.n {
				t.Fatalf("%d frames, want %d", len(evs), tc.n)
			}
			gen := fake.NewGenerator(tc.seed, tc.prompt, false)
			for i, ev := range evs {
				f := decode(t, ev)
				want, _ := gen.Token(i)
				if *f.TextOutput != want || *f.NumOutputTokens != 1 || *f.NumInputTokens != fake.CountTokens(tc.prompt) ||
					f.ModelName != DefaultModel || f.ModelVersion != "1" {
					t.Errorf("frame %d = %s, want text %q", i, ev, want)
				}
				wantReason := "None"
				if i == tc.n-1 {
					wantReason = "length"
				}
				if *f.FinishReason != wantReason {
					t.Errorf("frame %d finish_reason %q, want %q", i, *f.FinishReason, wantReason)
				}
			}
		})
	}
}

// TestDocumentedFrames compares the fake's frames with ENGINES.md §4's
// examples key by key: order (sorted, as Triton's std::map), JSON types,
// and which outputs appear for which return_* switch.
func TestDocumentedFrames(t *testing.T) {
	documented := []string{
		// The vLLM backend frame with return_num_output_tokens.
		`{"model_name":"vllm_model","model_version":"1","num_output_tokens":1,"text_output":" Paris"}`,
		// With return_finish_reason too.
		`{"finish_reason":"None","model_name":"vllm_model","model_version":"1","num_output_tokens":1,"text_output":" Paris"}`,
		// Everything the adapter asks for.
		`{"finish_reason":"length","model_name":"vllm_model","model_version":"1","num_input_tokens":6,"num_output_tokens":1,"text_output":" capital"}`,
		// No switches: text only.
		`{"model_name":"vllm_model","model_version":"1","text_output":" Paris"}`,
	}
	s := startServer(t, fake.Options{})
	c := faketest.Client(t)
	for i, extra := range []string{
		`"return_num_output_tokens":true`,
		`"return_num_output_tokens":true,"return_finish_reason":true`,
		`"return_num_output_tokens":true,"return_finish_reason":true,"return_num_input_tokens":true`,
		`"exclude_input_in_output":true`,
	} {
		body := `{"text_input":"The capital of France is","parameters":{"stream":true,"temperature":0,"max_tokens":1,"seed":42,` + extra + `}}`
		r := do(t, c, "POST", genURL(s, "generate_stream"), body)
		evs := faketest.Events(t, r.body)
		if r.status != 200 || len(evs) != 1 {
			t.Fatalf("case %d: status %d, %d frames", i, r.status, len(evs))
		}
		got, want := evs[0], []byte(documented[i])
		gk, wk := keysOf(t, got), keysOf(t, want)
		if strings.Join(gk, ",") != strings.Join(wk, ",") {
			t.Errorf("case %d: keys %v, documented %v", i, gk, wk)
			continue
		}
		var gm, wm map[string]any
		_ = json.Unmarshal(got, &gm)
		_ = json.Unmarshal(want, &wm)
		for _, k := range wk {
			if gt, wt := typeName(gm[k]), typeName(wm[k]); gt != wt {
				t.Errorf("case %d: %s is %s, documented %s", i, k, gt, wt)
			}
		}
		if gm["model_version"] != "1" || gm["model_name"] != "vllm_model" {
			t.Errorf("case %d: %s", i, got)
		}
		if bytes.ContainsAny(got, " \n") && !bytes.Contains(got, []byte(`":" `)) {
			t.Errorf("case %d: frame is not compact: %s", i, got)
		}
	}
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "?"
}

func TestTokensCapEOS(t *testing.T) {
	s := startServer(t, fake.Options{Tokens: 3})
	c := faketest.Client(t)
	r := do(t, c, "POST", genURL(s, "generate_stream"), streamBody("hi", 10, 1, ""))
	evs := faketest.Events(t, r.body)
	if len(evs) != 4 {
		t.Fatalf("%d frames, want 3 text + EOS", len(evs))
	}
	sum := 0
	for i, ev := range evs {
		f := decode(t, ev)
		sum += *f.NumOutputTokens
		if i < 3 && (*f.TextOutput == "" || *f.FinishReason != "None") {
			t.Errorf("frame %d: %s", i, ev)
		}
	}
	last := decode(t, evs[3])
	if *last.TextOutput != "" || *last.FinishReason != "stop" || sum != 4 {
		t.Errorf("EOS frame %s, Σ num_output_tokens %d (want 4: EOS counted)", evs[3], sum)
	}
}

func TestContextBound(t *testing.T) {
	s := startServer(t, fake.Options{Ctx: 8})
	c := faketest.Client(t)
	// "a b c d e" is 6 tokens with BOS: 2 fit before the context ends.
	r := do(t, c, "POST", genURL(s, "generate_stream"), streamBody("a b c d e", 100, 1, ""))
	evs := faketest.Events(t, r.body)
	if r.status != 200 || len(evs) != 2 || *decode(t, evs[1]).FinishReason != "length" {
		t.Fatalf("status %d, frames %q", r.status, evs)
	}
	// A prompt longer than the context: vLLM's validation error as the first
	// response (status 500, one SSE error event).
	r = do(t, c, "POST", genURL(s, "generate_stream"), streamBody("a b c d e f g h i", 4, 1, ""))
	evs = faketest.Events(t, r.body)
	if r.status != 500 || r.ctype != ctypeSSE || len(evs) != 1 {
		t.Fatalf("status %d %q: %s", r.status, r.ctype, r.body)
	}
	want := `{"error":"Error generating stream: The decoder prompt (length 10) is longer than the maximum model length of 8. Make sure that ` + "`max_model_len`" + ` is no smaller than the number of text tokens."}`
	if string(evs[0]) != want {
		t.Errorf("error event %s\nwant %s", evs[0], want)
	}
	// Same on /generate, as plain JSON.
	r = do(t, c, "POST", genURL(s, "generate"), `{"text_input":"a b c d e f g h i","parameters":{"max_tokens":4}}`)
	if r.status != 500 || r.ctype != ctypeJSON || !bytes.HasPrefix(r.body, []byte(`{"error":"Error generating stream: The decoder prompt`)) {
		t.Errorf("/generate: %d %q %s", r.status, r.ctype, r.body)
	}
}

func TestSplitUTF8(t *testing.T) {
	s := startServer(t, fake.Options{Fail: fake.FailSplitUTF8})
	c := faketest.Client(t)
	const n = 20
	r := do(t, c, "POST", genURL(s, "generate_stream"), streamBody("p", n, 3, ""))
	evs := faketest.Events(t, r.body)
	if len(evs) != n {
		t.Fatalf("%d frames, want %d (one per token)", len(evs), n)
	}
	gen := fake.NewGenerator(3, "p", true)
	var want, got []byte
	empty := 0
	for i, ev := range evs {
		piece, _ := gen.Token(i)
		want = append(want, piece...)
		f := decode(t, ev)
		if !utf8.ValidString(*f.TextOutput) {
			t.Errorf("frame %d text not valid UTF-8: %q", i, *f.TextOutput)
		}
		if *f.TextOutput == "" {
			empty++
		}
		got = append(got, *f.TextOutput...)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("joined text %q, want %q", got, want)
	}
	if empty != 8 {
		t.Errorf("%d empty frames, want 8 (the pieces ending inside a character)", empty)
	}
	if !strings.Contains(string(got), "😀") || !strings.Contains(string(got), "日本") {
		t.Errorf("text %q lacks the split characters", got)
	}
}

func TestGenerateNonStream(t *testing.T) {
	s := startServer(t, fake.Options{})
	c := faketest.Client(t)
	gen := fake.NewGenerator(9, "Hi there", false)
	var text string
	for i := range 3 {
		p, _ := gen.Token(i)
		text += p
	}
	for _, tc := range []struct {
		name, body, want string
	}{
		// Without exclude_input_in_output the vLLM backend prepends the prompt.
		{"prompt prepended", `{"text_input":"Hi there","parameters":{"max_tokens":3,"seed":9,"return_num_output_tokens":true}}`,
			`{"model_name":"vllm_model","model_version":"1","num_output_tokens":3,"text_output":"Hi there` + text + `"}`},
		{"prompt excluded", `{"text_input":"Hi there","exclude_input_in_output":true,"parameters":{"max_tokens":3,"seed":9,"return_finish_reason":true}}`,
			`{"finish_reason":"length","model_name":"vllm_model","model_version":"1","text_output":"` + text + `"}`},
		{"request id echoed", `{"id":"r1","text_input":"Hi there","parameters":{"max_tokens":3,"seed":9,"exclude_input_in_output":true}}`,
			`{"id":"r1","model_name":"vllm_model","model_version":"1","text_output":"` + text + `"}`},
		// A streaming backend behind /generate answers more than one response.
		{"stream on generate", `{"text_input":"Hi there","parameters":{"stream":true,"max_tokens":3}}`,
			`{"error":"` + msgGenerateOne + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, c, "POST", genURL(s, "generate"), tc.body)
			if r.status != 200 || r.ctype != ctypeJSON || string(r.body) != tc.want {
				t.Errorf("%d %q %s\nwant %s", r.status, r.ctype, r.body, tc.want)
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	s := startServer(t, fake.Options{})
	c := faketest.Client(t)
	for _, tc := range []struct {
		name, url, body string
		status          int
		msg             string
	}{
		{"not JSON", genURL(s, "generate_stream"), `{`, 400, "failed to parse the request JSON buffer"},
		{"no text_input", genURL(s, "generate_stream"), `{"parameters":{}}`, 400, "expected number of inputs"},
		{"stream not bool", genURL(s, "generate_stream"), `{"text_input":"x","stream":"yes"}`, 400, "'stream'"},
		{"unknown model", s.URL() + "/v2/models/other/generate_stream", `{"text_input":"x"}`, 404, "Request for unknown model: 'other' is not found"},
		{"unknown version", s.URL() + "/v2/models/vllm_model/versions/2/generate", `{"text_input":"x"}`, 404, "version 2 is not found"},
		{"max_tokens 0", genURL(s, "generate_stream"), streamBody("x", 0, 1, ""), 500, "Error generating stream: max_tokens must be at least 1, got 0."},
		{"exclude false while streaming", genURL(s, "generate_stream"), streamBody("x", 2, 1, `,"exclude_input_in_output":false`), 500, "`exclude_input_in_output` = False is not allowed"},
		{"GET on generate", genURL(s, "generate"), "", 405, "Method Not Allowed"},
		{"unknown route", s.URL() + "/v1/completions", "", 404, "Not Found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := "POST"
			if tc.body == "" {
				method = "GET"
			}
			r := do(t, c, method, tc.url, tc.body)
			if r.status != tc.status || !bytes.Contains(r.body, []byte(tc.msg)) || !bytes.Contains(r.body, []byte(`{"error":"`)) {
				t.Errorf("%d %s, want %d containing %q", r.status, r.body, tc.status, tc.msg)
			}
		})
	}
}

func TestStartFaults(t *testing.T) {
	for _, tc := range []struct {
		fail   string
		status int
		ctype  string
		body   string
	}{
		{fake.FailStart500, 500, ctypeSSE, "data: {\"error\":\"Error generating stream: " + msgEngineDead + "\"}\n\n"},
		{fake.FailStart503, 503, ctypeJSON, `{"error":"Exceeds maximum queue size"}`},
		// Triton never answers 429: overload is the UNAVAILABLE 503.
		{fake.FailStart429, 503, ctypeJSON, `{"error":"Exceeds maximum queue size"}`},
	} {
		t.Run(tc.fail, func(t *testing.T) {
			s := startServer(t, fake.Options{Fail: tc.fail})
			r := do(t, faketest.Client(t), "POST", genURL(s, "generate_stream"), streamBody("x", 4, 1, ""))
			if r.status != tc.status || r.ctype != tc.ctype || string(r.body) != tc.body {
				t.Errorf("%d %q %q, want %d %q %q", r.status, r.ctype, r.body, tc.status, tc.ctype, tc.body)
			}
			if s.Requests() != 1 || s.InFlight() != 0 {
				t.Errorf("requests %d, in flight %d", s.Requests(), s.InFlight())
			}
		})
	}
}

// rawStream sends a generate_stream request on a raw connection and returns
// everything until the server closes it or the deadline passes.
func rawStream(t testing.TB, s *Server, body string, keepOpen bool) (*bufio.Reader, net.Conn) {
	t.Helper()
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	connHdr := ""
	if !keepOpen {
		connHdr = "Connection: close\r\n"
	}
	req := "POST /v2/models/" + DefaultModel + "/generate_stream HTTP/1.1\r\nHost: x\r\n" + connHdr +
		"Content-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	return bufio.NewReader(nc), nc
}

func TestMidstreamFaults(t *testing.T) {
	for _, tc := range []struct {
		fail   string
		frames int    // token frames before the fault
		tail   string // what follows them in the body
		ended  bool   // the chunked body ends with its last chunk
	}{
		{fake.FailMidstreamDisconnect, 3, "", false},
		{fake.FailMalformed, 2, malformedEvent, true},
		{fake.FailMidstreamError, 2, "data: {\"error\":\"Error generating stream: " + msgEngineDead + "\"}\n\n", true},
	} {
		t.Run(tc.fail, func(t *testing.T) {
			s := startServer(t, fake.Options{Fail: tc.fail})
			br, _ := rawStream(t, s, streamBody("x", 8, 1, ""), false)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if tc.ended != (err == nil) {
				t.Fatalf("body read error %v; want a clean end: %v", err, tc.ended)
			}
			if !tc.ended && err != io.ErrUnexpectedEOF {
				t.Errorf("cut body: %v, want io.ErrUnexpectedEOF (no last chunk)", err)
			}
			n := 0
			for range tc.frames {
				i := bytes.Index(body, []byte("\n\n"))
				if i < 0 {
					t.Fatalf("frame %d missing in %q", n, body)
				}
				f := decode(t, bytes.TrimPrefix(body[:i], []byte("data: ")))
				if *f.FinishReason != "None" || *f.TextOutput == "" {
					t.Errorf("frame %d: %s", n, body[:i])
				}
				body = body[i+2:]
				n++
			}
			if string(body) != tc.tail {
				t.Errorf("after %d frames: %q, want %q", n, body, tc.tail)
			}
			faketest.WaitFor(t, "slot freed", func() bool { return s.InFlight() == 0 })
		})
	}
}

// readFrames reads n SSE events from a chunked response.
func readFrames(r io.Reader, n int) error {
	br := bufio.NewReader(r)
	for i := 0; i < n; i++ {
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "data: {") {
			return fmt.Errorf("frame %d: %q %v", i, line, err)
		}
		if blank, err := br.ReadString('\n'); err != nil || blank != "\n" {
			return fmt.Errorf("frame %d end: %q %v", i, blank, err)
		}
	}
	return nil
}

func TestStallAndCancelFreeTheSlot(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    fake.Options
		read int
	}{
		{"stall", fake.Options{Fail: fake.FailStall}, 2},
		{"cancel mid-stream", fake.Options{ITL: time.Hour}, 1},
		{"cancel before the first token", fake.Options{TTFT: time.Hour}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, tc.o)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", genURL(s, "generate_stream"), strings.NewReader(streamBody("x", 50, 1, "")))
			c := faketest.Client(t)
			read := make(chan error, 1) // the frames read, or why not
			done := make(chan struct{})
			go func() {
				defer close(done)
				resp, err := c.Do(req)
				if err != nil {
					read <- err // canceled before the header
					return
				}
				defer resp.Body.Close()
				read <- readFrames(resp.Body, tc.read)
				_, _ = io.Copy(io.Discard, resp.Body)
			}()
			if tc.read > 0 {
				if err := enginetest.Recv(t, read, "the first frames"); err != nil {
					t.Fatalf("reading %d frames: %v", tc.read, err)
				}
			}
			faketest.WaitFor(t, "slot taken", func() bool { return s.InFlight() == 1 })
			cancel()
			enginetest.Recv(t, done, "the request to end after cancel")
			faketest.WaitFor(t, "slot freed", func() bool { return s.InFlight() == 0 })
		})
	}
}

func TestSlotsQueueFIFO(t *testing.T) {
	s := startServer(t, fake.Options{Slots: 1, ITL: 20 * time.Millisecond})
	c := faketest.Client(t)
	type result struct {
		i    int
		at   time.Time
		resp response
		err  error
	}
	results := make(chan result, 3)
	for i := range 3 {
		go func() {
			r, err := tryDo(c, "POST", genURL(s, "generate_stream"), streamBody("q"+strconv.Itoa(i), 3, 1, ""))
			results <- result{i, time.Now(), r, err}
		}()
		faketest.WaitFor(t, "queued in order", func() bool { return s.InFlight()+s.Deferred() == i+1 })
	}
	order := []int{}
	for range 3 {
		r := enginetest.Recv(t, results, "a request to end")
		if r.err != nil {
			t.Fatalf("request %d: %v", r.i, r.err)
		}
		if r.resp.status != 200 || len(faketest.Events(t, r.resp.body)) != 3 {
			t.Errorf("request %d: %d %s", r.i, r.resp.status, r.resp.body)
		}
		order = append(order, r.i)
	}
	if order[0] != 0 || order[1] != 1 || order[2] != 2 {
		t.Errorf("finish order %v, want FIFO", order)
	}
	if s.Requests() != 3 {
		t.Errorf("requests %d", s.Requests())
	}
}

func TestLoading(t *testing.T) {
	s := startServer(t, fake.Options{Load: 300 * time.Millisecond})
	c := faketest.Client(t)
	for _, tc := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"GET", "/v2/health/live", "", 200, ""},
		{"GET", "/v2/health/ready", "", 400, ""},
		{"GET", "/v2/models/vllm_model/ready", "", 400, `{"error":"Model version not ready"}`},
		{"POST", "/v2/models/vllm_model/generate_stream", streamBody("x", 1, 1, ""), 404,
			`{"error":"Request for unknown model: 'vllm_model' has no available versions"}`},
	} {
		r := do(t, c, tc.method, s.URL()+tc.path, tc.body)
		if r.status != tc.status || string(r.body) != tc.want {
			t.Errorf("loading: %s %s = %d %q, want %d %q", tc.method, tc.path, r.status, r.body, tc.status, tc.want)
		}
	}
	faketest.WaitFor(t, "ready", func() bool { return do(t, c, "GET", s.URL()+"/v2/health/ready", "").status == 200 })
	if r := do(t, c, "GET", s.URL()+"/v2/models/vllm_model/ready", ""); r.status != 200 || len(r.body) != 0 {
		t.Errorf("model ready after load: %d %q", r.status, r.body)
	}
	if r := do(t, c, "GET", s.URL()+"/v2/models/other/ready", ""); r.status != 400 {
		t.Errorf("other model ready: %d %q", r.status, r.body)
	}
}

func TestMetadata(t *testing.T) {
	s := startServer(t, fake.Options{EngineVersion: "2.99.0", Model: "m1"})
	c := faketest.Client(t)
	r := do(t, c, "GET", s.URL()+"/v2", "")
	var meta struct {
		Name       string   `json:"name"`
		Version    string   `json:"version"`
		Extensions []string `json:"extensions"`
	}
	if err := json.Unmarshal(r.body, &meta); err != nil || meta.Name != "triton" || meta.Version != "2.99.0" || len(meta.Extensions) == 0 {
		t.Errorf("/v2: %s %v", r.body, err)
	}
	if k := keysOf(t, r.body); strings.Join(k, ",") != "name,version,extensions" {
		t.Errorf("/v2 keys %v", k)
	}
	r = do(t, c, "GET", s.URL()+"/v2/models/m1", "")
	var mm struct {
		Name     string   `json:"name"`
		Versions []string `json:"versions"`
		Inputs   []struct {
			Name string `json:"name"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal(r.body, &mm); err != nil || mm.Name != "m1" || len(mm.Versions) != 1 || mm.Inputs[0].Name != "text_input" {
		t.Errorf("model metadata: %s %v", r.body, err)
	}
	if r := do(t, c, "GET", s.URL()+"/v2/models/vllm_model", ""); r.status != 404 {
		t.Errorf("default model name served under -model m1: %d", r.status)
	}
}

func TestMetricsGauges(t *testing.T) {
	s := startServer(t, fake.Options{Slots: 2, Ctx: 100, TTFT: time.Hour})
	c := faketest.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 3 {
		req, _ := http.NewRequestWithContext(ctx, "POST", genURL(s, "generate_stream"), strings.NewReader(streamBody("a b c", 5, int64(i), "")))
		go func() {
			if resp, err := c.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	faketest.WaitFor(t, "2 running, 1 waiting", func() bool { return s.InFlight() == 2 && s.Deferred() == 1 })
	m := string(do(t, c, "GET", s.URL()+"/metrics", "").body)
	for _, want := range []string{
		"nv_inference_pending_request_count{model=\"vllm_model\",version=\"1\"} 0\n",
		"vllm:num_requests_running{model=\"vllm_model\",version=\"1\"} 2\n",
		"vllm:num_requests_waiting{model=\"vllm_model\",version=\"1\"} 1\n",
		// Two prompts of 4 tokens held in a KV of 2×100.
		"vllm:gpu_cache_usage_perc{model=\"vllm_model\",version=\"1\"} 0.04\n",
		"nv_gpu_utilization{gpu_uuid=\"" + s.gpuUUID + "\"} 1\n",
		"nv_gpu_memory_used_bytes{gpu_uuid=\"" + s.gpuUUID + "\"} " + strconv.Itoa(gpuWeightsBytes+8*kvBytesPerToken) + "\n",
		"# TYPE nv_gpu_utilization gauge\n",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q:\n%s", want, m)
		}
	}
	cancel()
	faketest.WaitFor(t, "idle", func() bool { return s.InFlight() == 0 && s.Deferred() == 0 })
}

func TestNewValidates(t *testing.T) {
	for _, o := range []fake.Options{
		{Engine: "vllm"},
		{Fail: "explode"},
		{Slots: -1},
		{Ctx: 1},
		{Model: "a/b"},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
	s, err := New(fake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close before Start: %v", err)
	}
	if err := s.Start("127.0.0.1:0"); err == nil {
		t.Error("Start after Close succeeded")
	}
}

func TestAppendString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", `"plain"`},
		{"a\"b\\c/d", `"a\"b\\c/d"`},
		{"\n\t\r\b\f\x01\x1f", `"\n\t\r\b\f\u0001\u001F"`},
		{"日本😀", `"日本😀"`},
		{"bad\xffbyte", "\"bad\uFFFDbyte\""},
	} {
		if got := string(appendString(nil, tc.in)); got != tc.want {
			t.Errorf("appendString(%q) = %s, want %s", tc.in, got, tc.want)
		}
		var back string
		if err := json.Unmarshal(appendString(nil, tc.in), &back); err != nil {
			t.Errorf("%q: not JSON: %v", tc.in, err)
		}
	}
}
