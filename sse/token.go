package sse

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// AppendTokenText appends the text of a canonical token event's data —
// `{"t":<string>,"i":N}` as AppendToken writes it — to dst, unescaped. ok is
// false for data that is not of that shape. It does not allocate when dst has
// room: consumers re-encoding the canonical stream (the OpenAI door) pay no
// JSON decoder per token.
func AppendTokenText(dst, data []byte) (out []byte, ok bool) {
	const prefix = `{"t":"`
	if !bytes.HasPrefix(data, []byte(prefix)) {
		return dst, false
	}
	s := data[len(prefix):]
	out, n, ok := AppendUnescaped(dst, s)
	return out, ok && bytes.HasPrefix(s[n+1:], []byte(`,"i":`))
}

// AppendUnescaped appends the decoded text of a JSON string body s (what
// follows its opening quote) to dst, up to its closing quote; n is the index
// of that quote in s. ok is false when s has no closing quote or an invalid
// escape (dst then holds what was decoded so far). \uXXXX escapes follow
// encoding/json: a valid surrogate pair is joined, any other surrogate
// becomes U+FFFD. Raw bytes are copied as they are, even when not valid
// UTF-8. It does not allocate when dst has room. (The engine decoders share
// it: engines/internal/jsonscan.AppendUnescaped.)
func AppendUnescaped(dst, s []byte) (out []byte, n int, ok bool) {
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"':
			return dst, i, true
		case c != '\\':
			j := i + 1
			for j < len(s) && s[j] != '"' && s[j] != '\\' {
				j++
			}
			dst = append(dst, s[i:j]...)
			i = j
		case i+1 >= len(s):
			return dst, i, false
		default:
			switch e := s[i+1]; e {
			case '"', '\\', '/':
				dst = append(dst, e)
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'u':
				r, n := hexRune(s[i+2:])
				if n == 0 {
					return dst, i, false
				}
				if utf16.IsSurrogate(r) {
					r2, n2 := rune(-1), 0
					if len(s) >= i+2+n+2 && s[i+2+n] == '\\' && s[i+3+n] == 'u' {
						r2, n2 = hexRune(s[i+4+n:])
					}
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError && n2 > 0 {
						dst = utf8.AppendRune(dst, d)
						i += 2 + n + 2 + n2
						continue
					}
					r = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, r)
				i += 2 + n
				continue
			default:
				return dst, i, false
			}
			i += 2
		}
	}
	return dst, len(s), false
}

// hexRune reads 4 hex digits; n is 4, or 0 when they are not there.
func hexRune(b []byte) (rune, int) {
	if len(b) < 4 {
		return 0, 0
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, 0
		}
	}
	return r, 4
}
