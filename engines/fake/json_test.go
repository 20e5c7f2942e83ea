package fake

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestAppendFloat(t *testing.T) {
	f := func(in float64, want string) {
		t.Helper()
		if got := string(appendFloat(nil, in)); got != want {
			t.Errorf("appendFloat(%v) = %s, want %s", in, got, want)
		}
	}
	// Values seen in the captures.
	f(float64(float32(0.8)), "0.800000011920929")
	f(float64(float32(0.95)), "0.949999988079071")
	f(float64(float32(0.9)), "0.8999999761581421")
	f(1816.5304268846503, "1816.5304268846503")
	f(0.2795714285714286, "0.2795714285714286")
	f(1.101, "1.101")
	// Whole numbers get ".0"; zero and negatives.
	f(0, "0.0")
	f(1, "1.0")
	f(-1, "-1.0")
	f(1.75, "1.75")
	f(125000, "125000.0")
	f(1e14, "100000000000000.0")
	f(1e15, "1e+15")
	// Small and large switch to exponents like nlohmann.
	f(0.0001, "0.0001")
	f(0.00001, "1e-05")
	f(1.5e-7, "1.5e-07")
	f(1e16, "1e+16")
	f(1.2345e20, "1.2345e+20")
	f(math.Inf(1), "null")
}

func TestAppendString(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		if got := string(appendString(nil, in)); got != want {
			t.Errorf("appendString(%q) = %s, want %s", in, got, want)
		}
		if got := string(appendString(nil, []byte(in))); got != want {
			t.Errorf("appendString([]byte %q) = %s, want %s", in, got, want)
		}
	}
	f("", `""`)
	f(" alpha", `" alpha"`)
	// Escapes: quote, backslash, the short control escapes, \u00xx.
	f("a\"b\\c", `"a\"b\\c"`)
	f("\n:\"*", `"\n:\"*"`)
	f("\b\f\r\t\x01\x1f\x7f", `"\b\f\r\t\u0001\u001f`+"\x7f"+`"`)
	// No HTML escaping, no / escaping, raw UTF-8.
	f("<a href='/x'>&", `"<a href='/x'>&"`)
	f("😀 日本 ö", `"😀 日本 ö"`)
	// Invalid bytes become U+FFFD, one per byte.
	f("a\xffb", "\"a\uFFFDb\"")
	f("\xF0\x9F", "\"\uFFFD\uFFFD\"")
	f("\xed\xa0\x80", "\"\uFFFD\uFFFD\uFFFD\"") // a surrogate
}

// FuzzAppendString: the output is valid JSON that decodes to the input
// with each invalid byte replaced by U+FFFD.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "Hello", "\x00\"\\", "😀\xF0\x9F", "\xE6\x97\xA5\xE6\x9C\xAC", "\xC0\x80", "\xF4\x90\x80\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("invalid JSON %q for %q: %v", b, s, err)
		}
		if want := string([]rune(s)); got != want {
			t.Fatalf("round trip of %q: %q, want %q", s, got, want)
		}
	})
}

// FuzzAppendFloat: the output parses back to the same double.
func FuzzAppendFloat(f *testing.F) {
	for _, v := range []float64{0, 1, 0.8, 1e-5, 1e16, 123456.789, -2.5e-300} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v float64) {
		b := appendFloat(nil, v)
		if math.IsNaN(v) || math.IsInf(v, 0) {
			if string(b) != "null" {
				t.Fatalf("%v → %s", v, b)
			}
			return
		}
		got, err := strconv.ParseFloat(string(b), 64)
		if err != nil || got != v || !strings.ContainsAny(string(b), ".e") {
			t.Fatalf("%v → %s → %v, %v", v, b, got, err)
		}
	})
}

// FuzzParseCompletion: any body is either parsed or refused with an API
// error; it never panics. The captured requests are the seeds.
func FuzzParseCompletion(f *testing.F) {
	dir := filepath.Join("..", "..", "..", "shared", "fixtures", "llamacpp")
	names, _ := filepath.Glob(filepath.Join(dir, "*.request.json"))
	for _, n := range names {
		if b, err := os.ReadFile(n); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"prompt":"Hello",`))
	f.Add([]byte(`{"prompt":"x","n_predict":1e300,"seed":18446744073709551615,"id_slot":-5}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, aerr := parseCompletion(body)
		if (req == nil) == (aerr == nil) {
			t.Fatalf("parseCompletion(%q) = %v, %v", body, req, aerr)
		}
		if aerr != nil && !json.Valid(errorBody(aerr.status, aerr.msg, aerr.typ)) {
			t.Fatalf("error body for %q is not JSON", body)
		}
	})
}

// TestFrameAllocs: building a token frame allocates nothing once buffers
// have grown (the per-token hot path).
func TestFrameAllocs(t *testing.T) {
	tk := newBenchTask()
	allocs := testing.AllocsPerRun(100, func() {
		text, id := tk.gen.Token(len(tk.outIDs) % 64)
		tk.outIDs = append(tk.outIDs[:0], int32(id))
		tk.js = tk.appendPartial(tk.js[:0], []byte(text), id)
		tk.wbuf = tk.wbuf[:0]
		tk.frame(tk.js)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per frame, want 0", allocs)
	}
}

func newBenchTask() *task {
	return &task{
		req:     &completionRequest{prompt: "Hello", p: defaultParams()},
		gen:     NewGenerator(42, "Hello", false),
		nPrompt: 2,
		outIDs:  make([]int32, 0, 8),
		js:      make([]byte, 0, 512),
		ev:      make([]byte, 0, 512),
		wbuf:    make([]byte, 0, 512),
	}
}

func BenchmarkFrame(b *testing.B) {
	tk := newBenchTask()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		text, id := tk.gen.Token(i)
		tk.outIDs = append(tk.outIDs[:0], int32(id))
		tk.js = tk.appendPartial(tk.js[:0], []byte(text), id)
		tk.wbuf = tk.wbuf[:0]
		tk.frame(tk.js)
	}
}

func BenchmarkFinalFrame(b *testing.B) {
	tk := newBenchTask()
	tk.s = &Server{o: Options{Model: DefaultModel}}
	b.ReportAllocs()
	for b.Loop() {
		tk.js = tk.appendFinal(tk.js[:0], nil)
	}
}
