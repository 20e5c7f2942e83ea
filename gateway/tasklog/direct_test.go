package tasklog

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/llama-orch/llama-orch/sse"
)

// TestPublishDirect: a sole, caught-up reader with a direct writer gets new
// bytes written by the publisher without a wake-up; with two readers, or a
// reader behind, everyone is woken instead; a closed log always wakes.
func TestPublishDirect(t *testing.T) {
	l := New()
	c := l.Subscribe(-1)
	var got bytes.Buffer
	c.SetDirect(func(p []byte) error { got.Write(p); return nil })

	l.AppendToken([]byte("a"))
	l.PublishDirect()
	select {
	case <-c.Wake():
		t.Fatal("caught-up sole reader was woken instead of written to")
	default:
	}
	if !bytes.Contains(got.Bytes(), []byte(`"t":"a"`)) {
		t.Fatalf("direct bytes %q", got.Bytes())
	}
	if data, done := c.Next(); len(data) != 0 || done {
		t.Fatalf("cursor did not advance past the direct write: %q %v", data, done)
	}

	// A second reader: no direct write, both woken.
	c2 := l.Subscribe(-1)
	before := got.Len()
	l.AppendToken([]byte("b"))
	l.PublishDirect()
	if got.Len() != before {
		t.Fatal("direct write with two readers")
	}
	<-c.Wake()
	<-c2.Wake()
	c2.Close()
	if data, _ := c.Next(); !bytes.Contains(data, []byte(`"t":"b"`)) {
		t.Fatalf("woken reader's bytes %q", data)
	}

	// Closing the log writes the terminal event directly and wakes too.
	l.Append(sse.KindEnd, []byte(`{}`))
	l.PublishDirect()
	<-c.Wake()
	if _, done := c.Next(); !done {
		t.Fatal("not done after the terminal event")
	}
}

// TestPublishDirectError: a failed direct write is kept for the reader and
// wakes it.
func TestPublishDirectError(t *testing.T) {
	l := New()
	c := l.Subscribe(-1)
	boom := errors.New("client gone")
	c.SetDirect(func([]byte) error { return boom })
	l.AppendToken([]byte("x"))
	l.PublishDirect()
	<-c.Wake()
	c.Lock()
	err := c.Err()
	c.Unlock()
	if !errors.Is(err, boom) {
		t.Fatalf("Err = %v", err)
	}
}

// TestDirectAndReaderInterleave: a publisher using PublishDirect and a reader
// writing under the cursor lock produce exactly the log's bytes, in order.
func TestDirectAndReaderInterleave(t *testing.T) {
	l := New()
	c := l.Subscribe(-1)
	var mu sync.Mutex
	var out bytes.Buffer
	write := func(p []byte) error { mu.Lock(); out.Write(p); mu.Unlock(); return nil }
	c.SetDirect(write)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c.Lock()
			data, fin := c.Next()
			if len(data) > 0 {
				write(data) //nolint:errcheck
			}
			c.Unlock()
			if fin {
				return
			}
			<-c.Wake()
		}
	}()
	for i := 0; i < 5000; i++ {
		l.AppendToken([]byte("t"))
		if i%3 == 0 {
			l.Publish() // wake path
		} else {
			l.PublishDirect()
		}
	}
	l.Append(sse.KindEnd, []byte(`{}`))
	<-done
	c.SetDirect(nil)
	all := l.Subscribe(-1)
	want, _ := all.Next()
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("reassembled %d bytes, log has %d", out.Len(), len(want))
	}
}
