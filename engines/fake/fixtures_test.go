package fake

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines/fake/internal/faketest"
)

// The fake against the real llama-server captures (fixtures/llamacpp). The
// capture server ran with -c 2048 --parallel 2, so per-slot n_ctx 1024.
var captureOpts = Options{Slots: 2, Ctx: 1024}

// TestFixtureBytes compares whole responses (head and body) with captures
// where the fake must be byte-identical.
func TestFixtureBytes(t *testing.T) {
	fixturesDir(t)
	s := startServer(t, captureOpts)
	tooLong := func(stream bool) string {
		b, _ := json.Marshal(map[string]any{"prompt": strings.Repeat("Hello world ", 1200), "n_predict": 8, "stream": stream})
		return string(b)
	}
	cases := []struct {
		name         string
		method, path string
		body         string
		fixture      string // without .headers.txt / body suffix
		bodyFile     string
	}{
		// A fresh server's health.
		{"health", "GET", "/health", "", "health", "health.body.json"},
		// Unknown routes, GET and POST.
		{"not found", "GET", "/no/such/path", "", "not_found", "not_found.body.txt"},
		{"not found post", "POST", "/v1/nonexistent", "{}", "not_found_post", "not_found_post.body.txt"},
		// n_predict of the wrong type: 400 naming the field.
		{"bad n_predict", "POST", "/completion", string(fixture(t, "error_bad_n_predict.request.json")), "error_bad_n_predict", "error_bad_n_predict.body.json"},
		// A truncated body: 500 with nlohmann's parse error.
		{"bad json", "POST", "/completion", `{"prompt":"Hello",`, "error_bad_json", "error_bad_json.body.json"},
		// 2402 prompt tokens > 1024: plain JSON 400, even when streaming.
		{"prompt too long", "POST", "/completion", tooLong(false), "error_prompt_too_long", "error_prompt_too_long.body.json"},
		{"prompt too long stream", "POST", "/completion", tooLong(true), "error_prompt_too_long_stream", "error_prompt_too_long_stream.body.json"},
		// Properties of an idle server.
		{"props", "GET", "/props", "", "props", "props.body.json"},
		// Slots never used show only id, n_ctx, speculative, is_processing.
		{"slots idle", "GET", "/slots", "", "slots_idle", "slots_idle.body.json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, body := do(t, s, tc.method, tc.path, tc.body)
			if want := string(fixture(t, tc.fixture+".headers.txt")); r.head != want {
				t.Errorf("head\n got %q\nwant %q", r.head, want)
			}
			if want := fixture(t, tc.bodyFile); !bytes.Equal(body, want) {
				t.Errorf("body\n got %s\nwant %s", body, want)
			}
		})
	}
}

// TestFixtureLoading: while loading, health (and every endpoint) answers
// the loading 503 with Connection: close, byte for byte.
func TestFixtureLoading(t *testing.T) {
	fixturesDir(t)
	s := startServer(t, Options{Load: time.Hour})
	for _, path := range []string{"/health", "/props", "/slots", "/metrics", "/no/such/path"} {
		r, body := do(t, s, "GET", path, "")
		if want := string(fixture(t, "health_loading.headers.txt")); r.head != want {
			t.Errorf("%s head\n got %q\nwant %q", path, r.head, want)
		}
		if want := fixture(t, "health_loading.body.json"); !bytes.Equal(body, want) {
			t.Errorf("%s body %s, want %s", path, body, want)
		}
	}
	r, _ := do(t, s, "POST", "/completion", `{"prompt":"Hello","n_predict":2}`)
	if r.status != 503 || s.Requests() != 1 {
		t.Errorf("completion while loading: status %d, Requests %d; want 503, 1", r.status, s.Requests())
	}
	// The UI path is exempt (and not built, as in the capture).
	if r, _ := do(t, s, "GET", "/", ""); r.status != 404 {
		t.Errorf("GET / while loading: %d, want 404", r.status)
	}
}

