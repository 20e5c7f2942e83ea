package tgi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/fake/internal/faketest"
)

// Documented shapes, copied from ENGINES.md §3 (TGI v3.3.7).
const (
	docFrame1 = `{"index":1,"token":{"id":12095,"text":" Paris","logprob":-0.28466797,"special":false},"generated_text":null,"details":null}`
	docFinal  = `{"index":4,"token":{"id":6722,"text":" capital","logprob":-0.5996094,"special":false},"generated_text":" Paris. The capital","details":{"finish_reason":"length","generated_tokens":4,"seed":null,"input_length":5}}`
	docError  = `{"error":"Model is overloaded","error_type":"overloaded"}`
	docInfo   = `{"model_id":"Qwen/Qwen2.5-1.5B-Instruct","model_sha":"989aa7980e4cf806f80c7fef2b1adb7bc71aa306","model_pipeline_tag":"text-generation","max_concurrent_requests":128,"max_best_of":2,"max_stop_sequences":4,"max_input_tokens":4095,"max_total_tokens":4096,"validation_workers":2,"max_client_batch_size":4,"router":"text-generation-router","version":"3.3.7","sha":"db931fcf42da018a3657580c64bf2720f167f9ab","docker_label":"sha-db931fc"}`
	docHealth = `{"error":"unhealthy","error_type":"healthcheck"}`
	// The ENGINES.md request.
	docRequest = `{"inputs":"The capital of France is","parameters":{"max_new_tokens":4,"do_sample":false,"details":true}}`
)

// TestDocumentedShapes compares the fake's bytes with ENGINES.md's TGI
// examples field by field: key order, value types and nulls.
func TestDocumentedShapes(t *testing.T) {
	s := startFake(t, fake.Options{})
	resp, evs, err := streamOf(t, s, docRequest)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" ||
		resp.Header.Get("X-Accel-Buffering") != "no" || resp.Header.Get("X-Compute-Type") == "" ||
		resp.Header.Get("X-Compute-Characters") != strconv.Itoa(len("The capital of France is")) {
		t.Fatalf("head: %d %v", resp.StatusCode, resp.Header)
	}
	if len(evs) != 4 {
		t.Fatalf("%d events, want 4: %q", len(evs), evs)
	}
	for i, ev := range evs {
		want := docFrame1
		if i == 3 {
			want = docFinal
		}
		if got, w := faketest.Shape(t, data(t, ev)), faketest.Shape(t, []byte(want)); got != w {
			t.Errorf("frame %d shape\n got %s\nwant %s", i+1, got, w)
		}
		if f := decode(t, ev); f.Index != i+1 {
			t.Errorf("frame %d: index %d", i+1, f.Index)
		}
	}

	// The overloaded frame is byte for byte the documented one.
	o := startFake(t, fake.Options{Fail: fake.FailStart429})
	_, evs, err = streamOf(t, o, docRequest)
	if err != nil || len(evs) != 1 || string(data(t, evs[0])) != docError {
		t.Fatalf("overloaded stream %q %v, want one %s", evs, err, docError)
	}

	// /info: same keys, order and types; the values the fake reports.
	c := faketest.Client(t)
	st, hdr, body := get(t, c, s.URL()+"/info")
	if st != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("/info: %d %v", st, hdr)
	}
	if got, w := faketest.Shape(t, body), faketest.Shape(t, []byte(docInfo)); got != w {
		t.Fatalf("/info shape\n got %s\nwant %s", got, w)
	}
	var info map[string]any
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"model_id": DefaultModel, "version": DefaultEngineVersion,
		"max_concurrent_requests": 128.0, "max_total_tokens": float64(fake.DefaultCtx), "max_input_tokens": float64(fake.DefaultCtx - 1)} {
		if info[k] != want {
			t.Errorf("/info %s = %v, want %v", k, info[k], want)
		}
	}

	// /health: 200 with an empty body; 503 with the documented body.
	if st, _, body := get(t, c, s.URL()+"/health"); st != 200 || len(body) != 0 {
		t.Fatalf("/health: %d %q", st, body)
	}
	u := startFake(t, fake.Options{Fail: fake.FailStart503})
	if st, _, body := get(t, c, u.URL()+"/health"); st != 503 || string(body) != docHealth {
		t.Fatalf("unhealthy /health: %d %q", st, body)
	}
}

