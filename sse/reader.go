package sse

import (
	"bytes"
	"errors"
	"io"
)

// ErrFrameTooLarge is returned by Reader.Next when one event exceeds the
// reader's size limit; the stream cannot be resynchronised after it.
var ErrFrameTooLarge = errors.New("sse: event exceeds the size limit")

// DefaultMaxFrame bounds one engine event. llama.cpp's final frame with its
// generation_settings is about 2 KiB; 1 MiB leaves room for verbose engines
// without letting a broken one grow the buffer without bound.
const DefaultMaxFrame = 1 << 20

// Frame is one event read from a stream. Its slices point into the Reader's
// buffer and stay valid only until the next call to Next or Reset.
type Frame struct {
	// Event is the value of the `event:` field (empty when absent).
	Event []byte
	// ID is the value of the last `id:` field (nil when absent).
	ID []byte
	// Data is the joined value of the `data:` lines (lines joined by '\n').
	Data []byte
	// Comment is true when the block held only comment lines (keep-alives
	// such as ":\n\n" or ": ping\n\n"); Event, ID and Data are then empty.
	Comment bool
}

// Reset clears f for reuse.
func (f *Frame) Reset() {
	f.Event = nil
	f.ID = nil
	f.Data = nil
	f.Comment = false
}

// Reader is a tolerant Server-Sent Events reader for engine streams and for
// the canonical stream alike: it accepts `data:` with or without the space,
// comment lines, `event:` and `id:` lines, CRLF or LF line ends, several
// events in one read and one event split over many reads.
//
// It allocates only when its buffer has to grow to hold a larger event.
type Reader struct {
	r        io.Reader
	buf      []byte
	start    int // first unconsumed byte
	end      int // end of valid bytes
	maxFrame int
	data     []byte // scratch for multi-line data joins
	err      error  // sticky read error
}

// NewReader returns a Reader over r. maxFrame bounds one event; zero or less
// means DefaultMaxFrame.
func NewReader(r io.Reader, maxFrame int) *Reader {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	return &Reader{r: r, buf: make([]byte, 4096), maxFrame: maxFrame}
}

// Reset makes the Reader read from r, keeping its buffers.
func (rd *Reader) Reset(r io.Reader) {
	rd.r = r
	rd.start, rd.end = 0, 0
	rd.err = nil
}

// Buffered reports how many bytes were read from the underlying reader but not
// yet returned as frames. Zero means the next Next call has to read (and may
// block): the right moment for a relay to flush what it has.
func (rd *Reader) Buffered() int { return rd.end - rd.start }

// Next reads the next event into f. It returns io.EOF at a clean end of the
// stream (nothing pending), io.ErrUnexpectedEOF when the stream ends inside an
// event, ErrFrameTooLarge for an oversized event, or the underlying read
// error. Blocks holding only blank lines are skipped.
func (rd *Reader) Next(f *Frame) error {
	f.Reset()
	for {
		block, ok := rd.nextBlock()
		if !ok {
			if rd.err != nil {
				return rd.err
			}
			if err := rd.fill(); err != nil {
				rd.err = err
				if err == io.EOF && rd.end > rd.start {
					// A last event without its blank line: the stream was cut.
					if len(bytes.TrimSpace(rd.buf[rd.start:rd.end])) > 0 {
						rd.err = io.ErrUnexpectedEOF
					}
				}
				return rd.err
			}
			continue
		}
		if parseBlock(block, f, &rd.data) {
			return nil
		}
	}
}

// nextBlock returns the next complete block (without its terminating blank
// line) and consumes it.
func (rd *Reader) nextBlock() ([]byte, bool) {
	b := rd.buf[rd.start:rd.end]
	i := 0
	for {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return nil, false
		}
		j += i
		// Line ends at j. Is the next line empty (\n or \r\n)?
		k := j + 1
		if k < len(b) && b[k] == '\n' {
			rd.start += k + 1
			return b[:j], true
		}
		if k+1 < len(b) && b[k] == '\r' && b[k+1] == '\n' {
			rd.start += k + 2
			return b[:j], true
		}
		if k >= len(b) || (b[k] == '\r' && k+1 >= len(b)) {
			return nil, false
		}
		i = k
	}
}

// fill reads more bytes, compacting or growing the buffer as needed.
func (rd *Reader) fill() error {
	if rd.start > 0 {
		n := copy(rd.buf, rd.buf[rd.start:rd.end])
		rd.start, rd.end = 0, n
	}
	if rd.end == len(rd.buf) {
		if len(rd.buf) >= rd.maxFrame {
			return ErrFrameTooLarge
		}
		nb := make([]byte, min(2*len(rd.buf), rd.maxFrame))
		copy(nb, rd.buf[:rd.end])
		rd.buf = nb
	}
	for tries := 0; tries < 100; tries++ {
		n, err := rd.r.Read(rd.buf[rd.end:])
		rd.end += n
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// parseBlock fills f from one block of lines; false when the block holds
// nothing (only blank lines).
func parseBlock(block []byte, f *Frame, scratch *[]byte) bool {
	nData := 0
	sawComment := false
	sawField := false
	for len(block) > 0 {
		var line []byte
		if i := bytes.IndexByte(block, '\n'); i >= 0 {
			line, block = block[:i], block[i+1:]
		} else {
			line, block = block, nil
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			continue
		}
		if line[0] == ':' {
			sawComment = true
			continue
		}
		name, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			name, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(name) {
		case "data":
			sawField = true
			switch nData {
			case 0:
				f.Data = value
			case 1:
				*scratch = append(append(append((*scratch)[:0], f.Data...), '\n'), value...)
				f.Data = *scratch
			default:
				*scratch = append(append(*scratch, '\n'), value...)
				f.Data = *scratch
			}
			nData++
		case "event":
			sawField = true
			f.Event = value
		case "id":
			sawField = true
			f.ID = value
		default:
			// Unknown fields (retry:, or old llama.cpp `error:` lines) are kept
			// visible to the caller as an event named after the field.
			if string(name) == "error" {
				sawField = true
				f.Event = name
				f.Data = value
			}
		}
	}
	if sawField {
		return true
	}
	if sawComment {
		f.Comment = true
		return true
	}
	return false
}
