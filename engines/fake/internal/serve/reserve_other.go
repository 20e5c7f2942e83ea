//go:build !unix

package serve

import "net"

// reservation is a port held for the server while it "loads".
type reservation interface {
	listen() (net.Listener, error)
	close() error
}

// portReservation remembers the port only: without Unix sockets there is no
// portable bind-without-listen, so the port is released during the load
// (connections are refused) and taken again afterwards.
type portReservation struct{ addr string }

func reserve(addr string) (reservation, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	bound := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return nil, "", err
	}
	return &portReservation{addr: bound}, bound, nil
}

func (r *portReservation) listen() (net.Listener, error) { return net.Listen("tcp", r.addr) }
func (r *portReservation) close() error                  { return nil }
