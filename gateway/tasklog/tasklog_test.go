package tasklog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"

	"go.uber.org/goleak"

	"github.com/llama-orch/llama-orch/sse"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ev is one event as a test writes it and expects to read it back.
type ev struct {
	kind sse.Kind
	text string // token text
	data string // JSON of other kinds
}

var (
	started = ev{kind: sse.KindStarted, data: `{"queue_position":0,"engine":"fake"}`}
	metrics = ev{kind: sse.KindMetrics, data: `{"queue_depth":1}`}
	end     = ev{kind: sse.KindEnd, data: `{"tokens_out":3,"finish_reason":"stop"}`}
	failed  = ev{kind: sse.KindError, data: `{"code":"CANCELED","retriable":false}`}
)

func tok(s string) ev { return ev{kind: sse.KindToken, text: s} }

// write appends evs to l (without Publish) and reports whether all were
// accepted.
func write(l *Log, evs ...ev) bool {
	ok := true
	for _, e := range evs {
		if e.kind == sse.KindToken {
			ok = l.AppendToken([]byte(e.text)) && ok
		} else {
			ok = l.Append(e.kind, []byte(e.data)) && ok
		}
	}
	return ok
}

// got is one event parsed back from the wire.
type got struct {
	id   uint64
	kind sse.Kind
	text string // token text, decoded
	i    int    // token index
	data string // raw data of other kinds
}

func (g got) String() string {
	if g.kind == sse.KindToken {
		return fmt.Sprintf("%d:token(%q,i=%d)", g.id, g.text, g.i)
	}
	return fmt.Sprintf("%d:%v(%s)", g.id, g.kind, g.data)
}

// parse reads b with the sse package's reader, as a client would; b must
// hold whole events.
func parse(t testing.TB, b []byte) []got {
	t.Helper()
	rd := sse.NewReader(bytes.NewReader(b), 0)
	var out []got
	var f sse.Frame
	for {
		err := rd.Next(&f)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("parse: %v after %d events", err, len(out))
		}
		id, err := strconv.ParseUint(string(f.ID), 10, 64)
		if err != nil {
			t.Fatalf("parse: event without a numeric id: %q", f.ID)
		}
		g := got{id: id, kind: sse.ParseKind(f.Event)}
		switch g.kind {
		case 0:
			t.Fatalf("parse: unknown event %q", f.Event)
		case sse.KindToken:
			var d struct {
				T *string `json:"t"`
				I *int    `json:"i"`
			}
			if err := json.Unmarshal(f.Data, &d); err != nil || d.T == nil || d.I == nil {
				t.Fatalf("parse: token data %q: %v", f.Data, err)
			}
			g.text, g.i = *d.T, *d.I
		default:
			if !json.Valid(f.Data) {
				t.Fatalf("parse: %v data is not JSON: %q", g.kind, f.Data)
			}
			g.data = string(f.Data)
		}
		out = append(out, g)
	}
}

// want returns what evs read back as when they are a whole log: ids and
// token indexes count from 0. Resumed readers compare against a tail of it.
func want(evs []ev) []got {
	var out []got
	tokens := 0
	for id, e := range evs {
		g := got{id: uint64(id), kind: e.kind}
		if e.kind == sse.KindToken {
			// Each invalid UTF-8 byte reads back as U+FFFD, as with encoding/json.
			g.text, g.i = string([]rune(e.text)), tokens
			tokens++
		} else {
			g.data = e.data
		}
		out = append(out, g)
	}
	return out
}

func equalGot(a, b []got) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// readAll reads c until the log's terminal event, waiting on Wake.
func readAll(c *Cursor) []byte {
	var out []byte
	for {
		data, done := c.Next()
		out = append(out, data...)
		if done {
			return out
		}
		<-c.Wake()
	}
}

// sample is a whole stream: started, tokens (with text that needs
// escaping), metrics between tokens, end.
var sample = []ev{
	started, tok("Hello"), tok(","), metrics, tok(" \"wörld\"\n"), tok(""),
	tok("\xff\xfebad"), tok("\u2028"), metrics, tok("!"), end,
}

