package tgi

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	tgifake "github.com/llama-orch/llama-orch/engines/fake/tgi"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
)

// startFake starts the TGI fake on a free loopback port, closed at cleanup.
func startFake(t *testing.T, o fake.Options) *tgifake.Server {
	t.Helper()
	s, err := tgifake.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("fake Close: %v", err)
		}
	})
	return s
}

// words are the fake model's tokens for (seed, prompt).
func words(seed int64, prompt string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fake.Text(seed, prompt, i)
	}
	return out
}

// TestFakeStream: the adapter against the fake delivers exactly the fake
// model's words, with TGI's counts.
func TestFakeStream(t *testing.T) {
	enginetest.LeakCheck(t)
	const prompt = "Write a poem about the sea"
	for _, tc := range []struct {
		name string
		o    fake.Options
		req  engines.Request
		toks int
		res  engines.Result
	}{
		// N requested tokens → N words, length.
		{"length", fake.Options{}, engines.Request{Prompt: prompt, MaxTokens: 12, Seed: 42}, 12,
			engines.Result{TokensOut: 12, TokensIn: fake.CountTokens(prompt), FinishReason: "length", Slot: -1}},
		// The EOS cap: Tokens words, the EOS counted by TGI.
		{"eos", fake.Options{Tokens: 5}, engines.Request{Prompt: prompt, MaxTokens: 12, Seed: 42}, 5,
			engines.Result{TokensOut: 6, TokensIn: fake.CountTokens(prompt), FinishReason: "stop", Slot: -1}},
		// A negative seed reaches the fake as the same i64.
		{"negative seed", fake.Options{}, engines.Request{Prompt: prompt, MaxTokens: 3, Seed: -123456789}, 3,
			engines.Result{TokensOut: 3, TokensIn: fake.CountTokens(prompt), FinishReason: "length", Slot: -1}},
		// With delays (the flush path between frames).
		{"paced", fake.Options{TTFT: time.Millisecond, ITL: time.Millisecond}, engines.Request{Prompt: prompt, MaxTokens: 4, Seed: 1}, 4,
			engines.Result{TokensOut: 4, TokensIn: fake.CountTokens(prompt), FinishReason: "length", Slot: -1}},
	} {
		s := startFake(t, tc.o)
		a := newAdapter(t, s.URL(), Options{})
		sink := &enginetest.RecSink{}
		res, err := a.Stream(enginetest.Ctx(t), &tc.req, sink)
		enginetest.CheckStream(t, tc.name, sink, res, err, words(tc.req.Seed, prompt, tc.toks), tc.res)
		if s.InFlight() != 0 {
			t.Fatalf("%s: fake InFlight %d after the final frame", tc.name, s.InFlight())
		}
	}
}

// TestFakeSplitUTF8: partial characters ("" frames) are joined into whole
// ones; every token is valid UTF-8 and the text is the fake's pieces.
func TestFakeSplitUTF8(t *testing.T) {
	enginetest.LeakCheck(t)
	s := startFake(t, fake.Options{Fail: fake.FailSplitUTF8})
	a := newAdapter(t, s.URL(), Options{})
	sink := &enginetest.RecSink{}
	res, err := a.Stream(enginetest.Ctx(t), &engines.Request{Prompt: "p", MaxTokens: 30, Seed: 3}, sink)
	if err != nil || res.TokensOut != 30 {
		t.Fatalf("%+v %v", res, err)
	}
	g := fake.NewGenerator(3, "p", true)
	var want strings.Builder
	for i := range 30 {
		piece, _ := g.Token(i)
		want.WriteString(piece)
	}
	toks := sink.Tokens()
	for _, tk := range toks {
		if tk == "" || !utf8.ValidString(tk) {
			t.Fatalf("token %q is empty or invalid UTF-8", tk)
		}
	}
	if got := strings.Join(toks, ""); got != want.String() || len(toks) >= 30 {
		t.Fatalf("text %q (%d tokens), want %q in fewer than 30 tokens", got, len(toks), want.String())
	}
}

