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
	// Event is the value of the `event:` field (nil when absent).
	Event []byte
	// ID is the value of the last `id:` field (nil when absent, empty for a
	// bare `id:`, which the SSE spec uses to clear the last event ID).
	ID []byte
	// Data is the joined value of the `data:` lines (lines joined by '\n');
	// nil when the event had no data line, empty for a bare `data:`.
	Data []byte
	// Comment is true when the block held only comment lines (keep-alives
	// such as ":\n\n" or ": ping\n\n"); Event, ID and Data are then nil.
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
// events in one read and one event split over many reads. A lone CR is not a
// line end (no engine sends one).
//
// It allocates only when its buffer has to grow to hold a larger event.
type Reader struct {
	r        io.Reader
	buf      []byte
	start    int // first unconsumed byte
	end      int // end of valid bytes
	maxFrame int
	// scan is where the search for the end of the block at start resumes
	// (relative to start), so an event split over many reads is scanned once.
	scan int
	// When ready, buf[start:blockEnd] is a complete block worth returning and
	// its terminating blank line ends at blockNext.
	ready     bool
	blockEnd  int
	blockNext int
	// multiLine is set once a line end is seen inside the block at start;
	// a one-line block (the usual engine event) is then not rescanned.
	multiLine bool
	data      []byte // scratch for multi-line data joins
	err       error  // sticky read error
}

// NewReader returns a Reader over r. maxFrame bounds one event, counting its
// terminating blank line; zero or less means DefaultMaxFrame.
func NewReader(r io.Reader, maxFrame int) *Reader {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	return &Reader{r: r, buf: make([]byte, min(4096, maxFrame)), maxFrame: maxFrame}
}

// Reset makes the Reader read from r, keeping its buffers.
func (rd *Reader) Reset(r io.Reader) {
	rd.r = r
	rd.start, rd.end, rd.scan = 0, 0, 0
	rd.ready, rd.multiLine = false, false
	rd.err = nil
}

// Buffered reports how many bytes were read from the underlying reader but not
// yet returned as frames, or 0 when they hold no complete event. Zero means
// the next Next call has to read (and may block): the right moment for a relay
// to flush what it has. Non-zero means the next Next returns a frame at once.
func (rd *Reader) Buffered() int {
	if !rd.ready {
		return 0
	}
	return rd.end - rd.start
}

// Next reads the next event into f. It returns io.EOF at a clean end of the
// stream (nothing pending), io.ErrUnexpectedEOF when the stream ends inside an
// event, ErrFrameTooLarge for an oversized event, or the underlying read
// error. Blocks holding only blank lines or unknown fields are skipped.
func (rd *Reader) Next(f *Frame) error {
	f.Reset()
	for !rd.ready && !rd.findBlock() {
		if rd.err != nil {
			return rd.err
		}
		if err := rd.fill(); err != nil {
			if err == io.EOF && len(bytes.TrimSpace(rd.buf[rd.start:rd.end])) > 0 {
				// A last event without its blank line: the stream was cut.
				err = io.ErrUnexpectedEOF
			}
			rd.err = err
			return err
		}
	}
	block := rd.buf[rd.start:rd.blockEnd]
	oneLine := !rd.multiLine
	rd.start = rd.blockNext
	rd.ready, rd.multiLine = false, false
	if !parseBlock(block, oneLine, f, &rd.data) {
		panic("BUG: sse: findBlock and parseBlock disagree on an empty block")
	}
	// Look ahead now so that Buffered can tell whether the next Next must read.
	rd.findBlock()
	return nil
}

// findBlock reports whether a complete block worth returning starts at
// rd.start, consuming blank and ignorable blocks on the way.
func (rd *Reader) findBlock() bool {
	for {
		b := rd.buf[rd.start:rd.end]
		i := rd.scan
		for {
			j := bytes.IndexByte(b[i:], '\n')
			if j < 0 {
				rd.scan = len(b)
				return false
			}
			j += i
			// A line ends at j. The block ends if the next line is empty.
			next, k := 0, j+1
			switch {
			case k < len(b) && b[k] == '\n':
				next = k + 1
			case k+1 < len(b) && b[k] == '\r' && b[k+1] == '\n':
				next = k + 2
			case k == len(b) || (k+1 == len(b) && b[k] == '\r'):
				rd.scan = j // cannot tell yet: resume at this line end
				return false
			default:
				rd.multiLine = true
				i = k
				continue
			}
			rd.scan = 0
			if hasContent(b[:j]) {
				rd.ready = true
				rd.blockEnd = rd.start + j
				rd.blockNext = rd.start + next
				return true
			}
			rd.start += next
			rd.multiLine = false
			break
		}
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

// hasContent reports whether parseBlock would make a frame of block. It
// looks only at the start of each line, so the usual one-line event is not
// scanned a second time.
func hasContent(block []byte) bool {
	for len(block) > 0 {
		if keptLine(block) {
			return true
		}
		i := bytes.IndexByte(block, '\n')
		if i < 0 {
			return false
		}
		block = block[i+1:]
	}
	return false
}

// keptLine reports whether the line at the start of b is a comment or a
// field that parseBlock keeps. Constant compares keep it to a few loads.
func keptLine(b []byte) bool {
	switch {
	case b[0] == ':':
		return true
	case len(b) >= 4 && string(b[:4]) == "data":
		b = b[4:]
	case len(b) >= 2 && string(b[:2]) == "id":
		b = b[2:]
	case len(b) >= 5 && (string(b[:5]) == "event" || string(b[:5]) == "error"):
		b = b[5:]
	default:
		return false
	}
	// The name must end the line or be followed by the colon.
	return len(b) == 0 || b[0] == ':' || b[0] == '\n' || (b[0] == '\r' && (len(b) == 1 || b[1] == '\n'))
}

// parseBlock fills f from one block of lines; false when the block holds
// nothing (only blank lines or unknown fields). oneLine says block has no
// line end, sparing a scan of the whole event.
func parseBlock(block []byte, oneLine bool, f *Frame, scratch *[]byte) bool {
	nData := 0
	sawComment := false
	sawField := false
	for len(block) > 0 {
		line := block
		if oneLine {
			block = nil
		} else if i := bytes.IndexByte(block, '\n'); i >= 0 {
			line, block = block[:i], block[i+1:]
		} else {
			block = nil
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
		// A line without a colon is a field with an empty (non-nil) value.
		name, value := line, line[len(line):]
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			name, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(name) {
		case "error":
			// Very old llama.cpp builds sent a non-standard `error: {...}`
			// line: read it as `event: error` plus a data line.
			f.Event = name
			fallthrough
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
			// retry: and unknown fields are ignored, as the SSE spec says.
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
