package sse

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

// fixtureDir holds the llama.cpp captures; CI clones the repo next to shared/.
var fixtureDir = filepath.Join("..", "..", "shared", "fixtures", "llamacpp")

// showFrame renders f for comparisons, telling nil fields from empty ones.
func showFrame(f *Frame) string {
	if f.Comment {
		return "comment"
	}
	var parts []string
	if f.Event != nil {
		parts = append(parts, fmt.Sprintf("event=%q", f.Event))
	}
	if f.ID != nil {
		parts = append(parts, fmt.Sprintf("id=%q", f.ID))
	}
	if f.Data != nil {
		parts = append(parts, fmt.Sprintf("data=%q", f.Data))
	}
	return strings.Join(parts, " ")
}

// countingReader counts Read calls, to check Buffered against what Next does.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// chunkReader returns its chunks one per Read, then io.EOF.
type chunkReader struct{ chunks [][]byte }

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.chunks) > 0 && len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	return n, nil
}

// readAll returns every frame of r (rendered) and the error that ended it. It
// also checks Buffered after every frame: non-zero exactly when the next Next
// returns without reading.
func readAll(t testing.TB, r io.Reader, maxFrame int) ([]string, error) {
	t.Helper()
	cr := &countingReader{r: r}
	rd := NewReader(cr, maxFrame)
	var out []string
	var f Frame
	buffered := -1 // unknown before the first Next
	for {
		before := cr.reads
		err := rd.Next(&f)
		if buffered > 0 && cr.reads != before {
			t.Fatalf("Buffered() was %d but Next read from the stream", buffered)
		}
		if buffered == 0 && cr.reads == before && err == nil {
			t.Fatalf("Buffered() was 0 but Next returned a frame without reading")
		}
		if err != nil {
			if rd.Buffered() != 0 {
				t.Fatalf("Buffered() = %d after error %v", rd.Buffered(), err)
			}
			if err2 := rd.Next(&f); err2 != err {
				t.Fatalf("error not sticky: %v then %v", err, err2)
			}
			return out, err
		}
		out = append(out, showFrame(&f))
		buffered = rd.Buffered()
	}
}

