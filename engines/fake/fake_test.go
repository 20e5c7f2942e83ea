package fake

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/llama-orch/llama-orch/engines/fake/internal/faketest"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
)

func TestNewValidates(t *testing.T) {
	cases := []struct {
		name    string
		o       Options
		wantErr error
		wantIn  string
	}{
		// The zero value is a llama.cpp fake with defaults.
		{"defaults", Options{}, nil, ""},
		// Engines without a fake yet name the supported ones.
		{"vllm", Options{Engine: "vllm"}, ErrUnsupportedEngine, "supported engines: llamacpp"},
		{"unknown engine", Options{Engine: "ollama"}, ErrUnsupportedEngine, "llamacpp"},
		// An unknown fault lists the modes.
		{"unknown fail", Options{Fail: "explode"}, ErrInvalidOptions, "none|start-500|start-503|start-429|midstream-disconnect|stall|malformed|split-utf8|midstream-error"},
		// Negative knobs are refused.
		{"negative slots", Options{Slots: -1}, ErrInvalidOptions, "negative"},
		{"negative itl", Options{ITL: -time.Millisecond}, ErrInvalidOptions, "negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.o)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if s.o.Slots != DefaultSlots || s.o.Ctx != DefaultCtx || s.o.Model != DefaultModel || s.o.EngineVersion != DefaultEngineVersion || s.o.Fail != FailNone {
					t.Errorf("defaults not applied: %+v", s.o)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantIn) {
				t.Errorf("New error %v, want %v containing %q", err, tc.wantErr, tc.wantIn)
			}
		})
	}
}

func TestServerLifecycle(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != "" {
		t.Errorf("Addr before Start: %q", s.Addr())
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err == nil {
		t.Error("second Start succeeded")
	}
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Errorf("URL %q", s.URL())
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Start("127.0.0.1:0"); err == nil {
		t.Error("Start after Close succeeded")
	}
}

// TestStreamPlans: how many tokens a request gets and why it stops.
func TestStreamPlans(t *testing.T) {
	cases := []struct {
		name     string
		o        Options
		body     string
		frames   int // text frames
		eosFrame bool
		final    int // final tokens_predicted
		stopType string
		trunc    bool
	}{
		// n_predict N gives N tokens, stop_type limit.
		{"n_predict", Options{}, `{"prompt":"Hello","n_predict":5,"stream":true}`, 5, false, 5, "limit", false},
		// max_tokens is an alias of n_predict.
		{"max_tokens", Options{}, `{"prompt":"Hello","max_tokens":4,"stream":true}`, 4, false, 4, "limit", false},
		// The Tokens cap acts like EOS: N text frames, an empty EOS frame,
		// and the EOS token counted in tokens_predicted.
		{"tokens cap", Options{Tokens: 3}, `{"prompt":"Hello","n_predict":8,"stream":true}`, 3, true, 4, "eos", false},
		// A cap at or above n_predict changes nothing.
		{"cap above n_predict", Options{Tokens: 8}, `{"prompt":"Hello","n_predict":8,"stream":true}`, 8, false, 8, "limit", false},
		// ignore_eos disables the cap, as it would the model's EOS.
		{"ignore_eos", Options{Tokens: 3}, `{"prompt":"Hello","n_predict":6,"stream":true,"ignore_eos":true}`, 6, false, 6, "limit", false},
		// n_predict -1 runs to the slot's context: 16 - 2 prompt tokens.
		{"unlimited", Options{Ctx: 16}, `{"prompt":"Hello","n_predict":-1,"stream":true}`, 14, false, 14, "limit", true},
		// No n_predict is -1 too.
		{"default n_predict", Options{Ctx: 16}, `{"prompt":"Hello","stream":true}`, 14, false, 14, "limit", true},
		// More than fits is cut at the context, truncated.
		{"beyond ctx", Options{Ctx: 16}, `{"prompt":"Hello","n_predict":100,"stream":true}`, 14, false, 14, "limit", true},
		// Exactly what fits is a plain limit.
		{"exactly ctx", Options{Ctx: 16}, `{"prompt":"Hello","n_predict":14,"stream":true}`, 14, false, 14, "limit", false},
		// n_predict 0 gives only the final frame.
		{"zero", Options{}, `{"prompt":"Hello","n_predict":0,"stream":true}`, 0, false, 0, "limit", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, tc.o)
			r, res := stream(t, s, tc.body)
			if r.status != 200 || !res.ended || res.final == nil {
				t.Fatalf("status %d ended %v final %v", r.status, res.ended, res.final)
			}
			text := 0
			for i, p := range res.partials {
				if p.Content == "" {
					if !tc.eosFrame || i != len(res.partials)-1 || len(p.Tokens) != 1 || p.Tokens[0] != EOS {
						t.Errorf("unexpected empty frame %d: %+v", i, p)
					}
					continue
				}
				text++
				if p.TokensPredicted != i+1 || p.IDSlot != -1 || len(p.Tokens) != 1 {
					t.Errorf("frame %d: %+v", i, p)
				}
			}
			gotEOS := len(res.partials) > text
			if text != tc.frames || gotEOS != tc.eosFrame {
				t.Errorf("text frames %d eos %v, want %d %v", text, gotEOS, tc.frames, tc.eosFrame)
			}
			f := res.final
			if f.TokensPredicted != tc.final || f.StopType != tc.stopType || f.Truncated != tc.trunc || f.Content != "" || f.Timings.PredictedN != tc.final {
				t.Errorf("final %+v, want tokens_predicted %d stop_type %s truncated %v", f, tc.final, tc.stopType, tc.trunc)
			}
			if f.TokensCached != f.TokensEvaluated+f.TokensPredicted-1 {
				t.Errorf("tokens_cached %d", f.TokensCached)
			}
			if s.InFlight() != 0 {
				t.Errorf("InFlight %d after the final frame", s.InFlight())
			}
		})
	}
}

