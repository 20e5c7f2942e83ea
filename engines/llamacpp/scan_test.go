package llamacpp

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
	"github.com/llama-orch/llama-orch/engines/internal/jsonscan"
	"github.com/llama-orch/llama-orch/engines/internal/text"
)

// fixtureDir returns the llama.cpp wire captures (shared/ sits next to the
// repository in CI), skipping the test when they are absent.
func fixtureDir(tb testing.TB) string {
	tb.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "fixtures", "llamacpp")
	if _, err := os.Stat(dir); err != nil {
		tb.Skipf("llama.cpp fixtures not found at %s: %v", dir, err)
	}
	return dir
}

func readFixture(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir(tb), name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// dataLines returns the payloads of the `data:` lines of an SSE body.
func dataLines(body []byte) [][]byte {
	var out [][]byte
	for _, line := range bytes.Split(body, []byte("\n")) {
		if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
			out = append(out, d)
		}
	}
	return out
}

func TestScanFrame(t *testing.T) {
	type want struct {
		content   string
		stop      bool
		predicted int
		evaluated int
		slot      int
		stopType  string
		ms        float64
		hasMs     bool
		hasErr    bool
		errCode   int
		errMsg    string
		errType   string
	}
	f := func(name, in string, w want) {
		t.Helper()
		var fr frame
		if err := fr.scan([]byte(in)); err != nil {
			t.Fatalf("%s: scan: %v", name, err)
		}
		got := want{
			content: string(fr.content), stop: fr.stop, predicted: fr.tokensPredicted,
			evaluated: fr.tokensEvaluated, slot: fr.idSlot, stopType: string(fr.stopType),
			ms: fr.predictedMs, hasMs: fr.hasPredictedMs, hasErr: fr.hasError,
			errCode: fr.errCode, errMsg: string(fr.errMessage), errType: string(fr.errType),
		}
		if got != w {
			t.Fatalf("%s:\n got %+v\nwant %+v", name, got, w)
		}
	}
	// A partial frame as llama.cpp sends it.
	f("partial", `{"index":0,"content":" Paris","tokens":[12095],"stop":false,"id_slot":-1,"tokens_predicted":1,"tokens_evaluated":6}`,
		want{content: " Paris", predicted: 1, evaluated: 6, slot: -1})
	// Every simple escape, decoded exactly.
	f("escapes", `{"content":"q\" b\\ s\/ \b\f\n\r\t"}`, want{content: "q\" b\\ s/ \b\f\n\r\t", slot: -1})
	// \u escapes: BMP, a surrogate pair, lone surrogates become U+FFFD.
	f("unicode", `{"content":"\u00e9\uD83D\uDE00|\ud800|\udc00|\ud800\u0041"}`,
		want{content: "é😀|\uFFFD|\uFFFD|\uFFFDA", slot: -1})
	// Raw UTF-8 passes through untouched, even when invalid (see frame.content).
	f("raw utf8", "{\"content\":\"😀 \xF0\x9F\"}", want{content: "😀 \xF0\x9F", slot: -1})
	// Unknown members of every type, nested, with tricky strings, are skipped.
	f("skip nested", `{"a":{"b":[1,-2.5e+3,{"c":"}\"]"}],"d":null},"e":[[],{}],"t":true,"f":false,"content":"x","z":"\u005c"}`,
		want{content: "x", slot: -1})
	// Whitespace everywhere JSON allows it.
	f("whitespace", " \t\r\n{ \"content\" : \"a\" , \"stop\" :\ttrue } \n", want{content: "a", stop: true, slot: -1})
	// An escaped key still matches, as in encoding/json.
	f("escaped key", `{"cont\u0065nt":"k"}`, want{content: "k", slot: -1})
	// The final frame: counters, real slot, stop_type and timings.
	f("final", `{"index":0,"content":"","tokens":[],"id_slot":0,"stop":true,"model":"m","tokens_predicted":3,"tokens_evaluated":6,"generation_settings":{"seed":4294967295,"top_p":0.949999988079071,"dry_sequence_breakers":["\n",":","\"","*"],"lora":[]},"prompt":"The capital","stop_type":"limit","timings":{"cache_n":0,"prompt_ms":21.303,"predicted_n":3,"predicted_ms":27.114,"predicted_per_second":110.64394777605665}}`,
		want{stop: true, predicted: 3, evaluated: 6, slot: 0, stopType: "limit", ms: 27.114, hasMs: true})
	// Mid-stream error frame (code, message, type order).
	f("error", `{"error":{"code":500,"message":"The model produced output","type":"server_error"}}`,
		want{slot: -1, hasErr: true, errCode: 500, errMsg: "The model produced output", errType: "server_error"})
	// Middleware key order (message, type, code) and an extra member.
	f("error order", `{"error":{"message":"Loading model","type":"unavailable_error","code":503,"n_ctx":1}}`,
		want{slot: -1, hasErr: true, errCode: 503, errMsg: "Loading model", errType: "unavailable_error"})
	// An error given as a bare string (lenient).
	f("error string", `{"error":"Model is overloaded"}`, want{slot: -1, hasErr: true, errMsg: "Model is overloaded"})
	// Null and wrongly typed known members count as absent.
	f("nulls", `{"content":null,"stop":null,"id_slot":null,"tokens_predicted":"3","error":null,"timings":null}`, want{slot: -1})
	// Numbers given as floats are truncated.
	f("float counters", `{"tokens_predicted":3.0,"tokens_evaluated":1e1,"id_slot":1}`, want{predicted: 3, evaluated: 10, slot: 1})
	// Duplicate members: the last one wins, as in encoding/json.
	f("duplicates", `{"content":"a","stop":true,"content":"b","stop":false}`, want{content: "b", slot: -1})
}