func TestReader(t *testing.T) {
	type tc struct {
		name string
		in   string
		want []string
		err  error
	}
	cases := []tc{
		// The llama.cpp shape: `data: ` and compact JSON.
		{"data with space", "data: {\"a\":1}\n\n", []string{`data="{\"a\":1}"`}, io.EOF},
		// TGI ≤ 2.0 omits the space after the colon.
		{"data without space", "data:{\"a\":1}\n\n", []string{`data="{\"a\":1}"`}, io.EOF},
		// Only the first space is part of the syntax.
		{"data two spaces", "data:  x\n\n", []string{`data=" x"`}, io.EOF},
		// llama.cpp ≥ b9478 and TGI keep-alive.
		{"bare comment", ":\n\n", []string{"comment"}, io.EOF},
		// The canonical stream's and vLLM's keep-alives.
		{"ping comment", ": ping\n\n: keep-alive\n\n", []string{"comment", "comment"}, io.EOF},
		// The canonical stream's own shape.
		{"event and id", "id: 7\nevent: token\ndata: {\"t\":\"a\",\"i\":0}\n\n",
			[]string{`event="token" id="7" data="{\"t\":\"a\",\"i\":0}"`}, io.EOF},
		// An event line alone is an event with no data.
		{"event only", "event: end\n\n", []string{`event="end"`}, io.EOF},
		// An id alone is an event: it moves Last-Event-ID on.
		{"id only", "id: 5\n\n", []string{`id="5"`}, io.EOF},
		// A bare `id:` is present and empty (it clears Last-Event-ID).
		{"empty id", "id:\ndata: x\n\n", []string{`id="" data="x"`}, io.EOF},
		// The last id line wins.
		{"two ids", "id: 1\nid: 2\ndata: x\n\n", []string{`id="2" data="x"`}, io.EOF},
		// A field name with no colon has an empty value.
		{"data without colon", "data\n\n", []string{`data=""`}, io.EOF},
		// CRLF line ends throughout.
		{"crlf", "data: a\r\n\r\ndata: b\r\n\r\n", []string{`data="a"`, `data="b"`}, io.EOF},
		// CRLF lines ended by a bare LF blank line.
		{"crlf then lf", "data: a\r\n\ndata: b\n\r\n", []string{`data="a"`, `data="b"`}, io.EOF},
		// A lone CR is not a line end: it stays in the value.
		{"lone cr", "data: a\rb\n\n", []string{`data="a\rb"`}, io.EOF},
		// Only one CR is taken as part of the line end.
		{"double cr", "data: a\r\r\n\r\n", []string{`data="a\r"`}, io.EOF},
		// Several events in one read.
		{"several events", "data: 1\n\ndata: 2\n\n:\n\ndata: 3\n\n",
			[]string{`data="1"`, `data="2"`, "comment", `data="3"`}, io.EOF},
		// Data lines are joined with '\n'.
		{"multi-line data", "data: a\ndata: b\ndata: c\n\n", []string{`data="a\nb\nc"`}, io.EOF},
		// An empty data line adds an empty line.
		{"multi-line empty", "data: a\ndata:\n\n", []string{`data="a\n"`}, io.EOF},
		// Multi-line events in a row reuse the scratch buffer correctly.
		{"multi-line twice", "data: a\ndata: b\n\ndata: c\ndata: d\n\n",
			[]string{`data="a\nb"`, `data="c\nd"`}, io.EOF},
		// A comment beside fields does not make a comment frame.
		{"comment with data", ": hi\ndata: x\n\n", []string{`data="x"`}, io.EOF},
		// Extra blank lines between events are skipped.
		{"extra blank lines", "\n\n\ndata: x\n\n\n\n\r\n\r\ndata: y\n\n", []string{`data="x"`, `data="y"`}, io.EOF},
		// retry: and unknown fields make no frame.
		{"unknown fields", "retry: 100\n\nfoo: bar\n\ndata: x\n\n", []string{`data="x"`}, io.EOF},
		// Very old llama.cpp `error:` lines surface as error events.
		{"error line", "error: {\"code\":500}\n\n", []string{`event="error" data="{\"code\":500}"`}, io.EOF},
		// The OpenAI-style terminator is just data to the reader.
		{"done", "data: [DONE]\n\n", []string{`data="[DONE]"`}, io.EOF},
		// UTF-8 passes through.
		{"utf8", "data: {\"t\":\"😀 日本\"}\n\n", []string{`data="{\"t\":\"😀 日本\"}"`}, io.EOF},
		// An empty stream ends cleanly.
		{"empty", "", nil, io.EOF},
		// Trailing blank lines are not a cut event.
		{"trailing newline", "data: x\n\n\n", []string{`data="x"`}, io.EOF},
		// A stream cut after a data line's end but before the blank line.
		{"eof inside event", "data: x\n\ndata: y\n", []string{`data="x"`}, io.ErrUnexpectedEOF},
		// A stream cut in the middle of a line.
		{"eof inside line", "data: {\"a\"", nil, io.ErrUnexpectedEOF},
		// A stream cut between CR and LF of the blank line.
		{"eof inside crlf", "data: x\r\n\r", nil, io.ErrUnexpectedEOF},
		// A trailing incomplete comment is a cut too.
		{"eof inside comment", ": ping", nil, io.ErrUnexpectedEOF},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			check := func(how string, r io.Reader) {
				t.Helper()
				got, err := readAll(t, r, 0)
				if err != c.err || strings.Join(got, "|") != strings.Join(c.want, "|") {
					t.Fatalf("%s: got %q, %v; want %q, %v", how, got, err, c.want, c.err)
				}
			}
			check("one read", strings.NewReader(c.in))
			check("one byte per read", iotest.OneByteReader(strings.NewReader(c.in)))
			check("data with EOF", iotest.DataErrReader(strings.NewReader(c.in)))
			for i := 0; i <= len(c.in); i++ {
				check(fmt.Sprintf("split at %d", i), &chunkReader{chunks: [][]byte{[]byte(c.in[:i]), []byte(c.in[i:])}})
			}
		})
	}
}

func TestReaderBuffered(t *testing.T) {
	cr := &countingReader{r: &chunkReader{chunks: [][]byte{
		[]byte("data: a\n\ndata: b\n\n"),
		[]byte("data: c\n\nda"),
		[]byte("ta: d\n\nretry: 5\n\n"),
		[]byte("\n"),
	}}}
	rd := NewReader(cr, 0)
	var f Frame
	step := func(wantData string, wantBuffered int, wantReads int) {
		t.Helper()
		if err := rd.Next(&f); err != nil {
			t.Fatal(err)
		}
		if string(f.Data) != wantData || rd.Buffered() != wantBuffered || cr.reads != wantReads {
			t.Fatalf("got data %q, Buffered %d, reads %d; want %q, %d, %d",
				f.Data, rd.Buffered(), cr.reads, wantData, wantBuffered, wantReads)
		}
	}
	if rd.Buffered() != 0 {
		t.Fatal("Buffered() != 0 before the first read")
	}
	// b is complete and waiting.
	step("a", len("data: b\n\n"), 1)
	// Nothing left: flush now.
	step("b", 0, 1)
	// Only part of d is here, so the next Next must read: flush now.
	step("c", 0, 2)
	// What follows d holds no event, so the next Next must read.
	step("d", 0, 3)
	if err := rd.Next(&f); err != io.EOF {
		t.Fatalf("got %v, want io.EOF", err)
	}

	// Reset forgets the old stream entirely.
	cr = &countingReader{r: strings.NewReader("data: e\n\n")}
	rd.Reset(cr)
	step("e", 0, 1)
}

