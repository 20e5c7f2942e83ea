package sse

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// appendFrame re-encodes f. CRLF line ends let a value end in '\r' survive
// the round trip (the reader strips exactly one CR before each LF).
func appendFrame(dst []byte, f *Frame, eol string) []byte {
	if f.Comment {
		return append(dst, ":"+eol+eol...)
	}
	if f.Event != nil {
		dst = append(append(append(dst, "event: "...), f.Event...), eol...)
	}
	if f.ID != nil {
		dst = append(append(append(dst, "id: "...), f.ID...), eol...)
	}
	if f.Data != nil {
		for line := range bytes.SplitSeq(f.Data, []byte("\n")) {
			dst = append(append(append(dst, "data: "...), line...), eol...)
		}
	}
	return append(dst, eol...)
}

// parsed holds a stream's frames as independent copies.
type parsed struct {
	frames []Frame
	err    error
}

func parseAll(t *testing.T, r io.Reader, maxFrame, limit int) parsed {
	cr := &countingReader{r: r}
	rd := NewReader(cr, maxFrame)
	var p parsed
	var f Frame
	buffered := -1
	for {
		before := cr.reads
		err := rd.Next(&f)
		if buffered > 0 && cr.reads != before {
			t.Fatalf("Buffered() was %d but Next read", buffered)
		}
		if buffered == 0 && err == nil && cr.reads == before {
			t.Fatalf("Buffered() was 0 but Next returned a frame without reading")
		}
		if err != nil {
			p.err = err
			return p
		}
		if !f.Comment && f.Event == nil && f.ID == nil && f.Data == nil {
			t.Fatalf("empty non-comment frame")
		}
		if f.Comment && (f.Event != nil || f.ID != nil || f.Data != nil) {
			t.Fatalf("comment frame with fields: %s", showFrame(&f))
		}
		p.frames = append(p.frames, Frame{
			Event: bytes.Clone(f.Event), ID: bytes.Clone(f.ID), Data: bytes.Clone(f.Data), Comment: f.Comment,
		})
		// Every frame needs at least three bytes (":\n\n"), so more frames
		// than that means Next loops.
		if len(p.frames) > limit {
			t.Fatalf("more than %d frames: Next loops", limit)
		}
		buffered = rd.Buffered()
	}
}

func sameFrames(a, b []Frame) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if showFrame(&a[i]) != showFrame(&b[i]) {
			return false
		}
	}
	return true
}

func framesString(fs []Frame) string {
	var s []string
	for i := range fs {
		s = append(s, showFrame(&fs[i]))
	}
	return strings.Join(s, " | ")
}

func FuzzReader(f *testing.F) {
	if files, _ := filepath.Glob(filepath.Join(fixtureDir, "*.sse")); len(files) > 0 {
		for _, path := range files {
			body, err := os.ReadFile(path)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(body)
		}
	}
	for _, s := range []string{
		"data: x\n\n",
		"data:x\r\n\r\n",
		":\n\n: ping\n\n",
		"id: 1\nevent: token\ndata: {\"t\":\"a\",\"i\":0}\n\n",
		"data: a\ndata: b\n\ndata: c\r\ndata:\r\n\r\n",
		"\n\n\r\n\r\nretry: 5\n\nerror: {}\n\n",
		"data: a\r\r\n\r\n",
		"data: x\n\ndata: y",
		"data",
		"event:\nid:\n\n",
		"id: 5\n\n",
		"retry: 1\nfoo\n\nerror\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		// The look-ahead's quick test agrees with the parser.
		var fr Frame
		var scratch []byte
		if hasContent(in) != parseBlock(in, false, &fr, &scratch) {
			t.Fatalf("hasContent(%q) = %v, parseBlock disagrees", in, hasContent(in))
		}

		limit := len(in)/3 + 1
		got := parseAll(t, bytes.NewReader(in), 0, limit)
		if got.err != io.EOF && got.err != io.ErrUnexpectedEOF && got.err != ErrFrameTooLarge {
			t.Fatalf("unexpected error %v", got.err)
		}

		// A naive line-by-line parser agrees.
		if ref, refErr := refParse(in); len(in) < DefaultMaxFrame &&
			(refErr != got.err || strings.Join(ref, " | ") != framesString(got.frames)) {
			t.Fatalf("reference parser: %s, %v\nReader: %s, %v", strings.Join(ref, " | "), refErr, framesString(got.frames), got.err)
		}

		// The frames do not depend on how the bytes are split.
		one := parseAll(t, iotest.OneByteReader(bytes.NewReader(in)), 0, limit)
		if one.err != got.err || !sameFrames(one.frames, got.frames) {
			t.Fatalf("byte-by-byte: %s, %v\nwhole: %s, %v", framesString(one.frames), one.err, framesString(got.frames), got.err)
		}

		// A smaller limit gives a prefix of the frames, then ErrFrameTooLarge.
		small := parseAll(t, bytes.NewReader(in), 64, limit)
		if len(small.frames) > len(got.frames) || !sameFrames(small.frames, got.frames[:len(small.frames)]) ||
			(small.err != got.err && small.err != ErrFrameTooLarge) {
			t.Fatalf("maxFrame 64: %s, %v\ndefault: %s, %v", framesString(small.frames), small.err, framesString(got.frames), got.err)
		}

		// Re-encoded frames parse to the same frames and end cleanly.
		for _, eol := range []string{"\r\n", "\n"} {
			if eol == "\n" && endsInCR(got.frames) {
				continue // only CRLF can carry a value ending in CR
			}
			var enc []byte
			for i := range got.frames {
				enc = appendFrame(enc, &got.frames[i], eol)
			}
			again := parseAll(t, bytes.NewReader(enc), 0, len(enc)/3+1)
			if again.err != io.EOF || !sameFrames(again.frames, got.frames) {
				t.Fatalf("round trip (eol %q) of %q:\n got %s, %v\nwant %s", eol, enc,
					framesString(again.frames), again.err, framesString(got.frames))
			}
		}
	})
}

