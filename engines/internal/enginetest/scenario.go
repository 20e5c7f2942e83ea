package enginetest

import (
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines"
)

// StreamFunc makes one Stream call of the adapter under test (its request
// fixed by the test).
type StreamFunc func(ctx context.Context, sink engines.Sink) error

// CheckStream fails the test unless a Stream call succeeded, delivered
// wantToks and returned wantRes.
func CheckStream(t testing.TB, name string, sink *RecSink, res engines.Result, err error, wantToks []string, wantRes engines.Result) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: Stream: %v", name, err)
	}
	if got := sink.Tokens(); !reflect.DeepEqual(got, wantToks) {
		t.Fatalf("%s: tokens\n got %q\nwant %q", name, got, wantToks)
	}
	if res != wantRes {
		t.Fatalf("%s: result %+v, want %+v", name, res, wantRes)
	}
}

// PanicSink panics on every token: a bug in the caller's sink.
type PanicSink struct{}

// Token panics.
func (PanicSink) Token([]byte) { panic("sink bug") }

// Flush does nothing.
func (PanicSink) Flush() {}

// CancelPoint is where CheckCancel cancels a stream: once the engine wrote
// Write (nil: it is still in prefill, no header sent) and the sink got
// Tokens tokens.
type CancelPoint struct {
	Name   string
	Write  []byte
	Tokens int
}

// CheckCancel runs, for each point, a loopback engine that reads the
// request, writes p.Write and then holds the connection until the client
// closes it; open returns the stream to run against the engine at url.
// Canceling ctx at the point must make the stream return context.Canceled
// at once, and the engine must see the connection close (that frees its
// slot).
func CheckCancel(t *testing.T, points []CancelPoint, open func(url string) StreamFunc) {
	t.Helper()
	for _, p := range points {
		gotReq, closed := make(chan struct{}), make(chan struct{})
		srv := NewServer(t, func(c *Conn) {
			if _, _, err := c.ReadRequest(); err != nil {
				return
			}
			_, _ = c.Write(p.Write)
			close(gotReq)
			c.WaitClosed()
			close(closed)
		})
		stream := open(srv.URL())
		ctx, cancel := context.WithCancel(Ctx(t))
		ready := make(chan struct{})
		sink := &RecSink{OnToken: func(n int) {
			if n == p.Tokens {
				close(ready)
			}
		}}
		if p.Tokens == 0 {
			close(ready)
		}
		done := make(chan error, 1)
		go func() { done <- stream(ctx, sink) }()
		Wait(t, gotReq, "the request")
		Wait(t, ready, "the tokens")
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("%s: err %v, want context.Canceled", p.Name, err)
			}
		case <-time.After(WaitTimeout):
			t.Fatalf("%s: Stream did not return after cancel", p.Name)
		}
		Wait(t, closed, "the engine to see the connection close")
		srv.Close()
	}
}

// CheckNoTokenAfterCancel runs stream, whose engine sends at least two
// token frames at once, canceling ctx from the first token: the stream
// must return context.Canceled and deliver nothing more, although the
// next frames are already buffered (SPEC §3.3).
func CheckNoTokenAfterCancel(t *testing.T, stream StreamFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(Ctx(t))
	defer cancel()
	sink := &RecSink{OnToken: func(int) { cancel() }}
	if err := stream(ctx, sink); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if n := len(sink.Tokens()); n != 1 {
		t.Fatalf("%d tokens delivered, want 1 (none after the cancel)", n)
	}
}

// CheckSinkPanic runs a stream (made by open for a loopback engine at url)
// whose engine writes resp, a response holding a token, then holds the
// connection: when the sink panics, the panic reaches the caller and the
// engine connection is closed, not leaked.
func CheckSinkPanic(t *testing.T, resp []byte, open func(url string) StreamFunc) {
	t.Helper()
	closed := make(chan struct{})
	srv := NewServer(t, func(c *Conn) {
		if _, _, err := c.ReadRequest(); err != nil {
			return
		}
		_, _ = c.Write(resp)
		c.WaitClosed()
		close(closed)
	})
	stream := open(srv.URL())
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("no panic")
			}
		}()
		_ = stream(Ctx(t), PanicSink{})
	}()
	Wait(t, closed, "the engine to see the connection close")
}

// RefusedURL returns the base URL of a loopback port nothing listens on
// (connections are refused, as by an engine still loading).
func RefusedURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	_ = ln.Close()
	return url
}

// HealthCase is an engine's answer to a health probe: the probe must
// succeed when OK, else fail with KindUnavailable and a message containing
// Msg.
type HealthCase struct {
	Name string
	Resp []byte
	OK   bool
	Msg  string
}

// CheckHealth runs the probe that open makes for a loopback engine answering
// each case's Resp, then for a port nothing listens on, which must be
// KindUnavailable too.
func CheckHealth(t *testing.T, cases []HealthCase, open func(url string) func(context.Context) error) {
	t.Helper()
	for _, tc := range cases {
		srv := NewServer(t, ServeAlways(tc.Resp))
		err := open(srv.URL())(context.Background())
		if tc.OK {
			if err != nil {
				t.Fatalf("%s: %v", tc.Name, err)
			}
		} else if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindUnavailable || !strings.Contains(e.Message, tc.Msg) {
			t.Fatalf("%s: err %v, want KindUnavailable %q", tc.Name, err, tc.Msg)
		}
		srv.Close()
	}
	err := open(RefusedURL(t))(context.Background())
	if e, ok := engines.AsError(err); !ok || e.Kind != engines.KindUnavailable {
		t.Fatalf("refused: %v, want KindUnavailable", err)
	}
}
