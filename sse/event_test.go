package sse

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendToken(t *testing.T) {
	f := func(id uint64, text string, i int, want string) {
		t.Helper()
		prefix := []byte("prev")
		got := AppendToken(prefix, id, []byte(text), i)
		if string(got) != "prev"+want {
			t.Errorf("AppendToken(%d, %q, %d)\n got %q\nwant %q", id, text, i, got[4:], want)
		}
	}
	// The typical llama.cpp token: a leading space and a word.
	f(0, " hello", 0, "id: 0\nevent: token\ndata: {\"t\":\" hello\",\"i\":0}\n\n")
	// Large ids and indexes are written in full.
	f(18446744073709551615, "x", 123456, "id: 18446744073709551615\nevent: token\ndata: {\"t\":\"x\",\"i\":123456}\n\n")
	// Quotes, backslashes and newlines are escaped so the event stays one line.
	f(3, "say \"hi\"\\\n", 2, "id: 3\nevent: token\ndata: {\"t\":\"say \\\"hi\\\"\\\\\\n\",\"i\":2}\n\n")
	// Multi-byte UTF-8 passes through unchanged.
	f(4, "😀 日本", 3, "id: 4\nevent: token\ndata: {\"t\":\"😀 日本\",\"i\":3}\n\n")
	// An invalid byte (half a character) becomes U+FFFD.
	f(5, "a\xe6", 4, "id: 5\nevent: token\ndata: {\"t\":\"a\uFFFD\",\"i\":4}\n\n")
	// Empty text is still a well-formed event (callers skip empty tokens).
	f(6, "", 5, "id: 6\nevent: token\ndata: {\"t\":\"\",\"i\":5}\n\n")
}

func TestAppendDataCommentEvent(t *testing.T) {
	f := func(got []byte, want string) {
		t.Helper()
		if string(got) != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	// A non-token event carries its pre-encoded JSON verbatim.
	f(AppendData(nil, 9, KindEnd, []byte(`{"tokens_out":3}`)), "id: 9\nevent: end\ndata: {\"tokens_out\":3}\n\n")
	// AppendEvent picks the token encoding for token events...
	f(AppendEvent(nil, &Event{ID: 1, Kind: KindToken, Text: []byte("a"), Index: 7}), "id: 1\nevent: token\ndata: {\"t\":\"a\",\"i\":7}\n\n")
	// ...and the data encoding for the others.
	f(AppendEvent(nil, &Event{ID: 0, Kind: KindStarted, Data: []byte(`{}`)}), "id: 0\nevent: started\ndata: {}\n\n")
	// The keep-alive the SPEC asks for while queued.
	f(AppendComment(nil, "ping"), ": ping\n\n")
}

func TestKind(t *testing.T) {
	for k := KindStarted; k <= KindError; k++ {
		if got := ParseKind([]byte(k.String())); got != k {
			t.Errorf("ParseKind(%q) = %d, want %d", k.String(), got, k)
		}
		if k.Terminal() != (k == KindEnd || k == KindError) {
			t.Errorf("%v.Terminal() = %v", k, k.Terminal())
		}
	}
	if got := ParseKind([]byte("bogus")); got != 0 {
		t.Errorf("ParseKind(bogus) = %d, want 0", got)
	}
	if got := Kind(99).String(); got != "unknown" {
		t.Errorf("Kind(99).String() = %q", got)
	}
}

func TestAppendJSONString(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		got := AppendJSONString(nil, []byte(in))
		if string(got) != want {
			t.Errorf("AppendJSONString(%q)\n got %s\nwant %s", in, got, want)
		}
		checkJSONString(t, []byte(in), got)
	}
	// Plain ASCII is copied as is.
	f("hello", `"hello"`)
	// Empty string.
	f("", `""`)
	// Quotes and backslashes.
	f(`a"b\c`, `"a\"b\\c"`)
	// The short escapes.
	f("\n\r\t", `"\n\r\t"`)
	// Other control characters use \u00XX, as does NUL.
	f("\x00\x01\x08\x0c\x1f", `"\u0000\u0001\u0008\u000c\u001f"`)
	// DEL and '/' need no escape in JSON.
	f("\x7f/", "\"\x7f/\"")
	// U+2028 and U+2029 are escaped: legal in JSON, line breaks in JavaScript.
	f("a\u2028b\u2029c", `"a\u2028b\u2029c"`)
	// Emoji and CJK are kept raw.
	f("😀 日本語", `"😀 日本語"`)
	// HTML characters need no escape in an event stream.
	f("<a>&", `"<a>&"`)
	// A lone invalid byte becomes U+FFFD.
	f("\xff", "\"\uFFFD\"")
	// A truncated 4-byte character is three invalid bytes: one U+FFFD each,
	// as encoding/json does (strings.ToValidUTF8 would write one).
	f("x\xf0\x9f\x98y", "\"x\uFFFD\uFFFD\uFFFDy\"")
	// A UTF-8-encoded surrogate half is invalid UTF-8 too.
	f("\xed\xa0\x80", "\"\uFFFD\uFFFD\uFFFD\"")
	// A real U+FFFD in the input is kept.
	f("\uFFFD", "\"\uFFFD\"")
	// Overlong encodings are invalid.
	f("\xc0\xaf", "\"\uFFFD\uFFFD\"")
}