func endsInCR(fs []Frame) bool {
	for _, f := range fs {
		for _, v := range [][]byte{f.Event, f.ID, f.Data} {
			for line := range bytes.SplitSeq(v, []byte("\n")) {
				if len(line) > 0 && line[len(line)-1] == '\r' {
					return true
				}
			}
		}
	}
	return false
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{
		"", " hello", `say "hi"\`, "\n\r\t\x00\x1f\x7f", "\u2028\u2029", "😀 日本語",
		"\xff", "x\xf0\x9f\x98y", "\xed\xa0\x80", "\xc0\xaf", "\uFFFD", "<&>",
	} {
		f.Add([]byte(s), uint64(0), 0)
	}
	f.Fuzz(func(t *testing.T, s []byte, id uint64, i int) {
		out := AppendJSONString([]byte("prefix"), s)
		if !bytes.HasPrefix(out, []byte("prefix")) {
			t.Fatalf("prefix overwritten: %q", out)
		}
		checkJSONString(t, s, out[len("prefix"):])

		// A token event is always exactly one well-formed event.
		ev := AppendToken(nil, id, s, i)
		rd := NewReader(bytes.NewReader(ev), 0)
		var fr Frame
		if err := rd.Next(&fr); err != nil {
			t.Fatalf("token event %q: %v", ev, err)
		}
		var tok struct {
			T string `json:"t"`
			I int    `json:"i"`
		}
		if err := json.Unmarshal(fr.Data, &tok); err != nil {
			t.Fatalf("token data %q: %v", fr.Data, err)
		}
		if string(fr.Event) != "token" || string(fr.ID) != strconv.FormatUint(id, 10) || tok.T != perByteValid(s) || tok.I != i {
			t.Fatalf("token event %q parsed to event %q, %+v", ev, fr.Event, tok)
		}
		if err := rd.Next(&fr); err != io.EOF {
			t.Fatalf("token event %q: more than one event (%v)", ev, err)
		}
	})
}

// refParse is a deliberately naive SSE parser (one line at a time, as the
// spec reads) to check Reader's block scanning against.
func refParse(in []byte) ([]string, error) {
	var frames []string
	var block [][]byte
	for {
		i := bytes.IndexByte(in, '\n')
		if i < 0 {
			break
		}
		line := bytes.TrimSuffix(in[:i], []byte("\r"))
		in = in[i+1:]
		if len(line) > 0 {
			block = append(block, line)
			continue
		}
		if f, ok := refBlock(block); ok {
			frames = append(frames, showFrame(&f))
		}
		block = nil
	}
	for _, line := range append(block, in) {
		if len(bytes.TrimSpace(line)) > 0 {
			return frames, io.ErrUnexpectedEOF
		}
	}
	return frames, io.EOF
}

func refBlock(lines [][]byte) (Frame, bool) {
	var f Frame
	var data [][]byte
	comment := false
	for _, line := range lines {
		if line[0] == ':' {
			comment = true
			continue
		}
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found {
			value = []byte{}
		}
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "data":
			data = append(data, value)
		case "error":
			f.Event = name
			data = append(data, value)
		case "event":
			f.Event = value
		case "id":
			f.ID = value
		}
	}
	if data != nil {
		f.Data = append([]byte{}, bytes.Join(data, []byte("\n"))...)
	}
	if f.Event != nil || f.ID != nil || f.Data != nil {
		return f, true
	}
	f.Comment = comment
	return f, comment
}
