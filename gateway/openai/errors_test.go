package openai

import (
	"encoding/json"
	"testing"
)

// TestErrorFor: each SPEC §3.6 code keeps its status and gets the OpenAI
// type the official clients would see from that endpoint.
func TestErrorFor(t *testing.T) {
	f := func(status int, code string, want Error) {
		t.Helper()
		want.Message = "msg"
		if got := ErrorFor(status, code, "msg"); *got != want {
			t.Errorf("ErrorFor(%d, %q) = %+v, want %+v", status, code, *got, want)
		}
	}
	// Schema and budget errors: OpenAI leaves code null and names the param.
	f(400, "INVALID_PARAMS", Error{Status: 400, Type: "invalid_request_error"})
	f(400, "DEADLINE_UNMET", Error{Status: 400, Type: "invalid_request_error", Code: "deadline_unmet"})
	f(400, "UNTRUSTED_ARTIFACT", Error{Status: 400, Type: "invalid_request_error", Code: "untrusted_artifact"})
	// Auth: OpenAI's code for a bad key.
	f(401, "UNAUTHORIZED", Error{Status: 401, Type: "authentication_error", Code: "invalid_api_key"})
	f(403, "MODEL_DEPRECATED", Error{Status: 403, Type: "permission_error", Code: "model_deprecated"})
	f(403, "FORBIDDEN", Error{Status: 403, Type: "permission_error", Code: "forbidden"})
	// An unknown model names the model param.
	f(404, "MODEL_NOT_FOUND", Error{Status: 404, Type: "not_found_error", Code: "model_not_found", Param: "model"})
	f(404, "NOT_FOUND", Error{Status: 404, Type: "not_found_error", Code: "not_found"})
	// Other 4xx: a duplicate id (409), a wrong method.
	f(409, "INVALID_PARAMS", Error{Status: 409, Type: "invalid_request_error"})
	f(405, "METHOD_NOT_ALLOWED", Error{Status: 405, Type: "invalid_request_error", Code: "method_not_allowed"})
	// Backpressure: OpenAI's request-rate 429 whatever our policy was.
	f(429, "ADMISSION_REJECT", Error{Status: 429, Type: "requests", Code: "rate_limit_exceeded"})
	f(429, "QUEUE_FULL_DROP_LRU", Error{Status: 429, Type: "requests", Code: "rate_limit_exceeded"})
	// Unavailable and internal: server_error, our code kept.
	f(503, "POOL_UNREADY", Error{Status: 503, Type: "server_error", Code: "pool_unready"})
	f(503, "POOL_UNAVAILABLE", Error{Status: 503, Type: "server_error", Code: "pool_unavailable"})
	f(503, "REPLICA_EXHAUSTED", Error{Status: 503, Type: "server_error", Code: "replica_exhausted"})
	f(500, "INTERNAL", Error{Status: 500, Type: "server_error", Code: "internal"})
	// A status that is no error is a caller bug: reported as a 500.
	f(200, "INTERNAL", Error{Status: 500, Type: "server_error", Code: "internal"})
	f(0, "", Error{Status: 500, Type: "server_error"})
}

// TestErrorJSON: OpenAI's envelope, with null for an empty param or code.
func TestErrorJSON(t *testing.T) {
	f := func(e *Error, want string) {
		t.Helper()
		got := e.AppendJSON([]byte("x"))
		if string(got) != "x"+want || !json.Valid(got[1:]) {
			t.Errorf("got %s, want %s", got[1:], want)
		}
	}
	f(&Error{Status: 400, Message: "Invalid value for 'n'", Type: TypeInvalidRequest, Param: "n"},
		`{"error":{"message":"Invalid value for 'n'","type":"invalid_request_error","param":"n","code":null}}`)
	f(ModelNotFound("gpt-9"),
		"{\"error\":{\"message\":\"The model `gpt-9` does not exist or you do not have access to it.\",\"type\":\"not_found_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}")
	f(ErrorFor(429, "ADMISSION_REJECT", `queue "p" full`),
		`{"error":{"message":"queue \"p\" full","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
	if got := ModelNotFound("m").Status; got != 404 {
		t.Errorf("ModelNotFound status %d", got)
	}
	if got := ErrorFor(429, "ADMISSION_REJECT", "full").Error(); got != "openai: 429 requests: full" {
		t.Errorf("Error() = %q", got)
	}
}