// TestLoadingEnds: health turns 200 once Load has passed.
func TestLoadingEnds(t *testing.T) {
	s := startServer(t, Options{Load: 20 * time.Millisecond})
	faketest.WaitFor(t, "health 200", func() bool {
		r, _ := do(t, s, "GET", "/health", "")
		return r.status == 200
	})
}

// TestFixtureStreamShape compares the fake's stream with
// completion_stream.body.sse: the same head, one chunk per event, and
// partial and final frames with the same keys, order and value kinds.
func TestFixtureStreamShape(t *testing.T) {
	fixturesDir(t)
	want := faketest.Events(t, fixture(t, "completion_stream.body.sse"))
	s := startServer(t, captureOpts)
	cl := dial(t, s)
	cl.send("POST", "/completion", string(fixture(t, "completion_stream.request.json")))
	r := cl.readHead()
	if wantHead := string(fixture(t, "completion_stream.headers.txt")); r.head != wantHead {
		t.Errorf("head\n got %q\nwant %q", r.head, wantHead)
	}
	var got [][]byte
	for {
		ev, err := cl.event()
		if errors.Is(err, errLastChunk) {
			break
		}
		if err != nil {
			t.Fatalf("event %d: %v", len(got), err)
		}
		got = append(got, ev)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	for i := range want {
		if g, w := faketest.Shape(t, got[i]), faketest.Shape(t, want[i]); g != w {
			t.Errorf("event %d shape\n got %s\nwant %s", i, g, w)
		}
	}
	// Values the capture pins down beyond shape.
	var last frameJSON
	if err := json.Unmarshal(got[len(got)-1], &last); err != nil {
		t.Fatal(err)
	}
	if last.Prompt != "<s> Hello" || last.TokensEvaluated != 2 || last.TokensPredicted != 8 ||
		last.TokensCached != 9 || last.StopType != "limit" || last.Model != "tiny.gguf" {
		t.Errorf("final frame %s", got[len(got)-1])
	}
	// The keep-alive connection serves the same request again, now with
	// the prompt cached (run2 of the capture: cache_n 1, prompt_n 1).
	cl.send("POST", "/completion", string(fixture(t, "completion_stream.request.json")))
	cl.readHead()
	res := cl.readStream()
	if res.final == nil || res.final.Timings.CacheN != 1 || res.final.Timings.PromptN != 1 {
		t.Errorf("second run final %+v, want cache_n 1, prompt_n 1", res.final)
	}
}

// TestFixtureNonStreamShape compares the non-streaming body and head names.
func TestFixtureNonStreamShape(t *testing.T) {
	fixturesDir(t)
	s := startServer(t, captureOpts)
	r, body := do(t, s, "POST", "/completion", string(fixture(t, "completion_nonstream.request.json")))
	want := fixture(t, "completion_nonstream.body.json")
	if g, w := faketest.Shape(t, body), faketest.Shape(t, want); g != w {
		t.Errorf("shape\n got %s\nwant %s", g, w)
	}
	wantHead := string(fixture(t, "completion_nonstream.headers.txt"))
	if g, w := headNames(r.head), headNames(wantHead); g != w {
		t.Errorf("header names %s, want %s", g, w)
	}
}

// headNames lists a head's status and header names (values dropped).
func headNames(head string) string {
	var names []string
	for i, line := range strings.Split(strings.TrimRight(head, "\r\n"), "\r\n") {
		if i == 0 {
			names = append(names, line)
			continue
		}
		k, _, _ := strings.Cut(line, ":")
		names = append(names, k)
	}
	return strings.Join(names, ",")
}

// TestFixtureRawHTTP replays the raw-socket capture (Connection: close):
// same head, one chunk per event, lowercase hex sizes, the last chunk, then
// the server closes.
func TestFixtureRawHTTP(t *testing.T) {
	fixturesDir(t)
	s := startServer(t, captureOpts)
	req := fixture(t, "completion_stream.raw_http.request.bin")
	wantRaw := fixture(t, "completion_stream.raw_http.bin")
	cl := dial(t, s)
	if _, err := cl.c.Write(req); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(cl.br)
	if err != nil {
		t.Fatalf("read until close: %v", err)
	}
	wantHead, _, _ := bytes.Cut(wantRaw, []byte("\r\n\r\n"))
	gotHead, gotBody, _ := bytes.Cut(got, []byte("\r\n\r\n"))
	if !bytes.Equal(gotHead, wantHead) {
		t.Errorf("head\n got %q\nwant %q", gotHead, wantHead)
	}
	if !bytes.HasSuffix(gotBody, []byte("\n\n\r\n0\r\n\r\n")) {
		t.Errorf("body does not end with the last chunk: %q", gotBody[max(0, len(gotBody)-40):])
	}
	// Every event is preceded by its chunk size line: 8 tokens and the final frame.
	if n := bytes.Count(gotBody, []byte("\r\ndata: ")); n != 9 {
		t.Errorf("%d chunks, want 9", n)
	}
}

// TestFixtureSlotsShapes compares /slots of used slots with slots_busy:
// slot 0 used and idle, slot 1 generating.
func TestFixtureSlotsShapes(t *testing.T) {
	fixturesDir(t)
	var want []json.RawMessage
	if err := json.Unmarshal(fixture(t, "slots_busy.body.json"), &want); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Options{Slots: 2, Ctx: 1024, ITL: time.Millisecond})
	stream(t, s, `{"prompt":"Hello","n_predict":2,"stream":true,"id_slot":0}`)
	cl := dial(t, s)
	cl.send("POST", "/completion", `{"prompt":"Hello","n_predict":-1,"stream":true,"id_slot":1}`)
	cl.readHead()
	if _, err := cl.event(); err != nil {
		t.Fatal(err)
	}
	_, body := do(t, s, "GET", "/slots", "")
	var got []json.RawMessage
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if len(got) != 2 {
		t.Fatalf("%d slots", len(got))
	}
	for i := range want {
		if g, w := faketest.Shape(t, got[i]), faketest.Shape(t, want[i]); g != w {
			t.Errorf("slot %d shape\n got %s\nwant %s", i, g, w)
		}
	}
	if !strings.Contains(string(got[1]), `"is_processing":true`) || !strings.Contains(string(got[0]), `"is_processing":false`) {
		t.Errorf("slots %s", body)
	}
	cl.c.Close()
	faketest.WaitFor(t, "slot freed", func() bool { return s.InFlight() == 0 })
}

