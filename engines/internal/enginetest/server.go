package enginetest

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
)

// Conn is the engine's side of one connection, for a server script.
type Conn struct {
	net.Conn
	br *bufio.Reader
}

// ReadRequest reads one request and its body; io.EOF when the client
// closed the connection.
func (c *Conn) ReadRequest() (*http.Request, []byte, error) {
	req, err := http.ReadRequest(c.br)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(req.Body)
	return req, body, err
}

// WaitClosed blocks until the client closes the connection.
func (c *Conn) WaitClosed() { _, _ = io.Copy(io.Discard, c.br) }

// Server is a loopback (127.0.0.1) replay server: its script runs once per
// accepted connection, in its own goroutine, and owns it.
type Server struct {
	tb      testing.TB
	ln      net.Listener
	accepts atomic.Int32
	script  func(c *Conn)
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
	closed  bool
	stuck   bool // a Close gave up waiting: the next ones do not wait
}

// NewServer starts a Server running script on each connection; it is
// closed at the test's cleanup.
func NewServer(tb testing.TB, script func(c *Conn)) *Server {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &Server{tb: tb, ln: ln, script: script}
	s.wg.Add(1)
	go s.serve()
	tb.Cleanup(s.Close)
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the server's base URL.
func (s *Server) URL() string { return "http://" + s.Addr() }

// Accepts returns the number of connections accepted so far.
func (s *Server) Accepts() int { return int(s.accepts.Load()) }

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepts.Add(1)
		s.mu.Lock()
		if s.closed { // accepted just as Close ran: it closes no more
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.script(&Conn{Conn: c, br: bufio.NewReader(c)})
		}()
	}
}

// Close stops accepting, closes every connection and waits for the
// scripts to return; a script still running after WaitTimeout (it waits
// for something else than its connection) fails the test, once: later
// calls do not wait for it again. It may be called more than once.
func (s *Server) Close() {
	s.tb.Helper()
	_ = s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for _, c := range s.conns {
		_ = c.Close()
	}
	stuck := s.stuck
	s.mu.Unlock()
	if stuck {
		return
	}
	if !waitGroup(&s.wg) {
		s.mu.Lock()
		s.stuck = true
		s.mu.Unlock()
		s.tb.Errorf("enginetest.Server: a script still runs %v after its connection was closed", WaitTimeout)
	}
}

// ServeEach is a script answering every request on every connection with
// resp(n, path, body), n counting requests across connections from 0. The
// connection is closed after a response that says Connection: close.
func ServeEach(resp func(n int, path string, body []byte) []byte) func(c *Conn) {
	var n atomic.Int32
	return func(c *Conn) {
		for {
			req, body, err := c.ReadRequest()
			if err != nil {
				return
			}
			r := resp(int(n.Add(1)-1), req.URL.Path, body)
			if _, err := c.Write(r); err != nil || closes(r) {
				return
			}
		}
	}
}

// ServeAlways is a script answering every request with resp (closing the
// connection after it when it says Connection: close).
func ServeAlways(resp []byte) func(c *Conn) {
	last := closes(resp)
	return func(c *Conn) {
		for {
			if _, _, err := c.ReadRequest(); err != nil {
				return
			}
			if _, err := c.Write(resp); err != nil || last {
				return
			}
		}
	}
}

// closes reports whether the header of the response resp says Connection:
// close (any case). It allocates nothing: benchmarks count the server too.
func closes(resp []byte) bool {
	head, _, _ := bytes.Cut(resp, []byte("\r\n\r\n"))
	for len(head) > 0 {
		var line []byte
		line, head, _ = bytes.Cut(head, []byte("\r\n"))
		if bytes.EqualFold(line, []byte("connection: close")) {
			return true
		}
	}
	return false
}

// ServeOnce is a script answering the first request with resp and closing
// the connection (a response cut short stays cut).
func ServeOnce(resp []byte) func(c *Conn) {
	return func(c *Conn) {
		if _, _, err := c.ReadRequest(); err != nil {
			return
		}
		_, _ = c.Write(resp)
	}
}

// WriteParts is a script reading the request, then writing each part with
// its own Write, then waiting for the client to close.
func WriteParts(parts ...[]byte) func(c *Conn) {
	return func(c *Conn) {
		if _, _, err := c.ReadRequest(); err != nil {
			return
		}
		for _, p := range parts {
			if _, err := c.Write(p); err != nil {
				return
			}
		}
		c.WaitClosed()
	}
}

// PipeDialer serves each dial with Script over net.Pipe: every Write of the
// script reaches the client as exactly one read (or less), which makes TCP
// segmentation deterministic.
type PipeDialer struct {
	// Script plays the engine on each connection.
	Script func(c *Conn)
	dials  atomic.Int32
	wg     sync.WaitGroup
	mu     sync.Mutex
	srvs   []net.Conn
}

// Dial has the signature of net.Dialer.DialContext.
func (p *PipeDialer) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	p.dials.Add(1)
	cli, srv := net.Pipe()
	p.mu.Lock()
	p.srvs = append(p.srvs, srv)
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer srv.Close()
		p.Script(&Conn{Conn: srv, br: bufio.NewReader(srv)})
	}()
	return cli, nil
}

// Dials returns the number of dials so far.
func (p *PipeDialer) Dials() int { return int(p.dials.Load()) }

// Wait waits for every script to return (after the client closed its
// connections). When one still runs after WaitTimeout, it fails the test
// and closes the engine's side of every connection, which ends a script
// waiting for the client.
func (p *PipeDialer) Wait(t testing.TB) {
	t.Helper()
	if waitGroup(&p.wg) {
		return
	}
	t.Errorf("enginetest.PipeDialer: a script still runs %v after the client closed its connections", WaitTimeout)
	p.mu.Lock()
	for _, c := range p.srvs {
		_ = c.Close()
	}
	p.mu.Unlock()
	if !waitGroup(&p.wg) {
		t.Errorf("enginetest.PipeDialer: a script still runs %v after its connection was closed", WaitTimeout)
	}
}
