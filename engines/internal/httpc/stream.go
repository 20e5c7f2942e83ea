package httpc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/internal/text"
	"github.com/llama-orch/llama-orch/sse"
)

// StartStream is the prologue every adapter's Stream shares: it sends req
// (from AppendRequest) as Start does and checks that the answer is a 2xx
// event stream. ok means x now holds that stream: decode its Body, then
// Release x.
//
// Otherwise x is released and either err is set — ctx.Err() when ctx ended,
// else an *engines.Error (see Start; KindProtocol for a 2xx answer that is
// not text/event-stream) — or the engine answered a non-2xx status, x.Status,
// with errBody: at most limit bytes of the body, read into *buf (kept for
// reuse), for the caller to map to its engine's error.
func (c *Client) StartStream(ctx context.Context, req []byte, headerTimeout time.Duration, x *Exchange, buf *[]byte, limit int) (errBody []byte, ok bool, err error) {
	if err := c.Start(ctx, req, headerTimeout, x); err != nil {
		return nil, false, err
	}
	if x.Status/100 != 2 {
		data, rerr := x.ReadAll((*buf)[:0], limit)
		*buf = data[:0]
		c.Release(x, rerr == nil)
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		return data, false, nil
	}
	if x.HasContentType && !x.EventStream {
		c.Release(x, false)
		return nil, false, &engines.Error{Kind: engines.KindProtocol, Status: x.Status,
			Message: "engine answered the stream request without text/event-stream"}
	}
	return nil, true, nil
}

// StreamError is the error that ends a stream: ctx.Err() when ctx ended
// (a read error is then the cancel hook closing the connection), else an
// *engines.Error of kind with msg, wrapping err.
func StreamError(ctx context.Context, afterFirstToken bool, kind engines.ErrorKind, msg string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return &engines.Error{Kind: kind, Message: msg, AfterFirstToken: afterFirstToken, Err: err}
}

// ReadError is the StreamError for err from reading a stream's events
// (sse.Reader over a Source): KindProtocol for an oversized event or a body
// that is not valid chunked framing, else KindUpstream with cut, which says
// what the stream ended before.
func ReadError(ctx context.Context, err error, afterFirstToken bool, cut string) error {
	switch {
	case errors.Is(err, sse.ErrFrameTooLarge):
		return StreamError(ctx, afterFirstToken, engines.KindProtocol, "engine event exceeds the size limit", err)
	case IsProtocolError(err):
		return StreamError(ctx, afterFirstToken, engines.KindProtocol, "malformed chunked body from the engine", err)
	}
	return StreamError(ctx, afterFirstToken, engines.KindUpstream, cut, err)
}

// ErrorMessage is the message of a non-2xx answer: msg, the engine's own
// when its body had one, else a printable excerpt of body, else
// "HTTP <status>".
func ErrorMessage(status int, msg string, body []byte) string {
	if msg == "" {
		msg = text.Excerpt(bytes.TrimSpace(body))
	}
	if msg == "" {
		msg = "HTTP " + strconv.Itoa(status)
	}
	return msg
}

// StatusError maps a non-2xx answer by its status alone (ENGINES.md §5):
// 503 is KindUnavailable, 429 KindOverloaded, any other 4xx
// KindInvalidRequest, 5xx and above KindUpstream; any other status is
// KindProtocol, its message saying so. The message is ErrorMessage's. An
// adapter refines the kind from what its engine's body says.
func StatusError(status int, msg string, body []byte) *engines.Error {
	msg = ErrorMessage(status, msg, body)
	e := &engines.Error{Status: status, Message: msg}
	switch {
	case status == 503:
		e.Kind = engines.KindUnavailable
	case status == 429:
		e.Kind = engines.KindOverloaded
	case status >= 400 && status < 500:
		e.Kind = engines.KindInvalidRequest
	case status >= 500:
		e.Kind = engines.KindUpstream
	default:
		e.Kind = engines.KindProtocol
		e.Message = "unexpected HTTP status " + strconv.Itoa(status) + ": " + msg
	}
	return e
}

// DrainEvents reads what follows a stream's terminal event through rd, the
// SSE reader over x's body — at once when the body is fully read, else
// within timeout — and reports whether the body ended cleanly with no
// further event: only then is the connection reusable.
func (x *Exchange) DrainEvents(rd *sse.Reader, ev *sse.Frame, timeout time.Duration) bool {
	var err error
	if x.Body.Finished() {
		err = rd.Next(ev) // cannot block: the body is fully read
	} else {
		x.SetReadDeadline(time.Now().Add(timeout))
		err = rd.Next(ev)
		x.SetReadDeadline(time.Time{})
	}
	return err == io.EOF && x.Body.Finished()
}
