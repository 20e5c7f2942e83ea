package serve

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errInvalid = errors.New("invalid")

// TestGroupClose: Close drops tracked connections, waits for every
// goroutine, refuses new ones, and returns stop's error except
// net.ErrClosed; a second Close only waits.
func TestGroupClose(t *testing.T) {
	g := NewGroup("test", nil)
	a, b := net.Pipe()
	defer b.Close()
	if !g.Track(a) {
		t.Fatal("Track on an open group = false")
	}
	var finished atomic.Bool
	started := make(chan struct{})
	if !g.Go("reader", func() {
		close(started)
		_, _ = a.Read(make([]byte, 1)) // until Close drops a
		time.Sleep(10 * time.Millisecond)
		finished.Store(true)
	}) {
		t.Fatal("Go on an open group = false")
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second): // a guard against hangs
		t.Fatal("the goroutine Go started never ran")
	}
	stopErr := errors.New("listener")
	if err := g.Close(func() error { return stopErr }); err != stopErr {
		t.Fatalf("Close = %v, want the stop error", err)
	}
	if !finished.Load() {
		t.Fatal("Close returned before its goroutine ended")
	}
	select {
	case <-g.Done():
	default:
		t.Fatal("Done not closed")
	}
	if g.Go("late", func() { t.Error("ran after Close") }) || g.Enter() {
		t.Fatal("Go or Enter after Close = true")
	}
	c, d := net.Pipe()
	defer d.Close()
	if g.Track(c) {
		t.Fatal("Track after Close = true")
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("Track after Close left the connection open")
	}
	if err := g.Close(func() error { t.Error("stop ran twice"); return nil }); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := NewGroup("closed listener", nil).Close(func() error { return net.ErrClosed }); err != nil {
		t.Fatalf("Close with net.ErrClosed = %v, want nil", err)
	}
}

// TestGroupRecovers: a panicking goroutine is logged, not fatal.
func TestGroupRecovers(t *testing.T) {
	g := NewGroup("test", nil)
	g.Go("panicker", func() { panic("boom") })
	if err := g.Close(nil); err != nil {
		t.Fatal(err)
	}
}

func newHTTP(h http.HandlerFunc, closedStatus int) *HTTP {
	return NewHTTP(NewGroup("test", nil), &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}, closedStatus)
}

func client(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestHTTPLifecycle: Start once, serve, Close twice; calls out of order
// wrap the invalid error.
func TestHTTPLifecycle(t *testing.T) {
	h := newHTTP(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }, 0)
	if h.Addr() != "" || h.Listening() {
		t.Fatal("address or listening before Start")
	}
	var bound string
	if err := h.Start("127.0.0.1:0", 0, errInvalid, func(a string) { bound = a }); err != nil {
		t.Fatal(err)
	}
	if bound == "" || bound != h.Addr() || !h.Listening() {
		t.Fatalf("bound %q, Addr %q, listening %v", bound, h.Addr(), h.Listening())
	}
	if err := h.Start("127.0.0.1:0", 0, errInvalid, nil); !errors.Is(err, errInvalid) {
		t.Fatalf("second Start = %v, want %v", err, errInvalid)
	}
	resp, err := client(t).Get("http://" + h.Addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Fatalf("body %q", b)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if h.Listening() {
		t.Fatal("listening after Close")
	}
	if err := h.Start("127.0.0.1:0", 0, errInvalid, nil); !errors.Is(err, errInvalid) {
		t.Fatalf("Start after Close = %v, want %v", err, errInvalid)
	}
	if err := NewHTTP(NewGroup("never started", nil), &http.Server{}, 0).Close(); err != nil {
		t.Fatalf("Close before Start = %v", err)
	}
}

// TestHTTPLoad: while loading the port is bound but refuses connections;
// then it serves. Closing while loading gives the port up.
func TestHTTPLoad(t *testing.T) {
	h := newHTTP(func(w http.ResponseWriter, r *http.Request) {}, 0)
	defer h.Close()
	if err := h.Start("127.0.0.1:0", 50*time.Millisecond, errInvalid, nil); err != nil {
		t.Fatal(err)
	}
	if h.Addr() == "" || h.Listening() {
		t.Fatalf("while loading: Addr %q, listening %v", h.Addr(), h.Listening())
	}
	if c, err := net.DialTimeout("tcp", h.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("connected while loading")
	}
	c := client(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get("http://" + h.Addr() + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never served after loading: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !h.Listening() {
		t.Fatal("not listening once loaded")
	}

	l := newHTTP(func(w http.ResponseWriter, r *http.Request) {}, 0)
	if err := l.Start("127.0.0.1:0", time.Hour, errInvalid, nil); err != nil {
		t.Fatal(err)
	}
	addr := l.Addr()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr) // the port was given up
	if err != nil {
		t.Fatalf("port still held after Close: %v", err)
	}
	ln.Close()
}

// TestHTTPCloseDropsStreams: Close cuts a response mid-body and waits for
// its handler.
func TestHTTPCloseDropsStreams(t *testing.T) {
	var ended atomic.Bool
	h := newHTTP(func(w http.ResponseWriter, r *http.Request) {
		defer ended.Store(true)
		_, _ = io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // a handler held until its connection drops
	}, 0)
	if err := h.Start("127.0.0.1:0", 0, errInvalid, nil); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", h.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(line, "data: 1") {
			break
		}
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if !ended.Load() {
		t.Fatal("Close returned before the handler ended")
	}
	rest, _ := io.ReadAll(br)
	if strings.Contains(string(rest), "0\r\n\r\n") {
		t.Fatalf("the body ended with its last chunk: %q", rest)
	}
}

// TestHTTPServeHTTP: a router panic drops the connection (logged unless it
// is http.ErrAbortHandler); a request during Close gets closedStatus, or a
// dropped connection.
func TestHTTPServeHTTP(t *testing.T) {
	abort := func(name string, f func()) {
		t.Helper()
		defer func() {
			if v := recover(); v != http.ErrAbortHandler { //nolint:errorlint // the sentinel panic value
				t.Errorf("%s: panic %v, want http.ErrAbortHandler", name, v)
			}
		}()
		f()
	}
	req := httptest.NewRequest("GET", "/", nil)
	for _, p := range []any{"boom", http.ErrAbortHandler} {
		h := newHTTP(func(w http.ResponseWriter, r *http.Request) { panic(p) }, 0)
		abort("router panic", func() { h.ServeHTTP(httptest.NewRecorder(), req) })
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
	}
	h := newHTTP(func(w http.ResponseWriter, r *http.Request) { t.Error("routed after Close") }, http.StatusServiceUnavailable)
	_ = h.Close()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || rec.Body.Len() != 0 {
		t.Fatalf("during Close: %d %q, want an empty 503", rec.Code, rec.Body)
	}
	d := newHTTP(func(w http.ResponseWriter, r *http.Request) { t.Error("routed after Close") }, 0)
	_ = d.Close()
	abort("during Close", func() { d.ServeHTTP(httptest.NewRecorder(), req) })
}
