package text

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

type rec struct{ toks []string }

func (r *rec) Token(b []byte) { r.toks = append(r.toks, string(b)) }
func (r *rec) Flush()         {}

func TestCarry(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frames []string
		want   []string
	}{
		{"plain", []string{"a", "", "b"}, []string{"a", "b"}},                     // empty frames deliver nothing
		{"split emoji", []string{"\xF0\x9F", "\x98\x80 x"}, []string{"😀 x"}},      // held until complete
		{"split across three", []string{"\xE6", "\x97", "\xA5!"}, []string{"日!"}}, // 3 frames for one char
		{"text then half", []string{"ab\xC3", "\xB6"}, []string{"ab", "ö"}},       // complete part goes at once
		{"never completed", []string{"a\xF0\x9F"}, []string{"a", "\uFFFD\uFFFD"}}, // Finish: U+FFFD
		{"invalid byte", []string{"a\xFFb"}, []string{"a\uFFFDb"}},                // replaced like encoding/json
		{"lone continuation", []string{"\x80"}, []string{"\uFFFD"}},               // not a tail: replaced
	} {
		var c Carry
		r := &rec{}
		for _, f := range tc.frames {
			c.Emit(r, []byte(f))
		}
		c.Finish(r)
		if len(r.toks) != len(tc.want) {
			t.Fatalf("%s: tokens %q, want %q", tc.name, r.toks, tc.want)
		}
		for i := range r.toks {
			if r.toks[i] != tc.want[i] || !utf8.ValidString(r.toks[i]) {
				t.Fatalf("%s: tokens %q, want %q", tc.name, r.toks, tc.want)
			}
		}
	}
}

func TestExcerpt(t *testing.T) {
	long := make([]byte, 300)
	for i := range long {
		long[i] = 'x'
	}
	if got := Excerpt(long); len(got) != 200+len("…") {
		t.Fatalf("Excerpt of 300 bytes has %d bytes", len(got))
	}
	if got := Excerpt([]byte("a\xFF")); got != "a\uFFFD" {
		t.Fatalf("Excerpt = %q", got)
	}
}

func FuzzCarry(f *testing.F) {
	f.Add([]byte("\xF0\x9F"), []byte("\x98\x80"))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var c Carry
		r := &rec{}
		c.Emit(r, a)
		c.Emit(r, b)
		c.Finish(r)
		for _, tok := range r.toks {
			if tok == "" || !utf8.ValidString(tok) {
				t.Fatalf("bad token %q", tok)
			}
		}
	})
}

func TestIncompleteTail(t *testing.T) {
	f := func(in string, want int) {
		t.Helper()
		if got := IncompleteTail([]byte(in)); got != want {
			t.Errorf("IncompleteTail(%q) = %d, want %d", in, got, want)
		}
	}
	f("", 0)
	f("abc", 0)
	f("é", 0)
	f("😀", 0)
	f("a\xF0", 1)         // 4-byte lead alone
	f("a\xF0\x9F", 2)     // lead + one continuation
	f("a\xF0\x9F\x98", 3) // lead + two continuations
	f("\xE2\x82", 2)      // 3-byte char cut
	f("\xC3", 1)          // 2-byte char cut
	f("\xF0\x41", 0)      // lead then ASCII: invalid, not incomplete
	f("\xE0\x80", 0)      // overlong prefix: invalid, not incomplete
	f("\x9F\x98", 0)      // stray continuations: invalid
	f("\xFF", 0)          // never valid
}

func TestAppendValidUTF8(t *testing.T) {
	for _, in := range []string{"", "abc", "é😀", "a\xFFb", "\xF0\x9F", "\xED\xA0\x80", "\xC0\xAF"} {
		got := string(AppendValid(nil, []byte(in)))
		var s string
		if err := json.Unmarshal(append(append([]byte(`"`), in...), '"'), &s); err != nil {
			t.Fatal(err)
		}
		if got != s || !utf8.ValidString(got) {
			t.Errorf("AppendValid(%q) = %q, encoding/json gives %q", in, got, s)
		}
	}
}
