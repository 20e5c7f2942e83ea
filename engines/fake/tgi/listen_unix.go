//go:build unix

package tgi

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
// the kernel refuses connections to it (RST), exactly what a client of a
// TGI whose router has not started yet sees.
type socketReservation struct{ fd int }

// reserve binds addr without listening and returns the bound address.
func reserve(addr string) (reservation, string, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	family := syscall.AF_INET
	var sa syscall.Sockaddr
	if ip4 := ta.IP.To4(); ta.IP == nil || ip4 != nil {
		s4 := &syscall.SockaddrInet4{Port: ta.Port}
		if ip4 != nil {
			copy(s4.Addr[:], ip4)
		}
		sa = s4
	} else {
		family = syscall.AF_INET6
		s6 := &syscall.SockaddrInet6{Port: ta.Port}
		copy(s6.Addr[:], ta.IP.To16())
		sa = s6
	}
	syscall.ForkLock.RLock()
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, "", fmt.Errorf("socket: %w", err)
	}
	// SO_REUSEADDR (as net.Listen sets it) lets a fixed port be taken again
	// over TIME_WAIT connections of a previous run. Not for port 0: two
	// non-listening sockets with it may share a port, so another socket's
	// automatic port could land on this one.
	if ta.Port != 0 {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
			syscall.Close(fd)
			return nil, "", fmt.Errorf("setsockopt: %w", err)
		}
	}
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		return nil, "", fmt.Errorf("bind: %w", err)
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

func (r *socketReservation) listen() (net.Listener, error) {
	if err := syscall.Listen(r.fd, syscall.SOMAXCONN); err != nil {
		syscall.Close(r.fd)
		return nil, fmt.Errorf("listen: %w", err)
	}
	f := os.NewFile(uintptr(r.fd), "tgi-fake-listener")
	ln, err := net.FileListener(f) // dups the descriptor
	f.Close()
	return ln, err
}

func (r *socketReservation) close() error { return syscall.Close(r.fd) }
