// Package sse reads engine Server-Sent Event streams and writes the gateway's
// canonical event stream (SPEC §3.2: started → token* → metrics* → end|error).
//
// Encoding appends to caller-owned byte slices so the per-token path allocates
// nothing once buffers have grown; decoding (Reader) returns slices into its own
// buffer. The package knows nothing of HTTP.
package sse

import (
	"io"
	"strconv"
	"unicode/utf8"
)

// Kind names a canonical event.
type Kind uint8

// Canonical event kinds, in the order they may appear in a stream.
const (
	KindStarted Kind = iota + 1
	KindToken
	KindMetrics
	KindEnd
	KindError
)

var kindNames = [...]string{"", "started", "token", "metrics", "end", "error"}

// String returns the event name used on the wire.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Terminal reports whether no event may follow an event of this kind.
func (k Kind) Terminal() bool { return k == KindEnd || k == KindError }

// ParseKind maps a wire event name to its Kind (0 when unknown).
func ParseKind(name []byte) Kind {
	for i := 1; i < len(kindNames); i++ {
		if string(name) == kindNames[i] {
			return Kind(i)
		}
	}
	return 0
}

// Event is one canonical event.
type Event struct {
	// ID is the event's sequence number in its task's log (`id:` line).
	ID   uint64
	Kind Kind
	// Index and Text are used by token events: `{"t":Text,"i":Index}`.
	Index int
	Text  []byte
	// Data is the pre-encoded JSON object of a non-token event.
	Data []byte
}

// AppendEvent appends ev in wire form to dst.
func AppendEvent(dst []byte, ev *Event) []byte {
	if ev.Kind == KindToken {
		return AppendToken(dst, ev.ID, ev.Text, ev.Index)
	}
	return AppendData(dst, ev.ID, ev.Kind, ev.Data)
}

// AppendToken appends `id: <id>\nevent: token\ndata: {"t":<text>,"i":<i>}\n\n`.
// text may hold any bytes: invalid UTF-8 is written as U+FFFD so the stream
// stays valid JSON and valid UTF-8. It does not allocate when dst has room.
func AppendToken(dst []byte, id uint64, text []byte, i int) []byte {
	dst = append(dst, "id: "...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, "\nevent: token\ndata: {\"t\":"...)
	dst = AppendJSONString(dst, text)
	dst = append(dst, ",\"i\":"...)
	dst = strconv.AppendInt(dst, int64(i), 10)
	return append(dst, "}\n\n"...)
}

// AppendData appends an event whose data is already-encoded single-line JSON.
func AppendData(dst []byte, id uint64, kind Kind, data []byte) []byte {
	dst = append(dst, "id: "...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, "\nevent: "...)
	dst = append(dst, kind.String()...)
	dst = append(dst, "\ndata: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}

// AppendComment appends a comment line (`: text\n\n`), used for keep-alives.
func AppendComment(dst []byte, text string) []byte {
	dst = append(dst, ": "...)
	dst = append(dst, text...)
	return append(dst, "\n\n"...)
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string literal. Control characters,
// quotes and backslashes are escaped; U+2028/U+2029 are escaped so the output
// is safe in JavaScript too; each invalid UTF-8 byte becomes U+FFFD, as
// encoding/json does.
func AppendJSONString(dst []byte, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\ufffd"...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// Writer writes canonical events to an io.Writer through its own buffer;
// nothing reaches the underlying writer until Flush.
type Writer struct {
	w   io.Writer
	buf []byte
}

// NewWriter returns a Writer over w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w, buf: make([]byte, 0, 4096)} }

// Reset makes the Writer write to w, dropping anything buffered.
func (w *Writer) Reset(dst io.Writer) {
	w.w = dst
	w.buf = w.buf[:0]
}

// WriteEvent buffers ev.
func (w *Writer) WriteEvent(ev *Event) { w.buf = AppendEvent(w.buf, ev) }

// WriteComment buffers a comment (keep-alive) line.
func (w *Writer) WriteComment(text string) { w.buf = AppendComment(w.buf, text) }

// Buffered reports the bytes waiting for Flush.
func (w *Writer) Buffered() int { return len(w.buf) }

// Flush writes everything buffered in one Write call.
func (w *Writer) Flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.w.Write(w.buf)
	w.buf = w.buf[:0]
	return err
}
