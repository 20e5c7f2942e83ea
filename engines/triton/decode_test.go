package triton

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
	"unicode/utf8"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/sse"
)

// seedFrames are the frames ENGINES.md §4 documents, the fake's shapes and
// the error bodies: the fuzz seeds and the decoder's table.
var seedFrames = []string{
	docParis, docDot, docThe, docCapital, docEnsemble,
	`{"finish_reason":"None","model_name":"vllm_model","model_version":"1","num_input_tokens":6,"num_output_tokens":1,"text_output":" Paris"}`,
	`{"finish_reason":"length","model_name":"vllm_model","model_version":"1","num_input_tokens":6,"num_output_tokens":1,"text_output":" capital"}`,
	`{"finish_reason":"stop","model_name":"vllm_model","model_version":"1","num_output_tokens":1,"text_output":""}`,
	`{"error":"Error generating stream: EngineCore encountered an issue. See stack trace (above) for the root cause."}`,
	`{"error":"Exceeds maximum queue size"}`,
	`{"id":"42","model_name":"m","model_version":"1","num_output_tokens":[1],"text_output":["x","y"]}`,
	`{"text_output":"caf\u00e9 \ud83d\ude00 \"q\" \\ \n"}`,
	`{"model_name":"vllm_model","model_version":"1","text_output":null}`,
}

func TestDecodeFrame(t *testing.T) {
	for _, tc := range []struct {
		data                        string
		text, finish, errMsg        string
		numOut, numIn               int
		hasOut, hasIn, hasError, ok bool
	}{
		{data: docParis, text: " Paris", numOut: 1, hasOut: true, ok: true},
		{data: docEnsemble, text: "To", ok: true},
		{data: seedFrames[5], text: " Paris", finish: "None", numOut: 1, hasOut: true, numIn: 6, hasIn: true, ok: true},
		{data: seedFrames[8], hasError: true, errMsg: "Error generating stream: EngineCore encountered an issue. See stack trace (above) for the root cause.", ok: true},
		{data: seedFrames[10], text: "x", numOut: 1, hasOut: true, ok: true},
		{data: seedFrames[11], text: "café 😀 \"q\" \\ \n", ok: true},
		{data: seedFrames[12], ok: true},
		// Other types are ignored like missing keys.
		{data: `{"text_output":5,"num_output_tokens":"2","finish_reason":true}`, ok: true},
		{data: `{"num_output_tokens":2.0,"num_input_tokens":-1}`, numOut: 2, hasOut: true, ok: true},
		{data: `{"num_output_tokens":1e3}`, numOut: 1000, hasOut: true, ok: true},
		// The last of repeated keys wins, as with encoding/json.
		{data: `{"text_output":"a","text_output":"b"}`, text: "b", ok: true},
		// Error shapes that are not Triton's still fail the stream.
		{data: `{"error":{"message":"m","code":500}}`, hasError: true, errMsg: "m", ok: true},
		{data: `{"error":null}`, hasError: true, errMsg: "null", ok: true},
		{data: `{"text_output":"x"`},
		{data: `[1]`},
		{data: ``},
		{data: `{} {}`},
	} {
		var d decoder
		var f frame
		err := d.decode([]byte(tc.data), &f)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v", tc.data, err)
			continue
		}
		if string(f.text) != tc.text || string(f.finish) != tc.finish || string(f.errMsg) != tc.errMsg ||
			f.numOut != tc.numOut || f.hasNumOut != tc.hasOut || f.numIn != tc.numIn || f.hasNumIn != tc.hasIn || f.hasError != tc.hasError {
			t.Errorf("%s: %+v", tc.data, f)
		}
	}
}