func TestIDsAndTokenIndex(t *testing.T) {
	l := New()
	if !write(l, sample...) {
		t.Fatal("an append was refused")
	}
	b := readAll(l.Subscribe(-1))
	if g, w := parse(t, b), want(sample); !equalGot(g, w) {
		t.Fatalf("read back\n%v\nwant\n%v", g, w)
	}
	if l.Tokens() != 7 || l.Events() != len(sample) {
		t.Fatalf("Tokens=%d Events=%d, want 7, %d", l.Tokens(), l.Events(), len(sample))
	}
	if l.Size() < len(b) {
		t.Fatalf("Size %d < %d bytes held", l.Size(), len(b))
	}
}

// TestWireFormat pins the bytes of a short log (the contract clients parse).
func TestWireFormat(t *testing.T) {
	l := New()
	write(l, started, tok("a\"b"), end)
	const w = "id: 0\nevent: started\ndata: {\"queue_position\":0,\"engine\":\"fake\"}\n\n" +
		"id: 1\nevent: token\ndata: {\"t\":\"a\\\"b\",\"i\":0}\n\n" +
		"id: 2\nevent: end\ndata: {\"tokens_out\":3,\"finish_reason\":\"stop\"}\n\n"
	if b := readAll(l.Subscribe(-1)); string(b) != w {
		t.Fatalf("wire bytes\n%q\nwant\n%q", b, w)
	}
}

func TestInvisibleBeforePublish(t *testing.T) {
	l := New()
	c := l.Subscribe(-1)
	write(l, started, tok("a"), metrics)
	if data, done := c.Next(); len(data) != 0 || done {
		t.Fatalf("before Publish: Next = %q, %v", data, done)
	}
	if l.Events() != 0 || l.Tokens() != 1 {
		t.Fatalf("before Publish: Events=%d Tokens=%d, want 0, 1", l.Events(), l.Tokens())
	}
	// A reader attaching now does not see them either.
	late := l.Subscribe(-1)
	l.Publish()
	for _, c := range []*Cursor{c, late} {
		data, done := c.Next()
		if g, w := parse(t, data), want([]ev{started, tok("a"), metrics}); done || !equalGot(g, w) {
			t.Fatalf("after Publish: %v (done %v), want %v", g, done, w)
		}
	}
	// Appended after the Publish: invisible again until the next one.
	write(l, tok("b"))
	if data, _ := c.Next(); len(data) != 0 {
		t.Fatalf("unpublished token visible: %q", data)
	}
}

func TestTerminalClosesLog(t *testing.T) {
	tests := []struct {
		name     string
		terminal ev
	}{
		// A normal end.
		{"end", end},
		// A cancel or failure.
		{"error", failed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New()
			c := l.Subscribe(-1)
			write(l, started, tok("a"))
			if l.Closed() {
				t.Fatal("Closed before the terminal event")
			}
			// No Publish: the terminal event publishes everything itself.
			if !l.Append(tt.terminal.kind, []byte(tt.terminal.data)) {
				t.Fatal("terminal Append refused")
			}
			if !l.Closed() || l.Events() != 3 {
				t.Fatalf("after terminal: Closed=%v Events=%d", l.Closed(), l.Events())
			}
			before := readAll(c)
			// Everything after is dropped: tokens, more events, a second terminal.
			if l.AppendToken([]byte("late")) {
				t.Fatal("AppendToken after the terminal event = true")
			}
			for _, e := range []ev{metrics, end, failed} {
				if l.Append(e.kind, []byte(e.data)) {
					t.Fatalf("Append(%v) after the terminal event = true", e.kind)
				}
			}
			l.Publish()
			if l.Events() != 3 || l.Tokens() != 1 {
				t.Fatalf("dropped events counted: Events=%d Tokens=%d", l.Events(), l.Tokens())
			}
			after := readAll(l.Subscribe(-1))
			if !bytes.Equal(before, after) {
				t.Fatalf("log changed after close:\n%q\n%q", before, after)
			}
			if g, w := parse(t, after), want([]ev{started, tok("a"), tt.terminal}); !equalGot(g, w) {
				t.Fatalf("read back %v, want %v", g, w)
			}
		})
	}
}