// TestFakeFailModes: every fault of the fake maps to the right error.
func TestFakeFailModes(t *testing.T) {
	enginetest.LeakCheck(t)
	req := &engines.Request{Prompt: "a b c", MaxTokens: 8, Seed: 5}
	for _, tc := range []struct {
		mode      string
		kind      engines.ErrorKind // 0: success
		tokens    int
		retriable bool
	}{
		{fake.FailNone, 0, 8, false},
		{fake.FailSplitUTF8, 0, -1, false},
		{fake.FailStart429, engines.KindOverloaded, 0, true},
		{fake.FailStart500, engines.KindUpstream, 0, true},
		{fake.FailStart503, engines.KindUpstream, 0, true},
		{fake.FailMidstreamDisconnect, engines.KindUpstream, 3, false},
		{fake.FailMalformed, engines.KindProtocol, 2, false},
		{fake.FailMidstreamError, engines.KindUpstream, 2, false},
	} {
		s := startFake(t, fake.Options{Fail: tc.mode})
		a := newAdapter(t, s.URL(), Options{})
		sink := &enginetest.RecSink{}
		_, err := a.Stream(enginetest.Ctx(t), req, sink)
		if tc.kind == 0 {
			if err != nil {
				t.Fatalf("%s: %v", tc.mode, err)
			}
		} else {
			e, ok := engines.AsError(err)
			if !ok || e.Kind != tc.kind || e.Retriable() != tc.retriable || len(sink.Tokens()) != tc.tokens || e.AfterFirstToken != (tc.tokens > 0) {
				t.Fatalf("%s: %v (%d tokens), want kind %v, %d tokens, retriable %v", tc.mode, err, len(sink.Tokens()), tc.kind, tc.tokens, tc.retriable)
			}
			if tc.tokens > 0 && !reflect.DeepEqual(sink.Tokens(), words(5, "a b c", tc.tokens)) {
				t.Fatalf("%s: tokens %q", tc.mode, sink.Tokens())
			}
		}
		enginetest.Eventually(t, tc.mode+": the fake's slot to free", func() bool { return s.InFlight() == 0 })
		// Health: only start-503 makes TGI unhealthy.
		herr := a.Health(context.Background())
		if (herr != nil) != (tc.mode == fake.FailStart503) {
			t.Fatalf("%s: Health %v", tc.mode, herr)
		}
	}
}

// TestFakeStall: a stalled stream is canceled by the caller; the fake's
// slot is freed (TGI drops the request at the next step).
func TestFakeStall(t *testing.T) {
	enginetest.LeakCheck(t)
	s := startFake(t, fake.Options{Fail: fake.FailStall})
	a := newAdapter(t, s.URL(), Options{})
	ctx, cancel := context.WithCancel(enginetest.Ctx(t))
	defer cancel()
	sink := &enginetest.RecSink{OnToken: func(n int) {
		if n == 2 {
			cancel()
		}
	}}
	if _, err := a.Stream(ctx, &engines.Request{Prompt: "x", MaxTokens: 8, Seed: 1}, sink); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	enginetest.Eventually(t, "the stalled slot to free", func() bool { return s.InFlight() == 0 })
}

// TestFakeCancelFreesSlot: cancel mid-stream frees the fake's slot.
func TestFakeCancelFreesSlot(t *testing.T) {
	enginetest.LeakCheck(t)
	s := startFake(t, fake.Options{ITL: time.Hour})
	a := newAdapter(t, s.URL(), Options{})
	ctx, cancel := context.WithCancel(enginetest.Ctx(t))
	defer cancel()
	got := make(chan struct{})
	sink := &enginetest.RecSink{OnToken: func(n int) {
		if n == 1 {
			close(got)
		}
	}}
	done := make(chan error, 1)
	go func() {
		_, err := a.Stream(ctx, &engines.Request{Prompt: "x", MaxTokens: 8, Seed: 1}, sink)
		done <- err
	}()
	enginetest.Wait(t, got, "the first token")
	if s.InFlight() != 1 {
		t.Fatalf("InFlight %d while generating", s.InFlight())
	}
	cancel()
	if err := enginetest.Recv(t, done, "the stream to end after cancel"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	enginetest.Eventually(t, "the slot to free", func() bool { return s.InFlight() == 0 })
}

// TestFakeLimits: context length and overload, as the gateway sees them.
func TestFakeLimits(t *testing.T) {
	enginetest.LeakCheck(t)
	s := startFake(t, fake.Options{Ctx: 32})
	a := newAdapter(t, s.URL(), Options{})
	_, err := a.Stream(enginetest.Ctx(t), &engines.Request{Prompt: "a b c", MaxTokens: 40, Seed: 1}, &enginetest.RecSink{})
	if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindContextLength || e.Retriable() {
		t.Fatalf("too long: %v", err)
	}

	o := startFake(t, fake.Options{Slots: 1, TTFT: time.Hour})
	b := newAdapter(t, o.URL(), Options{})
	ctx, cancel := context.WithCancel(enginetest.Ctx(t))
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := b.Stream(ctx, &engines.Request{Prompt: "x", MaxTokens: 2, Seed: 1}, &enginetest.RecSink{})
		done <- err
	}()
	enginetest.Eventually(t, "the first request to hold the slot", func() bool { return o.InFlight() == 1 })
	_, err = b.Stream(enginetest.Ctx(t), &engines.Request{Prompt: "y", MaxTokens: 2, Seed: 1}, &enginetest.RecSink{})
	if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindOverloaded || !e.Retriable() {
		t.Fatalf("second request: %v, want KindOverloaded", err)
	}
	cancel()
	if err := enginetest.Recv(t, done, "the first request to end after cancel"); !errors.Is(err, context.Canceled) {
		t.Fatalf("first request: %v", err)
	}
	enginetest.Eventually(t, "the slot to free", func() bool { return o.InFlight() == 0 })
}

