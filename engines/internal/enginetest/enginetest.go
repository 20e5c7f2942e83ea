// Package enginetest holds the test doubles the engine adapters' tests
// share: sinks that record or count what an adapter delivers, an in-memory
// connection for decoding benchmarks and fuzzing, a loopback replay server
// and a net.Pipe dialer that script the engine's side byte for byte, HTTP
// chunk builders, and the stream-decoding benchmarks every adapter runs.
//
// It is imported only by _test.go files.
package enginetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// WaitTimeout guards waits in tests so that a bug fails instead of hanging;
// it is never a timing assertion.
const WaitTimeout = 10 * time.Second

// LeakCheck verifies, after the test and all its cleanups, that no
// goroutine was left behind. Call it first so that its cleanup runs last.
func LeakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// Wait waits for ch to be closed, failing the test after WaitTimeout.
func Wait(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(WaitTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// errCtxExpired is the cause of a Ctx context that outlived WaitTimeout.
var errCtxExpired = errors.New("enginetest: the test's context expired after WaitTimeout")

// Ctx returns the context for a call that waits on an engine, a fake or a
// script: it is canceled when the test ends and after WaitTimeout, so that
// a bug makes the call fail instead of hang. When WaitTimeout elapsed the
// test fails, saying so, at cleanup.
func Ctx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeoutCause(t.Context(), WaitTimeout, errCtxExpired)
	t.Cleanup(func() {
		if context.Cause(ctx) == errCtxExpired {
			t.Errorf("enginetest.Ctx: a call's context expired after %v: something waited without bound", WaitTimeout)
		}
		cancel()
	})
	return ctx
}

// Recv receives a value from ch, failing the test after WaitTimeout.
func Recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(WaitTimeout):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// waitGroup waits for wg, reporting whether it finished within WaitTimeout.
// When it did not, the goroutine waiting for wg stays until it does.
func waitGroup(wg interface{ Wait() }) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(WaitTimeout):
		return false
	}
}

// Eventually polls cond until it holds, failing the test after WaitTimeout.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
