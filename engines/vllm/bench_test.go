package vllm

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
)

// replayConn replays one response per request written to it: a Write (the
// next request) rewinds the read side, so a pooled connection serves every
// stream of a benchmark. One Read returns at most one segment.
type replayConn struct{ enginetest.MemConn }

func (r *replayConn) Write(p []byte) (int, error) {
	r.Reset()
	return len(p), nil
}

// benchStream is a vLLM response of n token chunks (the capture's shape),
// the usage chunk and [DONE], one HTTP chunk per event; perRead events
// arrive per network read.
func benchStream(n, perRead int) [][]byte {
	words := []string{" Paris", ".", " It", " is", " the", " capital", " and", " largest", " city"}
	var evs []string
	for i := range n {
		finish := ""
		if i == n-1 {
			finish = "length"
		}
		evs = append(evs, textEvent(words[i%len(words)], finish))
	}
	evs = append(evs, usageEvent(5, n), doneEvent)
	var segs [][]byte
	var cur strings.Builder
	cur.WriteString(streamHeader)
	for i, e := range evs {
		cur.Write(enginetest.Chunk(e))
		if (i+1)%perRead == 0 {
			segs = append(segs, []byte(cur.String()))
			cur.Reset()
		}
	}
	cur.WriteString("0\r\n\r\n")
	return append(segs, []byte(cur.String()))
}

// BenchmarkStream measures the adapter's whole path per token (HTTP body,
// SSE framing, chunk decoding, UTF-8 carry, sink) over an in-memory
// connection kept alive across streams.
func BenchmarkStream(b *testing.B) {
	const tokens = 256
	for _, bc := range []struct {
		name    string
		perRead int
	}{
		{"read-per-chunk", 1}, // a token per network read: a Flush per token
		{"burst-16", 16},      // bursts of 16 chunks per read
	} {
		b.Run(bc.name, func(b *testing.B) {
			rc := &replayConn{enginetest.MemConn{Segs: benchStream(tokens, bc.perRead)}}
			dial := func(context.Context, string, string) (net.Conn, error) { return rc, nil }
			a, err := New("http://vllm.test:8000", Options{Model: "Qwen/Qwen2.5-1.5B-Instruct", Dial: dial})
			if err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			req := &engines.Request{Prompt: "The capital of France is", MaxTokens: tokens, Seed: 42}
			ctx := context.Background()
			if _, err := a.Stream(ctx, req, enginetest.NopSink{}); err != nil { // warm up buffers and the pool
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				res, err := a.Stream(ctx, req, enginetest.NopSink{})
				if err != nil || res.TokensOut != tokens {
					b.Fatalf("%+v %v", res, err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*tokens), "ns/token")
		})
	}
}

// TestStreamAllocsPerToken pins the steady state: a stream allocates a
// bounded amount whatever its length (nothing per token).
func TestStreamAllocsPerToken(t *testing.T) {
	if enginetest.RaceEnabled {
		t.Skip("allocation counts differ under -race")
	}
	measure := func(tokens int) float64 {
		rc := &replayConn{enginetest.MemConn{Segs: benchStream(tokens, 1)}}
		dial := func(context.Context, string, string) (net.Conn, error) { return rc, nil }
		a := newAdapter(t, "http://vllm.test:8000", Options{Model: "m", Dial: dial})
		req := &engines.Request{Prompt: "p", MaxTokens: tokens, Seed: 1}
		run := func() {
			if res, err := a.Stream(context.Background(), req, enginetest.NopSink{}); err != nil || res.TokensOut != tokens {
				t.Fatalf("%+v %v", res, err)
			}
		}
		run()
		return testing.AllocsPerRun(20, run)
	}
	short, long := measure(8), measure(512)
	if long > short+1 {
		t.Fatalf("allocs per stream: %v for 8 tokens, %v for 512: the per-token path allocates", short, long)
	}
}

func BenchmarkDecodeChunk(b *testing.B) {
	data := []byte(docText1)
	var d decoder
	var c chunk
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := d.decode(data, &c); err != nil || !c.hasChoice {
			b.Fatal(err)
		}
	}
}

// BenchmarkStreamFake is end to end over loopback TCP against the fake
// (the fake's own cost included).
func BenchmarkStreamFake(b *testing.B) {
	const tokens = 64
	f := newFake(b, fake.Options{Slots: 8})
	a := newAdapter(b, f.URL(), Options{})
	req := &engines.Request{Prompt: "The capital of France is", MaxTokens: tokens, Seed: 42}
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if _, err := a.Stream(context.Background(), req, enginetest.NopSink{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N*tokens), "ns/token")
}