// FuzzDecodeFrame: the decoder never panics; what encoding/json reads as a
// frame the decoder reads the same; decoded text round-trips.
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range seedFrames {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"text_output":"\ud83d"}`))
	f.Add([]byte("{\"text_output\":\"a\xe6\x97\"}"))
	var d decoder
	f.Fuzz(func(t *testing.T, data []byte) {
		var fr frame
		err := d.decode(data, &fr)
		var ref map[string]any
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		refErr := dec.Decode(&ref)
		if refErr == nil && !json.Valid(data) {
			refErr = errNotObject // a value followed by more
		}
		if refErr == nil && ref != nil && err != nil {
			t.Fatalf("encoding/json reads %q as an object, decode fails: %v", data, err)
		}
		if err != nil {
			return
		}
		if refErr == nil && ref != nil && utf8.Valid(data) && !bytes.Contains(data, []byte(`\ud`)) && !bytes.Contains(data, []byte(`\uD`)) {
			if s, ok := ref["text_output"].(string); ok && s != string(fr.text) {
				t.Fatalf("%q: text %q, encoding/json %q", data, fr.text, s)
			}
			if n, ok := ref["num_output_tokens"].(json.Number); ok {
				if v, err := strconv.ParseInt(string(n), 10, 32); err == nil && v >= 0 && (!fr.hasNumOut || fr.numOut != int(v)) {
					t.Fatalf("%q: num_output_tokens %d/%v, encoding/json %s", data, fr.numOut, fr.hasNumOut, n)
				}
			}
			if _, ok := ref["error"]; ok != fr.hasError {
				t.Fatalf("%q: hasError %v", data, fr.hasError)
			}
		}
		if utf8.Valid(fr.text) {
			text := string(fr.text)
			again := append(sse.AppendJSONString([]byte(`{"text_output":`), fr.text), '}')
			var fr2 frame
			if err := d.decode(again, &fr2); err != nil || string(fr2.text) != text {
				t.Fatalf("round trip of %q: %q, %v", text, fr2.text, err)
			}
		}
	})
}

// FuzzStatusError: any error body maps to a kind with a printable message.
func FuzzStatusError(f *testing.F) {
	f.Add(500, []byte("data: "+seedFrames[8]+"\n\n"))
	f.Add(503, []byte(seedFrames[9]))
	f.Add(400, []byte(`{"error":"Error generating stream: The decoder prompt (length 9) is longer than the maximum model length of 8."}`))
	f.Add(404, []byte(`{"error":"Request for unknown model: 'x' has no available versions"}`))
	f.Add(502, []byte("<html>\xff</html>"))
	f.Add(400, []byte(""))
	var d decoder
	f.Fuzz(func(t *testing.T, status int, data []byte) {
		status = 100 + abs(status)%500
		e := statusError(status, data, &d)
		if e.Kind == 0 || e.Status != status || e.Message == "" || !utf8.ValidString(e.Message) {
			t.Fatalf("statusError(%d, %q) = %+v", status, data, e)
		}
		if status/100 == 2 && e.Kind != engines.KindProtocol {
			t.Fatalf("2xx mapped to %s", e.Kind)
		}
	})
}

func abs(n int) int {
	if n < 0 {
		return -(n + 1)
	}
	return n
}

// FuzzParseLoad: any metrics body parses without panicking, into sane
// values.
func FuzzParseLoad(f *testing.F) {
	f.Add([]byte("nv_inference_pending_request_count{model=\"m\",version=\"1\"} 2\nvllm:num_requests_running{model=\"m\"} 1\nnv_gpu_utilization{gpu_uuid=\"GPU-1\"} 0.5\n"))
	f.Add([]byte("nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"fraction\"} 0.2\nnv_trt_llm_request_metrics{request_type=\"active\"} 4\n"))
	f.Add([]byte("nv_gpu_memory_used_bytes{gpu_uuid=\"a\\\"b\"} 1e9 1700000000\n# c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, ok := parseLoad(data, "m")
		if !ok && (l.Processing != 0 || l.Deferred != 0 || l.HasKVCacheUsage) {
			t.Fatalf("not ok but %+v", l)
		}
		seen := map[string]bool{}
		for _, d := range l.Devices {
			if seen[d.Device] {
				t.Fatalf("device %q twice", d.Device)
			}
			seen[d.Device] = true
		}
	})
}
