package golden

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pmezard/go-difflib/difflib"
	"go.uber.org/goleak"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/fake/tgi"
	"github.com/llama-orch/llama-orch/engines/fake/triton"
	"github.com/llama-orch/llama-orch/engines/fake/vllm"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the fakes' current output")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// quietWindow ends a capture of a stalled response: the fake has sent all
// it will once the socket stays silent this long (the stall holds until
// the client leaves). Every other capture reads to EOF.
const quietWindow = 300 * time.Millisecond

// server is what the four fakes have in common.
type server interface {
	Start(addr string) error
	Close() error
	Addr() string
}

// exchange is one request on a fresh connection (Connection: close).
type exchange struct {
	name   string
	method string
	path   string
	body   string
	// ctype overrides the Content-Type sent with a body.
	ctype string
	// header holds extra request header lines.
	header []string
	// quiet: the response stalls, so read until the socket is quiet.
	quiet bool
}

// scenario is one fake replica and the requests sent to it, in order.
type scenario struct {
	name string
	o    fake.Options
	ex   []exchange
}

// engine is one fake's golden file, scenarios and normalisation.
type engine struct {
	name      string
	newServer func(fake.Options) (server, error)
	scenarios []scenario
	// norm rewrites time-dependent values; it must not touch anything else.
	norm []rule
}

type rule struct {
	re   *regexp.Regexp
	repl string
}

func r(expr, repl string) rule { return rule{regexp.MustCompile(expr), repl} }

var dateRule = r(`(?m)^Date: .*$`, "Date: DATE")

func TestWireBytes(t *testing.T) {
	for _, e := range []engine{llamacppEngine(), tgiEngine(), tritonEngine(), vllmEngine()} {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			got := capture(t, e)
			path := filepath.Join("testdata", e.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				diff, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
					A: difflib.SplitLines(string(want)), B: difflib.SplitLines(string(got)),
					FromFile: path, ToFile: "got", Context: 2,
				})
				t.Errorf("%s fake's wire bytes changed:\n%s", e.name, diff)
			}
		})
	}
}

// capture runs every scenario of e and renders what came back.
func capture(t *testing.T, e engine) []byte {
	var out bytes.Buffer
	for _, sc := range e.scenarios {
		s, err := e.newServer(sc.o)
		if err != nil {
			t.Fatalf("%s: New: %v", sc.name, err)
		}
		if err := s.Start("127.0.0.1:0"); err != nil {
			t.Fatalf("%s: Start: %v", sc.name, err)
		}
		for _, ex := range sc.ex {
			raw, end := roundTrip(t, s.Addr(), ex)
			fmt.Fprintf(&out, "=== %s / %s: %s %s\n", sc.name, ex.name, ex.method, ex.path)
			out.WriteString(render(raw, end, e.norm))
			out.WriteByte('\n')
		}
		if err := s.Close(); err != nil {
			t.Fatalf("%s: Close: %v", sc.name, err)
		}
	}
	return out.Bytes()
}