// TestCancelRace: a cancel (terminal error) races a writer appending tokens;
// exactly the tokens whose AppendToken returned true are in the log, all
// before the error, and none is ever visible after it (SPEC §3.3).
func TestCancelRace(t *testing.T) {
	for iter := range 20 {
		l := New()
		c := l.Subscribe(-1)
		accepted, reached := make(chan int), make(chan struct{})
		go func() {
			n := 0
			for l.AppendToken([]byte("x")) {
				if n == iter*10 {
					close(reached) // let the cancel race the next appends
				}
				n++
				if n%3 == 0 {
					l.Publish()
				}
			}
			accepted <- n
		}()
		<-reached
		if !l.Append(sse.KindError, []byte(failed.data)) {
			t.Fatal("cancel refused")
		}
		n := <-accepted
		evs := parse(t, readAll(c))
		if len(evs) != n+1 || evs[n].kind != sse.KindError {
			t.Fatalf("iteration %d: %d tokens accepted but read %d events ending with %v", iter, n, len(evs), evs[len(evs)-1])
		}
		for i, e := range evs[:n] {
			if e.kind != sse.KindToken || e.i != i {
				t.Fatalf("event %d = %v, want token %d", i, e, i)
			}
		}
	}
}

func TestSubscribeFromStart(t *testing.T) {
	l := New()
	write(l, sample...)
	full := readAll(l.Subscribe(-1))
	// Any negative id means "from the start".
	for _, after := range []int64{-1, -2, math.MinInt64} {
		if b := readAll(l.Subscribe(after)); !bytes.Equal(b, full) {
			t.Fatalf("Subscribe(%d) read %q, want the whole log", after, b)
		}
	}
}

// TestSubscribeResumeClosed resumes after every event id of a finished log,
// and after ids beyond its end.
func TestSubscribeResumeClosed(t *testing.T) {
	l := New()
	write(l, sample...)
	w := want(sample)
	for k := int64(-1); k < int64(len(sample))+3; k++ {
		b := readAll(l.Subscribe(k))
		first := min(int(k+1), len(w))
		if g := parse(t, b); !equalGot(g, w[first:]) {
			t.Fatalf("Subscribe(%d) read %v, want %v", k, g, w[first:])
		}
	}
	// A client's absurd Last-Event-ID neither panics nor wedges the log.
	if b := readAll(l.Subscribe(math.MaxInt64)); len(b) != 0 {
		t.Fatalf("Subscribe(MaxInt64) on a closed log read %q", b)
	}
}

// TestSubscribeResumeLive resumes after every published id of a running
// log: the reader gets exactly the events after it, those already published
// and those still to come, with no gap and no duplicate.
func TestSubscribeResumeLive(t *testing.T) {
	const published = 6 // sample[:6] published, sample[6:8] appended only
	w := want(sample)
	for k := int64(-1); k < published; k++ {
		l := New()
		write(l, sample[:published]...)
		l.Publish()
		write(l, sample[published:8]...)
		c := l.Subscribe(k)
		write(l, sample[8:]...)
		if g := parse(t, readAll(c)); !equalGot(g, w[k+1:]) {
			t.Fatalf("Subscribe(%d) read %v, want %v", k, g, w[k+1:])
		}
	}
}