func TestReaderFrameTooLarge(t *testing.T) {
	f := func(in string, maxFrame int, want []string, wantErr error) {
		t.Helper()
		for _, r := range []io.Reader{strings.NewReader(in), iotest.OneByteReader(strings.NewReader(in))} {
			got, err := readAll(t, r, maxFrame)
			if err != wantErr || strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("got %q, %v; want %q, %v", got, err, want, wantErr)
			}
		}
	}
	big := strings.Repeat("x", 100)
	// An event one byte over the limit (with its blank line) fails...
	f("data: "+big+"\n\n", len("data: "+big+"\n\n")-1, nil, ErrFrameTooLarge)
	// ...while one that fits exactly passes.
	f("data: "+big+"\n\n", len("data: "+big+"\n\n"), []string{fmt.Sprintf("data=%q", big)}, io.EOF)
	// Events before the oversized one are still returned.
	f("data: a\n\ndata: "+big+"\n\n", 64, []string{`data="a"`}, ErrFrameTooLarge)
	// The limit is per event, not per stream.
	f(strings.Repeat("data: "+big[:50]+"\n\n", 10), 64, slicesRepeat(fmt.Sprintf("data=%q", big[:50]), 10), io.EOF)
	// Events larger than the initial 4 KiB buffer grow it.
	huge := strings.Repeat("y", 100_000)
	f("data: "+huge+"\n\n:\n\n", 0, []string{fmt.Sprintf("data=%q", huge), "comment"}, io.EOF)
	// A stream that never ends an event is stopped by the default limit.
	f(strings.Repeat("z", DefaultMaxFrame+1), 0, nil, ErrFrameTooLarge)
}

func slicesRepeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// zeroReader never returns data or an error.
type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestReaderErrors(t *testing.T) {
	// A reader that makes no progress is not spun on forever.
	rd := NewReader(zeroReader{}, 0)
	var f Frame
	if err := rd.Next(&f); err != io.ErrNoProgress {
		t.Fatalf("got %v, want io.ErrNoProgress", err)
	}
	// A read error after some events is returned after those events.
	boom := errors.New("connection reset")
	rd = NewReader(io.MultiReader(strings.NewReader("data: a\n\ndata: b"), iotest.ErrReader(boom)), 0)
	if err := rd.Next(&f); err != nil || string(f.Data) != "a" {
		t.Fatalf("got %q, %v", f.Data, err)
	}
	if err := rd.Next(&f); err != boom {
		t.Fatalf("got %v, want %v", err, boom)
	}
	if err := rd.Next(&f); err != boom {
		t.Fatalf("error not sticky: got %v", err)
	}
}

// fixtureDataFrames is the number of `data:` events in each capture (each
// one also checked by `grep -c '^data' FILE`).
var fixtureDataFrames = map[string]int{
	"completion_stream.body.sse":                9,
	"completion_stream_run2.body.sse":           9,
	"completion_stream_run3.body.sse":           9,
	"error_midstream_completion.body.sse":       5,
	"error_midstream_v1_chat.body.sse":          8,
	"error_midstream_v1_completions.body.sse":   6,
	"v1_chat_completions_stream.body.sse":       11,
	"v1_chat_completions_stream_usage.body.sse": 12,
	"v1_completions_stream.body.sse":            10,
}

func fixtureFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(fixtureDir, "*.sse"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Skipf("no fixtures in %s (shared/ is not next to the repo)", fixtureDir)
	}
	return files
}

func TestReaderLlamaFixtures(t *testing.T) {
	for _, path := range fixtureFiles(t) {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			want, ok := fixtureDataFrames[name]
			if !ok {
				t.Fatalf("new fixture: add its data frame count to fixtureDataFrames")
			}
			body, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			rd := NewReader(bytes.NewReader(body), 0)
			var f Frame
			n := 0
			for {
				err := rd.Next(&f)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("frame %d: %v", n, err)
				}
				if f.Comment || f.Event != nil || f.ID != nil || f.Data == nil {
					t.Fatalf("frame %d: want a bare data event, got %s", n, showFrame(&f))
				}
				if string(f.Data) != "[DONE]" && !json.Valid(f.Data) {
					t.Fatalf("frame %d: invalid JSON %q", n, f.Data)
				}
				n++
			}
			if n != want {
				t.Fatalf("got %d data frames, want %d", n, want)
			}
			// The same frames come out however the bytes are split.
			whole, err1 := readAll(t, bytes.NewReader(body), 0)
			bytewise, err2 := readAll(t, iotest.OneByteReader(bytes.NewReader(body)), 0)
			if err1 != io.EOF || err2 != io.EOF || strings.Join(whole, "|") != strings.Join(bytewise, "|") {
				t.Fatalf("byte-by-byte read differs: %v, %v", err1, err2)
			}
		})
	}
}
