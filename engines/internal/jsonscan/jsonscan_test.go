package jsonscan

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llama-orch/llama-orch/engines/internal/text"
)

// valid reports whether the scanner accepts data as one JSON value
// surrounded by optional whitespace.
func valid(data []byte) bool {
	j, ok := Skip(data, WS(data, 0), 0)
	return ok && WS(data, j) == len(data)
}

func TestSkip(t *testing.T) {
	for _, in := range []string{
		// Every value type, nested, with tricky strings.
		`{"a":{"b":[1,-2.5e+3,{"c":"}\"]"}],"d":null},"e":[[],{}],"t":true,"f":false,"z":"\u005c"}`,
		// Whitespace everywhere JSON allows it.
		" \t\r\n{ \"a\" : [ 1 , { } ] , \"b\" :\ttrue } \n",
		`"s"`, `0`, `-0.0e-0`, `1E+2`, `null`, `[]`, `{}`, `[[[]]]`, `"\ud800"`, "\"\xff\"",
		// Invalid: truncated, trailing commas, bad literals and numbers,
		// escapes and control characters, missing separators.
		``, ` `, `{`, `}`, `[`, `]`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[1 2]`, `{"a" "b"}`,
		`{"a":1 "b":2}`, `{a:1}`, `'a'`, `tru`, `nul`, `falsey`, `01`, `-`, `1.`, `1e`, `+1`, `.5`,
		`"a\x"`, `"\u12"`, `"\u12G4"`, "\"a\nb\"", `"\'"`, `{"a":1}x`, `{}{}`, `"abc`, `"abc\`,
	} {
		if got, want := valid([]byte(in)), json.Valid([]byte(in)); got != want {
			t.Errorf("valid(%q) = %v, encoding/json says %v", in, got, want)
		}
	}
}

// TestDepth checks the nesting limit matches encoding/json's, for arrays,
// objects and CountArray.
func TestDepth(t *testing.T) {
	for _, depth := range []int{MaxDepth - 1, MaxDepth, MaxDepth + 1} {
		arr := strings.Repeat("[", depth) + strings.Repeat("]", depth)
		obj := strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
		for _, in := range []string{arr, obj} {
			if got, want := valid([]byte(in)), json.Valid([]byte(in)); got != want {
				t.Errorf("depth %d %.6s…: valid=%v, encoding/json=%v", depth, in, got, want)
			}
		}
		_, _, ok := CountArray([]byte(arr), 0, 0)
		if want := json.Valid([]byte(arr)); ok != want {
			t.Errorf("depth %d: CountArray ok=%v, encoding/json=%v", depth, ok, want)
		}
	}
}

func TestString(t *testing.T) {
	f := func(name, in, want string) {
		t.Helper()
		var buf []byte
		s, j, ok := String([]byte(in), 0, 1, &buf)
		if !ok || j != len(in) || string(s) != want {
			t.Errorf("%s: String(%q) = %q, %d, %v; want %q", name, in, s, j, ok, want)
		}
	}
	// Every simple escape, decoded exactly.
	f("escapes", `"q\" b\\ s\/ \b\f\n\r\t"`, "q\" b\\ s/ \b\f\n\r\t")
	// \u escapes: BMP, a surrogate pair, lone surrogates become U+FFFD.
	f("unicode", `"\u00e9\uD83D\uDE00|\ud800|\udc00|\ud800\u0041"`, "é😀|\uFFFD|\uFFFD|\uFFFDA")
	// Raw UTF-8 passes through untouched, even when invalid.
	f("raw utf8", "\"😀 \xF0\x9F\"", "😀 \xF0\x9F")
	// Long enough for the word-at-a-time loop, specials at every offset.
	f("long", `"abcdefghijklmnop\"qrstuvwx\\yz0123456789"`, `abcdefghijklmnop"qrstuvwx\yz0123456789`)
	// Any other value is skipped and yields nil.
	f("not a string", `[1,"x"]`, "")
	f("null", `null`, "")
	var buf []byte
	if _, _, ok := String([]byte(`"abc`), 0, 1, &buf); ok {
		t.Error("String accepted an unterminated string")
	}
}

func TestInt(t *testing.T) {
	f := func(in string, want int, has bool) {
		t.Helper()
		v, h, j, ok := Int([]byte(in), 0, 1)
		if !ok || j != len(in) || v != want || h != has {
			t.Errorf("Int(%q) = %d, has=%v, j=%d, ok=%v; want %d, has=%v", in, v, h, j, ok, want, has)
		}
	}
	f("0", 0, true)
	f("-0", 0, true)
	f("3", 3, true)
	f("-17", -17, true)
	f("123456789012345678", 123456789012345678, true) // 18 digits: the fast path
	f("3.0", 3, true)                                 // fractions are truncated
	f("-2.9", -2, true)
	f("1e1", 10, true)
	f("-0.5e3", -500, true)
	f("1e30", math.MaxInt64, true) // clamped
	f("-1e30", math.MinInt64, true)
	f(`"3"`, 0, false) // other types are absent
	f("null", 0, false)
	f("[1]", 0, false)
	for _, in := range []string{"01", "1.", "-", "1e", "tru"} {
		if _, _, j, ok := Int([]byte(in), 0, 1); ok && j == len(in) {
			t.Errorf("Int(%q) accepted an invalid value", in)
		}
	}
}

// TestWalk walks an object with Open, Member and Next, and an array with
// CountArray, as a frame walker does.
func TestWalk(t *testing.T) {
	b := []byte(` { "a" : 1 , "b\u0063" : [ 1 , [ 2 ] , { } ] , "d" : "x" } `)
	var keyBuf, sbuf []byte
	var keys []string
	i, more := Open(b, WS(b, 0))
	for more {
		key, j, ok := Member(b, i, &keyBuf)
		if !ok {
			t.Fatalf("Member at %d failed", i)
		}
		keys = append(keys, string(key))
		switch string(key) {
		case "bc":
			var n int
			if n, j, ok = CountArray(b, j, 1); !ok || n != 3 {
				t.Fatalf("CountArray = %d, %v; want 3 elements", n, ok)
			}
		case "d":
			var s []byte
			if s, j, ok = String(b, j, 1, &sbuf); !ok || string(s) != "x" {
				t.Fatalf("String = %q, %v", s, ok)
			}
		default:
			if j, ok = Skip(b, j, 1); !ok {
				t.Fatal("Skip failed")
			}
		}
		if i, more, ok = Next(b, j); !ok {
			t.Fatalf("Next at %d failed", j)
		}
	}
	if strings.Join(keys, ",") != "a,bc,d" || WS(b, i) != len(b) {
		t.Fatalf("keys %q, end %d of %d", keys, WS(b, i), len(b))
	}
	if n, j, ok := CountArray([]byte("[ ]"), 0, 1); !ok || n != 0 || j != 3 {
		t.Fatalf("CountArray([ ]) = %d, %d, %v", n, j, ok)
	}
}

// TestSpecialMask checks the word-at-a-time test against the byte table:
// the lowest flag must mark the first special byte.
func TestSpecialMask(t *testing.T) {
	check := func(w [8]byte) {
		want := 8
		for i, c := range w {
			if !strPlain[c] {
				want = i
				break
			}
		}
		got := 8
		if m := specialMask(binary.LittleEndian.Uint64(w[:])); m != 0 {
			got = bits.TrailingZeros64(m) >> 3
		}
		if got != want {
			t.Fatalf("specialMask(%q): first special at %d, want %d", w, got, want)
		}
	}
	// Every byte value at every position, amid plain, high and special bytes.
	for _, fill := range []byte{'a', 0xFF, 0x80, '!', '#', ']', 0, '"', '\\', 0x1F, 0x21} {
		for pos := range 8 {
			for c := range 256 {
				var w [8]byte
				for i := range w {
					w[i] = fill
				}
				w[pos] = byte(c)
				check(w)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		check(w)
	}
}

// fixtureSeeds adds the payloads of the llama.cpp captures (shared/ sits
// next to the repository in CI) to a fuzz corpus, when they are there.
func fixtureSeeds(f *testing.F) {
	dir := filepath.Join("..", "..", "..", "..", "shared", "fixtures", "llamacpp")
	for _, name := range []string{"completion_stream.body.sse", "error_midstream_completion.body.sse",
		"v1_completions_stream.body.sse", "v1_chat_completions_stream.body.sse"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
				f.Add(d)
			}
		}
	}
	for _, name := range []string{"props.body.json", "error_prompt_too_long.body.json", "health_loading.body.json"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			f.Add(b)
		}
	}
}