// TestStreamTokens checks the text against fake's generator and the final
// frame's counters, for plain and split-UTF-8 text.
func TestStreamTokens(t *testing.T) {
	const prompt = "Tell me a story about rivers"
	for _, tc := range []struct {
		name  string
		o     fake.Options
		body  string
		seed  int64
		n     int    // frames
		text  int    // text tokens (non-special)
		why   string // finish_reason
		split bool
	}{
		// N requested tokens → N frames, length.
		{"length", fake.Options{}, `{"inputs":"` + prompt + `","parameters":{"max_new_tokens":6,"do_sample":false,"seed":42,"details":true}}`, 42, 6, 6, "length", false},
		// Tokens caps the text: 3 words, then the EOS frame.
		{"eos", fake.Options{Tokens: 3}, `{"inputs":"` + prompt + `","parameters":{"max_new_tokens":6,"seed":42,"details":true}}`, 42, 4, 3, "eos_token", false},
		// A cap at or above the request is no cap.
		{"cap not reached", fake.Options{Tokens: 6}, `{"inputs":"` + prompt + `","parameters":{"max_new_tokens":6,"seed":7,"details":true}}`, 7, 6, 6, "length", false},
		// A negative gateway seed arrives as its u64 two's complement.
		{"negative seed", fake.Options{}, `{"inputs":"` + prompt + `","parameters":{"max_new_tokens":5,"seed":18446744073709551609,"details":true}}`, -7, 5, 5, "length", false},
		// split-utf8: "" frames for partial characters.
		{"split", fake.Options{Fail: fake.FailSplitUTF8}, `{"inputs":"` + prompt + `","parameters":{"max_new_tokens":20,"seed":1,"details":true}}`, 1, 20, 20, "length", true},
	} {
		s := startFake(t, tc.o)
		_, evs, err := streamOf(t, s, tc.body)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(evs) != tc.n {
			t.Fatalf("%s: %d frames, want %d", tc.name, len(evs), tc.n)
		}
		g := fake.NewGenerator(tc.seed, prompt, tc.split)
		var raw, streamed strings.Builder
		empties := 0
		for i, ev := range evs {
			f := decode(t, ev)
			if f.Index != i+1 || f.Token == nil {
				t.Fatalf("%s: frame %d: %+v", tc.name, i, f)
			}
			if i < tc.text {
				piece, id := g.Token(i)
				raw.WriteString(piece)
				if f.Token.ID != id || f.Token.Special {
					t.Fatalf("%s: frame %d token %+v, want id %d", tc.name, i, f.Token, id)
				}
				if !tc.split && f.Token.Text != piece {
					t.Fatalf("%s: frame %d text %q, want %q", tc.name, i, f.Token.Text, piece)
				}
			} else if f.Token.Text != "<|im_end|>" || !f.Token.Special {
				t.Fatalf("%s: frame %d: %+v, want the EOS", tc.name, i, f.Token)
			}
			if !utf8.ValidString(f.Token.Text) {
				t.Fatalf("%s: frame %d text %q is not valid UTF-8", tc.name, i, f.Token.Text)
			}
			if !f.Token.Special {
				streamed.WriteString(f.Token.Text)
				if f.Token.Text == "" {
					empties++
				}
			}
			last := i == len(evs)-1
			if (f.GeneratedText != nil) != last || (f.Details != nil) != last {
				t.Fatalf("%s: frame %d: generated_text/details set=%v, last=%v", tc.name, i, f.GeneratedText != nil, last)
			}
			if last {
				d := f.Details
				if *f.GeneratedText != raw.String() || *f.GeneratedText != streamed.String() || d.FinishReason != tc.why ||
					d.GeneratedTokens != tc.n || d.InputLength != fake.CountTokens(prompt) || d.Seed != nil {
					t.Fatalf("%s: final %q %+v (streamed %q, raw %q)", tc.name, *f.GeneratedText, d, streamed.String(), raw.String())
				}
			}
		}
		if tc.split && empties == 0 {
			t.Fatalf("%s: no empty frame for a partial character", tc.name)
		}
		if !tc.split && empties != 0 {
			t.Fatalf("%s: %d empty frames without split-utf8", tc.name, empties)
		}
	}
}