// TestFakeProbes: Health while loading, Props and ScrapeLoad from the fake.
func TestFakeProbes(t *testing.T) {
	enginetest.LeakCheck(t)
	l := startFake(t, fake.Options{Load: time.Hour})
	la := newAdapter(t, l.URL(), Options{})
	if e, ok := engines.AsError(la.Health(context.Background())); !ok || e.Kind != engines.KindUnavailable {
		t.Fatalf("loading Health: %v", e)
	}
	if _, err := la.Stream(enginetest.Ctx(t), testReq, &enginetest.RecSink{}); err == nil {
		t.Fatal("stream while loading succeeded")
	} else if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindUnavailable {
		t.Fatalf("loading Stream: %v", err)
	}

	s := startFake(t, fake.Options{Ctx: 4096, TTFT: time.Hour})
	a := newAdapter(t, s.URL(), Options{})
	p, err := a.Props(context.Background())
	want := engines.Props{Slots: tgifake.DefaultMaxConcurrentRequests, CtxMax: 4096, EngineVersion: tgifake.DefaultEngineVersion, Model: tgifake.DefaultModel}
	if err != nil || p.ModelDigest == "" {
		t.Fatalf("Props %+v %v", p, err)
	}
	p.ModelDigest = ""
	if p != want {
		t.Fatalf("Props %+v, want %+v", p, want)
	}
	if l, err := a.ScrapeLoad(context.Background()); err != nil || !reflect.DeepEqual(l, engines.Load{}) {
		t.Fatalf("fresh ScrapeLoad %+v %v", l, err)
	}
	ctx, cancel := context.WithCancel(enginetest.Ctx(t))
	defer cancel()
	const n = fake.DefaultSlots + 2
	done := make(chan struct{}, n)
	for range n {
		go func() {
			_, _ = a.Stream(ctx, &engines.Request{Prompt: "x", MaxTokens: 2, Seed: 1}, &enginetest.RecSink{})
			done <- struct{}{}
		}()
	}
	enginetest.Eventually(t, "2 generating, 2 queued", func() bool { return s.InFlight() == fake.DefaultSlots && s.Deferred() == 2 })
	l2, err := a.ScrapeLoad(context.Background())
	if err != nil || l2.Processing != fake.DefaultSlots || l2.Deferred != 2 || l2.HasKVCacheUsage || l2.Devices != nil {
		t.Fatalf("busy ScrapeLoad %+v %v", l2, err)
	}
	cancel()
	for i := range n {
		enginetest.Wait(t, done, fmt.Sprintf("stream %d of %d to end after cancel", i+1, n))
	}
	enginetest.Eventually(t, "the fake to drain", func() bool { return s.InFlight() == 0 && s.Deferred() == 0 })

	o := startFake(t, fake.Options{Slots: 3, Model: "org/m", EngineVersion: "3.3.6"})
	p, err = newAdapter(t, o.URL(), Options{}).Props(context.Background())
	if err != nil || p.Slots != 3 || p.Model != "org/m" || p.EngineVersion != "3.3.6" || p.CtxMax != fake.DefaultCtx {
		t.Fatalf("Props %+v %v", p, err)
	}
}
