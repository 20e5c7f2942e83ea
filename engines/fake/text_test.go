package fake

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestTextPlain: default tokens are plain ASCII words with a leading space,
// never empty, deterministic, with ids in the vocabulary.
func TestTextPlain(t *testing.T) {
	g := NewGenerator(42, "Hello", false)
	for pos := 0; pos < 2000; pos++ {
		text, id := g.Token(pos)
		if len(text) < 2 || text[0] != ' ' || strings.TrimSpace(text) != text[1:] {
			t.Fatalf("pos %d: %q", pos, text)
		}
		for i := 0; i < len(text); i++ {
			if text[i] >= utf8.RuneSelf {
				t.Fatalf("pos %d: non-ASCII %q", pos, text)
			}
		}
		if text != Text(42, "Hello", pos) || id != TokenID(42, "Hello", pos) {
			t.Fatalf("pos %d: Generator and Text disagree", pos)
		}
		if id < firstWordID || id >= VocabSize || id != WordID(text[1:]) {
			t.Fatalf("pos %d: id %d", pos, id)
		}
	}
}

// TestSplitPieces: joined, the split pattern is valid UTF-8 at every
// boundary Complete accepts, and each character is withheld exactly once.
func TestSplitPieces(t *testing.T) {
	g := NewGenerator(1, "x", true)
	var pending []byte
	frames := 0
	for pos := 0; pos < 40; pos++ {
		text, _ := g.Token(pos)
		pending = append(pending, text...)
		if Complete(pending) {
			if !utf8.Valid(pending) {
				t.Fatalf("pos %d: complete but invalid %q", pos, pending)
			}
			pending = pending[:0]
			frames++
		}
	}
	if frames != 24 || len(pending) != 0 {
		t.Errorf("%d frames for 40 tokens (pending %q), want 24", frames, pending)
	}
}

func TestComplete(t *testing.T) {
	f := func(in string, want bool) {
		t.Helper()
		if got := Complete([]byte(in)); got != want {
			t.Errorf("Complete(%q) = %v, want %v", in, got, want)
		}
	}
	f("", true)
	f(" alpha", true)
	f("😀", true)
	f("\xF0\x9F", false)
	f(" \xF0\x9F\x98", false)
	f("\xC3", false)
	f("ö", true)
	f("日本", true)
	f("日\xE6\x9C", false)
	f("a\x80", true) // a stray continuation byte never completes: send it
}

func TestCountTokens(t *testing.T) {
	f := func(in string, want int) {
		t.Helper()
		if got := CountTokens(in); got != want {
			t.Errorf("CountTokens(%q) = %d, want %d", in, got, want)
		}
	}
	// The captures: "Hello" is 2 tokens, "Hello world " × 1200 is 2402.
	f("Hello", 2)
	f(strings.Repeat("Hello world ", 1200), 2402)
	f("", 1)
	f("The capital of France is", 6)
	f("  a\tb\nc  ", 5)
	f("日本 語", 3)
}
