// Package tasklog keeps one task's canonical events, already encoded in wire
// form, for any number of stream readers (SPEC §3.2): late readers replay from
// the start, a reader resuming with Last-Event-ID gets exactly the events after
// that id, and a reader that stops reading never blocks the writer.
//
// The log is one append-only byte buffer plus the offset of each event. Bytes
// below the published length never change, so a reader may write a slice of
// them to its connection without holding the lock while the writer appends.
package tasklog

import (
	"sync"

	"github.com/llama-orch/llama-orch/sse"
)

// Log is one task's event log. The zero value is not usable; call New.
type Log struct {
	mu      sync.Mutex
	buf     []byte // encoded events
	offs    []int  // offs[id] = start of event id in buf
	pub     int    // published length of buf (readers see buf[:pub])
	pubN    int    // published event count
	tokens  int    // token events appended (next canonical i)
	closed  bool   // a terminal event was appended
	readers []*Cursor
}

// New returns an empty log.
func New() *Log {
	return &Log{buf: make([]byte, 0, 1024), offs: make([]int, 0, 32)}
}

// AppendToken appends a token event with the next index i and returns false
// when the log is already closed (a cancel or error won the race: the token is
// dropped). Not visible to readers until Publish.
func (l *Log) AppendToken(text []byte) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.offs = append(l.offs, len(l.buf))
	l.buf = sse.AppendToken(l.buf, uint64(len(l.offs)-1), text, l.tokens)
	l.tokens++
	l.mu.Unlock()
	return true
}

// Append appends a non-token event whose data is encoded JSON. A terminal
// event (end, error) closes the log and publishes at once. It returns false
// when the log was already closed.
func (l *Log) Append(kind sse.Kind, data []byte) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.offs = append(l.offs, len(l.buf))
	l.buf = sse.AppendData(l.buf, uint64(len(l.offs)-1), kind, data)
	if kind.Terminal() {
		l.closed = true
		l.publishLocked()
	}
	l.mu.Unlock()
	return true
}

// PublishDirect is Publish for the goroutine that produces the events (the
// engine relay): when the log has a single reader that is caught up and has
// set a direct writer, this goroutine writes the new bytes to the reader's
// connection itself instead of waking the reader's goroutine — one wake-up
// fewer per token. A reader that is busy (writing, or catching up) is woken
// as by Publish, and so is every reader once the log is closed.
func (l *Log) PublishDirect() {
	l.mu.Lock()
	if l.pub == len(l.buf) && !l.closed {
		l.mu.Unlock()
		return
	}
	var dc *Cursor
	var data []byte
	if len(l.readers) == 1 {
		c := l.readers[0]
		if c.direct != nil && c.pos == l.pub && c.wmu.TryLock() {
			dc, data = c, l.buf[c.pos:len(l.buf):len(l.buf)]
			c.pos = len(l.buf)
		}
	}
	l.pub = len(l.buf)
	l.pubN = len(l.offs)
	for _, c := range l.readers {
		if c != dc || l.closed {
			c.signal()
		}
	}
	l.mu.Unlock()
	if dc == nil {
		return
	}
	if err := dc.direct(data); err != nil {
		dc.err = err
		dc.signal()
	}
	dc.wmu.Unlock()
}

// Publish makes every appended event visible and wakes the readers.
func (l *Log) Publish() {
	l.mu.Lock()
	l.publishLocked()
	l.mu.Unlock()
}

func (l *Log) publishLocked() {
	if l.pub == len(l.buf) && !l.closed {
		return
	}
	l.pub = len(l.buf)
	l.pubN = len(l.offs)
	for _, c := range l.readers {
		c.signal()
	}
}

// Closed reports whether a terminal event was appended.
func (l *Log) Closed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Tokens returns the number of token events appended so far.
func (l *Log) Tokens() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tokens
}

// Events returns the number of published events.
func (l *Log) Events() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pubN
}

// Size returns the bytes held by the log.
func (l *Log) Size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return cap(l.buf) + 8*cap(l.offs)
}

// Readers returns the number of attached cursors.
func (l *Log) Readers() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.readers)
}

// Compact trims a closed log's buffers to their length, so a finished task
// kept for late readers holds only its events (append growth can leave up
// to half of a buffer unused). Readers holding slices of the old buffer keep
// them valid; cursors are offsets and are unaffected.
func (l *Log) Compact() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		return
	}
	if cap(l.buf) > len(l.buf) {
		l.buf = append([]byte(nil), l.buf...)
	}
	if cap(l.offs) > len(l.offs) {
		l.offs = append([]int(nil), l.offs...)
	}
}

// Cursor is one reader's position in a log.
type Cursor struct {
	log  *Log
	pos  int
	wake chan struct{}

	// wmu is held by whoever writes to the reader's connection: the reader
	// itself, or a PublishDirect caller. direct and err are guarded by it
	// (direct also by the log's mutex).
	wmu    sync.Mutex
	direct func([]byte) error
	err    error
}

func (c *Cursor) signal() {
	select {
	case c.wake <- struct{}{}:
	default: // already signalled; the reader will see everything
	}
}

// Lock takes the reader's write lock: hold it around every write the reader
// makes to its connection, so a PublishDirect never interleaves with it.
func (c *Cursor) Lock() { c.wmu.Lock() }

// Unlock releases the write lock.
func (c *Cursor) Unlock() { c.wmu.Unlock() }

// Err returns the error of a failed direct write (call with the lock held).
func (c *Cursor) Err() error { return c.err }

// SetDirect lets PublishDirect write to the reader's connection with w (nil
// stops it). Setting nil waits for a direct write in progress, so after it
// returns w is never called again. Call it without holding the write lock.
func (c *Cursor) SetDirect(w func([]byte) error) {
	c.wmu.Lock()
	c.log.mu.Lock()
	c.direct = w
	c.log.mu.Unlock()
	c.wmu.Unlock()
}

// Subscribe attaches a reader. after < 0 starts at the first event; otherwise
// the reader starts with the event after id `after` (Last-Event-ID). An id
// beyond the published events starts at the next event to be published.
func (l *Log) Subscribe(after int64) *Cursor {
	c := &Cursor{log: l, wake: make(chan struct{}, 1)}
	l.mu.Lock()
	switch {
	case after < 0:
		c.pos = 0
	case after < int64(l.pubN)-1: // not after+1 < pubN: a client's MaxInt64 would wrap
		c.pos = l.offs[after+1]
	default:
		c.pos = l.pub
	}
	l.readers = append(l.readers, c)
	l.mu.Unlock()
	return c
}

// Next returns the published bytes the reader has not seen yet (possibly
// empty) and whether the log is closed with nothing more to read. The slice
// stays valid: the log never rewrites published bytes.
func (c *Cursor) Next() (data []byte, done bool) {
	l := c.log
	l.mu.Lock()
	data = l.buf[c.pos:l.pub:l.pub]
	c.pos = l.pub
	done = l.closed && c.pos == len(l.buf)
	l.mu.Unlock()
	return data, done
}

// Wake is signalled after the log publishes new events.
func (c *Cursor) Wake() <-chan struct{} { return c.wake }

// Close detaches the reader and returns how many readers remain.
func (c *Cursor) Close() int {
	l := c.log
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, r := range l.readers {
		if r == c {
			last := len(l.readers) - 1
			l.readers[i] = l.readers[last]
			l.readers[last] = nil
			l.readers = l.readers[:last]
			break
		}
	}
	return len(l.readers)
}
