// Package jsonscan holds the primitives of the engine adapters' validating,
// zero-allocation JSON scanners (llama.cpp frames, vLLM chunks): the
// per-token path reads a few members of each frame and must not pay for a
// general decoder.
//
// The scanner is a set of functions over (b, i) — the document and a
// position in it — rather than methods on a cursor struct, so that the
// position stays in registers; the small ones inline into their callers.
// Each adapter writes its own frame walker from them, switching on member
// keys. Unknown values are validated and skipped without being decoded;
// strings are scanned eight bytes at a time; nothing allocates beyond the
// scratch buffers the caller passes (for strings with escapes).
//
// Together they accept exactly the documents encoding/json accepts,
// nesting limit included. A string's escapes are decoded as encoding/json
// decodes them (lone surrogates become U+FFFD), but its raw bytes are
// passed through untouched even when they are not valid UTF-8: an adapter
// joins a character split across frames before replacing what stays
// invalid (text.Carry, text.AppendValid).
//
// Conventions: every function takes the position i of the value (or
// separator) to read, after any whitespace, and returns the position j just
// after it; ok is false when the document is not valid JSON there. depth is
// the nesting depth of the container holding the value (1 for a member of
// the top-level object).
package jsonscan

import (
	"encoding/binary"
	"math"
	"math/bits"
	"strconv"

	"github.com/llama-orch/llama-orch/sse"
)

// MaxDepth matches encoding/json's nesting limit, so that the scanner and
// encoding/json agree on which documents are valid.
const MaxDepth = 10000

// WS skips whitespace from i; the check for none (compact JSON) is inlined.
func WS(b []byte, i int) int {
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

// Open consumes the '{' at i; more reports whether the object has members
// (j is then at the first key).
func Open(b []byte, i int) (j int, more bool) {
	i = WS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, false
	}
	return i, true
}

// Member reads `"key" :` at i and returns the key and the position of the
// value. The key points into b, or into *keyBuf when it holds escapes
// (decoded there), and stays valid until the next use of *keyBuf.
func Member(b []byte, i int, keyBuf *[]byte) (key []byte, j int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	end, esc, ok := ScanString(b, i)
	if !ok {
		return nil, i, false
	}
	key = b[i+1 : end-1]
	if esc {
		*keyBuf = AppendUnescaped((*keyBuf)[:0], key)
		key = *keyBuf
	}
	j = WS(b, end)
	if j >= len(b) || b[j] != ':' {
		return nil, j, false
	}
	return key, WS(b, j+1), true
}

// Next consumes the separator after a member value: more is true when
// another member follows (j is then at its key), false after the closing
// brace.
func Next(b []byte, i int) (j int, more, ok bool) {
	i = WS(b, i)
	if i < len(b) {
		switch b[i] {
		case ',':
			return WS(b, i+1), true, true
		case '}':
			return i + 1, false, true
		}
	}
	return i, false, false
}

// OpenArray consumes the '[' at i; more reports whether the array has
// elements (j is then at the first one).
func OpenArray(b []byte, i int) (j int, more bool) {
	i = WS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, false
	}
	return i, true
}

// NextElem consumes the separator after an array element: more is true when
// another element follows (j is then at it), false after the closing
// bracket.
func NextElem(b []byte, i int) (j int, more, ok bool) {
	i = WS(b, i)
	if i < len(b) {
		switch b[i] {
		case ',':
			return WS(b, i+1), true, true
		case ']':
			return i + 1, false, true
		}
	}
	return i, false, false
}

// String reads a string at i, decoding its escapes into *buf when it has
// any (s then points into *buf, valid until its next use; else into b). Any
// other value is validated, skipped and yields nil.
func String(b []byte, i, depth int, buf *[]byte) (s []byte, j int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		j, ok = Skip(b, i, depth)
		return nil, j, ok
	}
	end, esc, ok := ScanString(b, i)
	if !ok {
		return nil, i, false
	}
	s = b[i+1 : end-1]
	if esc {
		*buf = AppendUnescaped((*buf)[:0], s)
		s = *buf
	}
	return s, end, true
}

// Int reads a number at i as an int: fractions are truncated, values out of
// range are clamped. has is false for any other value, which is validated
// and skipped.
func Int(b []byte, i, depth int) (v int, has bool, j int, ok bool) {
	if i >= len(b) || !IsNumberStart(b[i]) {
		j, ok = Skip(b, i, depth)
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
	if i, ok = Number(b, start); !ok {
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

// IsNumberStart reports whether c can start a JSON number.
func IsNumberStart(c byte) bool { return c == '-' || (c >= '0' && c <= '9') }

// Number validates a JSON number at i and returns its end.
func Number(b []byte, i int) (int, bool) {
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

// ScanString validates the string whose opening quote is at i and returns
// the position after its closing quote and whether it holds escapes (its
// inside, b[i+1:end-1], is then to be decoded with AppendUnescaped).
func ScanString(b []byte, i int) (end int, esc bool, ok bool) {
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

// AppendUnescaped appends the decoded form of s, the inside of a string
// that ScanString validated, to dst: sse.AppendUnescaped, which the
// canonical stream's readers use too (\uXXXX escapes follow encoding/json;
// raw bytes are copied as they are, see the package doc).
func AppendUnescaped(dst, s []byte) []byte {
	out, _, _ := sse.AppendUnescaped(dst, s)
	return out
}

// Skip validates and skips any JSON value at i.
func Skip(b []byte, i, depth int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; c {
	case '"':
		end, _, ok := ScanString(b, i)
		return end, ok
	case '{':
		if depth >= MaxDepth {
			return i, false
		}
		i, more := Open(b, i)
		for more {
			if i >= len(b) || b[i] != '"' {
				return i, false
			}
			end, _, ok := ScanString(b, i)
			if !ok {
				return i, false
			}
			i = WS(b, end)
			if i >= len(b) || b[i] != ':' {
				return i, false
			}
			if i, ok = Skip(b, WS(b, i+1), depth+1); !ok {
				return i, false
			}
			if i, more, ok = Next(b, i); !ok {
				return i, false
			}
		}
		return i, true
	case '[':
		if depth >= MaxDepth {
			return i, false
		}
		i, more := OpenArray(b, i)
		for more {
			var ok bool
			if i, ok = Skip(b, i, depth+1); !ok {
				return i, false
			}
			if i, more, ok = NextElem(b, i); !ok {
				return i, false
			}
		}
		return i, true
	case 't':
		return literal(b, i, "true")
	case 'f':
		return literal(b, i, "false")
	case 'n':
		return literal(b, i, "null")
	default:
		if IsNumberStart(c) {
			return Number(b, i)
		}
		return i, false
	}
}

// CountArray validates the array whose '[' is at i and counts its elements
// (depth as for Skip).
func CountArray(b []byte, i, depth int) (n, j int, ok bool) {
	if depth >= MaxDepth {
		return 0, i, false
	}
	i, more := OpenArray(b, i)
	for more {
		if i, ok = Skip(b, i, depth+1); !ok {
			return 0, i, false
		}
		n++
		if i, more, ok = NextElem(b, i); !ok {
			return 0, i, false
		}
	}
	return n, i, true
}