// TestSubscribeBeyondPublished documents the choice for an id no reader can
// have seen yet (a bogus Last-Event-ID): the reader starts with the next
// published event, as if it had read everything published so far.
func TestSubscribeBeyondPublished(t *testing.T) {
	w := want(sample)
	for _, k := range []int64{3, 4, 7, 100, math.MaxInt64 - 1, math.MaxInt64} {
		l := New()
		write(l, sample[:4]...)
		l.Publish()
		write(l, sample[4:6]...) // appended, not published
		c := l.Subscribe(k)
		write(l, sample[6:]...)
		if g := parse(t, readAll(c)); !equalGot(g, w[4:]) {
			t.Fatalf("Subscribe(%d) read %v, want %v", k, g, w[4:])
		}
	}
}

func TestSeveralCursors(t *testing.T) {
	l := New()
	first := l.Subscribe(-1)
	second := l.Subscribe(-1)
	write(l, sample[:5]...)
	l.Publish()
	partial, _ := second.Next() // reads some, then the rest later
	mid := l.Subscribe(-1)
	write(l, sample[5:]...)
	last := l.Subscribe(-1) // after the end: late readers replay it all
	full := readAll(last)
	if g := parse(t, full); !equalGot(g, want(sample)) {
		t.Fatalf("late reader read %v", g)
	}
	if b := readAll(first); !bytes.Equal(b, full) {
		t.Fatalf("first reader read %q", b)
	}
	if b := append(partial, readAll(second)...); !bytes.Equal(b, full) {
		t.Fatalf("second reader read %q", b)
	}
	if b := readAll(mid); !bytes.Equal(b, full) {
		t.Fatalf("mid reader read %q", b)
	}
}

// TestIdleCursorDoesNotBlock attaches a reader that never reads while the
// writer appends and publishes 100k tokens. Inside a synctest bubble a
// writer blocked on the reader's wake channel would be reported as a
// deadlock instead of hanging.
func TestIdleCursorDoesNotBlock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 100_000
		l := New()
		idle := l.Subscribe(-1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range n {
				if !l.AppendToken([]byte("tok")) {
					t.Error("AppendToken refused")
					return
				}
				l.Publish()
			}
			l.Append(sse.KindEnd, []byte(end.data))
		}()
		<-done
		// The idle reader was signalled (one pending wake, however many
		// publishes) and finds everything in one Next.
		select {
		case <-idle.Wake():
		default:
			t.Fatal("no wake pending for the idle reader")
		}
		select {
		case <-idle.Wake():
			t.Fatal("more than one wake pending")
		default:
		}
		data, done2 := idle.Next()
		evs := parse(t, data)
		if !done2 || len(evs) != n+1 || evs[n-1].i != n-1 || evs[n].kind != sse.KindEnd {
			t.Fatalf("idle reader: done=%v, %d events", done2, len(evs))
		}
	})
}

// pending reports whether c has a wake signal waiting, consuming it.
func pending(c *Cursor) bool {
	select {
	case <-c.Wake():
		return true
	default:
		return false
	}
}

func TestWake(t *testing.T) {
	l := New()
	a, b := l.Subscribe(-1), l.Subscribe(-1)
	steps := []struct {
		name string
		do   func()
		wake bool
	}{
		// Nothing happened yet.
		{"fresh", func() {}, false},
		// Appends alone are invisible, so they do not wake.
		{"append token", func() { write(l, tok("a")) }, false},
		// Non-terminal events wait for Publish too.
		{"append metrics", func() { write(l, metrics) }, false},
		// Publish wakes every reader.
		{"publish", l.Publish, true},
		// Publishing nothing new wakes nobody.
		{"empty publish", l.Publish, false},
		// Append and publish again.
		{"second publish", func() { write(l, tok("b")); l.Publish() }, true},
		// A terminal event publishes and wakes by itself.
		{"terminal", func() { write(l, end) }, true},
	}
	for _, s := range steps {
		s.do()
		for name, c := range map[string]*Cursor{"a": a, "b": b} {
			if got := pending(c); got != s.wake {
				t.Fatalf("%s: reader %s woken = %v, want %v", s.name, name, got, s.wake)
			}
		}
	}
}

