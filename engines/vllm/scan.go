package vllm

// A validating JSON scanner for the per-token path, shared in shape with
// the llama.cpp adapter's (engines/llamacpp/scan.go, whose primitives these
// are): positions stay in registers, unknown values are validated and
// skipped without decoding, strings are scanned eight bytes at a time, and
// nothing allocates once the scratch buffers have grown. It accepts exactly
// the documents encoding/json accepts (FuzzDecode checks that).

import (
	"encoding/binary"
	"errors"
	"math"
	"math/bits"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// errSyntax is returned by decode for data that is not one valid JSON
// object.
var errSyntax = errors.New("vllm: frame is not a valid JSON object")

// maxDepth matches encoding/json's nesting limit, so that the scanner and
// encoding/json agree on which documents are valid.
const maxDepth = 10000

// ws skips whitespace; the check for none (compact JSON) is inlined.
func ws(b []byte, i int) int {
	if i < len(b) && b[i] > ' ' {
		return i
	}
	return wsSlow(b, i)
}

func wsSlow(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// member reads `"key" :` at i and returns the key and the position of the
// value. The key is decoded (into *keyBuf) only when it holds escapes.
func member(b []byte, i int, keyBuf *[]byte) (key []byte, j int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	end, esc, ok := scanString(b, i)
	if !ok {
		return nil, i, false
	}
	key = b[i+1 : end-1]
	if esc {
		*keyBuf = appendUnescaped((*keyBuf)[:0], key)
		key = *keyBuf
	}
	j = ws(b, end)
	if j >= len(b) || b[j] != ':' {
		return nil, j, false
	}
	return key, ws(b, j+1), true
}

// next consumes the separator after a member value: more is true when
// another member follows (j is then at its key), false after the closing
// brace.
func next(b []byte, i int) (j int, more, ok bool) {
	i = ws(b, i)
	if i < len(b) {
		switch b[i] {
		case ',':
			return ws(b, i+1), true, true
		case '}':
			return i + 1, false, true
		}
	}
	return i, false, false
}

// open consumes '{' at i; more reports whether the object has members.
func open(b []byte, i int) (j int, more bool) {
	i = ws(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, false
	}
	return i, true
}

// stringValue reads a string at i (decoding escapes into *buf when needed);
// any other value is skipped and yields nil.
func stringValue(b []byte, i, depth int, buf *[]byte) (s []byte, j int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		j, ok = skip(b, i, depth)
		return nil, j, ok
	}
	end, esc, ok := scanString(b, i)
	if !ok {
		return nil, i, false
	}
	s = b[i+1 : end-1]
	if esc {
		*buf = appendUnescaped((*buf)[:0], s)
		s = *buf
	}
	return s, end, true
}

// intValue reads a number at i as an int (fractions truncated, out-of-range
// values clamped); has is false for any other value, which is skipped.
func intValue(b []byte, i, depth int) (v int, has bool, j int, ok bool) {
	if i >= len(b) || !isNumberStart(b[i]) {
		j, ok = skip(b, i, depth)
		return 0, false, j, ok
	}
	// Fast path: a plain integer of 1 to 18 digits, without leading zeros.
	start := i
	neg := b[i] == '-'
	if neg {
		i++
	}
	n, d := 0, i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		n = n*10 + int(b[i]-'0')
		i++
	}
	if digits := i - d; digits > 0 && digits <= 18 && (b[d] != '0' || digits == 1) &&
		(i == len(b) || (b[i] != '.' && b[i] != 'e' && b[i] != 'E')) {
		if neg {
			n = -n
		}
		return n, true, i, true
	}
	if i, ok = number(b, start); !ok {
		return 0, false, i, false
	}
	fv, _ := strconv.ParseFloat(string(b[start:i]), 64)
	switch {
	case fv >= math.MaxInt64:
		return math.MaxInt64, true, i, true
	case fv <= math.MinInt64:
		return math.MinInt64, true, i, true
	}
	return int(fv), true, i, true
}

func isNumberStart(c byte) bool { return c == '-' || (c >= '0' && c <= '9') }

