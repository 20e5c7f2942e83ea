package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/goleak"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	faketgi "github.com/llama-orch/llama-orch/engines/fake/tgi"
	faketriton "github.com/llama-orch/llama-orch/engines/fake/triton"
)

// testReplica is one started fake engine replica.
type testReplica struct {
	url      string
	requests func() int64 // completion/generate requests only
}

// startReplica starts a fake of engine on loopback and closes it with the test.
func startReplica(t *testing.T, engine string, o fake.Options) testReplica {
	t.Helper()
	type server interface {
		Start(string) error
		URL() string
		Requests() int64
		Close() error
	}
	var (
		s   server
		err error
	)
	switch engine {
	case engines.LlamaCpp:
		s, err = fake.New(o)
	case engines.TGI:
		s, err = faketgi.New(o)
	case engines.Triton:
		s, err = faketriton.New(o)
	default:
		t.Fatalf("no fake for %s", engine)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return testReplica{url: s.URL(), requests: s.Requests}
}

// noLeaks checks, after every cleanup of t (servers closed), that no
// goroutine started during the test is left.
func noLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

func runDet(t *testing.T, c DeterminismConfig) (*DeterminismReport, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return RunDeterminism(ctx, c)
}

func TestDeterminismSeedsStable(t *testing.T) {
	// Seed 0 is SplitMix64's well-known first output for state 0,
	// 0xE220A8397B1DCDAF, shifted right by 33. These values are the corpus:
	// changing them breaks comparisons with earlier runs.
	golden := map[int]int64{0: 0xE220A8397B1DCDAF >> 33, 1: 926699317, 2: 56766092, 3: 2084953172, 63: 1898633499}
	for i, want := range golden {
		if got := DeterminismSeed(i); got != want {
			t.Errorf("DeterminismSeed(%d) = %d, want %d", i, got, want)
		}
	}
	seen := map[int64]bool{}
	for i := range DefaultDeterminismSeeds {
		s := DeterminismSeed(i)
		if s < 0 || s >= 1<<31 {
			t.Errorf("seed %d = %d out of [0, 2^31)", i, s)
		}
		if seen[s] {
			t.Errorf("seed %d = %d repeats", i, s)
		}
		seen[s] = true
	}
	cs := DeterminismCorpus(3, 2)
	want := []DeterminismCase{
		{0, 0, DeterminismSeed(0), 0}, {1, 0, DeterminismSeed(0), 1},
		{2, 1, DeterminismSeed(1), 0}, {3, 1, DeterminismSeed(1), 1},
		{4, 2, DeterminismSeed(2), 0}, {5, 2, DeterminismSeed(2), 1},
	}
	if !slices.Equal(cs, want) {
		t.Errorf("corpus %v, want %v", cs, want)
	}
	if DeterminismCorpus(0, 4) != nil || DeterminismCorpus(4, 0) != nil {
		t.Error("empty corpus expected")
	}
}

func TestDeterminismConfigCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.txt")
	if err := os.WriteFile(good, []byte("first prompt\r\n\nsecond\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(bad, []byte("ok\n\xff\xfe\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, b := "http://127.0.0.1:1", "http://127.0.0.1:2"
	for _, tc := range []struct {
		name string
		c    DeterminismConfig
		want string // "" = valid
	}{
		{"defaults", DeterminismConfig{Engine: "llamacpp", Replicas: []string{a, b}}, ""},
		{"prompt file", DeterminismConfig{Engine: "llamacpp", Replicas: []string{a, b}, PromptSet: good}, ""},
		{"no engine", DeterminismConfig{Replicas: []string{a, b}}, "--engine is required"},
		{"unknown engine", DeterminismConfig{Engine: "ollama", Replicas: []string{a, b}}, `"ollama" has no adapter`},
		{"one replica", DeterminismConfig{Engine: "llamacpp", Replicas: []string{a}}, "exactly two replicas"},
		{"three replicas", DeterminismConfig{Engine: "llamacpp", Replicas: []string{a, b, a}}, "got 3"},
		{"same replica", DeterminismConfig{Engine: "llamacpp", Replicas: []string{a, a + "/"}}, "name two different replicas"},
		{"remote", DeterminismConfig{Engine: "llamacpp", Replicas: []string{a, "http://203.0.113.9:8080"}}, "only loopback targets"},
		{"seeds", DeterminismConfig{Engine: "llamacpp", Replicas: []string{a, b}, Seeds: -1}, "--seeds must be at least 1"},
		{"tokens", DeterminismConfig{Engine: "llamacpp", Replicas: []string{a, b}, Tokens: -3}, "--tokens must be at least 1"},
		{"concurrency", DeterminismConfig{Engine: "llamacpp", Replicas: []string{a, b}, Concurrency: -1}, "--concurrency must be at least 1"},
		{"missing prompt file", DeterminismConfig{Engine: "llamacpp", Replicas: []string{a, b}, PromptSet: filepath.Join(dir, "nope")}, "--prompt-set"},
		{"invalid prompt file", DeterminismConfig{Engine: "llamacpp", Replicas: []string{a, b}, PromptSet: bad}, "line 2 is not valid UTF-8"},
	} {
		err := tc.c.Check()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
		if tc.name == "defaults" && (tc.c.Seeds != 64 || tc.c.Tokens != 32 || tc.c.Concurrency != 4 ||
			tc.c.PromptSet != "builtin" || !slices.Equal(tc.c.Prompts, BuiltinPrompts())) {
			t.Errorf("defaults not filled: %+v", tc.c)
		}
		if tc.name == "prompt file" && !slices.Equal(tc.c.Prompts, []string{"first prompt", "second"}) {
			t.Errorf("prompt file: %q", tc.c.Prompts)
		}
	}
}

// TestDeterminismIdentical runs the full 64-seed corpus against two replicas
// of one set, for each engine with a fake: no differences, every case
// compared, every request sent once to each replica.
func TestDeterminismIdentical(t *testing.T) {
	noLeaks(t)
	for _, tc := range []struct {
		engine, model string
	}{
		{engines.LlamaCpp, ""},
		{engines.TGI, ""},
		{engines.Triton, faketriton.DefaultModel},
	} {
		t.Run(tc.engine, func(t *testing.T) {
			a := startReplica(t, tc.engine, fake.Options{})
			b := startReplica(t, tc.engine, fake.Options{})
			rep, err := runDet(t, DeterminismConfig{Engine: tc.engine, Replicas: []string{a.url, b.url}, Model: tc.model, Tokens: 8})
			if err != nil {
				t.Fatal(err)
			}
			planned := 64 * len(BuiltinPrompts())
			if rep.Cases != planned || rep.PlannedCases != planned || len(rep.Differences) != 0 || rep.Failed() {
				t.Fatalf("cases %d/%d, differences %v, errors %v", rep.Cases, rep.PlannedCases, rep.Differences, rep.Errors)
			}
			if rep.TokensCompared != int64(planned*8) {
				t.Errorf("tokens compared %d, want %d", rep.TokensCompared, planned*8)
			}
			if a.requests() != int64(planned) || b.requests() != int64(planned) {
				t.Errorf("requests %d and %d, want %d each", a.requests(), b.requests(), planned)
			}
			if rep.EngineVersion == "" || rep.Model == "" || len(rep.Replicas) != 2 || len(rep.SeedValues) != 64 {
				t.Errorf("report: %+v", rep)
			}
		})
	}
}

func TestDeterminismRefusesAcrossVersions(t *testing.T) {
	noLeaks(t)
	for _, tc := range []struct {
		name   string
		a, b   fake.Options
		engine string
		want   string
	}{
		{"llamacpp version", fake.Options{EngineVersion: "b10470-34af94cd9"}, fake.Options{EngineVersion: "b10480-0a1b2c3d4"}, engines.LlamaCpp,
			`replicas are not one replica set: engine_version "b10470-34af94cd9" vs "b10480-0a1b2c3d4" — no determinism is assumed across versions (SPEC §11)`},
		{"llamacpp model", fake.Options{Model: "a.gguf"}, fake.Options{Model: "b.gguf"}, engines.LlamaCpp,
			`replicas are not one replica set: model "a.gguf" vs "b.gguf" — no determinism`},
		{"tgi version and model", fake.Options{}, fake.Options{EngineVersion: "3.3.8", Model: "org/other"}, engines.TGI,
			`engine_version "3.3.7" vs "3.3.8"; model "Qwen/Qwen2.5-1.5B-Instruct" vs "org/other"; model_digest `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startReplica(t, tc.engine, tc.a)
			b := startReplica(t, tc.engine, tc.b)
			// Even --allow-unknown-version does not compare known, different versions.
			rep, err := runDet(t, DeterminismConfig{Engine: tc.engine, Replicas: []string{a.url, b.url}, Tokens: 8, AllowUnknownVersion: true})
			var rse *ReplicaSetError
			if rep != nil || !errors.As(err, &rse) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("report %v, error %v; want refusal %q", rep, err, tc.want)
			}
			if a.requests() != 0 || b.requests() != 0 {
				t.Errorf("completion requests sent after refusal: %d, %d", a.requests(), b.requests())
			}
		})
	}
}

