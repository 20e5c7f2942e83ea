package tgi

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/internal/enginetest"
	"github.com/llama-orch/llama-orch/sse"
)

// frameSeeds are real TGI frames (ENGINES.md §3) and edge cases around them.
func frameSeeds() []string {
	seeds := []string{
		`{"error":"Model is overloaded","error_type":"overloaded"}`,
		`{"error":"Incomplete generation stream","error_type":"incomplete_generation_stream"}`,
		`{"error":"` + docValidation + `","error_type":"validation"}`,
		`{"index":1,"token":{"id":151645,"text":"<|im_end|>","logprob":-0.01,"special":true},"generated_text":"x","details":{"finish_reason":"eos_token","generated_tokens":1,"seed":null,"input_length":3}}`,
		`{"index":2,"token":{"id":5,"text":"","logprob":-1.0,"special":false},"generated_text":null,"details":null}`,
		`{"index":1,"token":{"id":1,"text":"\ud83d\ude00 \u00e9\"\\\n","logprob":-1.0,"special":false},"top_tokens":[],"generated_text":null,"details":null}`,
		`{"index":1,"token":null,"generated_text":null}`,
		`{"index":"1"}`, `[]`, `null`, `{}`, `{"details":{"generated_tokens":-1}}`, `{"token":{"text":"\ud83d"}}`,
	}
	for _, ev := range append(append([]string{}, docFrames...), docLegacyFrame) {
		_, j, _ := strings.Cut(strings.TrimSpace(ev), ":")
		seeds = append(seeds, strings.TrimPrefix(j, " "))
	}
	return seeds
}

// encodeFrame writes f back as TGI JSON (the round-trip oracle).
func encodeFrame(f *frame) []byte {
	var b bytes.Buffer
	if f.hasError {
		b.WriteString(`{"error":`)
		if f.errMsg != nil {
			b.WriteString(enginetest.JSONString(string(f.errMsg)))
		} else {
			b.WriteString("true")
		}
		if f.errType != nil {
			b.WriteString(`,"error_type":` + enginetest.JSONString(string(f.errType)))
		}
		b.WriteString("}")
		return b.Bytes()
	}
	b.WriteString(`{"generated_text":`)
	if f.final {
		b.WriteString(`""`)
	} else {
		b.WriteString("null")
	}
	if f.hasIndex {
		b.WriteString(`,"index":` + strconv.Itoa(f.index))
	}
	if f.hasToken {
		b.WriteString(`,"token":{"special":` + strconv.FormatBool(f.special))
		if f.text != nil {
			b.WriteString(`,"text":` + enginetest.JSONString(string(f.text)))
		}
		b.WriteString("}")
	}
	if f.hasDetails {
		b.WriteString(`,"details":{"seed":null`)
		if f.finishReason != nil {
			b.WriteString(`,"finish_reason":` + enginetest.JSONString(string(f.finishReason)))
		}
		if f.hasGeneratedTokens {
			b.WriteString(`,"generated_tokens":` + strconv.Itoa(f.generatedTokens))
		}
		if f.hasInputLength {
			b.WriteString(`,"input_length":` + strconv.Itoa(f.inputLength))
		}
		b.WriteString("}")
	}
	b.WriteString("}")
	return b.Bytes()
}

// snapshot copies f's slices (they point into the parser's buffer).
func snapshot(f frame) frame {
	cp := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		return append([]byte{}, b...)
	}
	f.text, f.finishReason, f.errMsg, f.errType = cp(f.text), cp(f.finishReason), cp(f.errMsg), cp(f.errType)
	return f
}

func equalFrames(a, b frame) bool {
	return a.index == b.index && a.hasIndex == b.hasIndex && bytes.Equal(a.text, b.text) && (a.text == nil) == (b.text == nil) &&
		a.special == b.special && a.hasToken == b.hasToken && a.final == b.final && a.hasDetails == b.hasDetails &&
		bytes.Equal(a.finishReason, b.finishReason) && a.generatedTokens == b.generatedTokens && a.hasGeneratedTokens == b.hasGeneratedTokens &&
		a.inputLength == b.inputLength && a.hasInputLength == b.hasInputLength && a.hasError == b.hasError &&
		bytes.Equal(a.errMsg, b.errMsg) && bytes.Equal(a.errType, b.errType)
}