// FuzzSkip checks that the scanner accepts exactly what encoding/json
// accepts, and never panics.
func FuzzSkip(f *testing.F) {
	fixtureSeeds(f)
	for _, s := range []string{
		// Frames of ENGINES.md (llama.cpp, vLLM).
		`{"index":0,"content":" Paris","tokens":[12095],"stop":false,"id_slot":-1,"tokens_predicted":1,"tokens_evaluated":6}`,
		`{"error":{"code":500,"message":"The model produced output","type":"server_error"}}`,
		`{"id":"cmpl-a1fcb98a99df0198","object":"text_completion","created":1776445044,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[{"index":0,"text":" Paris","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"usage":null}`,
		`{"error": {"message": "\u2026", "type": "InternalServerError", "param": null, "code": 500}}`,
		`[1,-2.5e+3,{"c":"}\"]"}]`, `"\ud83d\ude00\ud83d"`, "\"\xC3\x28\xED\xA0\x80\"", `-0.5e3`, `[[],{}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := valid(data), json.Valid(data); got != want {
			t.Fatalf("valid(%q) = %v, encoding/json says %v", data, got, want)
		}
	})
}

// FuzzString checks String against encoding/json: the same verdict on any
// string literal, and the same text once invalid UTF-8 is replaced as
// encoding/json replaces it.
func FuzzString(f *testing.F) {
	for _, s := range []string{
		`a\"\/\b\f\n\r\t`, `\u00e9\uD83D\uDE00\ud800\udc00`, `\uDBFF\uDFFF\u0000`, "\xF0\x9F\x98", "\xC3\x28\xED\xA0\x80",
		`\u12`, `\x`, "a\nb", `plain text long enough for the word loop`, `\`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, inside []byte) {
		lit := append(append([]byte{'"'}, inside...), '"')
		var buf []byte
		s, j, ok := String(lit, 0, 1, &buf)
		ok = ok && j == len(lit)
		var want string
		jerr := json.Unmarshal(lit, &want)
		if ok != (jerr == nil) {
			t.Fatalf("String(%q): ok=%v, encoding/json: %v", lit, ok, jerr)
		}
		if ok && string(text.AppendValid(nil, s)) != want {
			t.Fatalf("String(%q) = %q, encoding/json %q", lit, s, want)
		}
	})
}

// FuzzInt checks Int against encoding/json on numbers within int32.
func FuzzInt(f *testing.F) {
	for _, s := range []string{"0", "-17", "3.0", "1e1", "-0.5e3", "123456789012345678", "01", "1e400"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, has, j, ok := Int(data, WS(data, 0), 1)
		ok = ok && WS(data, j) == len(data)
		if want := json.Valid(data); ok != want {
			t.Fatalf("Int(%q): ok=%v, encoding/json valid=%v", data, ok, want)
		}
		var n int32
		if has && ok && json.Unmarshal(data, &n) == nil && int(n) != v {
			t.Fatalf("Int(%q) = %d, encoding/json %d", data, v, n)
		}
	})
}

// typicalFinal is a llama.cpp final frame: long strings, nesting, numbers.
var typicalFinal = []byte(`{"index":0,"content":"","tokens":[],"id_slot":0,"stop":true,"model":"m","tokens_predicted":3,"tokens_evaluated":6,"generation_settings":{"seed":4294967295,"top_p":0.949999988079071,"dry_sequence_breakers":["\n",":","\"","*"],"lora":[]},"prompt":"The capital of France is a city on the Seine","stop_type":"limit","timings":{"cache_n":0,"prompt_ms":21.303,"predicted_n":3,"predicted_ms":27.114,"predicted_per_second":110.64394777605665}}`)

func BenchmarkSkip(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalFinal)))
	for b.Loop() {
		if !valid(typicalFinal) {
			b.Fatal("invalid")
		}
	}
}
