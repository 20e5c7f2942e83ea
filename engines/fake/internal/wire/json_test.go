package wire

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendString(t *testing.T) {
	f := func(e Escaping, in, want string) {
		t.Helper()
		if got := string(AppendString(nil, in, e)); got != want {
			t.Errorf("AppendString(%q, %+v) = %s, want %s", in, e, got, want)
		}
		if got := string(AppendString(nil, []byte(in), e)); got != want {
			t.Errorf("AppendString([]byte %q, %+v) = %s, want %s", in, e, got, want)
		}
	}
	// Shared by all: short escapes, \u00xx for other controls, DEL and '/'
	// as they are, valid UTF-8 raw.
	for _, e := range []Escaping{Nlohmann, Serde, RapidJSON, Pydantic} {
		f(e, "", `""`)
		f(e, " alpha", `" alpha"`)
		f(e, "a\"b\\c/d\x7f", `"a\"b\\c/d`+"\x7f"+`"`)
		f(e, "\b\f\n\r\t", `"\b\f\n\r\t"`)
		f(e, "é😀日本", `"é😀日本"`)
	}
	// The hex case of \u00xx: rapidjson alone writes it upper case.
	f(Nlohmann, "\x01\x1f", `"\u0001\u001f"`)
	f(RapidJSON, "\x01\x1f", `"\u0001\u001F"`)
	f(Pydantic, "\x1f", `"\u001f"`)
	// Invalid UTF-8: one U+FFFD per bad byte (a lone continuation byte, a
	// cut sequence, an encoded surrogate, an overlong form), except for
	// pydantic, whose input is valid by construction and passes unchecked.
	f(Nlohmann, "a\x80b", "\"a\uFFFDb\"")
	f(Serde, "\xE6\x97", "\"\uFFFD\uFFFD\"")
	f(RapidJSON, "\xED\xA0\x80", "\"\uFFFD\uFFFD\uFFFD\"")
	f(Nlohmann, "\xC0\xAF", "\"\uFFFD\uFFFD\"")
	f(Nlohmann, "\xF0\x9F\x98\x80\xF0\x9F", "\"😀\uFFFD\uFFFD\"")
	f(Pydantic, "a\x80\xE6\x97", "\"a\x80\xE6\x97\"")
}

func TestAppendASCIIString(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		if got := string(AppendASCIIString(nil, in)); got != want {
			t.Errorf("AppendASCIIString(%q) = %s, want %s", in, got, want)
		}
	}
	f("plain text", `"plain text"`)
	f("q\"\\/\n\x01\x7f", `"q\"\\/\n\u0001\u007f"`)
	f("é日", `"\u00e9\u65e5"`)
	f("😀", `"\ud83d\ude00"`)
	f("a\x80", `"a\ufffd"`)
}

func TestAppendFixed(t *testing.T) {
	f := func(v float64, bits int, want string) {
		t.Helper()
		if got := string(AppendFixed(nil, v, bits)); got != want {
			t.Errorf("AppendFixed(%v, %d) = %s, want %s", v, bits, got, want)
		}
	}
	f(0, 64, "0.0")
	f(math.Copysign(0, -1), 64, "-0.0")
	f(-2, 32, "-2.0")
	f(0.25, 64, "0.25")
	f(float64(float32(-3.4541016)), 32, "-3.4541016")
	f(float64(float32(0.8)), 64, "0.800000011920929")
	f(1e20, 64, "100000000000000000000.0")
}

func TestAppendDouble(t *testing.T) {
	f := func(v, expFrom float64, want string) {
		t.Helper()
		if got := string(AppendDouble(nil, v, expFrom)); got != want {
			t.Errorf("AppendDouble(%v, %g) = %s, want %s", v, expFrom, got, want)
		}
	}
	f(0, 1e15, "0.0")
	f(1, 1e15, "1.0")
	f(0.10000000149011612, 1e15, "0.10000000149011612")
	f(1e-4, 1e15, "0.0001")
	f(1e-5, 1e15, "1e-05")
	f(-2.5e-7, 1e16, "-2.5e-07")
	// The one difference between nlohmann and Python: where exponents start.
	f(1e15, 1e15, "1e+15")
	f(1e15, 1e16, "1000000000000000.0")
	f(1.5e16, 1e16, "1.5e+16")
	f(1e100, 1e16, "1e+100")
}