// roundTrip sends ex on a new connection and returns every byte read and
// how the read ended ("eof" or "quiet").
func roundTrip(t *testing.T, addr string, ex exchange) ([]byte, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: dial: %v", ex.name, err)
	}
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second) // a guard against hangs only
	_ = c.SetDeadline(deadline)
	var req strings.Builder
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: golden\r\nUser-Agent: golden/1\r\nAccept: */*\r\nConnection: close\r\n", ex.method, ex.path)
	for _, h := range ex.header {
		req.WriteString(h + "\r\n")
	}
	if ex.body != "" || ex.method == "POST" {
		ct := ex.ctype
		if ct == "" {
			ct = "application/json"
		}
		fmt.Fprintf(&req, "Content-Type: %s\r\nContent-Length: %d\r\n", ct, len(ex.body))
	}
	req.WriteString("\r\n" + ex.body)
	if _, err := io.WriteString(c, req.String()); err != nil {
		t.Fatalf("%s: write: %v", ex.name, err)
	}
	if !ex.quiet {
		raw, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("%s: read: %v (got %q)", ex.name, err, raw)
		}
		return raw, "eof"
	}
	var raw []byte
	buf := make([]byte, 4096)
	for {
		_ = c.SetReadDeadline(time.Now().Add(quietWindow))
		n, err := c.Read(buf)
		raw = append(raw, buf[:n]...)
		var ne net.Error
		switch {
		case err == nil:
			continue
		case errors.As(err, &ne) && ne.Timeout():
			if time.Now().After(deadline) {
				t.Fatalf("%s: no quiet window before the guard deadline", ex.name)
			}
			return raw, "quiet"
		case errors.Is(err, io.EOF):
			return raw, "eof"
		default:
			t.Fatalf("%s: read: %v", ex.name, err)
		}
	}
}

// render prints a response exactly: the head line by line, then the body
// (Content-Length) or each chunk, all quoted. Where normalisation changed
// a body or a chunk, its length prints as "?".
func render(raw []byte, end string, norm []rule) string {
	apply := func(s string) string {
		for _, rl := range norm {
			s = rl.re.ReplaceAllString(s, rl.repl)
		}
		return s
	}
	var b strings.Builder
	if len(raw) == 0 {
		b.WriteString("(nothing)\n")
		b.WriteString("end: " + end + "\n")
		return b.String()
	}
	i := bytes.Index(raw, []byte("\r\n\r\n"))
	if i < 0 {
		fmt.Fprintf(&b, "no head: %q\nend: %s\n", apply(string(raw)), end)
		return b.String()
	}
	head, rest := strings.Split(string(raw[:i]), "\r\n"), raw[i+4:]
	chunked := false
	for _, l := range head {
		chunked = chunked || strings.EqualFold(l, "Transfer-Encoding: chunked")
	}
	var body strings.Builder
	bodyChanged := false
	if chunked {
		for {
			j := bytes.Index(rest, []byte("\r\n"))
			if j < 0 {
				fmt.Fprintf(&body, "cut: %q\n", apply(string(rest)))
				break
			}
			n, err := strconv.ParseInt(string(rest[:j]), 16, 32)
			if err != nil || len(rest) < j+2+int(n)+2 || string(rest[j+2+int(n):j+4+int(n)]) != "\r\n" {
				fmt.Fprintf(&body, "cut: %q\n", apply(string(rest)))
				break
			}
			if n == 0 {
				fmt.Fprintf(&body, "last-chunk trailer=%q\n", rest[j+2:])
				break
			}
			c := string(rest[j+2 : j+2+int(n)])
			nc := apply(c)
			size := strconv.FormatInt(n, 10)
			if nc != c {
				size = "?"
			}
			fmt.Fprintf(&body, "chunk %s %q\n", size, nc)
			rest = rest[j+4+int(n):]
		}
	} else if len(rest) > 0 {
		nb := apply(string(rest))
		bodyChanged = nb != string(rest)
		fmt.Fprintf(&body, "body %q\n", nb)
	}
	for _, l := range head {
		if n, ok := strings.CutPrefix(l, "Content-Length: "); ok && bodyChanged {
			// The value depends on the normalised text; pin that it matched.
			l = "Content-Length: ?"
			if n != strconv.Itoa(len(rest)) {
				l = "Content-Length: " + n + " (body has " + strconv.Itoa(len(rest)) + ")"
			}
		}
		fmt.Fprintf(&b, "%q\n", apply(l))
	}
	b.WriteString(body.String())
	b.WriteString("end: " + end + "\n")
	return b.String()
}

// failScenarios is one replica per fault mode: a stream, a whole answer,
// then metrics (not after a stall, whose release races the scrape).
func failScenarios(o fake.Options, stream, whole exchange, more ...exchange) []scenario {
	var out []scenario
	for _, m := range fake.FailModes() {
		if m == fake.FailNone {
			continue
		}
		oo := o
		oo.Fail = m
		s, w := stream, whole
		ex := []exchange{s, w}
		if m == fake.FailStall {
			ex[0].quiet, ex[1].quiet = true, true
		} else {
			ex = append(ex, more...)
		}
		out = append(out, scenario{name: "fail=" + m, o: oo, ex: ex})
	}
	return out
}

func get(name, path string) exchange { return exchange{name: name, method: "GET", path: path} }

func post(name, path, body string) exchange {
	return exchange{name: name, method: "POST", path: path, body: body}
}

func llamacppEngine() engine {
	base := fake.Options{Ctx: 64}
	long := strings.Repeat("word ", 70)
	stream := post("stream", "/completion", `{"prompt":"Hello world","n_predict":6,"seed":42,"stream":true}`)
	whole := post("whole", "/completion", `{"prompt":"Hello world","n_predict":6,"seed":42}`)
	metrics := get("metrics", "/metrics")
	sc := []scenario{{name: "none", o: base, ex: []exchange{
		get("health", "/health"),
		get("props", "/props"),
		get("models", "/v1/models"),
		get("slots fresh", "/slots"),
		metrics,
		post("stream", "/completion", `{"prompt":"Hello world","n_predict":5,"seed":42,"stream":true}`),
		post("stream params", "/completion", `{"prompt":"Tab\tquote\" back\\ \u00e9 \u0001","n_predict":3,"seed":-7,"stream":true,"temperature":0.5,"top_k":5,"top_p":0.9,"min_p":0.1,"stop":["x","\n"],"cache_prompt":false}`),
		post("whole", "/completion", `{"prompt":"Hello world","n_predict":4,"seed":42}`),
		post("whole alias", "/completions", `{"prompt":"Hello world","max_tokens":2,"seed":1}`),
		post("truncated", "/completion", `{"prompt":"a b c","n_predict":1000,"seed":3,"stream":true}`),
		post("cache reuse", "/completion", `{"prompt":"Hello world","n_predict":2,"seed":42,"stream":true,"id_slot":0}`),
		post("bad json", "/completion", `{"prompt":`),
		post("bad json key", "/completion", `{"prompt":"a",`),
		post("trailing", "/completion", `{"prompt":"a"} x`),
		post("not object", "/completion", `[1]`),
		post("no prompt", "/completion", `{}`),
		post("prompt type", "/completion", `{"prompt":5}`),
		post("n_predict type", "/completion", `{"prompt":"a","n_predict":"x"}`),
		post("stream type", "/completion", `{"prompt":"a","stream":1}`),
		post("stop type", "/completion", `{"prompt":"a","stop":"x"}`),
		post("id_slot range", "/completion", `{"prompt":"a","id_slot":7}`),
		post("context", "/completion", `{"prompt":"`+long+`","stream":true}`),
		get("slots", "/slots"),
		get("slots fail_on_no_slot", "/slots?fail_on_no_slot=1"),
		post("erase", "/slots/0?action=erase", ""),
		post("save", "/slots/0?action=save", ""),
		post("bad action", "/slots/0?action=x", ""),
		post("bad slot", "/slots/9?action=erase", ""),
		post("tokenize", "/tokenize", `{"content":"Hello world ","add_special":true}`),
		post("tokenize no content", "/tokenize", `{}`),
		post("tokenize bad", "/tokenize", `{`),
		post("props post", "/props", `{}`),
		{name: "options", method: "OPTIONS", path: "/completion", header: []string{"Origin: http://ui.example"}},
		{name: "origin", method: "GET", path: "/health", header: []string{"Origin: http://ui.example"}},
		get("not found", "/nope"),
		metrics,
	}}}
	sc = append(sc, failScenarios(base, stream, whole, metrics, get("slots", "/slots"))...)
	sc = append(sc,
		scenario{name: "tokens=3", o: fake.Options{Ctx: 64, Tokens: 3}, ex: []exchange{
			post("stream", "/completion", `{"prompt":"Hello world","n_predict":8,"seed":42,"stream":true}`),
			post("whole", "/completion", `{"prompt":"Hello world","n_predict":8,"seed":42}`),
			post("ignore_eos", "/completion", `{"prompt":"Hello world","n_predict":5,"seed":42,"stream":true,"ignore_eos":true}`),
			post("under cap", "/completion", `{"prompt":"Hello world","n_predict":2,"seed":42,"stream":true}`),
			metrics,
		}},
		scenario{name: "loading", o: fake.Options{Ctx: 64, Load: time.Hour}, ex: []exchange{
			get("health", "/health"),
			stream,
			get("root", "/"),
		}},
	)
	return engine{
		name:      "llamacpp",
		newServer: func(o fake.Options) (server, error) { return fake.New(o) },
		scenarios: sc,
		norm: []rule{
			r(`"(prompt_ms|prompt_per_token_ms|prompt_per_second|predicted_ms|predicted_per_token_ms|predicted_per_second)":[-+.0-9e]+`, `"$1":T`),
			r(`"created":[0-9]+`, `"created":T`),
			r(`Process-Start-Time-Unix: [0-9]+`, `Process-Start-Time-Unix: T`),
			r(`(?m)^(llamacpp:(prompt_seconds_total|tokens_predicted_seconds_total|prompt_tokens_seconds|predicted_tokens_seconds)) .*$`, `$1 T`),
		},
	}
}

func tgiEngine() engine {
	base := fake.Options{Ctx: 64}
	stop := strings.TrimSpace(fake.Text(42, "Hello world", 2))
	stream := post("stream", "/generate_stream", `{"inputs":"Hello world","parameters":{"max_new_tokens":6,"seed":42,"details":true,"do_sample":true}}`)
	whole := post("generate", "/generate", `{"inputs":"Hello world","parameters":{"max_new_tokens":6,"seed":42,"details":true}}`)
	metrics := get("metrics", "/metrics")
	sc := []scenario{{name: "none", o: base, ex: []exchange{
		get("health", "/health"),
		get("ping", "/ping"),
		get("info", "/info"),
		get("models", "/v1/models"),
		metrics,
		post("stream", "/generate_stream", `{"inputs":"Hello world","parameters":{"max_new_tokens":5,"seed":42,"details":true,"do_sample":true}}`),
		post("stream plain", "/generate_stream", `{"inputs":"Tab\tquote\" \u00e9","parameters":{"max_new_tokens":3}}`),
		post("stream stop", "/generate_stream", `{"inputs":"Hello world","parameters":{"max_new_tokens":8,"seed":42,"stop":["`+stop+`"],"details":true}}`),
		post("generate", "/generate", `{"inputs":"Hello world","parameters":{"max_new_tokens":4,"seed":42,"details":true,"top_k":3}}`),
		post("generate full text", "/generate", `{"inputs":"Hello world","parameters":{"max_new_tokens":2,"return_full_text":true}}`),
		post("compat stream", "/", `{"inputs":"Hello world","stream":true,"parameters":{"max_new_tokens":2,"seed":1}}`),
		post("compat", "/", `{"inputs":"Hello world","parameters":{"max_new_tokens":2,"seed":1,"details":true}}`),
		post("default length", "/generate_stream", `{"inputs":"`+strings.Repeat("w ", 55)+`"}`),
		post("temperature", "/generate_stream", `{"inputs":"a","parameters":{"temperature":0}}`),
		post("top_p", "/generate_stream", `{"inputs":"a","parameters":{"top_p":1.0}}`),
		post("typical_p", "/generate_stream", `{"inputs":"a","parameters":{"typical_p":0}}`),
		post("top_k", "/generate_stream", `{"inputs":"a","parameters":{"top_k":0}}`),
		post("max_new_tokens", "/generate_stream", `{"inputs":"a","parameters":{"max_new_tokens":0}}`),
		post("stops", "/generate_stream", `{"inputs":"a","parameters":{"stop":["a","b","c","d","e"]}}`),
		post("best_of greedy", "/generate_stream", `{"inputs":"a","parameters":{"best_of":2}}`),
		post("best_of stream", "/generate_stream", `{"inputs":"a","parameters":{"best_of":2,"do_sample":true}}`),
		post("decoder details", "/generate_stream", `{"inputs":"a","parameters":{"decoder_input_details":true}}`),
		post("empty inputs", "/generate_stream", `{"inputs":""}`),
		post("too long", "/generate_stream", `{"inputs":"a b c","parameters":{"max_new_tokens":100}}`),
		post("inputs too long", "/generate_stream", `{"inputs":"`+strings.Repeat("w ", 70)+`","parameters":{"max_new_tokens":1}}`),
		post("generate invalid", "/generate", `{"inputs":"a","parameters":{"top_k":0}}`),
		{name: "content type", method: "POST", path: "/generate", body: `{"inputs":"a"}`, ctype: "text/plain"},
		post("bad json", "/generate", `{"inputs":`),
		post("wrong type", "/generate", `{"inputs":"a","parameters":{"max_new_tokens":"x"}}`),
		post("no inputs", "/generate", `{"parameters":{}}`),
		get("not found", "/nope"),
		get("wrong method", "/generate"),
		{name: "head", method: "HEAD", path: "/info"},
		metrics,
	}}}
	sc = append(sc, failScenarios(base, stream, whole, metrics)...)
	sc = append(sc,
		scenario{name: "start-503 health", o: fake.Options{Ctx: 64, Fail: fake.FailStart503}, ex: []exchange{
			get("health", "/health"),
		}},
		scenario{name: "tokens=3", o: fake.Options{Ctx: 64, Tokens: 3}, ex: []exchange{
			post("stream", "/generate_stream", `{"inputs":"Hello world","parameters":{"max_new_tokens":8,"seed":42,"details":true}}`),
			post("generate", "/generate", `{"inputs":"Hello world","parameters":{"max_new_tokens":8,"seed":42,"details":true}}`),
			metrics,
		}},
		scenario{name: "slots=1", o: fake.Options{Ctx: 64, Slots: 1}, ex: []exchange{
			get("info", "/info"),
			stream,
		}},
	)
	return engine{
		name:      "tgi",
		newServer: func(o fake.Options) (server, error) { return tgi.New(o) },
		scenarios: sc,
		norm: []rule{
			dateRule,
			r(`(?m)^X-(Compute-Time|Total-Time|Queue-Time|Inference-Time|Time-Per-Token): .*$`, `X-$1: T`),
			r(`(?m)^(tgi_request_(queue_duration|mean_time_per_token_duration)_(bucket\{le="[^"]*"\}|sum)) .*$`, `$1 T`),
		},
	}
}

func tritonEngine() engine {
	base := fake.Options{Ctx: 64}
	const m = "/v2/models/vllm_model"
	all := `,"return_finish_reason":true,"return_num_input_tokens":true,"return_num_output_tokens":true`
	stream := post("stream", m+"/generate_stream", `{"text_input":"Hello world","parameters":{"stream":true,"max_tokens":6,"seed":42`+all+`}}`)
	whole := post("generate", m+"/generate", `{"text_input":"Hello world","parameters":{"max_tokens":6,"seed":42`+all+`}}`)
	metrics := get("metrics", "/metrics")
	sc := []scenario{{name: "none", o: base, ex: []exchange{
		get("live", "/v2/health/live"),
		get("ready", "/v2/health/ready"),
		get("server", "/v2"),
		get("model", m),
		get("model ready", m+"/ready"),
		get("version ready", m+"/versions/1/ready"),
		metrics,
		post("stream", m+"/generate_stream", `{"text_input":"Hello world","parameters":{"stream":true,"max_tokens":5,"seed":42`+all+`}}`),
		post("stream plain", m+"/versions/1/generate_stream", `{"text_input":"Tab\tquote\" \u00e9","stream":true,"max_tokens":3,"id":"r-1"}`),
		post("stream route, whole backend", m+"/generate_stream", `{"text_input":"Hello world","parameters":{"max_tokens":3,"seed":42`+all+`}}`),
		post("generate", m+"/generate", `{"text_input":"Hello world","parameters":{"max_tokens":4,"seed":42`+all+`}}`),
		post("generate exclude", m+"/generate", `{"text_input":"Hello world","exclude_input_in_output":true,"parameters":{"max_tokens":2,"seed":42}}`),
		post("generate of stream", m+"/generate", `{"text_input":"Hello world","parameters":{"stream":true,"max_tokens":3}}`),
		post("generate of stream one", m+"/generate", `{"text_input":["Hello world"],"parameters":{"stream":true,"max_tokens":1}}`),
		post("default max", m+"/generate_stream", `{"text_input":"Hello world","parameters":{"stream":true}}`),
		post("context bound", m+"/generate_stream", `{"text_input":"`+strings.Repeat("w ", 60)+`","parameters":{"stream":true,"max_tokens":100`+all+`}}`),
		post("bad json", m+"/generate", `{"text_input":`),
		post("bad parameters", m+"/generate", `{"text_input":"a","parameters":5}`),
		post("bad id", m+"/generate", `{"text_input":"a","id":5}`),
		post("no input", m+"/generate", `{"parameters":{}}`),
		post("bad text", m+"/generate", `{"text_input":5}`),
		post("bad bool", m+"/generate", `{"text_input":"a","stream":"yes"}`),
		post("bad number", m+"/generate", `{"text_input":"a","max_tokens":"x"}`),
		post("not integer", m+"/generate", `{"text_input":"a","max_tokens":1.5}`),
		post("max_tokens 0", m+"/generate_stream", `{"text_input":"a","max_tokens":0}`),
		post("exclude false", m+"/generate_stream", `{"text_input":"a","stream":true,"exclude_input_in_output":false}`),
		post("too long", m+"/generate_stream", `{"text_input":"`+strings.Repeat("w ", 70)+`"}`),
		post("too long whole", m+"/generate", `{"text_input":"`+strings.Repeat("w ", 70)+`"}`),
		post("unknown model", "/v2/models/other/generate", `{"text_input":"a"}`),
		post("unknown version", m+"/versions/2/generate", `{"text_input":"a"}`),
		get("unknown ready", "/v2/models/other/versions/3/ready"),
		get("wrong method", m+"/generate"),
		get("not found", "/nope"),
		get("bad path", m+"/versions/1/generate/x"),
		get("bad action", m+"/stats"),
		metrics,
	}}}
	sc = append(sc, failScenarios(base, stream, whole, metrics)...)
	sc = append(sc,
		scenario{name: "fail=malformed sse whole", o: fake.Options{Ctx: 64, Fail: fake.FailMalformed}, ex: []exchange{
			post("stream route, whole backend", m+"/generate_stream", `{"text_input":"Hello world","parameters":{"max_tokens":6}}`),
		}},
		scenario{name: "fail=midstream-error sse whole", o: fake.Options{Ctx: 64, Fail: fake.FailMidstreamError}, ex: []exchange{
			post("stream route, whole backend", m+"/generate_stream", `{"text_input":"Hello world","parameters":{"max_tokens":6}}`),
		}},
		scenario{name: "tokens=3", o: fake.Options{Ctx: 64, Tokens: 3}, ex: []exchange{
			stream, whole, metrics,
		}},
		scenario{name: "loading", o: fake.Options{Ctx: 64, Load: time.Hour}, ex: []exchange{
			get("live", "/v2/health/live"),
			get("ready", "/v2/health/ready"),
			get("model ready", m+"/ready"),
			stream,
		}},
	)
	return engine{
		name:      "triton",
		newServer: func(o fake.Options) (server, error) { return triton.New(o) },
		scenarios: sc,
		norm: []rule{
			dateRule,
			r(`GPU-[0-9a-f-]+`, `GPU-UUID`),
			r(`(?m)^(nv_inference_(request|queue)_duration_us\{[^}]*\}) .*$`, `$1 T`),
		},
	}
}

func vllmEngine() engine {
	base := fake.Options{Ctx: 64}
	const c = "/v1/completions"
	stream := post("stream", c, `{"prompt":"Hello world","max_tokens":6,"seed":42,"stream":true,"stream_options":{"include_usage":true}}`)
	whole := post("whole", c, `{"prompt":"Hello world","max_tokens":6,"seed":42}`)
	metrics := get("metrics", "/metrics")
	chat := `"messages":[{"role":"user","content":"Hello"}]`
	sc := []scenario{{name: "none", o: base, ex: []exchange{
		get("health", "/health"),
		get("version", "/version"),
		get("models", "/v1/models"),
		metrics,
		post("stream", c, `{"prompt":"Hello world","max_tokens":5,"seed":42,"stream":true,"stream_options":{"include_usage":true}}`),
		post("stream plain", c, `{"prompt":["Tab\tquote\" \u00e9"],"max_tokens":3,"stream":true}`),
		post("stream continuous", c, `{"prompt":"Hello world","max_tokens":3,"seed":1,"stream":true,"return_token_ids":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true}}`),
		post("whole", c, `{"model":"Qwen/Qwen2.5-1.5B-Instruct","prompt":"Hello world","max_tokens":4,"seed":42,"temperature":0.5,"n":1}`),
		post("to max_model_len", c, `{"prompt":"`+strings.Repeat("w ", 55)+`","stream":true}`),
		post("chat stream", "/v1/chat/completions", `{`+chat+`,"max_tokens":3,"seed":42,"stream":true,"return_token_ids":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true}}`),
		post("chat whole", "/v1/chat/completions", `{`+chat+`,"max_completion_tokens":3,"seed":42}`),
		post("bad json", c, `{"prompt":`),
		post("no prompt", c, `{}`),
		post("token prompt", c, `{"prompt":[1,2]}`),
		post("bad model type", c, `{"prompt":"a","model":5}`),
		post("unknown model", c, `{"prompt":"a","model":"other"}`),
		post("max_tokens type", c, `{"prompt":"a","max_tokens":"x"}`),
		post("max_tokens 0", c, `{"prompt":"a","max_tokens":0}`),
		post("too large", c, `{"prompt":"a b c","max_tokens":100}`),
		post("too long", c, `{"prompt":"`+strings.Repeat("w ", 70)+`"}`),
		post("seed type", c, `{"prompt":"a","seed":"x"}`),
		post("temperature", c, `{"prompt":"a","temperature":-1}`),
		post("n", c, `{"prompt":"a","n":2}`),
		post("stream type", c, `{"prompt":"a","stream":"x"}`),
		post("stream_options type", c, `{"prompt":"a","stream":true,"stream_options":5}`),
		post("stream_options no stream", c, `{"prompt":"a","stream_options":{"include_usage":true}}`),
		post("chat no messages", "/v1/chat/completions", `{}`),
		post("chat bad content", "/v1/chat/completions", `{"messages":[{"role":"user","content":5}]}`),
		get("wrong method", c),
		post("wrong method get route", "/health", ""),
		get("not found", "/nope"),
		{name: "head", method: "HEAD", path: "/version"},
		metrics,
	}}}
	sc = append(sc, failScenarios(base, stream, whole, metrics)...)
	sc = append(sc,
		scenario{name: "tokens=3", o: fake.Options{Ctx: 64, Tokens: 3}, ex: []exchange{
			stream, whole,
			post("ignore_eos", c, `{"prompt":"Hello world","max_tokens":5,"seed":42,"stream":true,"ignore_eos":true}`),
			post("chat", "/v1/chat/completions", `{`+chat+`,"max_tokens":5,"seed":42,"stream":true}`),
			metrics,
		}},
	)
	return engine{
		name:      "vllm",
		newServer: func(o fake.Options) (server, error) { return vllm.New(o) },
		scenarios: sc,
		norm: []rule{
			dateRule,
			r(`(chat)?cmpl-[0-9a-f]{16}`, `${1}cmpl-ID`),
			r(`modelperm-[0-9a-f]{32}`, `modelperm-ID`),
			r(`"created":[0-9]+`, `"created":T`),
		},
	}
}