func TestNextDone(t *testing.T) {
	l := New()
	c := l.Subscribe(-1)
	write(l, started, tok("a"))
	l.Publish()
	if data, done := c.Next(); done || len(data) == 0 {
		t.Fatalf("open log: Next = %d bytes, done %v", len(data), done)
	}
	// Caught up but the log is open: not done.
	if data, done := c.Next(); done || len(data) != 0 {
		t.Fatalf("caught up: Next = %q, done %v", data, done)
	}
	write(l, tok("b"), end)
	// The call that returns the terminal event reports done with it.
	data, done := c.Next()
	if g, w := parse(t, data), want([]ev{started, tok("a"), tok("b"), end})[2:]; !done || !equalGot(g, w) {
		t.Fatalf("final Next = %v, done %v; want %v, true", g, done, w)
	}
	// And every later call too, with nothing more.
	if data, done := c.Next(); !done || len(data) != 0 {
		t.Fatalf("after the end: Next = %q, done %v", data, done)
	}
	// A reader resuming after the terminal event is done at once.
	if data, done := l.Subscribe(3).Next(); !done || len(data) != 0 {
		t.Fatalf("resume after end: Next = %q, done %v", data, done)
	}
	// A reader resuming before it is done only with it.
	if data, done := l.Subscribe(2).Next(); !done || len(parse(t, data)) != 1 {
		t.Fatalf("resume before end: Next = %q, done %v", data, done)
	}
}

func TestCloseDetaches(t *testing.T) {
	l := New()
	a, b, c := l.Subscribe(-1), l.Subscribe(-1), l.Subscribe(-1)
	if l.Readers() != 3 {
		t.Fatalf("Readers = %d, want 3", l.Readers())
	}
	if n := b.Close(); n != 2 || l.Readers() != 2 {
		t.Fatalf("Close of the middle reader = %d (Readers %d), want 2", n, l.Readers())
	}
	if n := b.Close(); n != 2 {
		t.Fatalf("second Close = %d, want 2 (no effect)", n)
	}
	write(l, tok("x"))
	l.Publish()
	if pending(b) {
		t.Fatal("detached reader woken")
	}
	if !pending(a) || !pending(c) {
		t.Fatal("remaining readers not woken")
	}
	// A detached cursor may still drain what is published.
	if data, _ := b.Next(); len(parse(t, data)) != 1 {
		t.Fatalf("detached Next = %q", data)
	}
	a.Close()
	if n := c.Close(); n != 0 || l.Readers() != 0 {
		t.Fatalf("last Close = %d (Readers %d), want 0", n, l.Readers())
	}
}

// TestConcurrentReaders runs a writer and readers that attach at different
// times, some dropping their connection and resuming with the last id they
// saw (run with -race). Every reader reassembles exactly the log's bytes, and
// those bytes parse into the events written.
func TestConcurrentReaders(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	texts := []string{"a", "bc", " \"q\"", "\n", "é", "日本", "\xff", "\\", "", "🦙", "\u2028"}
	var evs []ev
	evs = append(evs, started)
	for i := range 5000 {
		evs = append(evs, tok(texts[rng.IntN(len(texts))]))
		if i%500 == 0 {
			evs = append(evs, metrics)
		}
	}
	evs = append(evs, end)

	l := New()
	var wg sync.WaitGroup
	results := make([][]byte, 8)
	startReader := func(i int, resumeEvery int) {
		wg.Go(func() {
			var out []byte
			c := l.Subscribe(-1)
			reads := 0
			for {
				data, done := c.Next()
				out = append(out, data...)
				if done {
					c.Close()
					break
				}
				reads++
				if resumeEvery > 0 && reads%resumeEvery == 0 && len(out) > 0 {
					// Reconnect with Last-Event-ID: the id of the last whole event read.
					seen := parse(t, out)
					c.Close()
					c = l.Subscribe(int64(seen[len(seen)-1].id))
					continue // a new cursor has no wake pending: read first
				}
				<-c.Wake()
			}
			results[i] = out
		})
	}
	for i := range 4 {
		startReader(i, 0) // attached from the start
	}
	for i := 4; i < 6; i++ {
		startReader(i, 7) // reconnect every seventh read
	}
	wg.Go(func() {
		for i, e := range evs {
			write(l, e)
			if i%(1+i%5) == 0 {
				l.Publish()
			}
			if i == len(evs)/2 {
				startReader(6, 0) // late readers replay from the start
				startReader(7, 3)
			}
		}
	})
	wg.Wait()
	full := readAll(l.Subscribe(-1))
	if g, w := parse(t, full), want(evs); !equalGot(g, w) {
		t.Fatalf("log parses into %d events, want %d", len(g), len(w))
	}
	for i, b := range results {
		if !bytes.Equal(b, full) {
			t.Fatalf("reader %d read %d bytes, want the log's %d", i, len(b), len(full))
		}
	}
	if l.Readers() != 1 {
		t.Fatalf("Readers = %d after every reader closed, want 1 (the final one)", l.Readers())
	}
}