// noVersionProxy serves a llama.cpp replica whose /props has no build_info
// (builds before it existed), forwarding everything else.
func noVersionProxy(t *testing.T, backend string) string {
	t.Helper()
	u, _ := url.Parse(backend)
	rp := httputil.NewSingleHostReverseProxy(u)
	tr := &http.Transport{}
	rp.Transport = tr
	rp.FlushInterval = -1
	rp.ModifyResponse = func(r *http.Response) error {
		if r.Request.URL.Path != "/props" {
			return nil
		}
		var m map[string]any
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			return err
		}
		r.Body.Close()
		delete(m, "build_info")
		b, _ := json.Marshal(m)
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
		r.Header.Del("Content-Length")
		return nil
	}
	s := httptest.NewServer(rp)
	t.Cleanup(func() {
		s.CloseClientConnections()
		s.Close()
		tr.CloseIdleConnections()
	})
	return s.URL
}

func TestDeterminismUnknownVersion(t *testing.T) {
	noLeaks(t)
	a := startReplica(t, engines.LlamaCpp, fake.Options{})
	b := startReplica(t, engines.LlamaCpp, fake.Options{})
	bURL := noVersionProxy(t, b.url)
	c := DeterminismConfig{Engine: engines.LlamaCpp, Replicas: []string{a.url, bURL}, Seeds: 4, Tokens: 4}
	_, err := runDet(t, c)
	var rse *ReplicaSetError
	if !errors.As(err, &rse) || !strings.Contains(err.Error(), "replica "+bURL+" reports no engine version") ||
		!strings.Contains(err.Error(), "--allow-unknown-version") {
		t.Fatalf("error %v; want refusal for the unknown version", err)
	}
	if a.requests() != 0 || b.requests() != 0 {
		t.Fatalf("completion requests sent after refusal: %d, %d", a.requests(), b.requests())
	}
	c.AllowUnknownVersion = true
	rep, err := runDet(t, c)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.VersionUnchecked || rep.EngineVersion != "" || rep.Cases != 16 || len(rep.Differences) != 0 {
		t.Errorf("report: unchecked %v version %q cases %d differences %v", rep.VersionUnchecked, rep.EngineVersion, rep.Cases, rep.Differences)
	}
}