// TestFixtureMetricsShape: same families, order, HELP and TYPE lines as
// metrics_initial; header names as captured.
func TestFixtureMetricsShape(t *testing.T) {
	fixturesDir(t)
	s := startServer(t, captureOpts)
	r, body := do(t, s, "GET", "/metrics", "")
	want := fixture(t, "metrics_initial.body.txt")
	if !bytes.Equal(body, want) {
		t.Errorf("initial metrics\n got %s\nwant %s", body, want)
	}
	if g, w := headNames(r.head), headNames(string(fixture(t, "metrics_initial.headers.txt"))); g != w {
		t.Errorf("header names %s, want %s", g, w)
	}
	if r.hdr["Content-Type"] != "text/plain; version=0.0.4" {
		t.Errorf("Content-Type %q", r.hdr["Content-Type"])
	}
}

// TestFixtureMidstreamErrorFrame: the injected mid-stream error is the
// captured one, byte for byte.
func TestFixtureMidstreamErrorFrame(t *testing.T) {
	fixturesDir(t)
	want := faketest.Events(t, fixture(t, "error_midstream_completion.body.sse"))
	s := startServer(t, Options{Fail: FailMidstreamError})
	_, res := stream(t, s, string(fixture(t, "error_midstream_completion.request.json")))
	if len(res.raw) != 3 || !bytes.Equal(res.raw[2], want[len(want)-1]) || !res.ended {
		t.Errorf("events %q (ended %v), want 2 tokens then %s", res.raw, res.ended, want[len(want)-1])
	}
	for i := 0; i < 2; i++ {
		if g, w := faketest.Shape(t, res.raw[i]), faketest.Shape(t, want[i]); g != w {
			t.Errorf("event %d shape %s, want %s", i, g, w)
		}
	}
}
