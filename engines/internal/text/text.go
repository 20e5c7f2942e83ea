// Package text holds the UTF-8 handling every engine adapter shares: token
// text reaches the gateway as non-empty valid UTF-8, and a character split
// across engine frames is held back until it completes (ENGINES.md §5).
package text

import (
	"unicode/utf8"

	"github.com/llama-orch/llama-orch/engines"
)

// IncompleteTail returns how many bytes at the end of b begin a multi-byte
// UTF-8 character that is not complete yet (0 to 3).
func IncompleteTail(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax+1; i-- {
		if utf8.RuneStart(b[i]) {
			if utf8.FullRune(b[i:]) {
				return 0
			}
			return len(b) - i
		}
	}
	return 0
}

// AppendValid appends s to dst with every byte that does not belong to a
// valid UTF-8 encoding replaced by U+FFFD, as encoding/json does.
func AppendValid(dst, s []byte) []byte {
	start := 0
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\uFFFD"...)
			i++
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}

// Carry delivers frame texts to a sink as tokens, holding back an incomplete
// trailing character until the next frame completes it. The zero value is
// ready; Reset before reusing it for another stream.
type Carry struct {
	held  []byte // incomplete character held for the next frame
	text  []byte // held + content
	fixed []byte // text with invalid UTF-8 replaced
}

// Reset forgets any held bytes.
func (c *Carry) Reset() { c.held = c.held[:0] }

// Held reports whether an incomplete character is held back.
func (c *Carry) Held() bool { return len(c.held) > 0 }

// Emit delivers content (after any held bytes) as one token, holding back an
// incomplete trailing character. It reports whether a token was delivered
// (false for empty content or content that is only part of a character).
func (c *Carry) Emit(sink engines.Sink, content []byte) bool {
	t := content
	if len(c.held) > 0 {
		c.text = append(append(c.text[:0], c.held...), content...)
		c.held = c.held[:0]
		t = c.text
	}
	if n := IncompleteTail(t); n > 0 {
		c.held = append(c.held, t[len(t)-n:]...)
		t = t[:len(t)-n]
	}
	if !utf8.Valid(t) {
		c.fixed = AppendValid(c.fixed[:0], t)
		t = c.fixed
	}
	if len(t) == 0 {
		return false
	}
	sink.Token(t)
	return true
}

// Finish delivers a character that never completed as U+FFFD (as
// encoding/json would) and reports whether it delivered a token.
func (c *Carry) Finish(sink engines.Sink) bool {
	if len(c.held) == 0 {
		return false
	}
	c.fixed = AppendValid(c.fixed[:0], c.held)
	c.held = c.held[:0]
	sink.Token(c.fixed)
	return true
}

// Excerpt returns a printable prefix of b (at most 200 bytes) for error
// messages.
func Excerpt(b []byte) string {
	const limit = 200
	cut := len(b) > limit
	if cut {
		b = b[:limit]
	}
	s := string(AppendValid(nil, b))
	if cut {
		s += "…"
	}
	return s
}