func TestAppendMetricHead(t *testing.T) {
	got := string(AppendMetricHead([]byte("x\n"), "vllm:num_requests_running", "Number of requests.", "gauge"))
	want := "x\n# HELP vllm:num_requests_running Number of requests.\n# TYPE vllm:num_requests_running gauge\n"
	if got != want {
		t.Errorf("AppendMetricHead = %q, want %q", got, want)
	}
}

// lossy is s with every byte that does not start a valid UTF-8 sequence
// replaced by U+FFFD, as encoding/json decodes such a string.
func lossy(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// FuzzAppendString: every serializer's output is one JSON string that
// decodes back to the input (made lossy where the input is not UTF-8).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{
		" sunset", "", "Tab\tquote\" back\\ é \x01", "\xF0\x9F", "\x98\x80", " \xF0\x9F\x98", "\x82",
		"\xC3", "\xB6", "\xE6\x97", "\xA5\xE6\x9C\xAC", "<|im_end|>", "\xED\xA0\x80\x7f/",
		"Request failed during generation: Server error: CUDA error: an illegal memory access was encountered",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := lossy(s)
		check := func(name string, out []byte) {
			var got string
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("%s(%q) = %s: not a JSON string: %v", name, s, out, err)
			}
			if got != want {
				t.Fatalf("%s(%q) = %s decodes to %q, want %q", name, s, out, got, want)
			}
		}
		check("Nlohmann", AppendString(nil, s, Nlohmann))
		check("RapidJSON", AppendString(nil, []byte(s), RapidJSON))
		check("Pydantic", AppendString(nil, s, Pydantic))
		check("ASCII", AppendASCIIString(nil, s))
		if out := AppendASCIIString(nil, s); strings.IndexFunc(string(out), func(r rune) bool { return r >= 0x7F }) >= 0 {
			t.Fatalf("AppendASCIIString(%q) = %s: not ASCII", s, out)
		}
		if utf8.ValidString(s) && string(AppendString(nil, s, Pydantic)) != string(AppendString(nil, s, Serde)) {
			t.Fatalf("pydantic and serde differ on valid UTF-8 %q", s)
		}
	})
}

// FuzzAppendDouble: every finite double prints as a JSON number with a
// '.' or an exponent that reads back as the same value; a float32 printed
// with AppendFixed(…, 32) reads back as the same float32.
func FuzzAppendDouble(f *testing.F) {
	for _, v := range []float64{0, 0.8, 0.10000000149011612, 1e-5, 1e15, 1.5e16, -2, 1234.5678, 5e-324} {
		f.Add(math.Float64bits(v))
	}
	f.Fuzz(func(t *testing.T, bits uint64) {
		v := math.Float64frombits(bits)
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return
		}
		for _, expFrom := range []float64{1e15, 1e16} {
			out := string(AppendDouble(nil, v, expFrom))
			if !strings.ContainsAny(out, ".e") || !json.Valid([]byte(out)) {
				t.Fatalf("AppendDouble(%v) = %s", v, out)
			}
			if back, err := strconv.ParseFloat(out, 64); err != nil || back != v {
				t.Fatalf("AppendDouble(%v) = %s reads back as %v (%v)", v, out, back, err)
			}
		}
		f32 := float32(v)
		if math.IsInf(float64(f32), 0) {
			return
		}
		out := string(AppendFixed(nil, float64(f32), 32))
		if back, err := strconv.ParseFloat(out, 32); err != nil || float32(back) != f32 || !strings.Contains(out, ".") {
			t.Fatalf("AppendFixed(%v, 32) = %s reads back as %v (%v)", f32, out, back, err)
		}
	})
}