// checkJSONString asserts that out is the JSON encoding of in as
// encoding/json understands it: valid JSON and UTF-8, decoding to in with
// every invalid byte replaced by U+FFFD, with no raw control characters or
// line separators.
func checkJSONString(t testing.TB, in, out []byte) {
	t.Helper()
	if !json.Valid(out) {
		t.Fatalf("invalid JSON %q for input %q", out, in)
	}
	if !utf8.Valid(out) {
		t.Fatalf("invalid UTF-8 %q for input %q", out, in)
	}
	for _, c := range out {
		if c < 0x20 {
			t.Fatalf("raw control byte %#x in %q", c, out)
		}
	}
	if bytes.Contains(out, []byte("\u2028")) || bytes.Contains(out, []byte("\u2029")) {
		t.Fatalf("raw U+2028/U+2029 in %q", out)
	}
	var got string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("json.Unmarshal(%q): %v", out, err)
	}
	if want := perByteValid(in); got != want {
		t.Fatalf("input %q decodes to %q, want %q", in, got, want)
	}
	ref, _ := json.Marshal(string(in))
	var want string
	if err := json.Unmarshal(ref, &want); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("input %q decodes to %q, encoding/json gives %q", in, got, want)
	}
}

// perByteValid replaces each invalid byte of s with U+FFFD (unlike
// strings.ToValidUTF8, which replaces each run of them with one).
func perByteValid(s []byte) string {
	var b strings.Builder
	for len(s) > 0 {
		r, size := utf8.DecodeRune(s)
		if r == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.Write(s[:size])
		}
		s = s[size:]
	}
	return b.String()
}

// countingWriter records each Write call.
type countingWriter struct {
	writes [][]byte
	err    error
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, bytes.Clone(p))
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

func TestWriter(t *testing.T) {
	var cw countingWriter
	w := NewWriter(&cw)
	if err := w.Flush(); err != nil || len(cw.writes) != 0 {
		t.Fatalf("empty Flush: err %v, %d writes; want no write", err, len(cw.writes))
	}
	w.WriteEvent(&Event{ID: 0, Kind: KindStarted, Data: []byte(`{}`)})
	w.WriteEvent(&Event{ID: 1, Kind: KindToken, Text: []byte(" hi"), Index: 0})
	w.WriteComment("ping")
	want := "id: 0\nevent: started\ndata: {}\n\n" +
		"id: 1\nevent: token\ndata: {\"t\":\" hi\",\"i\":0}\n\n" +
		": ping\n\n"
	if len(cw.writes) != 0 {
		t.Fatalf("%d writes before Flush, want 0", len(cw.writes))
	}
	if w.Buffered() != len(want) {
		t.Fatalf("Buffered() = %d, want %d", w.Buffered(), len(want))
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(cw.writes) != 1 || string(cw.writes[0]) != want {
		t.Fatalf("Flush made writes %q, want one write %q", cw.writes, want)
	}
	if w.Buffered() != 0 {
		t.Fatalf("Buffered() after Flush = %d", w.Buffered())
	}

	// A failed write is reported and its bytes are dropped: after headers an
	// error aborts the stream, nothing is retried.
	boom := errors.New("boom")
	w.WriteComment("x")
	cw.err = boom
	if err := w.Flush(); !errors.Is(err, boom) {
		t.Fatalf("Flush error = %v, want %v", err, boom)
	}
	if w.Buffered() != 0 {
		t.Fatalf("Buffered() after failed Flush = %d", w.Buffered())
	}

	// Reset drops what is buffered and switches the destination.
	var other countingWriter
	w.WriteComment("dropped")
	w.Reset(&other)
	w.WriteComment("kept")
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(other.writes) != 1 || string(other.writes[0]) != ": kept\n\n" {
		t.Fatalf("after Reset got writes %q", other.writes)
	}
}
