package gateway

import (
	"strings"
	"testing"
)

// TestParseTaskRequest: each bad body is one clear INVALID_PARAMS naming the
// field; good bodies get defaults and a stable injected seed.
func TestParseTaskRequest(t *testing.T) {
	const ids = `"task_id":"6f1c2b8e-0a7d-4c1e-9b3a-2f4d5e6a7b8c","session_id":"7f1c2b8e-0a7d-4c1e-9b3a-2f4d5e6a7b8c"`
	f := func(body, wantErr string) {
		t.Helper()
		_, e := parseTaskRequest([]byte(body))
		switch {
		case wantErr == "" && e != nil:
			t.Errorf("%s: unexpected error %v", body, e)
		case wantErr != "" && e == nil:
			t.Errorf("%s: accepted, want error containing %q", body, wantErr)
		case wantErr != "" && (e.Code != CodeInvalidParams || !strings.Contains(e.Message, wantErr)):
			t.Errorf("%s: got %v, want INVALID_PARAMS containing %q", body, e, wantErr)
		}
	}
	f(`{`+ids+`,"model_ref":"m","prompt":"x"}`, "")                                  // minimal request
	f(``, "empty")                                                                   // no body
	f(`{`+ids+`,"model_ref":"m","prompt":"x"`, "truncated")                          // cut JSON
	f(`[1]`, "JSON object")                                                          // not an object
	f(`{`+ids+`,"model_ref":"m","prompt":"x","colour":1}`, `unknown field "colour"`) // unknown field
	f(`{`+ids+`,"model_ref":"m","prompt":"x","tenant":"a"}`, "API key")              // tenant from the body
	f(`{"session_id":"7f1c2b8e-0a7d-4c1e-9b3a-2f4d5e6a7b8c","model_ref":"m","prompt":"x"}`, "task_id is required")
	f(`{"task_id":"nope","session_id":"7f1c2b8e-0a7d-4c1e-9b3a-2f4d5e6a7b8c","model_ref":"m","prompt":"x"}`, "task_id must be a UUID")
	f(`{`+ids+`,"model_ref":"m","prompt":"x","workload":"embedding"}`, "not served in v1") // v1 serves completion only
	f(`{`+ids+`,"model_ref":"m","prompt":"x","engine":"gpt"}`, "engine must be")
	f(`{`+ids+`,"model_ref":"m","prompt":"x","priority":"urgent"}`, "priority must be")
	f(`{`+ids+`,"model_ref":"m","prompt":"x","max_tokens":0}`, "max_tokens must be > 0")
	f(`{`+ids+`,"model_ref":"m","prompt":"x","max_tokens":"8"}`, "max_tokens must be an integer") // wrong type
	f(`{`+ids+`,"model_ref":"m","prompt":"x","ctx":-1}`, "ctx must be > 0")
	f(`{`+ids+`,"model_ref":"m"}`, "prompt is required")
	f(`{`+ids+`,"model_ref":"m","prompt":"x","inputs":["y"]}`, "not both")
	f(`{`+ids+`,"prompt":"x"}`, "model_ref is required")
	f(`{`+ids+`,"model_ref":"m","prompt":"x","sampler_profile_version":"greedy-v1"}`, "")            // the one served
	f(`{`+ids+`,"model_ref":"m","prompt":"x","sampler_profile_version":"topk-v2"}`, "is not served") // another profile
	f(`{`+ids+`,"model_ref":"m","prompt":"x","kv_hint":"warm"}`, "kv_hint")
	f(`{`+ids+`,"model_ref":"m","prompt":"x"} {}`, "after the JSON object") // trailing data

	p, _ := parseTaskRequest([]byte(`{` + ids + `,"model_ref":"m","prompt":"x"}`))
	if p.maxTokens != DefaultMaxTokens || p.seed != seedFor("6f1c2b8e-0a7d-4c1e-9b3a-2f4d5e6a7b8c") || p.seed < 0 {
		t.Fatalf("defaults: %+v", p)
	}
}

// FuzzParseTaskRequest: no input panics; an accepted request is complete.
func FuzzParseTaskRequest(f *testing.F) {
	f.Add([]byte(`{"task_id":"6f1c2b8e-0a7d-4c1e-9b3a-2f4d5e6a7b8c","session_id":"7f1c2b8e-0a7d-4c1e-9b3a-2f4d5e6a7b8c","model_ref":"m","prompt":"x","max_tokens":4,"seed":-1}`))
	f.Add([]byte(`{"task_id":1}`))
	f.Add([]byte(`{"prompt":"\ud83d"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, e := parseTaskRequest(body)
		if (p == nil) == (e == nil) {
			t.Fatalf("want exactly one of request and error: %v %v", p, e)
		}
		if p != nil && (p.Prompt == nil || p.maxTokens <= 0 || p.ModelRef == "") {
			t.Fatalf("accepted an incomplete request: %+v", p)
		}
	})
}