func TestScanFrameInvalid(t *testing.T) {
	for _, in := range []string{
		``, ` `, `[DONE]`, `null`, `"s"`, `[]`, `{`, `}`, `{"content"}`, `{"content":}`,
		`{"content":"a",}`, `{"content":"a"`, `{"content":"a"}x`, `{"content":"a"}{}`,
		`{content:"a"}`, `{"content":'a'}`, `{"content":"a\x"}`, `{"content":"\u12"}`,
		`{"content":"\u12G4"}`, "{\"content\":\"a\nb\"}", `{"a":tru}`, `{"a":nul}`, `{"a":01}`,
		`{"a":-}`, `{"a":1.}`, `{"a":1e}`, `{"a":+1}`, `{"a":.5}`, `{"a":[1,]}`, `{"a":[1 2]}`,
		`{"a":{"b"}}`, `{"a":{"b":1,}}`, `{"a" "b"}`, `{"a":1 "b":2}`, `{"timings":{"predicted_ms":}}`,
		`{"error":{"message":1.e5}}`, `{"content":"\'"}`,
	} {
		var fr frame
		if err := fr.scan([]byte(in)); err == nil {
			t.Errorf("scan(%q) succeeded, want an error", in)
		}
		if json.Valid([]byte(in)) && strings.HasPrefix(strings.TrimSpace(in), "{") {
			t.Errorf("test case %q is valid JSON", in)
		}
	}
}

// TestScanFrameDepth checks the nesting limit matches encoding/json's.
func TestScanFrameDepth(t *testing.T) {
	for _, depth := range []int{jsonscan.MaxDepth, jsonscan.MaxDepth + 1} {
		in := "{\"a\":" + strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + "}"
		var fr frame
		got := fr.scan([]byte(in)) == nil
		if want := json.Valid([]byte(in)); got != want {
			t.Errorf("depth %d: scan ok=%v, encoding/json valid=%v", depth, got, want)
		}
	}
}

// TestScanFixtures decodes every llama.cpp capture's frames like encoding/json.
func TestScanFixtures(t *testing.T) {
	for _, name := range []string{"completion_stream.body.sse", "completion_stream_run2.body.sse",
		"completion_stream_run3.body.sse", "error_midstream_completion.body.sse"} {
		for _, d := range dataLines(readFixture(t, name)) {
			checkAgainstJSON(t, d)
		}
	}
}

