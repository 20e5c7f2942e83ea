// Package serve runs a fake engine's server. Group is the state every fake
// shares — closed once, every goroutine and connection it runs tracked so
// that Close can drop the connections and wait for the goroutines — and
// HTTP runs a net/http server on a Group, optionally holding its port
// closed (connections refused) while the model "loads".
package serve

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// Group tracks a fake's goroutines and connections.
type Group struct {
	name string
	log  *zap.Logger
	done chan struct{}

	closed atomic.Bool
	// mu orders closing against Go, Enter and Track, so that nothing joins
	// wg or conns once Close has started.
	mu    sync.Mutex
	wg    sync.WaitGroup
	conns map[io.Closer]struct{}
}

// NewGroup returns an open group; name prefixes its log messages ("fake
// tgi"), log receives them (nil: none).
func NewGroup(name string, log *zap.Logger) *Group {
	if log == nil {
		log = zap.NewNop()
	}
	return &Group{name: name, log: log, done: make(chan struct{}), conns: make(map[io.Closer]struct{})}
}

// Done is closed when Close starts.
func (g *Group) Done() <-chan struct{} { return g.done }

// Closed reports whether Close has started.
func (g *Group) Closed() bool { return g.closed.Load() }

// Go runs f on a goroutine that Close waits for, logging a panic of f as a
// bug. Once the group is closed it runs nothing and reports false.
func (g *Group) Go(what string, f func()) bool {
	if !g.Enter() {
		return false
	}
	go func() {
		defer g.Exit()
		defer g.recover(what)
		f()
	}()
	return true
}

func (g *Group) recover(what string) {
	if r := recover(); r != nil {
		g.log.Error("BUG: "+g.name+" "+what+" panicked", zap.Any("panic", r), zap.Stack("stack"))
	}
}

// Enter counts the calling goroutine (a net/http handler, say) until its
// Exit. Once the group is closed it counts nothing and reports false.
func (g *Group) Enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed.Load() {
		return false
	}
	g.wg.Add(1)
	return true
}

// Exit ends what Enter counted.
func (g *Group) Exit() { g.wg.Done() }

// Track registers a connection for Close to drop and reports true; once
// the group is closed it closes c at once and reports false.
func (g *Group) Track(c io.Closer) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed.Load() {
		c.Close()
		return false
	}
	g.conns[c] = struct{}{}
	return true
}

// Untrack forgets a connection its owner has closed.
func (g *Group) Untrack(c io.Closer) {
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
}

// Close closes Done, drops every tracked connection, runs stop (which
// closes the listener; nil: nothing to stop) and waits for every goroutine.
// It returns stop's error, net.ErrClosed excepted. A second Close only
// waits.
func (g *Group) Close(stop func() error) error {
	g.mu.Lock()
	if g.closed.Swap(true) {
		g.mu.Unlock()
		g.wg.Wait()
		return nil
	}
	close(g.done)
	for c := range g.conns {
		c.Close()
	}
	g.mu.Unlock()
	var err error
	if stop != nil {
		err = stop()
	}
	g.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
