package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// callTimeout bounds one control call (watch has none).
const callTimeout = 10 * time.Second

// maxBody bounds a response body read into memory.
const maxBody = 16 << 20

// client talks to orchd's control API with a plain net/http client.
type client struct {
	base string // e.g. http://127.0.0.1:8090, no trailing slash
	key  string
	tr   *http.Transport
	hc   *http.Client
}

func newClient(base, key string) *client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: callTimeout, KeepAlive: 30 * time.Second}).DialContext
	tr.ResponseHeaderTimeout = 0 // bounded per call by its context
	return &client{base: base, key: key, tr: tr, hc: &http.Client{Transport: tr}}
}

// close drops idle connections (the process may live on, as tests do).
func (c *client) close() { c.tr.CloseIdleConnections() }

// reply is one answered request.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// unreachableError is a request that got no HTTP answer (exit 2).
type unreachableError struct {
	url string
	err error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("cannot reach orchd at %s: %v", e.url, e.err)
}

func (e *unreachableError) Unwrap() error { return e.err }

// newRequest builds a request to path (which may hold a query) with auth.
func (c *client) newRequest(ctx context.Context, method, path, ctype string, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("cannot build request %s %s: %w", method, path, err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("User-Agent", "orchctl")
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	return req, nil
}

// do sends one request bounded by timeout and reads the whole answer. Any
// HTTP status is a reply; only a failure to get one is an error
// (*unreachableError, or the context's error when ctx was canceled).
func (c *client) do(ctx context.Context, method, path, ctype string, body []byte, timeout time.Duration) (*reply, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := c.newRequest(cctx, method, path, ctype, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, cctx, err, timeout)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, c.transportError(ctx, cctx, fmt.Errorf("cannot read the answer: %w", err), timeout)
	}
	if len(b) > maxBody {
		return nil, fmt.Errorf("%s %s: answer larger than %d bytes", method, path, maxBody)
	}
	return &reply{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// transportError classifies a failed request: interrupted (the caller's ctx),
// or orchd unreachable (refused, DNS, timeout, connection lost).
func (c *client) transportError(ctx, cctx context.Context, err error, timeout time.Duration) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(cctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("no answer within %s", timeout)
	} else {
		err = innermost(err)
	}
	return &unreachableError{url: c.base, err: err}
}

// innermost drops net/http's "Get "URL": " wrapper: the URL is already in
// the message, the cause ("dial tcp …: connection refused") is what matters.
func innermost(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}

// envelope is the error body of SPEC §3.6 plus apply's problems.
type envelope struct {
	Code      string    `json:"code"`
	Message   string    `json:"message"`
	Retriable bool      `json:"retriable"`
	PoolID    string    `json:"pool_id"`
	Problems  []problem `json:"problems"`
}

// problem is one config problem as POST /v1/config reports it.
type problem struct {
	Path    string `json:"path"`
	Line    int    `json:"line"`
	Message string `json:"message"`
	Warning bool   `json:"warning"`
}

// statusError is a non-2xx answer (exit 1).
type statusError struct {
	op          string // what was asked, e.g. "status"
	status      int
	env         envelope
	parsed      bool   // body was an envelope
	raw         string // start of a body that was not
	correlation string
	keySent     bool
}

func (e *statusError) Error() string {
	head := strconv.Itoa(e.status)
	if e.parsed && e.env.Code != "" {
		head += " " + oneLine(e.env.Code)
	} else if t := http.StatusText(e.status); t != "" {
		head += " " + t
	}
	switch {
	case e.parsed && e.env.Message != "":
		head += ": " + oneLine(e.env.Message)
	case !e.parsed && e.raw != "":
		head += ": " + e.raw
	}
	var s string
	switch {
	case e.status == http.StatusUnauthorized && !e.keySent:
		s = e.op + ": orchd needs an API key with the control role: set ORCHD_KEY or pass --key (" + head + ")"
	case e.status == http.StatusUnauthorized:
		s = e.op + ": orchd did not accept the API key (" + head + ")"
	case e.status == http.StatusForbidden:
		s = e.op + ": orchd refused the API key: it is unknown or lacks the control role (" + head + ")"
	default:
		s = e.op + ": orchd answered " + head
	}
	if e.correlation != "" {
		s += " [correlation id " + oneLine(e.correlation) + "]"
	}
	return s
}

// newStatusError reads the envelope out of a non-2xx reply.
func (c *client) newStatusError(op string, r *reply) *statusError {
	e := &statusError{op: op, status: r.status, correlation: r.header.Get("X-Correlation-Id"), keySent: c.key != ""}
	if err := json.Unmarshal(r.body, &e.env); err == nil && (e.env.Code != "" || e.env.Message != "") {
		e.parsed = true
	} else {
		raw := strings.TrimSpace(string(r.body))
		if len(raw) > 200 {
			raw = strings.ToValidUTF8(raw[:200], "") + "…"
		}
		e.raw = oneLine(raw)
	}
	return e
}

// call is do plus the status check: a 2xx reply or a *statusError.
func (c *client) call(ctx context.Context, op, method, path, ctype string, body []byte, timeout time.Duration) (*reply, error) {
	r, err := c.do(ctx, method, path, ctype, body, timeout)
	if err != nil {
		return nil, err
	}
	if r.status < 200 || r.status > 299 {
		return r, c.newStatusError(op, r)
	}
	return r, nil
}