// number validates a JSON number at i and returns its end.
func number(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return i, false
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return i, false
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	return i, true
}

func literal(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// strPlain marks the bytes that can appear unescaped in a JSON string without
// ending it: everything but '"', '\\' and control characters.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// specialMask flags (with its top bit) each byte of the little-endian word
// x that is '"', '\\' or a control character (< 0x20), using the classic
// "has a zero (or smaller) byte" bit tricks. Flags above the first flagged
// byte may be spurious (borrows only propagate upward), but the lowest one
// is exact: it marks the first special byte.
func specialMask(x uint64) uint64 {
	q := x ^ ('"' * lsb)
	bs := x ^ ('\\' * lsb)
	return ((q-lsb)&^q | (bs-lsb)&^bs | (x-0x20*lsb)&^x) & msb
}

// scanString validates the string whose opening quote is at i and returns
// the position after its closing quote and whether it holds escapes.
func scanString(b []byte, i int) (end int, esc bool, ok bool) {
	i++
	for {
		// Eight bytes at a time; bytewise only for a short tail.
		for {
			if i+8 > len(b) {
				for i < len(b) && strPlain[b[i]] {
					i++
				}
				break
			}
			if m := specialMask(binary.LittleEndian.Uint64(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		if i >= len(b) {
			return i, false, false
		}
		switch b[i] {
		case '"':
			return i + 1, esc, true
		case '\\':
			esc = true
			if i+1 >= len(b) {
				return i, false, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || hex4(b[i+2:i+6]) < 0 {
					return i, false, false
				}
				i += 6
			default:
				return i, false, false
			}
		default: // control character
			return i, false, false
		}
	}
}

// hex4 decodes four hex digits, or returns -1.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// appendUnescaped appends the decoded form of s, the validated inside of a
// JSON string, to dst. \uXXXX escapes follow encoding/json: a valid surrogate
// pair is joined, any other surrogate becomes U+FFFD. Raw bytes are copied
// as they are (see frame.content).
func appendUnescaped(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		if s[i] != '\\' {
			j := i + 1
			for j < len(s) && s[j] != '\\' {
				j++
			}
			dst = append(dst, s[i:j]...)
			i = j
			continue
		}
		c := s[i+1]
		i += 2
		switch c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(s[i:])
			i += 4
			if utf16.IsSurrogate(r) {
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					if d := utf16.DecodeRune(r, hex4(s[i+2:])); d != utf8.RuneError {
						dst = utf8.AppendRune(dst, d)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/'
			dst = append(dst, c)
		}
	}
	return dst
}

// skip validates and skips any JSON value at i. depth is the nesting depth
// of the container holding the value.
func skip(b []byte, i, depth int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; c {
	case '"':
		end, _, ok := scanString(b, i)
		return end, ok
	case '{':
		if depth >= maxDepth {
			return i, false
		}
		i, more := open(b, i)
		if !more {
			return i, true
		}
		for {
			if i >= len(b) || b[i] != '"' {
				return i, false
			}
			end, _, ok := scanString(b, i)
			if !ok {
				return i, false
			}
			i = ws(b, end)
			if i >= len(b) || b[i] != ':' {
				return i, false
			}
			if i, ok = skip(b, ws(b, i+1), depth+1); !ok {
				return i, false
			}
			if i, more, ok = next(b, i); !ok || !more {
				return i, ok
			}
		}
	case '[':
		if depth >= maxDepth {
			return i, false
		}
		i = ws(b, i+1)
		if i < len(b) && b[i] == ']' {
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = skip(b, i, depth+1); !ok {
				return i, false
			}
			i = ws(b, i)
			if i >= len(b) {
				return i, false
			}
			switch b[i] {
			case ',':
				i = ws(b, i+1)
			case ']':
				return i + 1, true
			default:
				return i, false
			}
		}
	case 't':
		return literal(b, i, "true")
	case 'f':
		return literal(b, i, "false")
	case 'n':
		return literal(b, i, "null")
	default:
		if isNumberStart(c) {
			return number(b, i)
		}
		return i, false
	}
}
