package bench

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
)

// ErrNotLoopback is returned for a target outside 127.0.0.0/8, ::1 and
// localhost: load generated here must never leave the machine.
var ErrNotLoopback = errors.New("only loopback targets are allowed (127.0.0.0/8, ::1, localhost)")

// Target is a parsed, checked base URL.
type Target struct {
	// Addr is host:port for the dialer ("127.0.0.1:8090", "[::1]:8090").
	Addr string
	// Host is the Host header value.
	Host string
	// Base is the URL path prefix without a trailing slash ("" for the root).
	Base string
	// IPv6 is set when the host is an IPv6 literal.
	IPv6 bool
}

// ParseTarget checks that raw is an http URL whose host is a loopback
// address or localhost, and returns where to dial.
func ParseTarget(raw string) (Target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Target{}, fmt.Errorf("cannot parse URL %q: %w", raw, err)
	}
	if u.Scheme != "http" {
		return Target{}, fmt.Errorf("URL %q: scheme must be http (loopback targets only)", raw)
	}
	host := u.Hostname()
	if host == "" {
		return Target{}, fmt.Errorf("URL %q has no host", raw)
	}
	if !isLoopbackHost(host) {
		return Target{}, fmt.Errorf("URL %q: host %q: %w", raw, host, ErrNotLoopback)
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	t := Target{
		Addr: net.JoinHostPort(host, port),
		Host: u.Host,
		Base: strings.TrimRight(u.EscapedPath(), "/"),
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		t.IPv6 = true
	}
	return t, nil
}

// isLoopbackHost accepts "localhost" (any case, optional trailing dot) and IP
// literals in 127.0.0.0/8 or ::1. Names are not resolved here; the dialer
// checks the resolved address again (loopbackControl).
func isLoopbackHost(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	if v4 := ip.To4(); v4 != nil {
		return v4[0] == 127
	}
	return ip.Equal(net.IPv6loopback)
}

// loopbackControl is a net.Dialer Control hook: it refuses to connect to a
// resolved address that is not loopback (say, /etc/hosts mapping localhost
// elsewhere).
func loopbackControl(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("cannot parse dial address %q: %w", address, err)
	}
	if !isLoopbackHost(host) {
		return fmt.Errorf("dial %s %s: %w", network, address, ErrNotLoopback)
	}
	return nil
}
