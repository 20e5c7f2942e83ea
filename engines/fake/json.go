package fake

import (
	"math"
	"strconv"
	"unicode/utf8"
)

// JSON appenders that print like nlohmann::json's dump(), which llama.cpp
// uses for every body: compact, raw UTF-8, invalid bytes replaced by U+FFFD,
// doubles in shortest round-trip form with a ".0" on whole numbers.

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string the way nlohmann escapes it:
// `"` `\` and control characters only (\b \f \n \r \t, others \u00xx); an
// invalid UTF-8 byte becomes U+FFFD. It takes bytes or a string so the
// per-token path converts nothing.
func appendString[S ~string | ~[]byte](b []byte, s S) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			if n := runeLen(s, i); n > 0 {
				i += n
				continue
			}
			b = append(b, s[start:i]...)
			b = append(b, "\uFFFD"...)
			i++
			start = i
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"':
			b = append(b, '\\', '"')
		case '\\':
			b = append(b, '\\', '\\')
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// runeLen returns the length of the valid UTF-8 sequence starting at s[i]
// (a byte >= 0x80), or 0 if it is invalid or cut short.
func runeLen[S ~string | ~[]byte](s S, i int) int {
	c := s[i]
	n, lo, hi := 0, byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		n = 2
	case c == 0xE0:
		n, lo = 3, 0xA0
	case c == 0xED:
		n, hi = 3, 0x9F // no surrogates
	case c >= 0xE1 && c <= 0xEF:
		n = 3
	case c == 0xF0:
		n, lo = 4, 0x90
	case c >= 0xF1 && c <= 0xF3:
		n = 4
	case c == 0xF4:
		n, hi = 4, 0x8F
	default:
		return 0
	}
	if i+n > len(s) || s[i+1] < lo || s[i+1] > hi {
		return 0
	}
	for j := 2; j < n; j++ {
		if s[i+j] < 0x80 || s[i+j] > 0xBF {
			return 0
		}
	}
	return n
}

// appendFloat appends f as nlohmann prints a double: shortest round-trip
// digits, fixed notation with ".0" for whole numbers while the decimal point
// lies between 10^-4 and 10^15, exponent notation ("1e-05", "1.5e+16")
// beyond; NaN and infinities become null.
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	if f == 0 {
		if math.Signbit(f) {
			return append(b, "-0.0"...)
		}
		return append(b, "0.0"...)
	}
	if f < 0 {
		b = append(b, '-')
		f = -f
	}
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, 64) // d[.ddd]e±XX
	var digits [24]byte
	k := 0
	i := 0
	for ; i < len(e) && e[i] != 'e'; i++ {
		if e[i] != '.' {
			digits[k] = e[i]
			k++
		}
	}
	exp, _ := strconv.Atoi(string(e[i+1:]))
	n := exp + 1 // position of the decimal point relative to the digits
	switch {
	case k <= n && n <= 15:
		b = append(b, digits[:k]...)
		for j := k; j < n; j++ {
			b = append(b, '0')
		}
		return append(b, '.', '0')
	case 0 < n && n <= 15:
		b = append(b, digits[:n]...)
		b = append(b, '.')
		return append(b, digits[n:k]...)
	case -4 < n && n <= 0:
		b = append(b, '0', '.')
		for j := n; j < 0; j++ {
			b = append(b, '0')
		}
		return append(b, digits[:k]...)
	}
	b = append(b, digits[0])
	if k > 1 {
		b = append(b, '.')
		b = append(b, digits[1:k]...)
	}
	b = append(b, 'e')
	x := n - 1
	if x < 0 {
		b = append(b, '-')
		x = -x
	} else {
		b = append(b, '+')
	}
	if x < 10 {
		b = append(b, '0')
	}
	return strconv.AppendInt(b, int64(x), 10)
}

// appendFloat32 prints a float parameter as llama.cpp does: stored as a C
// float, widened to double (0.8 → 0.800000011920929).
func appendFloat32(b []byte, f float32) []byte { return appendFloat(b, float64(f)) }

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, "true"...)
	}
	return append(b, "false"...)
}

func appendInt(b []byte, v int) []byte { return strconv.AppendInt(b, int64(v), 10) }