// TestStreamOptions covers sampling, stop sequences and return_full_text.
func TestStreamOptions(t *testing.T) {
	s := startFake(t, fake.Options{})
	// Sampling echoes the seed.
	_, evs, err := streamOf(t, s, `{"inputs":"a b","parameters":{"max_new_tokens":2,"do_sample":true,"seed":9,"details":true}}`)
	if err != nil || len(evs) != 2 {
		t.Fatalf("%q %v", evs, err)
	}
	if d := decode(t, evs[1]).Details; d.Seed == nil || *d.Seed != 9 {
		t.Fatalf("sampling seed: %+v", d)
	}
	// Without details the final frame's details are null.
	_, evs, _ = streamOf(t, s, `{"inputs":"a b","parameters":{"max_new_tokens":2}}`)
	if f := decode(t, evs[1]); f.GeneratedText == nil || f.Details != nil {
		t.Fatalf("no details: %+v", f)
	}
	// A stop sequence (the third word) ends the stream there.
	third := fake.Text(5, "a b", 2)
	_, evs, _ = streamOf(t, s, `{"inputs":"a b","parameters":{"max_new_tokens":9,"seed":5,"stop":["`+third+`"],"details":true}}`)
	if f := decode(t, evs[len(evs)-1]); len(evs) != 3 || f.Details.FinishReason != "stop_sequence" {
		t.Fatalf("stop: %d frames, %+v", len(evs), f.Details)
	}
	// return_full_text puts the prompt first.
	_, evs, _ = streamOf(t, s, `{"inputs":"a b","parameters":{"max_new_tokens":1,"seed":5,"return_full_text":true}}`)
	if f := decode(t, evs[0]); *f.GeneratedText != "a b"+fake.Text(5, "a b", 0) {
		t.Fatalf("full text %q", *f.GeneratedText)
	}
}

// TestValidation: TGI's errors on /generate_stream are 200 streams with one
// error frame; unreadable bodies are axum's text/plain rejections.
func TestValidation(t *testing.T) {
	s := startFake(t, fake.Options{Ctx: 64})
	for _, tc := range []struct {
		name, body, msg, typ string
	}{
		// inputs + max_new_tokens over --max-total-tokens.
		{"too long", `{"inputs":"a b c","parameters":{"max_new_tokens":61}}`, "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 64. Given: 4 `inputs` tokens and 61 `max_new_tokens`", "validation"},
		// Zero tokens.
		{"zero", `{"inputs":"a","parameters":{"max_new_tokens":0}}`, "Input validation error: `max_new_tokens` must be strictly positive", "validation"},
		// Empty inputs.
		{"empty", `{"inputs":"","parameters":{"max_new_tokens":1}}`, "Input validation error: `inputs` cannot be empty", "validation"},
		// temperature 0 is not greedy in TGI.
		{"temperature", `{"inputs":"a","parameters":{"temperature":0}}`, "Input validation error: `temperature` must be strictly positive", "validation"},
		// best_of on a stream.
		{"best_of", `{"inputs":"a","parameters":{"best_of":2,"do_sample":true}}`, "Input validation error: `best_of` != 1 is not supported when streaming tokens", "validation"},
		// Too many stop sequences.
		{"stops", `{"inputs":"a","parameters":{"stop":["1","2","3","4","5"]}}`, "Input validation error: `stop` supports up to 4 stop sequences. Given: 5", "validation"},
	} {
		resp, evs, err := streamOf(t, s, tc.body)
		if err != nil || resp.StatusCode != 200 || len(evs) != 1 {
			t.Fatalf("%s: %d %q %v", tc.name, resp.StatusCode, evs, err)
		}
		f := decode(t, evs[0])
		if f.Error == nil || *f.Error != tc.msg || f.ErrorType != tc.typ {
			t.Fatalf("%s: frame %s", tc.name, data(t, evs[0]))
		}
	}
	c := faketest.Client(t)
	for _, tc := range []struct {
		name, ctype, body string
		status            int
		msg               string
	}{
		{"no content type", "", `{"inputs":"a"}`, 415, "Expected request with `Content-Type: application/json`"},
		{"bad json", "application/json", `{"inputs":`, 400, "Failed to parse the request body as JSON"},
		{"negative seed", "application/json", `{"inputs":"a","parameters":{"seed":-7}}`, 422, "parameters.seed"},
		{"no inputs", "application/json", `{"parameters":{}}`, 422, "missing field `inputs`"},
	} {
		req, _ := http.NewRequest(http.MethodPost, s.URL()+"/generate_stream", strings.NewReader(tc.body))
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || !strings.Contains(string(b), tc.msg) {
			t.Fatalf("%s: %d %v %q", tc.name, resp.StatusCode, resp.Header, b)
		}
	}
	if n := s.Requests(); n != 10 {
		t.Fatalf("Requests() = %d, want 10", n)
	}
}

