// Package wire appends JSON strings and numbers the way each faked engine's
// serializer prints them — nlohmann::json (llama.cpp), serde_json (TGI),
// rapidjson (Triton), pydantic and json.dumps (vLLM) — and the head of a
// Prometheus metric family. The serializers agree on most of it; where they
// differ the difference is an explicit option (Escaping, expFrom) or a
// function of its own (AppendASCIIString).
package wire

import (
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

const (
	lowerHex = "0123456789abcdef"
	upperHex = "0123456789ABCDEF"
)

// Escaping is what sets a compact JSON serializer's strings apart. All of
// them escape `"`, `\` and the control characters (\b \f \n \r \t short,
// the others as \u00xx) and write every other byte, DEL and `/` included,
// as it is.
type Escaping struct {
	// UpperHex writes \u00XX rather than \u00xx.
	UpperHex bool
	// Raw copies bytes >= 0x80 unchecked; otherwise every byte that does
	// not start a valid UTF-8 sequence becomes U+FFFD.
	Raw bool
}

// The engines' serializers.
var (
	// Nlohmann is nlohmann::json's dump() with the replace error handler,
	// which llama.cpp uses for every body.
	Nlohmann = Escaping{}
	// Serde is serde_json; a Rust String holds no invalid UTF-8, so the
	// fake's bytes are made lossy first, as String::from_utf8_lossy would.
	Serde = Escaping{}
	// RapidJSON is rapidjson's Writer, which Triton's HTTP frontend uses.
	RapidJSON = Escaping{UpperHex: true}
	// Pydantic is pydantic's and Starlette's compact JSON (vLLM); a Python
	// str is valid UTF-8 by construction, so bytes pass unchecked.
	Pydantic = Escaping{Raw: true}
)

// AppendString appends s as a JSON string escaped as e says. It takes
// bytes or a string so that a per-token caller converts nothing.
func AppendString[S ~string | ~[]byte](b []byte, s S, e Escaping) []byte {
	hex := lowerHex
	if e.UpperHex {
		hex = upperHex
	}
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			if e.Raw {
				i++
				continue
			}
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
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		b = appendEscape(b, c, hex)
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendEscape appends the escape of an ASCII byte that needs one.
func appendEscape(b []byte, c byte, hex string) []byte {
	switch c {
	case '"':
		return append(b, '\\', '"')
	case '\\':
		return append(b, '\\', '\\')
	case '\b':
		return append(b, '\\', 'b')
	case '\f':
		return append(b, '\\', 'f')
	case '\n':
		return append(b, '\\', 'n')
	case '\r':
		return append(b, '\\', 'r')
	case '\t':
		return append(b, '\\', 't')
	}
	return append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
}

// AppendASCIIString appends s as Python's json.dumps (ensure_ascii=True)
// prints it: the escapes of the other serializers plus DEL as \u007f and
// every non-ASCII character as \uXXXX, astral ones as surrogate pairs.
// Invalid UTF-8 becomes \ufffd.
func AppendASCIIString(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r < utf8.RuneSelf:
			if c := byte(r); c >= 0x20 && c != '"' && c != '\\' && c != 0x7F {
				b = append(b, c)
			} else {
				b = appendEscape(b, c, lowerHex)
			}
		case r > 0xFFFF:
			r1, r2 := utf16.EncodeRune(r)
			b = appendU4(appendU4(b, r1), r2)
		default:
			b = appendU4(b, r)
		}
	}
	return append(b, '"')
}

func appendU4(b []byte, r rune) []byte {
	return append(b, '\\', 'u', lowerHex[r>>12&0xF], lowerHex[r>>8&0xF], lowerHex[r>>4&0xF], lowerHex[r&0xF])
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

// AppendFixed appends v in fixed notation with the fewest digits that read
// back as the same float of bitSize (32 or 64) bits, and ".0" on whole
// numbers ("-2.0", "0.25"): how serde_json (ryu), nlohmann::json and
// Python's repr print ordinary magnitudes. v must be finite.
func AppendFixed(b []byte, v float64, bitSize int) []byte {
	n := len(b)
	b = strconv.AppendFloat(b, v, 'f', -1, bitSize)
	for _, c := range b[n:] {
		if c == '.' {
			return b
		}
	}
	return append(b, ".0"...)
}

// AppendDouble appends a finite v as nlohmann::json and Python's repr
// print a double: AppendFixed while 1e-4 <= |v| < expFrom (and for zero),
// exponent notation with at least two exponent digits beyond ("1e-05",
// "1.5e+16"). The two differ only in expFrom: 1e15 for nlohmann, 1e16 for
// Python.
func AppendDouble(b []byte, v, expFrom float64) []byte {
	if a := math.Abs(v); a != 0 && (a < 1e-4 || a >= expFrom) {
		return strconv.AppendFloat(b, v, 'e', -1, 64)
	}
	return AppendFixed(b, v, 64)
}

// AppendMetricHead appends a Prometheus text-format family head:
// "# HELP name help" and "# TYPE name typ" lines.
func AppendMetricHead(b []byte, name, help, typ string) []byte {
	b = append(b, "# HELP "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = append(b, help...)
	b = append(b, "\n# TYPE "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = append(b, typ...)
	return append(b, '\n')
}