func TestDeterminismReportsDifferences(t *testing.T) {
	noLeaks(t)
	const tokens = 8
	prompts := BuiltinPrompts()
	longest := 0
	for i, p := range prompts {
		if fake.CountTokens(p) > fake.CountTokens(prompts[longest]) {
			longest = i
		}
	}
	// A context one token short of the longest prompt + tokens: only that
	// prompt's streams end early (truncated), on every seed.
	shortCtx := fake.CountTokens(prompts[longest]) + tokens - 1
	for i, p := range prompts {
		if i != longest && fake.CountTokens(p)+tokens > shortCtx {
			t.Fatalf("prompt %d does not fit the short context: the test needs one longest prompt", i)
		}
	}
	for _, tc := range []struct {
		name       string
		b          fake.Options
		want       func(DeterminismCase) bool // which cases differ
		firstToken int
		kinds      []string
		tokensOutB int
	}{
		{"eos cap", fake.Options{Tokens: 3}, func(DeterminismCase) bool { return true }, 3,
			[]string{"text", "tokens_out", "finish_reason"}, 4},
		{"short context", fake.Options{Ctx: shortCtx}, func(c DeterminismCase) bool { return c.Prompt == longest }, tokens - 1,
			[]string{"text", "tokens_out"}, tokens - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startReplica(t, engines.LlamaCpp, fake.Options{})
			b := startReplica(t, engines.LlamaCpp, tc.b)
			rep, err := runDet(t, DeterminismConfig{Engine: engines.LlamaCpp, Replicas: []string{a.url, b.url}, Tokens: tokens})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Cases != 64*len(prompts) || rep.Failed() {
				t.Fatalf("cases %d, errors %v", rep.Cases, rep.Errors)
			}
			var want []int
			for _, c := range DeterminismCorpus(64, len(prompts)) {
				if tc.want(c) {
					want = append(want, c.Case)
				}
			}
			var got []int
			for _, d := range rep.Differences {
				got = append(got, d.Case)
				if d.FirstToken != tc.firstToken || !slices.Equal(d.Kinds, tc.kinds) || d.A.TokensOut != tokens ||
					d.B.TokensOut != tc.tokensOutB || d.Seed != DeterminismSeed(d.Case/len(prompts)) || d.Prompt != d.Case%len(prompts) {
					t.Fatalf("difference %+v", d)
				}
				// b's text is a strict prefix of a's: the first differing
				// byte is where b ends.
				if !strings.HasPrefix(d.A.Text, d.B.Text) || d.FirstByte != len(d.B.Text) {
					t.Fatalf("texts %q vs %q, first byte %d", d.A.Text, d.B.Text, d.FirstByte)
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("differing cases %v, want %v", got, want)
			}
			var out bytes.Buffer
			if err := WriteDeterminismText(&out, rep); err != nil {
				t.Fatal(err)
			}
			summary := "64 seeds × 4 prompts: 256 cases, " + strconv.Itoa(len(want)) + " differences\n"
			if !strings.HasSuffix(out.String(), summary) {
				t.Errorf("text output does not end in %q:\n%s", summary, out.String())
			}
			d := rep.Differences[0]
			line := "case " + strconv.Itoa(d.Case) + " (seed " + strconv.Itoa(int(d.Seed)) + ", prompt " + strconv.Itoa(d.Prompt) + "): " +
				strings.Join(tc.kinds, ", ") + "; first difference at token " + strconv.Itoa(tc.firstToken)
			if !strings.Contains(out.String(), line) {
				t.Errorf("text output lacks %q:\n%s", line, out.String())
			}
		})
	}
}