func TestAllocs(t *testing.T) {
	l := New()
	c := l.Subscribe(-1)
	text := []byte("token")
	// Warm up: let buf and offs grow well past what is measured.
	for range 20_000 {
		l.AppendToken(text)
	}
	l.Publish()
	c.Next()
	if n := testing.AllocsPerRun(100, func() { l.Publish(); c.Next(); pending(c) }); n != 0 {
		t.Fatalf("Publish+Next allocate %v times", n)
	}
	// Appending grows the log by amortized doubling: 1000 tokens may cost a
	// few reallocations, never one per token.
	if n := testing.AllocsPerRun(1, func() {
		for range 1000 {
			l.AppendToken(text)
			l.Publish()
		}
	}); n > 4 {
		t.Fatalf("1000 AppendToken+Publish allocate %v times", n)
	}
}

// BenchmarkAppendTokenPublish is the per-token writer path: append one token
// and publish it. Each log holds logLen tokens (a long completion), so the
// amortized cost of growing buf and offs is included; allocs/token reports
// it unrounded.
func BenchmarkAppendTokenPublish(b *testing.B) {
	const logLen = 4096
	text := []byte(" token")
	for _, readers := range []int{0, 1, 8} {
		b.Run(fmt.Sprintf("readers=%d", readers), func(b *testing.B) {
			var ms0, ms1 runtime.MemStats
			newLog := func() *Log {
				l := New()
				for range readers {
					l.Subscribe(-1) // idle: its wake stays pending
				}
				return l
			}
			l := newLog()
			n := 0
			b.ReportAllocs()
			runtime.ReadMemStats(&ms0)
			for b.Loop() {
				if n%logLen == 0 && n > 0 {
					l = newLog()
				}
				l.AppendToken(text)
				l.Publish()
				n++
			}
			runtime.ReadMemStats(&ms1)
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(n), "allocs/token")
		})
	}
}

// BenchmarkAppendTokenPublishSteady is the same path on one ever-growing
// log (no per-log setup): the allocations left are buf/offs growth only.
func BenchmarkAppendTokenPublishSteady(b *testing.B) {
	text := []byte(" token")
	l := New()
	l.Subscribe(-1)
	var ms0, ms1 runtime.MemStats
	n := 0
	b.ReportAllocs()
	runtime.ReadMemStats(&ms0)
	for b.Loop() {
		l.AppendToken(text)
		l.Publish()
		n++
	}
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(n), "allocs/token")
}

// BenchmarkCursorNext is a reader catching up after each published token.
func BenchmarkCursorNext(b *testing.B) {
	l := New()
	c := l.Subscribe(-1)
	text := []byte(" token")
	b.ReportAllocs()
	for b.Loop() {
		l.AppendToken(text)
		l.Publish()
		<-c.Wake()
		if data, _ := c.Next(); len(data) == 0 {
			b.Fatal("nothing read")
		}
	}
}
