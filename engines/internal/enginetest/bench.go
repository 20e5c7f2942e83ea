package enginetest

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/llama-orch/llama-orch/engines"
)

// DecodeSetup builds an in-memory response of frames token frames for an
// adapter, whole (paced false: one read) or one network read per frame
// (paced), and returns its size and a function that decodes all of it
// through the adapter's own header parser, de-chunker, SSE reader and frame
// decoder, reusing its state. The function fails when the stream does.
type DecodeSetup func(frames int, paced bool) (size int, run func(engines.Sink) error)

// BenchStreamDecode runs the sub-benchmarks burst and paced of a
// 1000-token stream decoded in memory, reporting ns/token, allocs/token and
// flushes/token.
func BenchStreamDecode(b *testing.B, setup DecodeSetup) {
	const frames = 1000
	for _, paced := range []bool{false, true} {
		name := "burst"
		if paced {
			name = "paced"
		}
		b.Run(name, func(b *testing.B) {
			size, run := setup(frames, paced)
			sink := &CountSink{}
			if err := run(sink); err != nil || sink.Tokens != frames {
				b.Fatalf("%v, %d tokens", err, sink.Tokens)
			}
			*sink = CountSink{}
			var ms0 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if err := run(sink); err != nil {
					b.Fatal(err)
				}
			}
			reportPerToken(b, &ms0, sink.Tokens)
			b.ReportMetric(float64(sink.Flushes)/float64(sink.Tokens), "flushes/token")
		})
	}
}

// CheckStreamDecodeAllocs pins the steady state of decoding: a whole
// 1000-token stream, burst or paced, allocates nothing.
func CheckStreamDecodeAllocs(t *testing.T, setup DecodeSetup) {
	t.Helper()
	if RaceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	for _, paced := range []bool{false, true} {
		_, run := setup(1000, paced)
		sink := &CountSink{}
		if err := run(sink); err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(20, func() { _ = run(sink) }); n != 0 {
			t.Errorf("paced=%v: %v allocations per 1000-token stream, want 0", paced, n)
		}
	}
}

// LoopbackSetup starts a loopback server replaying a keep-alive response
// of tokens tokens and an adapter for it, and returns the response size, a
// function making one Stream call, and the server's accept count.
type LoopbackSetup func(b *testing.B, tokens int) (size int, stream func(context.Context, engines.Sink) error, accepts func() int)

// BenchStreamLoopback runs the sub-benchmarks tokens=16 and tokens=1000 of
// whole Stream calls against a loopback replay server: syscalls, the cancel
// hook and pooling included, and the server's own CPU too. It reports
// ns/token and allocs/token, and fails unless one connection served all.
func BenchStreamLoopback(b *testing.B, setup LoopbackSetup) {
	for _, n := range []int{16, 1000} {
		b.Run(fmt.Sprintf("tokens=%d", n), func(b *testing.B) {
			size, stream, accepts := setup(b, n)
			sink := &CountSink{}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var ms0 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if err := stream(ctx, sink); err != nil {
					b.Fatal(err)
				}
			}
			reportPerToken(b, &ms0, sink.Tokens)
			if n := accepts(); n != 1 {
				b.Fatalf("%d connections, want 1 (keep-alive)", n)
			}
		})
	}
}

// reportPerToken reports ns/token and allocs/token since ms0.
func reportPerToken(b *testing.B, ms0 *runtime.MemStats, tokens int) {
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(tokens), "ns/token")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(tokens), "allocs/token")
}