func TestDeterminismEngineErrors(t *testing.T) {
	noLeaks(t)
	a := startReplica(t, engines.LlamaCpp, fake.Options{})
	b := startReplica(t, engines.LlamaCpp, fake.Options{Fail: fake.FailStart500})
	rep, err := runDet(t, DeterminismConfig{Engine: engines.LlamaCpp, Replicas: []string{a.url, b.url}, Tokens: 4, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Failed() || rep.Cases != 0 || len(rep.Errors) == 0 || len(rep.Errors) > 2 {
		t.Fatalf("cases %d errors %v", rep.Cases, rep.Errors)
	}
	e := rep.Errors[0]
	if e.Replica != b.url || e.Kind != "upstream" || !strings.Contains(e.Message, "HTTP 500") {
		t.Errorf("error %+v", e)
	}
	// No case starts after the first error: each worker ran one case.
	if b.requests() > 2 || a.requests() > 2 {
		t.Errorf("requests after the first error: %d, %d", a.requests(), b.requests())
	}

	// A replica that does not answer at all: props fail, not a refusal.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	_, err = runDet(t, DeterminismConfig{Engine: engines.LlamaCpp, Replicas: []string{a.url, dead}})
	var rse *ReplicaSetError
	if err == nil || errors.As(err, &rse) || !strings.Contains(err.Error(), "cannot read its props") {
		t.Errorf("dead replica: %v", err)
	}
}

func TestDeterminismInterrupted(t *testing.T) {
	noLeaks(t)
	a := startReplica(t, engines.LlamaCpp, fake.Options{ITL: 5 * time.Millisecond})
	b := startReplica(t, engines.LlamaCpp, fake.Options{ITL: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for a.requests() < 8 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	rep, err := RunDeterminism(ctx, DeterminismConfig{Engine: engines.LlamaCpp, Replicas: []string{a.url, b.url}, Tokens: 16})
	cancel()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Interrupted || !rep.Failed() || rep.Cases >= rep.PlannedCases || len(rep.Errors) != 0 {
		t.Errorf("interrupted %v cases %d/%d errors %v", rep.Interrupted, rep.Cases, rep.PlannedCases, rep.Errors)
	}
	var out bytes.Buffer
	_ = WriteDeterminismText(&out, rep)
	if !strings.Contains(out.String(), "(interrupted)") {
		t.Errorf("text output: %s", out.String())
	}
}

func TestCompareStreams(t *testing.T) {
	rec := func(out int, finish string, toks ...string) *streamRecord {
		r := &streamRecord{res: engines.Result{TokensOut: out, FinishReason: finish}}
		for _, s := range toks {
			r.Token([]byte(s))
		}
		return r
	}
	for _, tc := range []struct {
		name                  string
		a, b                  *streamRecord
		differ                bool
		kinds                 []string
		firstToken, firstByte int
	}{
		{"identical", rec(2, "length", " a", " b"), rec(2, "length", " a", " b"), false, nil, -1, -1},
		{"both empty", rec(1, "stop"), rec(1, "stop"), false, nil, -1, -1},
		{"word differs", rec(3, "length", " a", " b", " c"), rec(3, "length", " a", " x", " c"), true, []string{"text"}, 1, 3},
		{"shorter", rec(3, "length", " a", " b", " c"), rec(2, "stop", " a", " b"), true, []string{"text", "tokens_out", "finish_reason"}, 2, 4},
		{"boundaries", rec(2, "length", " a", " b"), rec(2, "length", " a b"), true, []string{"token_boundaries"}, 0, -1},
		{"count only", rec(2, "length", " a"), rec(3, "length", " a"), true, []string{"tokens_out"}, -1, -1},
		{"multibyte", rec(1, "length", " café"), rec(1, "length", " cafè"), true, []string{"text"}, 0, 5},
	} {
		d, ok := compareStreams(tc.a, tc.b)
		if ok != tc.differ || !slices.Equal(d.Kinds, tc.kinds) || (ok && (d.FirstToken != tc.firstToken || d.FirstByte != tc.firstByte)) {
			t.Errorf("%s: differ %v kinds %v token %d byte %d; want %v %v %d %d",
				tc.name, ok, d.Kinds, d.FirstToken, d.FirstByte, tc.differ, tc.kinds, tc.firstToken, tc.firstByte)
		}
		if ok && (d.A.Text != string(tc.a.text) || d.B.Tokens != len(tc.b.ends)) {
			t.Errorf("%s: summaries %+v %+v", tc.name, d.A, d.B)
		}
	}
}

func TestExcerpt(t *testing.T) {
	for _, tc := range []struct {
		s                 string
		at, before, after int
		want              string
	}{
		{"hello world", 6, 3, 3, "…lo wor…"},
		{"hello", 0, 3, 10, "hello"},
		{"hello", 5, 10, 3, "hello"},
		{"hello", 99, 2, 2, "…lo"},
		{"aé€b", 3, 1, 1, "……"},   // cuts inside é and € are moved out
		{"aé€b", 3, 2, 3, "…é€…"}, // whole characters only
		{"€€€", 3, 3, 3, "€€…"},
		{"", 0, 5, 5, ""},
	} {
		if got := excerpt(tc.s, tc.at, tc.before, tc.after); got != tc.want {
			t.Errorf("excerpt(%q, %d, %d, %d) = %q, want %q", tc.s, tc.at, tc.before, tc.after, got, tc.want)
		}
	}
}

func FuzzExcerpt(f *testing.F) {
	f.Add("Traduis en français : « Le café est chaud »", 12, 4, 4)
	f.Add(" alpha beta gamma", 6, 48, 48)
	f.Add("€€€", 1, 1, 1)
	f.Fuzz(func(t *testing.T, s string, at, before, after int) {
		if before < 0 || after < 0 || before > 1<<16 || after > 1<<16 {
			return
		}
		got := excerpt(s, at, before, after)
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("excerpt(%q, %d, %d, %d) = %q: invalid UTF-8", s, at, before, after, got)
		}
		core := strings.TrimSuffix(strings.TrimPrefix(got, "…"), "…")
		if !strings.Contains(s, core) || len(core) > before+after {
			t.Fatalf("excerpt(%q, %d, %d, %d) = %q", s, at, before, after, got)
		}
	})
}

func FuzzParsePrompts(f *testing.F) {
	f.Add([]byte(strings.Join(BuiltinPrompts(), "\n") + "\n"))
	f.Add([]byte("one\r\n\r\ntwo"))
	f.Add([]byte("\n\n"))
	f.Add([]byte("ok\n\xff\n"))
	f.Add([]byte("\r\r\na\r\r"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := parsePrompts(data)
		if err != nil {
			if len(ps) != 0 {
				t.Fatalf("prompts with an error: %q", ps)
			}
			return
		}
		if len(ps) == 0 {
			t.Fatal("no prompts and no error")
		}
		for _, p := range ps {
			if p == "" || strings.ContainsRune(p, '\n') || strings.HasSuffix(p, "\r") || !utf8.ValidString(p) {
				t.Fatalf("bad prompt %q", p)
			}
		}
		// Joining the prompts back gives a file that parses to the same.
		again, err := parsePrompts([]byte(strings.Join(ps, "\n")))
		if err != nil || !slices.Equal(again, ps) {
			t.Fatalf("round trip: %q, %v; want %q", again, err, ps)
		}
	})
}

func TestWriteDeterminismJSON(t *testing.T) {
	rep := &DeterminismReport{Engine: "llamacpp", EngineVersion: "b1", Model: "m", Cases: 2, PlannedCases: 2,
		Seeds: 1, Prompts: []string{"p", "q"}, Differences: []DeterminismDifference{}}
	dir := filepath.Join(t.TempDir(), "out")
	if err := WriteDeterminismJSON(dir, rep); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, DeterminismFile))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"engine": "llamacpp", "engine_version": "b1", "model": "m", "cases": 2.0} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	if d, ok := m["differences"].([]any); !ok || len(d) != 0 {
		t.Errorf("differences = %#v, want []", m["differences"])
	}
}