// TestNonStream: one JSON body with all the text, "tokens":[].
func TestNonStream(t *testing.T) {
	s := startServer(t, Options{Tokens: 2})
	r, body := do(t, s, "POST", "/completion", `{"prompt":"Hello","n_predict":5,"seed":7}`)
	var f frameJSON
	if err := json.Unmarshal(body, &f); err != nil || r.status != 200 {
		t.Fatalf("%d %v %s", r.status, err, body)
	}
	want := Text(7, "Hello", 0) + Text(7, "Hello", 1)
	if f.Content != want || len(f.Tokens) != 0 || !f.Stop || f.StopType != "eos" || f.TokensPredicted != 3 {
		t.Errorf("body %s, want content %q", body, want)
	}
	if r.hdr["Content-Type"] != "application/json; charset=utf-8" || r.hdr["Keep-Alive"] != "timeout=5, max=100" {
		t.Errorf("head %q", r.head)
	}
}

// TestDeterminism: the text is a function of (seed, prompt, position)
// only: two servers with different models and slots stream the same
// tokens, equal to Text and TokenID.
func TestDeterminism(t *testing.T) {
	a := startServer(t, Options{Model: "a.gguf", Slots: 1})
	b := startServer(t, Options{Model: "other-model", Slots: 4, EngineVersion: "b1-x"})
	for _, seed := range []int64{0, 42, -1, 1 << 40} {
		body := fmt.Sprintf(`{"prompt":"The capital of France is","n_predict":16,"stream":true,"seed":%d}`, seed)
		_, ra := stream(t, a, body)
		_, rb := stream(t, b, body)
		if len(ra.partials) != 16 || len(rb.partials) != 16 {
			t.Fatalf("seed %d: %d and %d frames", seed, len(ra.partials), len(rb.partials))
		}
		for i := range ra.partials {
			pa, pb := ra.partials[i], rb.partials[i]
			if pa.Content != pb.Content || pa.Tokens[0] != pb.Tokens[0] {
				t.Errorf("seed %d pos %d: %q/%d vs %q/%d", seed, i, pa.Content, pa.Tokens[0], pb.Content, pb.Tokens[0])
			}
			if w := Text(seed, "The capital of France is", i); pa.Content != w {
				t.Errorf("seed %d pos %d: %q, Text says %q", seed, i, pa.Content, w)
			}
			if w := TokenID(seed, "The capital of France is", i); pa.Tokens[0] != w {
				t.Errorf("seed %d pos %d: id %d, TokenID says %d", seed, i, pa.Tokens[0], w)
			}
		}
		if ra.final.Model != "a.gguf" || rb.final.Model != "other-model" {
			t.Errorf("models %q %q", ra.final.Model, rb.final.Model)
		}
	}
	// Different seeds or prompts give different text.
	if Text(1, "x", 0)+Text(1, "x", 1)+Text(1, "x", 2) == Text(2, "x", 0)+Text(2, "x", 1)+Text(2, "x", 2) {
		t.Error("seed does not change the text")
	}
}

