package bench

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llama-orch/llama-orch/sse"
)

// A llama.cpp /completion stream as llama-server b6351 sends it (from
// shared/fixtures/llamacpp/completion_stream.body.sse, final frame trimmed).
const llamaStream = `data: {"index":0,"content":" arrest","tokens":[22564],"stop":false,"id_slot":-1,"tokens_predicted":1,"tokens_evaluated":2}

data: {"index":0,"content":"isu","tokens":[28311],"stop":false,"id_slot":-1,"tokens_predicted":2,"tokens_evaluated":2}

data: {"index":0,"content":"\"stop\":true","tokens":[1],"stop":false,"id_slot":-1,"tokens_predicted":3,"tokens_evaluated":2}

data: {"index":0,"content":"","tokens":[2],"stop":false,"id_slot":-1,"tokens_predicted":4,"tokens_evaluated":2}

data: {"index":0,"content":"","tokens":[],"id_slot":1,"stop":true,"model":"tiny.gguf","tokens_predicted":4,"tokens_evaluated":2,"generation_settings":{"seed":42,"stop":[],"n_predict":8},"stop_type":"eos"}

`

// A canonical stream as orchd sends it (SPEC §3.2), with a keep-alive.
const canonicalStream = `: ping

id: 0
event: started
data: {"queue_position":0,"predicted_start_ms":0,"queue_time_ms":0,"engine":"llamacpp","pool_id":"p","replica_id":"r0","engine_version":"b1","kv_warmth":false}

id: 1
event: token
data: {"t":" curve","i":0}

id: 2
event: token
data: {"t":"\"end\"","i":1}

id: 3
event: metrics
data: {"on_time_probability":1,"queue_depth":0,"kv_warmth":false,"tokens_budget_remaining":0}

id: 4
event: end
data: {"tokens_out":2,"decode_ms":3,"finish_reason":"length"}

`

// tally reads a whole stream with p and counts what the client loop counts.
func tally(t *testing.T, p Protocol, stream string) (tokens int, end bool, kind string) {
	t.Helper()
	rd := sse.NewReader(strings.NewReader(stream), 0)
	var f sse.Frame
	for {
		err := rd.Next(&f)
		if err == io.EOF {
			return tokens, false, KindNoTerminal
		}
		if err != nil {
			return tokens, false, KindNoTerminal
		}
		st, k := p.Frame(&f)
		if st&stepToken != 0 {
			tokens++
		}
		if st&stepFail != 0 {
			return tokens, false, k
		}
		if st&stepEnd != 0 {
			return tokens, true, ""
		}
	}
}

func TestStreamParsers(t *testing.T) {
	llama := &llamaCpp{}
	gw := NewGateway(Target{}, Params{}, false)
	f := func(name string, p Protocol, stream string, wantTokens int, wantEnd bool, wantKind string) {
		t.Helper()
		tokens, end, kind := tally(t, p, stream)
		if tokens != wantTokens || end != wantEnd || kind != wantKind {
			t.Errorf("%s: tokens %d end %v kind %q; want %d %v %q", name, tokens, end, kind, wantTokens, wantEnd, wantKind)
		}
	}
	// Three text frames (one whose text looks like the stop key), an EOS
	// frame without text, then the final frame.
	f("llama.cpp stream", llama, llamaStream, 3, true, "")
	// The same stream cut before its final frame.
	cut := llamaStream[:strings.Index(llamaStream, `data: {"index":0,"content":"","tokens":[],"id_slot":1`)]
	f("llama.cpp cut", llama, cut, 3, false, KindNoTerminal)
	// A mid-stream error frame, as llama-server sends one.
	f("llama.cpp error", llama, `data: {"index":0,"content":" Laz","tokens":[19575],"stop":false}

data: {"error":{"code":500,"message":"The model produced output that does not match","type":"server_error"}}

`, 1, false, "error_event_server_error")
	// Very old builds' `error:` line.
	f("llama.cpp error line", llama, "error: {\"error\":{\"code\":500,\"message\":\"x\",\"type\":\"server_error\"}}\n\n", 0, false, "error_event_server_error")
	// The canonical stream: two tokens (one whose text looks like an event name), then end.
	f("canonical", gw, canonicalStream, 2, true, "")
	// A task that failed after its first token.
	f("canonical error", gw, "id: 0\nevent: started\ndata: {}\n\nid: 1\nevent: token\ndata: {\"t\":\"a\",\"i\":0}\n\nid: 2\nevent: error\ndata: {\"code\":\"WORKER_RESET\",\"message\":\"engine failed\",\"retriable\":false}\n\n",
		1, false, "error_event_WORKER_RESET")
	// An error event whose data is not the envelope.
	f("canonical bad error", gw, "event: error\ndata: nope\n\n", 0, false, "error_event_UNKNOWN")
	// Only keep-alives, then the connection closes.
	f("canonical no terminal", gw, ": ping\n\n: ping\n\n", 0, false, KindNoTerminal)
}

// TestLlamaScanAgainstJSON checks the frame scanner against encoding/json on
// every frame of the recorded llama.cpp streams.
func TestLlamaScanAgainstJSON(t *testing.T) {
	streams := []string{llamaStream}
	dir := filepath.Join("..", "..", "shared", "fixtures", "llamacpp")
	if names, err := filepath.Glob(filepath.Join(dir, "*.body.sse")); err == nil {
		for _, n := range names {
			if strings.Contains(n, "v1_") {
				continue // OpenAI-format streams: not the native API
			}
			b, err := os.ReadFile(n)
			if err != nil {
				t.Fatal(err)
			}
			streams = append(streams, string(b))
		}
	}
	frames := 0
	for _, s := range streams {
		rd := sse.NewReader(strings.NewReader(s), 0)
		var f sse.Frame
		for rd.Next(&f) == nil {
			if len(f.Data) == 0 {
				continue
			}
			var v struct {
				Content *string `json:"content"`
				Stop    bool    `json:"stop"`
			}
			if err := json.Unmarshal(f.Data, &v); err != nil {
				t.Fatalf("fixture frame is not JSON: %v: %s", err, f.Data)
			}
			frames++
			wantText := v.Content != nil && *v.Content != ""
			if got := contentNonEmpty(f.Data); got != wantText {
				t.Errorf("contentNonEmpty = %v, want %v: %s", got, wantText, f.Data)
			}
			if got := stopTrue(f.Data); got != v.Stop {
				t.Errorf("stopTrue = %v, want %v: %s", got, v.Stop, f.Data)
			}
		}
	}
	if frames < 5 {
		t.Fatalf("only %d frames checked", frames)
	}
}

func TestRequestBodies(t *testing.T) {
	c := &client{}
	c.body = appendUUID(c.body[:0], [16]byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8})
	if got, want := string(c.body), "12345678-9abc-def0-0102-030405060708"; got != want {
		t.Errorf("appendUUID = %s, want %s", got, want)
	}
}
