package enginetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestChunked(t *testing.T) {
	parts := []string{"data: a\n\n", "data: é😀\n\n"}
	raw := Chunked(parts...)
	got, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(raw)))
	if err != nil || string(got) != strings.Join(parts, "") {
		t.Fatalf("de-chunked %q, %v", got, err)
	}
	if !bytes.HasSuffix(raw, []byte(LastChunk)) {
		t.Fatalf("%q lacks the last chunk", raw)
	}
	p := []byte("abc")[:2:3] // spare capacity must not be written to
	if c := Chunk(p); string(c) != "2\r\nab\r\n" || string(p[:3]) != "abc" {
		t.Fatalf("Chunk = %q, source now %q", c, p[:3])
	}
}

func TestSegments(t *testing.T) {
	parts := []string{"data: a\n\n", "data: b\n\n"}
	burst, n1 := Segments("HEAD\r\n\r\n", parts, false)
	paced, n2 := Segments("HEAD\r\n\r\n", parts, true)
	whole := bytes.Join(paced, nil)
	if len(burst) != 1 || len(paced) != 4 || !bytes.Equal(burst[0], whole) || n1 != len(whole) || n2 != len(whole) {
		t.Fatalf("burst %q (%d), paced %q (%d)", burst, n1, paced, n2)
	}
}

func TestSplitAtAndMemConn(t *testing.T) {
	in := []byte("0123456789")
	segs := SplitAt(in, 3, 3, 7, 25) // a repeated cut adds nothing; 25 wraps to 3
	if len(segs) != 3 || string(bytes.Join(segs, nil)) != string(in) {
		t.Fatalf("SplitAt = %q", segs)
	}
	m := &MemConn{Segs: segs}
	for range 2 {
		var reads []string
		p := make([]byte, 100)
		for {
			n, err := m.Read(p)
			if err == io.EOF {
				break
			}
			reads = append(reads, string(p[:n]))
		}
		if strings.Join(reads, "|") != "012|3456|789" {
			t.Fatalf("reads %q, want one per segment", reads)
		}
		m.Reset()
	}
}

func TestJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `q" b\`, "nl\n tab\t ctrl\x01", "é😀"} {
		var got string
		if err := json.Unmarshal([]byte(JSONString(s)), &got); err != nil || got != s {
			t.Errorf("JSONString(%q) = %s, decodes to %q, %v", s, JSONString(s), got, err)
		}
	}
	if got := JSONString("\xF0\x9F"); got != "\"\xF0\x9F\"" {
		t.Errorf("invalid UTF-8 not kept raw: %q", got)
	}
}

func TestServer(t *testing.T) {
	LeakCheck(t)
	srv := NewServer(t, ServeEach(func(n int, path string, body []byte) []byte {
		resp := path + " " + string(body)
		hdr := ""
		if n == 1 {
			hdr = "Connection: close\r\n"
		}
		return []byte("HTTP/1.1 200 OK\r\n" + hdr + "Content-Length: " + strconv.Itoa(len(resp)) + "\r\n\r\n" + resp)
	}))
	for i, want := range []string{"/a x", "/b y", "/c z"} {
		req, err := http.NewRequestWithContext(Ctx(t), "POST", srv.URL()+want[:2], strings.NewReader(want[3:]))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != want {
			t.Fatalf("request %d: %q, want %q", i, body, want)
		}
	}
	http.DefaultClient.CloseIdleConnections()
	if n := srv.Accepts(); n != 2 {
		t.Fatalf("%d connections, want 2 (the second response closed the first)", n)
	}
}

func TestCloses(t *testing.T) {
	f := func(resp string, want bool) {
		t.Helper()
		if got := closes([]byte(resp)); got != want {
			t.Errorf("closes(%q) = %v, want %v", resp, got, want)
		}
	}
	f("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", true)
	f("HTTP/1.1 200 OK\r\nconnection: CLOSE\r\nContent-Length: 0\r\n\r\n", true)
	f("HTTP/1.1 200 OK\r\nContent-Length: 19\r\n\r\nConnection: close\r\n", false) // in the body
	f("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n", false)
}

func TestPipeDialer(t *testing.T) {
	LeakCheck(t)
	pd := &PipeDialer{Script: WriteParts([]byte("HTTP/1.1 200 OK\r\n"), []byte("Content-Length: 2\r\n\r\nok"))}
	nc, err := pd.Dial(t.Context(), "tcp", "engine.test:80")
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(WaitTimeout)) // a script that never answers fails the read
	req, _ := http.NewRequest("GET", "http://engine.test/", nil)
	go func() { _ = req.Write(nc) }()
	resp, err := http.ReadResponse(bufio.NewReader(nc), req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	nc.Close()
	pd.Wait(t)
	if string(body) != "ok" || pd.Dials() != 1 {
		t.Fatalf("body %q, %d dials", body, pd.Dials())
	}
}

func TestRecSink(t *testing.T) {
	flushes := 0
	s := &RecSink{OnFlush: func() { flushes++ }}
	s.Token([]byte("a"))
	s.Token([]byte("b"))
	s.Flush()
	s.Token([]byte("c"))
	if s.Log() != "TTFT" || s.Text() != "abc" || len(s.Tokens()) != 3 || s.Flushes() != 1 || flushes != 1 {
		t.Fatalf("log %q text %q flushes %d", s.Log(), s.Text(), s.Flushes())
	}
}

func TestCtx(t *testing.T) {
	var ctx context.Context
	t.Run("sub", func(t *testing.T) {
		ctx = Ctx(t)
		if d, ok := ctx.Deadline(); !ok || time.Until(d) > WaitTimeout {
			t.Fatalf("deadline %v, %v; want within %v", d, ok, WaitTimeout)
		}
		if ctx.Err() != nil {
			t.Fatalf("done early: %v", ctx.Err())
		}
	})
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("after the test: %v, want context.Canceled", ctx.Err())
	}
}

func TestRecv(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	if got := Recv(t, ch, "a value"); got != 7 {
		t.Fatalf("Recv = %d, want 7", got)
	}
}