// TestFailModes: every fault mode, as a client of /generate_stream sees it.
func TestFailModes(t *testing.T) {
	const body = `{"inputs":"x y","parameters":{"max_new_tokens":8,"seed":3,"details":true}}`
	for _, tc := range []struct {
		mode   string
		tokens int    // token frames before the end
		last   string // substring of the last event ("" none beyond tokens)
		cut    bool   // the body ends without its last chunk
	}{
		{fake.FailNone, 8, `"finish_reason":"length"`, false},
		{fake.FailStart429, 0, `{"error":"Model is overloaded","error_type":"overloaded"}`, false},
		{fake.FailStart500, 0, `"error_type":"generation"`, false},
		{fake.FailStart503, 0, `"error_type":"generation"`, false},
		{fake.FailMidstreamDisconnect, 3, "", true},
		{fake.FailMalformed, 2, `data: {"index":3,"token":{"id":`, false},
		{fake.FailMidstreamError, 2, `"error_type":"generation"`, false},
		{fake.FailSplitUTF8, 8, `"finish_reason":"length"`, false},
	} {
		s := startFake(t, fake.Options{Fail: tc.mode})
		resp, evs, err := streamOf(t, s, body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", tc.mode, resp.StatusCode)
		}
		if tc.cut != (err != nil) {
			t.Fatalf("%s: read error %v, want cut=%v", tc.mode, err, tc.cut)
		}
		if tc.cut && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("%s: %v, want io.ErrUnexpectedEOF (no last chunk)", tc.mode, err)
		}
		want := tc.tokens
		if tc.last != "" && tc.mode != fake.FailNone && tc.mode != fake.FailSplitUTF8 {
			want++
		}
		if len(evs) != want {
			t.Fatalf("%s: %d events %q, want %d", tc.mode, len(evs), evs, want)
		}
		for i := 0; i < tc.tokens && i < len(evs); i++ {
			if f := decode(t, evs[i]); f.Token == nil || f.Index != i+1 {
				t.Fatalf("%s: event %d %q", tc.mode, i, evs[i])
			}
		}
		if tc.last != "" && !strings.Contains(evs[len(evs)-1], tc.last) {
			t.Fatalf("%s: last event %q, want %q", tc.mode, evs[len(evs)-1], tc.last)
		}
		faketest.WaitFor(t, tc.mode+" slot release", func() bool { return s.InFlight() == 0 })
	}
}