// TestFaults: every Options.Fail mode, streaming (n_predict 8).
func TestFaults(t *testing.T) {
	const body = `{"prompt":"Hello","n_predict":8,"stream":true,"seed":3}`
	cases := []struct {
		fail  string
		check func(t *testing.T, r *response, res *streamResult)
	}{
		{FailNone, func(t *testing.T, r *response, res *streamResult) {
			if r.status != 200 || len(res.partials) != 8 || res.final == nil || !res.ended {
				t.Errorf("status %d, %d frames, final %v", r.status, len(res.partials), res.final)
			}
		}},
		{FailStart500, func(t *testing.T, r *response, res *streamResult) {
			wantError(t, r, res, 500, "server_error")
		}},
		{FailStart503, func(t *testing.T, r *response, res *streamResult) {
			if r.status != 503 || string(res.raw[0]) != string(bodyLoading) || r.hdr["Connection"] != "close" {
				t.Errorf("%d %s %q", r.status, res.raw[0], r.head)
			}
		}},
		{FailStart429, func(t *testing.T, r *response, res *streamResult) {
			wantError(t, r, res, 429, "unavailable_error")
		}},
		{FailMidstreamDisconnect, func(t *testing.T, r *response, res *streamResult) {
			// Three tokens, then the body is cut: no final frame, no last chunk.
			if r.status != 200 || len(res.partials) != 3 || res.final != nil || !res.cut || res.ended {
				t.Errorf("status %d, %d frames, final %v, cut %v", r.status, len(res.partials), res.final, res.cut)
			}
		}},
		{FailMalformed, func(t *testing.T, r *response, res *streamResult) {
			if len(res.raw) != 3 || len(res.partials) != 2 || json.Valid(res.raw[2]) || !res.ended {
				t.Errorf("events %q ended %v", res.raw, res.ended)
			}
			if string(res.raw[2]) != `{"index":0,"content":` {
				t.Errorf("malformed frame %q", res.raw[2])
			}
		}},
		{FailMidstreamError, func(t *testing.T, r *response, res *streamResult) {
			if len(res.raw) != 3 || len(res.partials) != 2 || res.final != nil || !res.ended ||
				!strings.HasPrefix(string(res.raw[2]), `{"error":{"code":500,`) {
				t.Errorf("events %q ended %v", res.raw, res.ended)
			}
		}},
		{FailSplitUTF8, func(t *testing.T, r *response, res *streamResult) {
			// 8 tokens: 😀 (2 tokens), word, " 😂" (2), word, ö (2): five
			// frames, tokens_predicted 2 3 5 6 8.
			var preds []int
			var text strings.Builder
			for i, raw := range res.raw {
				if !utf8.Valid(raw) || !json.Valid(raw) {
					t.Errorf("event %d not valid UTF-8 JSON: %q", i, raw)
				}
			}
			for _, p := range res.partials {
				preds = append(preds, p.TokensPredicted)
				text.WriteString(p.Content)
				if len(p.Tokens) != 1 || p.Content == "" {
					t.Errorf("frame %+v", p)
				}
			}
			if fmt.Sprint(preds) != "[2 3 5 6 8]" {
				t.Errorf("tokens_predicted %v, want [2 3 5 6 8]", preds)
			}
			want := "😀" + Text(3, "Hello", 2) + " 😂" + Text(3, "Hello", 5) + "ö"
			if text.String() != want {
				t.Errorf("text %q, want %q", text.String(), want)
			}
			if res.final == nil || res.final.TokensPredicted != 8 {
				t.Errorf("final %+v", res.final)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.fail, func(t *testing.T) {
			s := startServer(t, Options{Fail: tc.fail})
			r, res := stream(t, s, body)
			tc.check(t, r, res)
			faketest.WaitFor(t, "slot freed", func() bool { return s.InFlight() == 0 })
			if s.Requests() != 1 {
				t.Errorf("Requests %d", s.Requests())
			}
		})
	}
}

func wantError(t *testing.T, r *response, res *streamResult, status int, typ string) {
	t.Helper()
	var e struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
	}
	if len(res.raw) != 1 || json.Unmarshal(res.raw[0], &e) != nil {
		t.Fatalf("body %q", res.raw)
	}
	if r.status != status || e.Error.Code != status || e.Error.Type != typ || e.Error.Message == "" || r.hdr["Connection"] != "close" {
		t.Errorf("%d %s %q", r.status, res.raw[0], r.head)
	}
	if !strings.HasPrefix(string(res.raw[0]), `{"error":{"code":`) {
		t.Errorf("key order: %s", res.raw[0])
	}
}

// TestFaultsFewerTokens: a fault that fires after K tokens fires after
// fewer when fewer are asked for, still without the final frame.
func TestFaultsFewerTokens(t *testing.T) {
	cases := []struct {
		fail   string
		frames int
		raw    int
	}{
		{FailMidstreamDisconnect, 2, 2},
		{FailMalformed, 1, 2},
		{FailMidstreamError, 1, 2},
	}
	for _, tc := range cases {
		t.Run(tc.fail, func(t *testing.T) {
			s := startServer(t, Options{Fail: tc.fail})
			n := tc.frames
			_, res := stream(t, s, fmt.Sprintf(`{"prompt":"Hello","n_predict":%d,"stream":true}`, n))
			if len(res.partials) != tc.frames || len(res.raw) != tc.raw || res.final != nil {
				t.Errorf("events %q", res.raw)
			}
		})
	}
}

// TestFaultsNonStream: the faults on stream:false requests.
func TestFaultsNonStream(t *testing.T) {
	const body = `{"prompt":"Hello","n_predict":8}`
	cases := []struct {
		fail   string
		status int // 0: the connection closes without a response
		check  func(body []byte) bool
	}{
		{FailStart500, 500, func(b []byte) bool { return bytes.Contains(b, []byte(`"server_error"`)) }},
		{FailMalformed, 200, func(b []byte) bool { return !json.Valid(b) }},
		{FailMidstreamError, 500, func(b []byte) bool { return bytes.Contains(b, []byte(msgContentOnly)) }},
		{FailSplitUTF8, 200, func(b []byte) bool { return utf8.Valid(b) && bytes.Contains(b, []byte(`"content":"😀`)) }},
		{FailMidstreamDisconnect, 0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.fail, func(t *testing.T) {
			s := startServer(t, Options{Fail: tc.fail})
			cl := dial(t, s)
			cl.send("POST", "/completion", body)
			if tc.status == 0 {
				if b, err := io.ReadAll(cl.br); err != nil || len(b) != 0 {
					t.Errorf("got %q, %v; want a bare close", b, err)
				}
				return
			}
			r := cl.readHead()
			if b := cl.body(r); r.status != tc.status || !tc.check(b) {
				t.Errorf("%d %s", r.status, b)
			}
		})
	}
}

// TestCancelFreesSlot: closing the connection mid-stream frees the slot at
// once (at the latest by the next token), for a generating and for a
// stalled stream, streaming or not.
func TestCancelFreesSlot(t *testing.T) {
	cases := []struct {
		name string
		o    Options
		body string
	}{
		// A long paced stream.
		{"generating", Options{ITL: time.Millisecond}, `{"prompt":"Hello","n_predict":-1,"stream":true}`},
		// A paced stream so slow the next write would be far away.
		{"slow", Options{ITL: time.Hour}, `{"prompt":"Hello","n_predict":-1,"stream":true}`},
		// Stalled after two tokens.
		{"stall", Options{Fail: FailStall}, `{"prompt":"Hello","n_predict":8,"stream":true}`},
		// Stalled, not streaming: still watched.
		{"stall non-stream", Options{Fail: FailStall}, `{"prompt":"Hello","n_predict":8}`},
		// Waiting for the first token.
		{"ttft", Options{TTFT: time.Hour}, `{"prompt":"Hello","n_predict":8,"stream":true}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, tc.o)
			cl := dial(t, s)
			cl.send("POST", "/completion", tc.body)
			faketest.WaitFor(t, "a busy slot", func() bool { return s.InFlight() == 1 })
			if strings.Contains(tc.body, `"stream":true`) && tc.o.TTFT == 0 {
				cl.readHead()
				if _, err := cl.event(); err != nil {
					t.Fatal(err)
				}
			}
			_, slots := do(t, s, "GET", "/slots", "")
			if !bytes.Contains(slots, []byte(`"is_processing":true`)) {
				t.Errorf("slots while busy: %s", slots)
			}
			cl.c.Close()
			faketest.WaitFor(t, "slot freed", func() bool { return s.InFlight() == 0 })
			_, slots = do(t, s, "GET", "/slots", "")
			if bytes.Contains(slots, []byte(`"is_processing":true`)) {
				t.Errorf("slots after cancel: %s", slots)
			}
		})
	}
}

// TestDeferredQueue: with one slot, further requests wait (visible in
// Deferred and /metrics), never get 429, and run in arrival order.
func TestDeferredQueue(t *testing.T) {
	// Request 1 takes 3 × ITL: the margin by which its reader must record
	// its turn before request 2's, on a loaded machine.
	s := startServer(t, Options{Slots: 1, ITL: 20 * time.Millisecond})
	long := dial(t, s)
	long.send("POST", "/completion", `{"prompt":"Hello","n_predict":-1,"stream":true}`)
	long.readHead()
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
	)
	results := make([]*streamResult, 3)
	errs := make([]error, 3)
	for i := 1; i <= 2; i++ {
		cl := dial(t, s)
		cl.send("POST", "/completion", fmt.Sprintf(`{"prompt":"req %d","n_predict":3,"stream":true}`, i))
		faketest.WaitFor(t, "deferred", func() bool { return s.Deferred() == i })
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := cl.tryReadHead()
			if err != nil {
				errs[i] = err
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			if r.status == 200 {
				results[i] = cl.readStream()
			}
		}()
	}
	_, m := do(t, s, "GET", "/metrics", "")
	if !bytes.Contains(m, []byte("\nllamacpp:requests_processing 1\n")) || !bytes.Contains(m, []byte("\nllamacpp:requests_deferred 2\n")) {
		t.Errorf("metrics while deferred:\n%s", m)
	}
	if s.InFlight() != 1 {
		t.Errorf("InFlight %d", s.InFlight())
	}
	long.c.Close()
	served := make(chan struct{})
	go func() {
		wg.Wait()
		close(served)
	}()
	enginetest.Recv(t, served, "the deferred requests to be served")
	for i := 1; i <= 2; i++ {
		if errs[i] != nil {
			t.Errorf("request %d: %v", i, errs[i])
		}
	}
	if fmt.Sprint(order) != "[1 2]" {
		t.Errorf("served in order %v, want [1 2]", order)
	}
	for i := 1; i <= 2; i++ {
		if results[i] == nil || results[i].final == nil || len(results[i].partials) != 3 {
			t.Errorf("request %d: %+v", i, results[i])
		}
	}
	if s.Deferred() != 0 || s.InFlight() != 0 || s.Requests() != 3 {
		t.Errorf("Deferred %d InFlight %d Requests %d", s.Deferred(), s.InFlight(), s.Requests())
	}
}

// TestDeferredCancel: a deferred request whose client leaves leaves the
// queue.
func TestDeferredCancel(t *testing.T) {
	s := startServer(t, Options{Slots: 1, Fail: FailStall})
	first := dial(t, s)
	first.send("POST", "/completion", `{"prompt":"a","n_predict":8,"stream":true}`)
	faketest.WaitFor(t, "busy", func() bool { return s.InFlight() == 1 })
	second := dial(t, s)
	second.send("POST", "/completion", `{"prompt":"b","n_predict":8,"stream":true}`)
	faketest.WaitFor(t, "deferred", func() bool { return s.Deferred() == 1 })
	second.c.Close()
	faketest.WaitFor(t, "left the queue", func() bool { return s.Deferred() == 0 })
	if s.InFlight() != 1 {
		t.Errorf("InFlight %d", s.InFlight())
	}
}

// TestSlotsAndErase: id_slot picks the slot; erase drops its cache (and
// waits while the slot is busy).
func TestSlotsAndErase(t *testing.T) {
	s := startServer(t, Options{Slots: 2, ITL: time.Millisecond})
	_, res := stream(t, s, `{"prompt":"Hello","n_predict":4,"stream":true,"id_slot":1}`)
	if res.final.IDSlot != 1 || res.final.TokensCached != 5 {
		t.Fatalf("final %+v", res.final)
	}
	// The same prompt on the same slot reuses the cache.
	_, res = stream(t, s, `{"prompt":"Hello","n_predict":4,"stream":true,"id_slot":1}`)
	if res.final.Timings.CacheN != 1 {
		t.Errorf("cache_n %d, want 1", res.final.Timings.CacheN)
	}
	// Without id_slot the slot with the longest shared prefix wins.
	_, res = stream(t, s, `{"prompt":"Hello","n_predict":4,"stream":true}`)
	if res.final.IDSlot != 1 {
		t.Errorf("similar prompt went to slot %d, want 1", res.final.IDSlot)
	}
	cases := []struct {
		path   string
		status int
		body   string
	}{
		{"/slots/1?action=erase", 200, `{"id_slot":1,"n_erased":5}`},
		{"/slots/1?action=erase", 200, `{"id_slot":1,"n_erased":0}`},
		{"/slots/0?action=erase", 200, `{"id_slot":0,"n_erased":0}`},
		{"/slots/9?action=erase", 400, `{"error":{"code":400,"message":"Invalid slot ID","type":"invalid_request_error"}}`},
		{"/slots/x?action=erase", 400, `{"error":{"code":400,"message":"Invalid slot ID","type":"invalid_request_error"}}`},
		{"/slots/0?action=nope", 400, `{"error":{"code":400,"message":"Invalid action","type":"invalid_request_error"}}`},
		{"/slots/0?action=save", 501, `{"error":{"code":501,"message":"This server does not support slots action. Start it with ` + "`--slot-save-path`" + `","type":"not_supported_error"}}`},
	}
	for _, tc := range cases {
		r, body := do(t, s, "POST", tc.path, "")
		if r.status != tc.status || string(body) != tc.body {
			t.Errorf("%s: %d %s, want %d %s", tc.path, r.status, body, tc.status, tc.body)
		}
	}
	// An out-of-range id_slot is refused.
	if r, _ := do(t, s, "POST", "/completion", `{"prompt":"x","id_slot":2}`); r.status != 400 {
		t.Errorf("id_slot 2: %d", r.status)
	}
	// Erasing a busy slot waits until it is free.
	cl := dial(t, s)
	cl.send("POST", "/completion", `{"prompt":"Hello","n_predict":-1,"stream":true,"id_slot":0}`)
	cl.readHead()
	eraser := dial(t, s)
	eraser.send("POST", "/slots/0?action=erase", "")
	faketest.WaitFor(t, "erase deferred", func() bool { return s.Deferred() == 1 })
	cl.c.Close()
	r := eraser.readHead()
	if b := eraser.body(r); r.status != 200 || !strings.HasPrefix(string(b), `{"id_slot":0,"n_erased":`) {
		t.Errorf("deferred erase: %d %s", r.status, b)
	}
}

// TestMetricsCount: the counters follow the requests.
func TestMetricsCount(t *testing.T) {
	s := startServer(t, Options{})
	stream(t, s, `{"prompt":"one two three","n_predict":3,"stream":true,"cache_prompt":false}`)
	do(t, s, "POST", "/completion", `{"prompt":"four","n_predict":5,"cache_prompt":false}`)
	_, m := do(t, s, "GET", "/metrics", "")
	for _, want := range []string{
		"\nllamacpp:prompt_tokens_total 6\n",
		"\nllamacpp:tokens_predicted_total 8\n",
		"\nllamacpp:n_decode_total 8\n",
		"\nllamacpp:n_tokens_max 7\n",
		"\nllamacpp:requests_processing 0\n",
		"\nllamacpp:requests_deferred 0\n",
	} {
		if !bytes.Contains(m, []byte(want)) {
			t.Errorf("metrics lack %q:\n%s", want, m)
		}
	}
}

// TestRequestErrors: parse and validation errors.
func TestRequestErrors(t *testing.T) {
	cases := []struct {
		name   string
		body   string
		status int
		want   string
	}{
		// stream must be a boolean.
		{"stream type", `{"prompt":"x","stream":"yes"}`, 400, `"message":"Field 'stream': [json.exception.type_error.302] type must be boolean, but is string"`},
		// seed must be a number.
		{"seed type", `{"prompt":"x","seed":"1"}`, 400, `type must be number, but is string`},
		// No prompt at all.
		{"no prompt", `{"n_predict":1}`, 500, `key 'prompt' not found`},
		// Prompt must be a string in the fake.
		{"token prompt", `{"prompt":[1,2]}`, 400, `must be a string`},
		// Not an object.
		{"array body", `[1]`, 500, `type must be object, but is array`},
		// Garbage.
		{"garbage", `nope`, 500, `parse_error.101`},
		// Empty body.
		{"empty", ``, 500, `unexpected end of input`},
	}
	s := startServer(t, Options{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, body := do(t, s, "POST", "/completion", tc.body)
			if r.status != tc.status || !strings.Contains(string(body), tc.want) || r.hdr["Connection"] != "close" {
				t.Errorf("%d %s %q", r.status, body, r.head)
			}
		})
	}
}

// TestKeepAlive: one connection serves many requests; errors, requests
// with Connection: close and the 100th response close it.
func TestKeepAlive(t *testing.T) {
	s := startServer(t, Options{ITL: time.Millisecond})
	cl := dial(t, s)
	for i := 0; i < 3; i++ {
		cl.send("POST", "/completion", `{"prompt":"Hello","n_predict":3,"stream":true}`)
		if r := cl.readHead(); r.hdr["Keep-Alive"] != "timeout=5, max=100" {
			t.Fatalf("head %q", r.head)
		}
		if res := cl.readStream(); !res.ended {
			t.Fatal("stream did not end")
		}
		cl.send("GET", "/health", "")
		cl.body(cl.readHead())
	}
	// Pipelining while a stream runs: the watcher keeps the early byte.
	cl.send("POST", "/completion", `{"prompt":"Hello","n_predict":3,"stream":true}`)
	cl.readHead()
	if _, err := cl.event(); err != nil {
		t.Fatal(err)
	}
	cl.send("GET", "/health", "")
	if res := cl.readStream(); !res.ended || len(res.partials) != 2 {
		t.Fatalf("stream with pipelined request: %+v", res)
	}
	if r := cl.readHead(); r.status != 200 || string(cl.body(r)) != `{"status":"ok"}` {
		t.Fatalf("pipelined health: %q", r.head)
	}
	// An error closes the connection.
	cl.send("GET", "/nope", "")
	cl.body(cl.readHead())
	if b, err := io.ReadAll(cl.br); err != nil || len(b) != 0 {
		t.Errorf("after an error: %q %v", b, err)
	}
	// Connection: close is honoured.
	cl = dial(t, s)
	cl.send("GET", "/health", "", "Connection: close")
	if r := cl.readHead(); r.hdr["Connection"] != "close" || r.hdr["Keep-Alive"] != "" {
		t.Errorf("head %q", r.head)
	}
	// The 100th response says close.
	cl = dial(t, s)
	for i := 1; i <= 100; i++ {
		cl.send("GET", "/health", "")
		r := cl.readHead()
		cl.body(r)
		if (i == 100) != (r.hdr["Connection"] == "close") {
			t.Fatalf("response %d head %q", i, r.head)
		}
	}
	if b, err := io.ReadAll(cl.br); err != nil || len(b) != 0 {
		t.Errorf("after 100: %q %v", b, err)
	}
}

// TestExpectContinue: curl sends Expect: 100-continue for big bodies.
func TestExpectContinue(t *testing.T) {
	s := startServer(t, Options{})
	cl := dial(t, s)
	body := `{"prompt":"Hello","n_predict":2}`
	fmt.Fprintf(cl.c, "POST /completion HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", len(body))
	if r := cl.readHead(); r.status != 100 {
		t.Fatalf("head %q", r.head)
	}
	io.WriteString(cl.c, body)
	if r := cl.readHead(); r.status != 200 {
		t.Fatalf("head %q", r.head)
	}
}

// TestCORS: Access-Control-Allow-Origin echoes Origin; OPTIONS answers.
func TestCORS(t *testing.T) {
	s := startServer(t, Options{})
	r, _ := do(t, s, "GET", "/health", "", "Origin: http://example.com")
	if r.hdr["Access-Control-Allow-Origin"] != "http://example.com" {
		t.Errorf("head %q", r.head)
	}
	if r, _ := do(t, s, "OPTIONS", "/completion", ""); r.status != 200 {
		t.Errorf("OPTIONS %d", r.status)
	}
}

// TestOtherEndpoints: /v1/models, /tokenize, fail_on_no_slot.
func TestOtherEndpoints(t *testing.T) {
	s := startServer(t, Options{Slots: 1, Model: "m.gguf", Fail: FailStall})
	if _, b := do(t, s, "GET", "/v1/models", ""); !bytes.Contains(b, []byte(`"data":[{"id":"m.gguf"`)) {
		t.Errorf("models %s", b)
	}
	if _, b := do(t, s, "POST", "/tokenize", `{"content":"Hello world "}`); string(b) != fmt.Sprintf(`{"tokens":[%d,%d,%d]}`, WordID("Hello"), WordID("world"), SpaceID) {
		t.Errorf("tokenize %s", b)
	}
	if _, b := do(t, s, "POST", "/tokenize", `{"content":"Hello","add_special":true}`); string(b) != fmt.Sprintf(`{"tokens":[1,%d]}`, WordID("Hello")) {
		t.Errorf("tokenize %s", b)
	}
	if r, _ := do(t, s, "GET", "/slots?fail_on_no_slot=1", ""); r.status != 200 {
		t.Errorf("idle fail_on_no_slot: %d", r.status)
	}
	cl := dial(t, s)
	cl.send("POST", "/completion", `{"prompt":"Hello","stream":true}`)
	faketest.WaitFor(t, "busy", func() bool { return s.InFlight() == 1 })
	if r, b := do(t, s, "GET", "/slots?fail_on_no_slot=1", ""); r.status != 503 || !bytes.Contains(b, []byte("no slot available")) {
		t.Errorf("busy fail_on_no_slot: %d %s", r.status, b)
	}
}

// TestCloseEndsStreams: Close drops stalled and running streams and waits
// for every goroutine (goleak checks the rest).
func TestCloseEndsStreams(t *testing.T) {
	s, err := New(Options{Fail: FailStall, Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	a := dial(t, s)
	a.send("POST", "/completion", `{"prompt":"a","n_predict":8,"stream":true}`)
	b := dial(t, s)
	b.send("POST", "/completion", `{"prompt":"b","n_predict":8,"stream":true}`)
	faketest.WaitFor(t, "one busy, one deferred", func() bool { return s.InFlight() == 1 && s.Deferred() == 1 })
	idle := dial(t, s)
	idle.send("GET", "/health", "")
	idle.body(idle.readHead())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*client{a, b, idle} {
		if _, err := io.ReadAll(cl.br); err != nil {
			t.Errorf("read after Close: %v", err)
		}
	}
}
