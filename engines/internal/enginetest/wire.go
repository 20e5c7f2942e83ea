package enginetest

import (
	"bytes"
	"fmt"
)

// LastChunk ends a chunked HTTP/1.1 body.
const LastChunk = "0\r\n\r\n"

// Chunk frames p as one HTTP/1.1 chunk (no terminator).
func Chunk[S ~string | ~[]byte](p S) []byte {
	b := fmt.Appendf(nil, "%x\r\n", len(p))
	b = append(b, []byte(p)...)
	return append(b, '\r', '\n')
}

// Chunked frames parts as a chunked HTTP/1.1 body, one chunk per part, and
// adds the last chunk. An empty part is a zero-size chunk: it ends the body
// there.
func Chunked[S ~string | ~[]byte](parts ...S) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		fmt.Fprintf(&b, "%x\r\n", len(p))
		b.Write([]byte(p))
		b.WriteString("\r\n")
	}
	b.WriteString(LastChunk)
	return b.Bytes()
}

// SplitAt cuts b into segments at the given positions (each taken modulo
// len(b)+1, for fuzzing), skipping positions that do not advance.
func SplitAt(b []byte, cuts ...int) [][]byte {
	var segs [][]byte
	prev := 0
	for _, c := range cuts {
		if len(b) == 0 {
			break
		}
		c = c % (len(b) + 1)
		if c > prev {
			segs = append(segs, b[prev:c])
			prev = c
		}
	}
	return append(segs, b[prev:])
}

// JSONString quotes s as a JSON string the way engines write them (\n as
// such, other control characters as \u00XX), keeping any invalid UTF-8
// bytes raw: tests feed them to the decoders on purpose.
func JSONString(s string) string {
	var b bytes.Buffer
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
		case c < 0x20:
			fmt.Fprintf(&b, `\u%04x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Segments is a response of head and a chunked body of one chunk per part,
// ended, as what the network delivers: all at once (paced false), or the
// head, each chunk and the last chunk in a read of their own (paced). size
// is the response's length.
func Segments[S ~string | ~[]byte](head string, parts []S, paced bool) (segs [][]byte, size int) {
	if !paced {
		all := append([]byte(head), Chunked(parts...)...)
		return [][]byte{all}, len(all)
	}
	segs = append(segs, []byte(head))
	size = len(head) + len(LastChunk)
	for _, p := range parts {
		c := Chunk(p)
		segs = append(segs, c)
		size += len(c)
	}
	return append(segs, []byte(LastChunk)), size
}
