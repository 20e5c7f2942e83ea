package fake

import (
	"errors"
	"testing"
)

// BenchmarkStreamLoopback streams 256-token completions over one
// keep-alive loopback connection; ns/op is per token, server and client
// together.
func BenchmarkStreamLoopback(b *testing.B) {
	s := startServer(b, Options{})
	cl := dial(b, s)
	const n = 256
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += n {
		cl.send("POST", "/completion", `{"prompt":"Hello","n_predict":256,"stream":true}`)
		r := cl.readHead()
		for {
			_, err := cl.chunk()
			if errors.Is(err, errLastChunk) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		if r.hdr["Connection"] == "close" { // the 100th response
			cl.c.Close()
			cl = dial(b, s)
		}
	}
}
