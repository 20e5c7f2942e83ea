package triton

import (
	"context"
	"fmt"
	"testing"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
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
		parts = append(parts, `data: {"finish_reason":"`+reason+`","model_name":"vllm_model","model_version":"1","num_input_tokens":26,"num_output_tokens":1,"text_output":"`+
			benchVocab[i%len(benchVocab)]+`"}`+"\n\n")
	}
	return enginetest.Segments(sseHead(200), parts, paced)
}

// decodeSetup decodes benchStream in memory with the adapter's own header
// parser, de-chunker, SSE reader and decoder, reusing everything.
func decodeSetup(frames int, paced bool) (int, func(engines.Sink) error) {
	segs, size := benchStream(frames, paced)
	mc := &enginetest.MemConn{Segs: segs}
	st := &streamState{rd: sse.NewReader(nil, 0)}
	return size, func(sink engines.Sink) error {
		res, err := runMem(st, mc, frames, sink)
		if err == nil && res.TokensOut != frames {
			err = fmt.Errorf("TokensOut %d, want %d", res.TokensOut, frames)
		}
		return err
	}
}

func BenchmarkStreamDecode(b *testing.B) { enginetest.BenchStreamDecode(b, decodeSetup) }

// TestStreamDecodeAllocs pins the steady state: decoding a whole stream
// allocates nothing, whatever its length.
func TestStreamDecodeAllocs(t *testing.T) { enginetest.CheckStreamDecodeAllocs(t, decodeSetup) }

// BenchmarkStreamLoopback measures a whole Stream call against a loopback
// replay server (keep-alive).
func BenchmarkStreamLoopback(b *testing.B) {
	enginetest.BenchStreamLoopback(b, func(b *testing.B, tokens int) (int, func(context.Context, engines.Sink) error, func() int) {
		segs, size := benchStream(tokens, false)
		srv := newScripted(b, replay(string(segs[0])))
		a := newAdapter(b, srv.URL(), Options{})
		req := &engines.Request{Prompt: "The capital of France is", MaxTokens: tokens, Seed: 42}
		return size, func(ctx context.Context, sink engines.Sink) error {
			_, err := a.Stream(ctx, req, sink)
			return err
		}, srv.Accepts
	})
}
