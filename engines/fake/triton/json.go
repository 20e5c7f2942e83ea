package triton

import "github.com/llama-orch/llama-orch/engines/fake/internal/wire"

// appendString appends s as a JSON string the way rapidjson's Writer does:
// '"', '\\' and control characters escaped (\b \f \n \r \t short, others
// \u00XX), '/' and non-ASCII written as they are. Invalid UTF-8 is replaced
// by U+FFFD (the vLLM backend's text is a Python str encoded to UTF-8, so
// it never holds invalid bytes).
func appendString(b []byte, s string) []byte { return wire.AppendString(b, s, wire.RapidJSON) }
