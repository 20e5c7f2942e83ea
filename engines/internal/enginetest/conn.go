package enginetest

import (
	"context"
	"io"
	"net"
	"time"
)

// MemConn is a net.Conn reading from fixed segments: one Read returns at
// most the rest of the current segment, so the segments stand for what the
// network delivers at once. Writes are discarded. Embed it to change that
// (a replaying connection rewinds on Write).
type MemConn struct {
	// Segs is what Read returns, segment by segment, then io.EOF.
	Segs [][]byte
	i    int
	off  int
}

// Reset rewinds m to the start of its first segment.
func (m *MemConn) Reset() { m.i, m.off = 0, 0 }

// Read implements net.Conn.
func (m *MemConn) Read(p []byte) (int, error) {
	for m.i < len(m.Segs) && m.off == len(m.Segs[m.i]) {
		m.i++
		m.off = 0
	}
	if m.i >= len(m.Segs) {
		return 0, io.EOF
	}
	n := copy(p, m.Segs[m.i][m.off:])
	m.off += n
	return n, nil
}

// Write implements net.Conn; it discards p.
func (m *MemConn) Write(p []byte) (int, error) { return len(p), nil }

// Close implements net.Conn; it does nothing.
func (m *MemConn) Close() error { return nil }

// LocalAddr implements net.Conn.
func (m *MemConn) LocalAddr() net.Addr { return &net.TCPAddr{} }

// RemoteAddr implements net.Conn.
func (m *MemConn) RemoteAddr() net.Addr { return &net.TCPAddr{} }

// SetDeadline implements net.Conn; deadlines are ignored.
func (m *MemConn) SetDeadline(time.Time) error { return nil }

// SetReadDeadline implements net.Conn; deadlines are ignored.
func (m *MemConn) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline implements net.Conn; deadlines are ignored.
func (m *MemConn) SetWriteDeadline(time.Time) error { return nil }

// MemDialer serves each dial with a new MemConn over segs.
func MemDialer(segs ...[]byte) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(context.Context, string, string) (net.Conn, error) {
		return &MemConn{Segs: segs}, nil
	}
}