func TestScanFrameAllocs(t *testing.T) {
	if enginetest.RaceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	data := []byte(`{"index":0,"content":" it\u0027s \"q\"","tokens":[12095],"stop":false,"id_slot":-1,"tokens_predicted":1,"tokens_evaluated":6}`)
	var fr frame
	_ = fr.scan(data) // grow the scratch buffer
	if n := testing.AllocsPerRun(100, func() { _ = fr.scan(data) }); n != 0 {
		t.Fatalf("scan allocates %v times per frame, want 0", n)
	}
}

// checkAgainstJSON is the fuzz oracle: scan and encoding/json must agree on
// validity and on every member the adapter reads.
func checkAgainstJSON(t *testing.T, data []byte) {
	t.Helper()
	var fr frame
	err := fr.scan(data)
	var m map[string]json.RawMessage
	jerr := json.Unmarshal(data, &m)
	isObject := jerr == nil && bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("{"))
	if (err == nil) != isObject {
		t.Fatalf("scan(%q): err=%v, encoding/json: %v (object=%v)", data, err, jerr, isObject)
	}
	if err != nil {
		return
	}
	if raw, ok := m["content"]; ok && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatal(err)
		}
		if got := text.AppendValid(nil, fr.content); string(got) != s {
			t.Fatalf("scan(%q): content %q, encoding/json %q", data, got, s)
		}
	} else if fr.content != nil {
		t.Fatalf("scan(%q): content %q, encoding/json has no string content", data, fr.content)
	}
	if raw, ok := m["stop"]; ok {
		if want := string(raw) == "true"; fr.stop != want {
			t.Fatalf("scan(%q): stop %v, want %v", data, fr.stop, want)
		}
	} else if fr.stop {
		t.Fatalf("scan(%q): stop without a stop member", data)
	}
	if raw, ok := m["tokens_predicted"]; ok {
		var n int32
		if json.Unmarshal(raw, &n) == nil && int(n) != fr.tokensPredicted {
			t.Fatalf("scan(%q): tokens_predicted %d, want %d", data, fr.tokensPredicted, n)
		}
	}
	if raw, ok := m["error"]; ok {
		var em map[string]json.RawMessage
		if raw[0] == '{' && json.Unmarshal(raw, &em) == nil {
			if mraw, ok := em["message"]; ok && mraw[0] == '"' {
				var s string
				_ = json.Unmarshal(mraw, &s)
				if got := text.AppendValid(nil, fr.errMessage); string(got) != s {
					t.Fatalf("scan(%q): error message %q, want %q", data, got, s)
				}
			}
		}
		if !fr.hasError && (raw[0] == '{' || raw[0] == '"') {
			t.Fatalf("scan(%q): error member missed", data)
		}
	}
}

// FuzzScanFrame checks the hand-written scanner against encoding/json: same
// validity verdict, same decoded content bytes, and never a panic.
func FuzzScanFrame(f *testing.F) {
	if dir := filepath.Join("..", "..", "..", "shared", "fixtures", "llamacpp"); dirExists(dir) {
		for _, name := range []string{"completion_stream.body.sse", "error_midstream_completion.body.sse",
			"v1_completions_stream.body.sse", "v1_chat_completions_stream.body.sse"} {
			b, _ := os.ReadFile(filepath.Join(dir, name))
			for _, d := range dataLines(b) {
				f.Add(d)
			}
		}
		for _, name := range []string{"props.body.json", "error_prompt_too_long.body.json", "health_loading.body.json"} {
			b, _ := os.ReadFile(filepath.Join(dir, name))
			f.Add(b)
		}
	}
	for _, s := range []string{
		`{"content":"\ud83d\ude00\ud83d"}`, `{"content":"\uDBFF\uDFFF\u0000"}`, "{\"content\":\"\xF0\x9F\x98\"}",
		`{"content":"a\\\"\/\b\f\n\r\t"}`, `{"a":[{"b":[{"c":"\""}]}],"content":""}`, `{"content":1}`,
		`{"error":{"message":"m\u00e9","type":"t","code":1}}`, `{"cont\u0065nt":"x","content":null}`,
		"{\"content\":\"\xC3\x28\xED\xA0\x80\"}", `{"stop":true,"stop":false}`, `{"tokens_predicted":-0.5e3}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkAgainstJSON(t, data)
	})
}

func dirExists(dir string) bool {
	st, err := os.Stat(dir)
	return err == nil && st.IsDir()
}
