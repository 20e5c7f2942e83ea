package llamacpp

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
	"github.com/llama-orch/llama-orch/sse"
)

// runBody decodes an SSE body delivered in segs as a close-delimited
// response body.
func runBody(segs [][]byte, sink engines.Sink) (engines.Result, bool, error) {
	st := &streamState{rd: sse.NewReader(nil, 0)}
	st.x.BodyUntilClose(&enginetest.MemConn{Segs: segs})
	return st.run(context.Background(), sink)
}

// FuzzStreamDecode runs arbitrary SSE bytes through the whole decoding path:
// it must never panic, deliver only non-empty valid UTF-8, and never report
// success unless the body holds a final stop:true frame.
func FuzzStreamDecode(f *testing.F) {
	f.Add([]byte(tokenEvent("a", 1)+finalEvent(1, "eos")), uint16(5))
	f.Add([]byte("data: {\"content\":\"\xF0\x9F\"}\n\ndata: {\"content\":\"\x98\x80\",\"stop\":true}\n\n"), uint16(20))
	f.Add([]byte(": ping\n\nevent: x\ndata: {\"content\":\"a\"}\n\nerror: {\"message\":\"m\"}\n\n"), uint16(9))
	if dir := "../../../shared/fixtures/llamacpp"; dirExists(dir) {
		f.Add(readFixture(f, "completion_stream.body.sse"), uint16(300))
		f.Add(readFixture(f, "error_midstream_completion.body.sse"), uint16(100))
	}
	f.Fuzz(func(t *testing.T, in []byte, cut uint16) {
		sink := &enginetest.RecSink{}
		_, _, err := runBody(enginetest.SplitAt(in, int(cut)), sink)
		for _, tok := range sink.Tokens() {
			if tok == "" || !utf8.ValidString(tok) {
				t.Fatalf("bad token %q", tok)
			}
		}
		if err != nil {
			return
		}
		rd := sse.NewReader(bytes.NewReader(in), 0)
		var ev sse.Frame
		for rd.Next(&ev) == nil {
			var m map[string]json.RawMessage
			if json.Unmarshal(ev.Data, &m) == nil && string(m["stop"]) == "true" {
				return
			}
		}
		t.Fatalf("success without a stop:true frame in %q", in)
	})
}
