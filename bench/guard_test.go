package bench

import (
	"errors"
	"testing"
)

func TestParseTargetLoopbackOnly(t *testing.T) {
	ok := func(raw, addr, base string) {
		t.Helper()
		tg, err := ParseTarget(raw)
		if err != nil {
			t.Fatalf("ParseTarget(%q): %v", raw, err)
		}
		if tg.Addr != addr || tg.Base != base {
			t.Errorf("ParseTarget(%q) = %+v, want addr %s base %q", raw, tg, addr, base)
		}
	}
	// The usual loopback forms, with and without a port or a path prefix.
	ok("http://127.0.0.1:8090", "127.0.0.1:8090", "")
	ok("http://127.1.2.3:8090/", "127.1.2.3:8090", "")
	ok("http://localhost:8090/prefix/", "localhost:8090", "/prefix")
	ok("http://LOCALHOST.:18081", "LOCALHOST.:18081", "")
	ok("http://[::1]:8090", "[::1]:8090", "")
	ok("http://127.0.0.1", "127.0.0.1:80", "")

	refused := func(raw string, loopbackErr bool) {
		t.Helper()
		_, err := ParseTarget(raw)
		if err == nil {
			t.Fatalf("ParseTarget(%q) accepted a non-loopback target", raw)
		}
		if errors.Is(err, ErrNotLoopback) != loopbackErr {
			t.Errorf("ParseTarget(%q) = %v; ErrNotLoopback expected %v", raw, err, loopbackErr)
		}
	}
	// Private, public and unspecified addresses, and names, are refused.
	refused("http://10.0.0.1:8090", true)
	refused("http://192.168.1.10", true)
	refused("http://0.0.0.0:8090", true)
	refused("http://[::]:8090", true)
	refused("http://[::ffff:10.0.0.1]:80", true)
	refused("http://example.com", true)
	refused("http://localhost.example.com:80", true)
	refused("http://128.0.0.1", true)
	// Not http, or no host at all.
	refused("https://127.0.0.1:8443", false)
	refused("127.0.0.1:8090", false)
	refused("http://", false)
}

func TestLoopbackControl(t *testing.T) {
	if err := loopbackControl("tcp4", "127.0.0.1:80", nil); err != nil {
		t.Errorf("loopback refused: %v", err)
	}
	if err := loopbackControl("tcp6", "[::1]:80", nil); err != nil {
		t.Errorf("::1 refused: %v", err)
	}
	if err := loopbackControl("tcp4", "10.1.1.1:80", nil); !errors.Is(err, ErrNotLoopback) {
		t.Errorf("10.1.1.1: %v, want ErrNotLoopback", err)
	}
}
