package openai

import (
	"strconv"
	"strings"
)

// Error types written in the "type" field. The official clients pick their
// exception class from the HTTP status alone (openai-node APIError.generate:
// 400 BadRequestError, 401 AuthenticationError, 403 PermissionDeniedError,
// 404 NotFoundError, 409 ConflictError, 429 RateLimitError, >=500
// InternalServerError) and retry on 408/409/429/5xx, honouring retry-after-ms
// and Retry-After; type, param and code are only copied onto the exception.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeAuthentication = "authentication_error"
	TypePermission     = "permission_error"
	TypeNotFound       = "not_found_error"
	// TypeRequests is what OpenAI writes on a request-rate 429 (its token-rate
	// 429s say "tokens"), always with code "rate_limit_exceeded".
	TypeRequests = "requests"
	TypeServer   = "server_error"
)

// Error is an OpenAI-shaped error: the HTTP status and the body fields of
// {"error":{"message","type","param","code"}}. Empty Param and Code are
// written as null, as OpenAI does.
type Error struct {
	Status  int
	Message string
	Type    string
	Param   string
	Code    string
}

// Error returns the status and message.
func (e *Error) Error() string {
	return "openai: " + strconv.Itoa(e.Status) + " " + e.Type + ": " + e.Message
}

// AppendJSON appends {"error":{"message":…,"type":…,"param":…|null,"code":…|null}}.
func (e *Error) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"error":{"message":`...)
	dst = appendString(dst, e.Message)
	dst = append(dst, `,"type":`...)
	dst = appendString(dst, e.Type)
	dst = append(dst, `,"param":`...)
	dst = appendStringOrNull(dst, e.Param)
	dst = append(dst, `,"code":`...)
	dst = appendStringOrNull(dst, e.Code)
	return append(dst, "}}"...)
}

// invalid is a 400 invalid_request_error about param.
func invalid(param, message string) *Error {
	return &Error{Status: 400, Message: message, Type: TypeInvalidRequest, Param: param}
}

// openAICodes replaces those of our SPEC §3.6 codes for which OpenAI has a
// code of its own; every other code is written in lower case
// ("DEADLINE_UNMET" → "deadline_unmet") so the client still sees which
// condition it hit.
var openAICodes = map[string]string{
	"UNAUTHORIZED":        "invalid_api_key",
	"ADMISSION_REJECT":    "rate_limit_exceeded",
	"QUEUE_FULL_DROP_LRU": "rate_limit_exceeded",
	"INVALID_PARAMS":      "", // OpenAI leaves code null and names the param
}

// ErrorFor maps one of our errors (SPEC §3.6: its HTTP status, its code and
// message) to OpenAI's shape. The type follows the status:
//
//	400, 409, other 4xx  invalid_request_error
//	401                  authentication_error, code "invalid_api_key"
//	403                  permission_error
//	404                  not_found_error ("MODEL_NOT_FOUND" → code "model_not_found", param "model")
//	429                  requests, code "rate_limit_exceeded" (as OpenAI's request-rate limit)
//	5xx                  server_error
//
// Codes without an OpenAI equivalent are written in lower case, e.g.
// POOL_UNAVAILABLE → "pool_unavailable", DEADLINE_UNMET → "deadline_unmet".
// A status outside 400..599 is a caller bug and is reported as a 500.
// The backpressure headers of 429/503 (Retry-After, X-Backoff-Ms; the
// official clients also read retry-after-ms) are the caller's to write.
func ErrorFor(status int, code, message string) *Error {
	e := &Error{Status: status, Message: message}
	if c, ok := openAICodes[code]; ok {
		e.Code = c
	} else {
		e.Code = strings.ToLower(code)
	}
	switch {
	case status == 401:
		e.Type, e.Code = TypeAuthentication, "invalid_api_key"
	case status == 403:
		e.Type = TypePermission
	case status == 404:
		e.Type = TypeNotFound
		if code == "MODEL_NOT_FOUND" {
			e.Param = "model"
		}
	case status == 429:
		e.Type, e.Code = TypeRequests, "rate_limit_exceeded"
	case status >= 400 && status < 500:
		e.Type = TypeInvalidRequest
	case status >= 500 && status < 600:
		e.Type = TypeServer
	default:
		e.Status, e.Type = 500, TypeServer
	}
	return e
}

// ModelNotFound is the 404 for a model no pool serves, worded as OpenAI
// words it.
func ModelNotFound(model string) *Error {
	return &Error{
		Status:  404,
		Message: "The model `" + model + "` does not exist or you do not have access to it.",
		Type:    TypeNotFound,
		Param:   "model",
		Code:    "model_not_found",
	}
}
