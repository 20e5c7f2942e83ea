package triton

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/sse"
)

// typicalFrame is a vLLM backend frame with every switch the adapter sets.
var typicalFrame = []byte(`{"finish_reason":"None","model_name":"vllm_model","model_version":"1","num_input_tokens":26,"num_output_tokens":1,"text_output":" representations"}`)

func BenchmarkDecodeFrame(b *testing.B) {
	var d decoder
	var f frame
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalFrame)))
	for b.Loop() {
		if err := d.decode(typicalFrame, &f); err != nil || string(f.text) != " representations" {
			b.Fatal(err)
		}
	}
}

// benchVocab mixes plain words with text that needs escapes and non-ASCII.
var benchVocab = []string{" the", " model", " of", " gateway", ",", " stream", `\n`, " token", " café", ` \"q\"`, " and", " 😀", " a", `\t`, " relay", "."}

// benchStream is a keep-alive Triton response with n frames (one chunk
// each, the last one finishing), as segments: the whole response at once
// (burst) or one segment per chunk (paced: a read per frame).
func benchStream(n int, paced bool) (segs [][]byte, size int) {
	var parts []string
	for i := range n {
		reason := "None"
		if i == n-1 {
			reason = "length"
		}
		parts = append(parts, chunk(`data: {"finish_reason":"`+reason+`","model_name":"vllm_model","model_version":"1","num_input_tokens":26,"num_output_tokens":1,"text_output":"`+
			benchVocab[i%len(benchVocab)]+`"}`+"\n\n"))
	}
	head := sseHead(200)
	all := head + strings.Join(parts, "") + lastChunk
	if !paced {
		return [][]byte{[]byte(all)}, len(all)
	}
	segs = append(segs, []byte(head))
	for _, p := range parts {
		segs = append(segs, []byte(p))
	}
	return append(segs, []byte(lastChunk)), len(all)
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
			mc := &memConn{segs: segs}
			st := &streamState{rd: sse.NewReader(nil, 0)}
			sink := &countSink{}
			if res, err := runMem(st, mc, frames, sink); err != nil || sink.tokens != frames || res.TokensOut != frames {
				b.Fatalf("%v, %d tokens, %+v", err, sink.tokens, res)
			}
			*sink = countSink{}
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := runMem(st, mc, frames, sink); err != nil {
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
		mc := &memConn{segs: segs}
		st := &streamState{rd: sse.NewReader(nil, 0)}
		sink := &countSink{}
		if _, err := runMem(st, mc, 1000, sink); err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(20, func() { _, _ = runMem(st, mc, 1000, sink) }); n != 0 {
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
			srv := newScripted(b, replay(string(segs[0])))
			a := newAdapter(b, srv.url(), Options{})
			sink := &countSink{}
			req := &engines.Request{Prompt: "The capital of France is", MaxTokens: n, Seed: 42}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := a.Stream(ctx, req, sink); err != nil {
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
