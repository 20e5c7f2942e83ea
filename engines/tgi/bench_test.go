package tgi

import (
	"context"
	"testing"

	"github.com/valyala/fastjson"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
	"github.com/llama-orch/llama-orch/sse"
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
	return enginetest.Segments(streamHead, append(parts, final(n, " end", false, "…", "length", n, 7)), paced)
}

// decodeSetup decodes benchStream in memory with the adapter's own header
// parser, de-chunker, SSE reader and frame decoder, reusing everything.
func decodeSetup(frames int, paced bool) (int, func(engines.Sink) error) {
	segs, size := benchStream(frames, paced)
	mc := &enginetest.MemConn{Segs: segs}
	st := &streamState{rd: sse.NewReader(nil, 0)}
	return size, func(sink engines.Sink) error {
		mc.Reset()
		if err := st.x.ReadResponse(mc); err != nil {
			return err
		}
		_, _, err := st.run(context.Background(), testReq, sink)
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
		srv := enginetest.NewServer(b, enginetest.ServeAlways(segs[0]))
		a := newAdapter(b, srv.URL(), Options{})
		return size, func(ctx context.Context, sink engines.Sink) error {
			_, err := a.Stream(ctx, testReq, sink)
			return err
		}, srv.Accepts
	})
}