// TestStallAndKeepAlive: stall sends two tokens, then only keep-alive
// comments, holding the slot until the client leaves.
func TestStallAndKeepAlive(t *testing.T) {
	s := startFake(t, fake.Options{Fail: fake.FailStall}, func(s *Server) { s.keepAlive = 5 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := post(t, ctx, faketest.Client(t), s.URL()+"/generate_stream", `{"inputs":"a","parameters":{"max_new_tokens":8}}`)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 2 {
		ev, err := readEvent(br)
		if err != nil || decode(t, ev).Index != i+1 {
			t.Fatalf("token %d: %q %v", i, ev, err)
		}
	}
	for range 3 {
		if ev, err := readEvent(br); err != nil || ev != ":\n\n" {
			t.Fatalf("keep-alive: %q %v", ev, err)
		}
	}
	if s.InFlight() != 1 {
		t.Fatalf("InFlight %d during the stall, want 1", s.InFlight())
	}
	cancel()
	faketest.WaitFor(t, "the stalled slot to free", func() bool { return s.InFlight() == 0 })
	faketest.WaitFor(t, "the dropped count", func() bool { return strings.Contains(metrics(t, s), `tgi_request_failure{err="dropped"} 1`) })
}

func metrics(t testing.TB, s *Server) string {
	_, _, b := get(t, faketest.Client(t), s.URL()+"/metrics")
	return string(b)
}

// TestQueueAndOverload: Slots unset → TGI's 128 in flight with
// fake.DefaultSlots generating and the rest queued FIFO; Slots set → that
// many in flight, the next refused as overloaded.
func TestQueueAndOverload(t *testing.T) {
	const body = `{"inputs":"a","parameters":{"max_new_tokens":2}}`
	slow := fake.Options{TTFT: time.Hour}
	s := startFake(t, slow)
	if fresh := metrics(t, s); strings.Contains(fresh, "tgi_queue_size") || strings.Contains(fresh, "tgi_batch_current_size") {
		t.Fatalf("fresh /metrics has gauges:\n%s", fresh)
	}
	ctx, cancel := context.WithCancel(t.Context())
	c := faketest.Client(t)
	var bodies []io.Closer
	for range fake.DefaultSlots + 2 {
		resp := post(t, ctx, c, s.URL()+"/generate_stream", body)
		bodies = append(bodies, resp.Body)
	}
	faketest.WaitFor(t, "2 generating, 2 queued", func() bool { return s.InFlight() == fake.DefaultSlots && s.Deferred() == 2 })
	m := metrics(t, s)
	for _, want := range []string{"tgi_queue_size 2\n", "tgi_batch_current_size 2\n", "tgi_request_count 4\n"} {
		if !strings.Contains(m, want) {
			t.Fatalf("/metrics lacks %q:\n%s", want, m)
		}
	}
	cancel()
	for _, b := range bodies {
		b.Close()
	}
	faketest.WaitFor(t, "everything to drain", func() bool { return s.InFlight() == 0 && s.Deferred() == 0 })

	o := startFake(t, fake.Options{Slots: 1, TTFT: time.Hour})
	if o.MaxConcurrentRequests() != 1 {
		t.Fatalf("max concurrent %d", o.MaxConcurrentRequests())
	}
	_, _, info := get(t, c, o.URL()+"/info")
	if !strings.Contains(string(info), `"max_concurrent_requests":1,`) {
		t.Fatalf("/info %s", info)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	first := post(t, ctx2, c, o.URL()+"/generate_stream", body)
	defer first.Body.Close()
	faketest.WaitFor(t, "the first to generate", func() bool { return o.InFlight() == 1 })
	_, evs, err := streamOf(t, o, body)
	if err != nil || len(evs) != 1 || string(data(t, evs[0])) != docError {
		t.Fatalf("second request: %q %v, want the overloaded frame", evs, err)
	}
	cancel2()
	faketest.WaitFor(t, "the slot to free", func() bool { return o.InFlight() == 0 })
	// The permit is back: the next request streams.
	o2 := startFake(t, fake.Options{Slots: 1})
	for range 3 {
		if _, evs, err := streamOf(t, o2, body); err != nil || len(evs) != 2 {
			t.Fatalf("sequential requests: %q %v", evs, err)
		}
	}
}

// TestCancelMidStream: a client that leaves frees its slot at once.
func TestCancelMidStream(t *testing.T) {
	s := startFake(t, fake.Options{ITL: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	resp := post(t, ctx, faketest.Client(t), s.URL()+"/generate_stream", `{"inputs":"a","parameters":{"max_new_tokens":50}}`)
	br := bufio.NewReader(resp.Body)
	if ev, err := readEvent(br); err != nil || decode(t, ev).Index != 1 {
		t.Fatalf("%q %v", ev, err)
	}
	if s.InFlight() != 1 {
		t.Fatalf("InFlight %d", s.InFlight())
	}
	cancel()
	resp.Body.Close()
	faketest.WaitFor(t, "the slot to free", func() bool { return s.InFlight() == 0 })
}

// TestLoading: the port refuses connections until the model is loaded.
func TestLoading(t *testing.T) {
	s := startFake(t, fake.Options{Load: time.Hour})
	if s.Addr() == "" {
		t.Fatal("no address while loading")
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("connected while loading")
	} else if !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial while loading: %v, want connection refused", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	l := startFake(t, fake.Options{Load: 20 * time.Millisecond})
	c := faketest.Client(t)
	faketest.WaitFor(t, "the load to end", func() bool {
		resp, err := c.Get(l.URL() + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// TestGenerate covers the non-streaming routes and their error statuses.
func TestGenerate(t *testing.T) {
	s := startFake(t, fake.Options{Ctx: 64})
	c := faketest.Client(t)
	resp := post(t, context.Background(), c, s.URL()+"/generate", `{"inputs":"a b","parameters":{"max_new_tokens":3,"seed":4,"details":true}}`)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `{"generated_text":"` + fake.Text(4, "a b", 0) + fake.Text(4, "a b", 1) + fake.Text(4, "a b", 2) + `","details":{"finish_reason":"length","generated_tokens":3,"seed":null,"prefill":[],"tokens":[`
	if resp.StatusCode != 200 || !strings.HasPrefix(string(b), want) || resp.Header.Get("X-Generated-Tokens") != "3" || resp.Header.Get("X-Prompt-Tokens") != "3" {
		t.Fatalf("/generate: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	var gr struct {
		Details struct{ Tokens []json.RawMessage }
	}
	if err := json.Unmarshal(b, &gr); err != nil || len(gr.Details.Tokens) != 3 {
		t.Fatalf("/generate tokens: %v %s", err, b)
	}
	if got := faketest.Shape(t, gr.Details.Tokens[0]); got != "{id:int,text:string,logprob:float,special:bool}" {
		t.Fatalf("token shape %s", got)
	}
	// POST / without stream: a one-element array; with stream: SSE.
	resp = post(t, context.Background(), c, s.URL()+"/", `{"inputs":"a b","parameters":{"max_new_tokens":1}}`)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(b), `[{"generated_text":"`) || !strings.HasSuffix(string(b), `"}]`) {
		t.Fatalf("POST /: %s", b)
	}
	resp = post(t, context.Background(), c, s.URL()+"/", `{"inputs":"a b","stream":true,"parameters":{"max_new_tokens":2}}`)
	evs, err := events(resp.Body)
	resp.Body.Close()
	if err != nil || len(evs) != 2 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("POST / stream: %q %v", evs, err)
	}
	for _, tc := range []struct {
		o      fake.Options
		body   string
		status int
		typ    string
	}{
		{fake.Options{Ctx: 64}, `{"inputs":"a","parameters":{"max_new_tokens":99}}`, 422, "validation"},
		{fake.Options{Fail: fake.FailStart429}, `{"inputs":"a"}`, 429, "overloaded"},
		{fake.Options{Fail: fake.FailStart500}, `{"inputs":"a"}`, 424, "generation"},
		{fake.Options{Fail: fake.FailMidstreamError}, `{"inputs":"a","parameters":{"max_new_tokens":5}}`, 424, "generation"},
	} {
		f := startFake(t, tc.o)
		resp := post(t, context.Background(), c, f.URL()+"/generate", tc.body)
		var e struct {
			Error     string `json:"error"`
			ErrorType string `json:"error_type"`
		}
		err := json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if err != nil || resp.StatusCode != tc.status || e.ErrorType != tc.typ || e.Error == "" {
			t.Fatalf("%+v: %d %+v %v", tc.o, resp.StatusCode, e, err)
		}
	}
}

// TestRoutes: models, ping, 404 and 405 as axum answers them.
func TestRoutes(t *testing.T) {
	s := startFake(t, fake.Options{Model: "org/tiny", EngineVersion: "3.3.6"})
	c := faketest.Client(t)
	_, _, b := get(t, c, s.URL()+"/v1/models")
	if string(b) != `{"object":"list","data":[{"id":"org/tiny","object":"model","created":0,"owned_by":"org/tiny"}]}` {
		t.Fatalf("/v1/models %s", b)
	}
	_, _, info := get(t, c, s.URL()+"/info")
	var in struct {
		ModelID  string `json:"model_id"`
		ModelSHA string `json:"model_sha"`
		Version  string
	}
	if err := json.Unmarshal(info, &in); err != nil || in.ModelID != "org/tiny" || in.Version != "3.3.6" || in.ModelSHA != modelSHA("org/tiny") || len(in.ModelSHA) != 40 {
		t.Fatalf("/info %s", info)
	}
	if st, _, _ := get(t, c, s.URL()+"/ping"); st != 200 {
		t.Fatalf("/ping %d", st)
	}
	if st, _, b := get(t, c, s.URL()+"/nope"); st != 404 || len(b) != 0 {
		t.Fatalf("404: %d %q", st, b)
	}
	if st, _, _ := get(t, c, s.URL()+"/generate_stream"); st != 405 {
		t.Fatalf("GET /generate_stream: %d", st)
	}
}

func TestNewRejects(t *testing.T) {
	for _, o := range []fake.Options{
		{Engine: "vllm"},     // another engine
		{Fail: "explode"},    // unknown fault
		{Slots: -1},          // negative
		{Ctx: 1},             // too small
		{TTFT: -time.Second}, // negative delay
	} {
		if _, err := New(o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("New(%+v): %v, want ErrInvalidOptions", o, err)
		}
	}
	s, err := New(fake.Options{Engine: "tgi"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual([]any{s.slots, s.maxConcurrent}, []any{fake.DefaultSlots, DefaultMaxConcurrentRequests}) {
		t.Fatalf("defaults: %d slots, %d concurrent", s.slots, s.maxConcurrent)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("Start after Close: %v", err)
	}
}
