//go:build unix

package serve

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// reservation is a port held for the server while it "loads".
type reservation interface {
	// listen starts accepting on the reserved port.
	listen() (net.Listener, error)
	// close gives the port up.
	close() error
}

// socketReservation is a TCP socket bound to the port but not listening:
// the kernel refuses connections to it (RST), exactly what a client of an
// engine whose HTTP server has not started yet sees.
type socketReservation struct{ fd int }

// reserve binds addr without listening and returns the bound address. Like
// net.Listen, an unspecified host (":8000", "0.0.0.0:8000", "[::]:8000")
// binds a dual-stack IPv6 socket where the system has IPv6.
func reserve(addr string) (reservation, string, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	var fd int
	if ta.IP == nil || ta.IP.IsUnspecified() {
		fd, err = socket(syscall.AF_INET6, &syscall.SockaddrInet6{Port: ta.Port}, true, ta.Port)
		if err != nil && (ta.IP == nil || ta.IP.To4() != nil) {
			// No IPv6 here: every IPv4 address, as net.Listen falls back.
			fd, err = socket(syscall.AF_INET, &syscall.SockaddrInet4{Port: ta.Port}, false, ta.Port)
		}
	} else if ip4 := ta.IP.To4(); ip4 != nil {
		s4 := &syscall.SockaddrInet4{Port: ta.Port}
		copy(s4.Addr[:], ip4)
		fd, err = socket(syscall.AF_INET, s4, false, ta.Port)
	} else {
		s6 := &syscall.SockaddrInet6{Port: ta.Port}
		copy(s6.Addr[:], ta.IP.To16())
		fd, err = socket(syscall.AF_INET6, s6, false, ta.Port)
	}
	if err != nil {
		return nil, "", err
	}
	got, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		return nil, "", fmt.Errorf("getsockname: %w", err)
	}
	var bound net.TCPAddr
	switch a := got.(type) {
	case *syscall.SockaddrInet4:
		bound = net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *syscall.SockaddrInet6:
		bound = net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	}
	return &socketReservation{fd: fd}, bound.String(), nil
}

// socket makes a TCP socket of family bound to sa; dualStack accepts IPv4
// on an IPv6 socket.
func socket(family int, sa syscall.Sockaddr, dualStack bool, port int) (int, error) {
	syscall.ForkLock.RLock()
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		syscall.Close(fd)
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	if dualStack {
		if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 0); err != nil {
			return fail("setsockopt", err)
		}
	}
	// SO_REUSEADDR (as net.Listen sets it) lets a fixed port be taken again
	// over TIME_WAIT connections of a previous run. Not for port 0: two
	// non-listening sockets with it may share a port, so another socket's
	// automatic port could land on this one.
	if port != 0 {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
			return fail("setsockopt", err)
		}
	}
	if err := syscall.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	return fd, nil
}

func (r *socketReservation) listen() (net.Listener, error) {
	if err := syscall.Listen(r.fd, syscall.SOMAXCONN); err != nil {
		syscall.Close(r.fd)
		return nil, fmt.Errorf("listen: %w", err)
	}
	f := os.NewFile(uintptr(r.fd), "fake-engine-listener")
	ln, err := net.FileListener(f) // dups the descriptor
	f.Close()
	return ln, err
}

func (r *socketReservation) close() error { return syscall.Close(r.fd) }
