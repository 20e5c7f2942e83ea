package sse

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

var tokenTexts = []struct{ name, text string }{
	{"plain", " hello"},                   // the typical llama.cpp token
	{"escapes", "\"hi\"\\\n\t"},           // every byte needs an escape
	{"utf8", " 日本語😀"},                     // multi-byte runes, no escapes
	{"sentence", " The quick brown fox."}, // a merged multi-token frame
}

func BenchmarkAppendToken(b *testing.B) {
	for _, tt := range tokenTexts {
		b.Run(tt.name, func(b *testing.B) {
			text := []byte(tt.text)
			buf := make([]byte, 0, 256)
			b.ReportAllocs()
			b.SetBytes(int64(len(text)))
			for i := 0; b.Loop(); i++ {
				n := i & 1023 // a task's ids and indexes stay small
				buf = AppendToken(buf[:0], uint64(n+1), text, n)
			}
		})
	}
}

func BenchmarkWriterWriteEventToken(b *testing.B) {
	w := NewWriter(io.Discard)
	ev := Event{Kind: KindToken, Text: []byte(" hello")}
	b.ReportAllocs()
	b.SetBytes(int64(len(ev.Text)))
	for i := 0; b.Loop(); i++ {
		n := i & 1023
		ev.ID, ev.Index = uint64(n+1), n
		w.WriteEvent(&ev)
		// Flush as a relay does when the engine has nothing more buffered.
		if w.Buffered() >= 4096 {
			w.Flush()
		}
	}
}

// llamaStream returns the completion_stream capture repeated n times.
func llamaStream(tb testing.TB, n int) (stream []byte, frames int) {
	tb.Helper()
	body, err := os.ReadFile(filepath.Join(fixtureDir, "completion_stream.body.sse"))
	if err != nil {
		tb.Skipf("fixture not available: %v", err)
	}
	return bytes.Repeat(body, n), n * fixtureDataFrames["completion_stream.body.sse"]
}

func BenchmarkReaderLlamaFrames(b *testing.B) {
	stream, frames := llamaStream(b, 100)
	br := bytes.NewReader(stream)
	rd := NewReader(br, 0)
	var f Frame
	b.ReportAllocs()
	b.SetBytes(int64(len(stream) / frames)) // per frame
	for b.Loop() {
		if err := rd.Next(&f); err != nil {
			if err != io.EOF {
				b.Fatal(err)
			}
			br.Reset(stream)
			rd.Reset(br)
		}
	}
}

// loopReader serves data forever, up to chunk bytes per Read, like a
// connection that never closes.
type loopReader struct {
	data  []byte
	off   int
	chunk int
}

func (l *loopReader) Read(p []byte) (int, error) {
	p = p[:min(len(p), l.chunk)]
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}

func TestAllocs(t *testing.T) {
	buf := make([]byte, 0, 256)
	for _, tt := range tokenTexts {
		text := []byte(tt.text)
		if n := testing.AllocsPerRun(100, func() { buf = AppendToken(buf[:0], 12345, text, 678) }); n != 0 {
			t.Errorf("AppendToken(%s) into a pre-sized buffer: %v allocs, want 0", tt.name, n)
		}
	}

	stream, _ := llamaStream(t, 1)
	for _, chunk := range []int{1 << 20, 100, 7} {
		rd := NewReader(&loopReader{data: stream, chunk: chunk}, 0)
		var f Frame
		next := func() {
			if err := rd.Next(&f); err != nil {
				t.Fatal(err)
			}
		}
		for range 100 { // warm up: let the buffer grow to its steady size
			next()
		}
		if n := testing.AllocsPerRun(1000, next); n != 0 {
			t.Errorf("Reader.Next with %d-byte reads in steady state: %v allocs per frame, want 0", chunk, n)
		}
	}

	w := NewWriter(io.Discard)
	ev := Event{Kind: KindToken, Text: []byte(" hello")}
	write := func() {
		w.WriteEvent(&ev)
		w.Flush()
	}
	if n := testing.AllocsPerRun(100, write); n != 0 {
		t.Errorf("Writer.WriteEvent+Flush: %v allocs, want 0", n)
	}
}
