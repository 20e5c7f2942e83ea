package llamacpp

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/sse"
)

// typicalFrame is a llama.cpp partial frame as it appears on the wire.
var typicalFrame = []byte(`{"index":0,"content":" representations","tokens":[22540],"stop":false,"id_slot":-1,"tokens_predicted":3,"tokens_evaluated":2}`)

func BenchmarkScanFrame(b *testing.B) {
	var fr frame
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalFrame)))
	for b.Loop() {
		if err := fr.scan(typicalFrame); err != nil || string(fr.content) != " representations" {
			b.Fatal(err)
		}
	}
}

// benchVocab mixes plain words with text that needs escapes and non-ASCII.
var benchVocab = []string{" the", " model", " of", " gateway", ",", " stream", "\n", " token", " café", " \"q\"", " and", " 😀", " a", "\t", " relay", "."}

// benchStream is a keep-alive llama.cpp response with n token frames (one
// chunk each) and the final frame, as segments: either the whole response
// at once (burst) or one segment per chunk (paced: a read per frame).
func benchStream(n int, paced bool) (segs [][]byte, size int) {
	var parts [][]byte
	for i := range n {
		parts = append(parts, []byte(tokenEvent(benchVocab[i%len(benchVocab)], i+1)))
	}
	parts = append(parts, []byte(finalEvent(n, "limit")))
	all := append([]byte(streamHeader), chunked(parts...)...)
	if !paced {
		return [][]byte{all}, len(all)
	}
	segs = append(segs, []byte(streamHeader))
	for _, p := range parts {
		segs = append(segs, chunk(p))
	}
	return append(segs, []byte("0\r\n\r\n")), len(all)
}

// memHarness decodes a whole in-memory response with the adapter's own
// header parser, de-chunker, SSE reader and scanner, reusing everything.
type memHarness struct {
	mc *memConn
	st *streamState
}

func newMemHarness(segs [][]byte) *memHarness {
	mc := &memConn{segs: segs}
	return &memHarness{mc: mc, st: &streamState{rd: sse.NewReader(nil, 0)}}
}

func (h *memHarness) run(sink engines.Sink) (engines.Result, error) {
	h.mc.reset()
	if err := h.st.x.ReadResponse(h.mc); err != nil {
		return engines.Result{}, err
	}
	res, _, err := h.st.run(context.Background(), sink)
	return res, err
}

// countSink counts calls.
type countSink struct{ tokens, flushes int }

func (s *countSink) Token([]byte) { s.tokens++ }
func (s *countSink) Flush()       { s.flushes++ }

func BenchmarkStreamDecode(b *testing.B) {
	const frames = 1000
	for _, paced := range []bool{false, true} {
		name := "burst"
		if paced {
			name = "paced"
		}
		b.Run(name, func(b *testing.B) {
			segs, size := benchStream(frames, paced)
			h := newMemHarness(segs)
			sink := &countSink{}
			if _, err := h.run(sink); err != nil || sink.tokens != frames {
				b.Fatalf("%v, %d tokens", err, sink.tokens)
			}
			*sink = countSink{}
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := h.run(sink); err != nil {
					b.Fatal(err)
				}
			}
			runtime.ReadMemStats(&ms1)
			tokens := float64(sink.tokens)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/tokens, "ns/token")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/tokens, "allocs/token")
			b.ReportMetric(float64(sink.flushes)/tokens, "flushes/token")
		})
	}
}

// TestStreamDecodeAllocs pins the steady state: decoding a whole stream
// allocates nothing, whatever its length.
func TestStreamDecodeAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	for _, paced := range []bool{false, true} {
		segs, _ := benchStream(1000, paced)
		h := newMemHarness(segs)
		sink := &countSink{}
		if _, err := h.run(sink); err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(20, func() { _, _ = h.run(sink) }); n != 0 {
			t.Errorf("paced=%v: %v allocations per 1000-token stream, want 0", paced, n)
		}
	}
}

// BenchmarkStreamLoopback measures a whole Stream call against a loopback
// replay server (keep-alive): syscalls, the cancel hook and pooling
// included. The server's own CPU is included too.
func BenchmarkStreamLoopback(b *testing.B) {
	for _, n := range []int{16, 1000} {
		b.Run(fmt.Sprintf("tokens=%d", n), func(b *testing.B) {
			segs, size := benchStream(n, false)
			srv := newServer(b, serveAlways(segs[0]))
			a, err := New(srv.url(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			sink := &countSink{}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := a.Stream(ctx, testReq, sink); err != nil {
					b.Fatal(err)
				}
			}
			runtime.ReadMemStats(&ms1)
			tokens := float64(sink.tokens)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/tokens, "ns/token")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/tokens, "allocs/token")
			if accepts := srv.accepts.Load(); accepts != 1 {
				b.Fatalf("%d connections, want 1 (keep-alive)", accepts)
			}
		})
	}
}
