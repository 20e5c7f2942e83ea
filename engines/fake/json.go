package fake

import (
	"math"
	"strconv"

	"github.com/llama-orch/llama-orch/engines/fake/internal/wire"
)

// JSON appenders that print like nlohmann::json's dump(), which llama.cpp
// uses for every body: compact, raw UTF-8, invalid bytes replaced by U+FFFD,
// doubles in shortest round-trip form with a ".0" on whole numbers.

// appendString appends s as a JSON string the way nlohmann escapes it:
// `"` `\` and control characters only (\b \f \n \r \t, others \u00xx); an
// invalid UTF-8 byte becomes U+FFFD. It takes bytes or a string so the
// per-token path converts nothing.
func appendString[S ~string | ~[]byte](b []byte, s S) []byte {
	return wire.AppendString(b, s, wire.Nlohmann)
}

// appendFloat appends f as nlohmann prints a double: shortest round-trip
// digits, fixed notation with ".0" for whole numbers while the decimal point
// lies between 10^-4 and 10^15, exponent notation ("1e-05", "1.5e+16")
// beyond; NaN and infinities become null.
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	return wire.AppendDouble(b, f, 1e15)
}

// appendFloat32 prints a float parameter as llama.cpp does: stored as a C
// float, widened to double (0.8 → 0.800000011920929).
func appendFloat32(b []byte, f float32) []byte { return appendFloat(b, float64(f)) }

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, "true"...)
	}
	return append(b, "false"...)
}

func appendInt(b []byte, v int) []byte { return strconv.AppendInt(b, int64(v), 10) }
