package promtext

import (
	"fmt"
	"strings"
	"testing"
)

func collect(data string) []string {
	var out []string
	Each([]byte(data), func(name, labels []byte, v float64) {
		out = append(out, fmt.Sprintf("%s|%s|%g", name, labels, v))
	})
	return out
}

func TestEach(t *testing.T) {
	f := func(in string, want ...string) {
		t.Helper()
		got := collect(in)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("Each(%q) = %q, want %q", in, got, want)
		}
	}
	// llama.cpp: no labels.
	f("# HELP llamacpp:requests_processing x\n# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 1\n",
		"llamacpp:requests_processing||1")
	// vLLM: sorted labels, float values.
	f(`vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5-1.5B-Instruct"} 1.0`,
		`vllm:num_requests_running|engine="0",model_name="Qwen/Qwen2.5-1.5B-Instruct"|1`)
	// A timestamp, CRLF, a brace inside a quoted value, blank and broken lines.
	f("a 2 1700000000\r\n\nb{x=\"}{\"} 3\nbroken{x=\"1\" 4\nc NaN\nd{} +Inf\n",
		"a||2", `b|x="}{"|3`, "c||NaN", "d||+Inf")
	// No value.
	f("lonely\n")
}

func TestLabel(t *testing.T) {
	f := func(labels, key, want string, ok bool) {
		t.Helper()
		got, gotOK := Label([]byte(labels), key)
		if got != want || gotOK != ok {
			t.Fatalf("Label(%q, %q) = %q, %v; want %q, %v", labels, key, got, gotOK, want, ok)
		}
	}
	f(`engine="0",model_name="m"`, "model_name", "m", true)
	f(`engine="0",model_name="m"`, "engine", "0", true)
	f(`engine="0"`, "gpu", "", false)
	f(`request_type="active"`, "request_type", "active", true)
	f(`a="x\"y",b="z"`, "a", `x"y`, true)
	f(`a="x\"y",b="z"`, "b", "z", true)
	f(`a=unquoted`, "a", "", false)
	f(``, "a", "", false)
}

func FuzzEach(f *testing.F) {
	f.Add("vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 1.0\n# c\nx 2\n")
	f.Add("a{b=\"\\\"\"} 1\n")
	f.Fuzz(func(t *testing.T, in string) {
		Each([]byte(in), func(name, labels []byte, v float64) {
			if len(name) == 0 {
				t.Fatal("empty name")
			}
			_, _ = Label(labels, "a")
		})
	})
}
