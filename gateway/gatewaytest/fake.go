// Package gatewaytest runs the real gateway (gateway.New + Serve on
// 127.0.0.1) in front of llama.cpp fakes (engines/fake) for end-to-end
// tests, and drives headless Chromium for the ops page. It is imported by
// tests only.
//
// Everything it starts is stopped by t.Cleanup in an order goleak accepts:
// the gateway shuts down gracefully before the fakes it talks to close.
// Start the fakes (StartFake, NewFakes) before the gateway (Start) so their
// cleanups run after its shutdown.
//
// It imports gateway, and gateway imports gateway/ui, so tests in package
// gateway or package ui cannot import it (an import cycle); their external
// test packages (gateway_test, ui_test) can.
package gatewaytest

import (
	"sync"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines/fake"
)

// StartFake starts a fake engine with o on a free 127.0.0.1 port; cleanup
// closes it.
func StartFake(t testing.TB, o fake.Options) *fake.Server {
	t.Helper()
	f := startFakeAt(t, "127.0.0.1:0", o)
	t.Cleanup(func() { closeFake(t, f) })
	return f
}

// RestartFake closes old and starts a fake with o on old's address, so a
// gateway configured with old's URL talks to the new one; cleanup closes
// it. Its cleanup runs before that of a gateway started earlier: use Fakes
// when the fake must outlive the gateway's shutdown.
func RestartFake(t testing.TB, old *fake.Server, o fake.Options) *fake.Server {
	t.Helper()
	addr := old.Addr()
	closeFake(t, old)
	f := startFakeAt(t, addr, o)
	t.Cleanup(func() { closeFake(t, f) })
	return f
}

// startFakeAt starts a fake on addr. A port this process just freed may
// not be released by the kernel yet, so binding is retried for about 1 s.
func startFakeAt(t testing.TB, addr string, o fake.Options) *fake.Server {
	t.Helper()
	f, err := fake.New(o)
	if err != nil {
		t.Fatalf("fake.New: %v", err)
	}
	for i := 0; ; i++ {
		if err = f.Start(addr); err == nil || i == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("start fake on %s: %v", addr, err)
	}
	return f
}

func closeFake(t testing.TB, f *fake.Server) {
	t.Helper()
	if err := f.Close(); err != nil {
		t.Errorf("close fake %s: %v", f.Addr(), err)
	}
}

// Fakes is a set of named fake engines (name them after their replica ids)
// that keep their loopback address across restarts. Its cleanup, registered
// by NewFakes, closes the fakes running then; create it before Start so
// that even fakes (re)started later outlive the gateway's shutdown. Safe
// for concurrent use.
type Fakes struct {
	t testing.TB

	mu   sync.Mutex
	srv  map[string]*fake.Server // the running fake per name
	addr map[string]string       // the address per name, kept after Stop
}

// NewFakes returns an empty set whose cleanup closes the running fakes.
func NewFakes(t testing.TB) *Fakes {
	fs := &Fakes{t: t, srv: map[string]*fake.Server{}, addr: map[string]string{}}
	t.Cleanup(func() {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		for name, f := range fs.srv {
			if err := f.Close(); err != nil {
				t.Errorf("close fake %s: %v", name, err)
			}
		}
	})
	return fs
}

// Start starts the fake called name with o: the first time on a free
// 127.0.0.1 port, later on the address it had (closing the running one).
func (fs *Fakes) Start(name string, o fake.Options) *fake.Server {
	fs.t.Helper()
	fs.Stop(name)
	addr := fs.Addr(name)
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	f := startFakeAt(fs.t, addr, o)
	fs.mu.Lock()
	fs.srv[name], fs.addr[name] = f, f.Addr()
	fs.mu.Unlock()
	return f
}

// Stop closes the fake called name, if running; its address stays reserved
// for Start.
func (fs *Fakes) Stop(name string) {
	fs.t.Helper()
	fs.mu.Lock()
	f := fs.srv[name]
	delete(fs.srv, name)
	fs.mu.Unlock()
	if f != nil {
		if err := f.Close(); err != nil {
			fs.t.Errorf("close fake %s: %v", name, err)
		}
	}
}

// Get returns the running fake called name, nil when stopped or unknown.
func (fs *Fakes) Get(name string) *fake.Server {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.srv[name]
}

// Addr returns name's "127.0.0.1:PORT" (also while stopped), "" if it was
// never started.
func (fs *Fakes) Addr(name string) string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.addr[name]
}

// URL returns name's base URL, "http://127.0.0.1:PORT".
func (fs *Fakes) URL(name string) string { return "http://" + fs.Addr(name) }
