package sse

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// tokenData is the data line AppendToken writes for text.
func tokenData(text []byte, i int) []byte {
	ev := AppendToken(nil, 1, text, i)
	return ev[bytes.Index(ev, []byte("data: "))+6 : len(ev)-2]
}

func TestAppendTokenText(t *testing.T) {
	for _, s := range []string{"", " word", `q"uote\back`, "line\nbreak\r\ttab", "\x00\x01\x1f", "é😀日本", "\u2028\u2029", "bad\xffbyte"} {
		got, ok := AppendTokenText(nil, tokenData([]byte(s), 7))
		var ev struct {
			T string `json:"t"`
		}
		_ = json.Unmarshal(tokenData([]byte(s), 7), &ev)
		want := ev.T
		if !ok || string(got) != want {
			t.Errorf("AppendTokenText(%q) = %q, %v; want %q", s, got, ok, want)
		}
	}
	for _, bad := range []string{``, `{"i":1}`, `{"t":1,"i":1}`, `{"t":"abc`, `{"t":"a\`, `{"t":"\u12"}`, `{"t":"\x"}`, `{"t":"a"}`} {
		if _, ok := AppendTokenText(nil, []byte(bad)); ok {
			t.Errorf("AppendTokenText(%q) accepted", bad)
		}
	}
	// Other encoders' escapes: surrogate pairs, \/ and \u escapes of ASCII.
	got, ok := AppendTokenText(nil, []byte(`{"t":"\ud83d\ude00\/\u0041\ud800x","i":0}`))
	if !ok || string(got) != "😀/A\uFFFDx" {
		t.Errorf("escapes: %q %v", got, ok)
	}
	dst := make([]byte, 0, 64)
	data := tokenData([]byte(" word"), 3)
	if n := testing.AllocsPerRun(100, func() { dst, _ = AppendTokenText(dst[:0], data) }); n != 0 {
		t.Errorf("AppendTokenText allocates %v per call", n)
	}
}

// FuzzAppendTokenText: what AppendToken writes reads back as the text (with
// invalid UTF-8 replaced), and any input is either refused or decoded as
// encoding/json decodes the same string.
func FuzzAppendTokenText(f *testing.F) {
	f.Add([]byte("word"), []byte(`{"t":"\ud83d\ude00","i":0}`))
	f.Add([]byte("a\"b\\c\n\u2028"), []byte(`{"t":"x","i":1}`))
	f.Fuzz(func(t *testing.T, text, raw []byte) {
		data := tokenData(text, 5)
		got, ok := AppendTokenText(nil, data)
		var ev struct {
			T string `json:"t"`
		}
		if err := json.Unmarshal(data, &ev); err != nil || !ok || string(got) != ev.T {
			t.Fatalf("round trip of %q: %q %v, encoding/json %q (%v)", text, got, ok, ev.T, err)
		}
		out, ok := AppendTokenText(nil, raw)
		if !ok {
			return
		}
		var v struct {
			T string `json:"t"`
		}
		end := bytes.Index(raw, []byte(`,"i":`))
		if json.Unmarshal(append(append([]byte{}, raw[:end]...), '}'), &v) == nil && utf8.Valid(out) && v.T != string(out) {
			t.Fatalf("%q decoded %q, encoding/json %q", raw, out, v.T)
		}
	})
}
