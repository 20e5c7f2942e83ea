package llamacpp

import (
	"context"
	"testing"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
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
	var parts []string
	for i := range n {
		parts = append(parts, tokenEvent(benchVocab[i%len(benchVocab)], i+1))
	}
	return enginetest.Segments(streamHeader, append(parts, finalEvent(n, "limit")), paced)
}

// decodeSetup decodes benchStream in memory with the adapter's own header
// parser, de-chunker, SSE reader and scanner, reusing everything.
func decodeSetup(frames int, paced bool) (int, func(engines.Sink) error) {
	segs, size := benchStream(frames, paced)
	mc := &enginetest.MemConn{Segs: segs}
	st := &streamState{rd: sse.NewReader(nil, 0)}
	return size, func(sink engines.Sink) error {
		mc.Reset()
		if err := st.x.ReadResponse(mc); err != nil {
			return err
		}
		_, _, err := st.run(context.Background(), sink)
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