func TestFrameDecode(t *testing.T) {
	var p fastjson.Parser
	var f frame
	f1 := func(in string, ok bool, check func(f *frame) bool) {
		t.Helper()
		err := f.decode(&p, []byte(in))
		if (err == nil) != ok || (ok && !check(&f)) {
			t.Errorf("decode(%s): err %v, frame %+v", in, err, f)
		}
	}
	any := func(*frame) bool { return true }
	// The documented final frame.
	f1(docFrames[3][6:len(docFrames[3])-2], true, func(f *frame) bool {
		return f.final && f.index == 4 && string(f.text) == " capital" && string(f.finishReason) == "length" &&
			f.generatedTokens == 4 && f.hasGeneratedTokens && f.inputLength == 5 && f.hasInputLength && !f.special
	})
	// An error frame.
	f1(`{"error":"Model is overloaded","error_type":"overloaded"}`, true, func(f *frame) bool {
		return f.hasError && string(f.errMsg) == "Model is overloaded" && string(f.errType) == "overloaded"
	})
	// null error: not an error.
	f1(`{"error":null,"index":1,"token":{"text":"a"}}`, true, func(f *frame) bool { return !f.hasError && string(f.text) == "a" })
	// Not JSON, not an object, wrong field types.
	f1(`{"index":1,"token":`, false, any)
	f1(`"x"`, false, any)
	f1(`{"index":-1}`, false, any)
	f1(`{"index":1.5}`, false, any)
	f1(`{"token":{"text":1}}`, false, any)
	f1(`{"token":{"special":"yes"}}`, false, any)
	f1(`{"generated_text":1}`, false, any)
	f1(`{"details":[]}`, false, any)
	f1(`{"details":{"generated_tokens":"4"}}`, false, any)
	f1(`{"index":1}{"index":2}`, false, any)
}

// FuzzFrame: the decoder never panics, and what it reads survives a round
// trip through TGI's JSON.
func FuzzFrame(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add([]byte(s))
	}
	var p fastjson.Parser
	f.Fuzz(func(t *testing.T, data []byte) {
		var fr frame
		if fr.decode(&p, data) != nil {
			return
		}
		got := snapshot(fr)
		enc := encodeFrame(&got)
		var again frame
		if err := again.decode(&p, enc); err != nil {
			t.Fatalf("re-encoded frame %s does not decode: %v", enc, err)
		}
		if !equalFrames(got, snapshot(again)) {
			t.Fatalf("round trip of %q via %s:\n got %+v\nwant %+v", data, enc, snapshot(again), got)
		}
	})
}

// FuzzStream feeds arbitrary bytes as a close-delimited stream body: no
// panic, tokens are non-empty valid UTF-8, success only with a final frame.
func FuzzStream(f *testing.F) {
	all := strings.Join(docFrames, "")
	f.Add([]byte(all), 10)
	f.Add([]byte(docLegacyFrame+":\n\n"+docFrames[3]), 3)
	f.Add([]byte(tok(1, "", false)+tok(2, "😀", false)+final(3, "<|im_end|>", true, "😀", "eos_token", 3, 2)), 40)
	f.Add([]byte(tok(1, " a", false)+docOverloaded), 1)
	f.Add([]byte(tok(1, " a\xf0\x9f", false)+"data: {\"index\":2,\"token\":{\"text\":\"\x98\x80\"},\"generated_text\":\"\"}\n\n"), 0)
	f.Add([]byte("data: {\"index\":1\n\n"), 5)
	f.Fuzz(func(t *testing.T, body []byte, cut int) {
		segs := [][]byte{body}
		if cut > 0 && cut < len(body) {
			segs = [][]byte{body[:cut], body[cut:]}
		}
		st := &streamState{rd: sse.NewReader(nil, 0)}
		st.x.BodyUntilClose(&enginetest.MemConn{Segs: segs})
		sink := &validSink{t: t}
		res, _, err := st.run(context.Background(), testReq, sink)
		if err == nil {
			if !bytes.Contains(body, []byte("generated_text")) || res.Slot != -1 || res.TokensOut < 0 {
				t.Fatalf("success %+v without a final frame", res)
			}
		} else if _, ok := engines.AsError(err); !ok {
			t.Fatalf("error %v is not an *engines.Error", err)
		}
	})
}

// validSink fails the test on an empty or invalid token.
type validSink struct{ t *testing.T }

func (s *validSink) Token(b []byte) {
	if len(b) == 0 || !utf8.Valid(b) {
		s.t.Fatalf("token %q is empty or invalid UTF-8", b)
	}
}
func (s *validSink) Flush() {}
