package tgi

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/valyala/fastjson"
)

// typicalFrame is a TGI intermediate frame as it appears on the wire.
var typicalFrame = []byte(`{"index":3,"token":{"id":576,"text":" representations","logprob":-1.2080078,"special":false},"generated_text":null,"details":null}`)

func BenchmarkFrameDecode(b *testing.B) {
	var p fastjson.Parser
	var f frame
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalFrame)))
	for b.Loop() {
		if err := f.decode(&p, typicalFrame); err != nil || string(f.text) != " representations" {
			b.Fatal(err)
		}
	}
}

// benchVocab mixes plain words with text that needs escapes and non-ASCII.
var benchVocab = []string{" the", " model", " of", " gateway", ",", " stream", "\n", " token", " café", " \"q\"", " and", " 😀", " a", "\t", " relay", "."}

// benchStream is a keep-alive TGI response with n token frames (one chunk
// each, the last one final), as segments: the whole response at once
// (burst) or one segment per chunk (paced: a read per frame).
func benchStream(n int, paced bool) (segs [][]byte, size int) {
	var parts []string
	for i := range n - 1 {
		parts = append(parts, tok(i+1, benchVocab[i%len(benchVocab)], false))
	}
	parts = append(parts, final(n, " end", false, "…", "length", n, 7))
	all := sseResponse(parts...)
	if !paced {
		return [][]byte{all}, len(all)
	}
	segs = append(segs, []byte(streamHead))
	for _, p := range parts {
		segs = append(segs, chunk(p))
	}
	return append(segs, []byte(lastChunk)), len(all)
}

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
