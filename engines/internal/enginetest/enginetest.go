// Package enginetest holds the test doubles the engine adapters' tests
// share: sinks that record or count what an adapter delivers, an in-memory
// connection for decoding benchmarks and fuzzing, a loopback replay server
// and a net.Pipe dialer that script the engine's side byte for byte, HTTP
// chunk builders, and the stream-decoding benchmarks every adapter runs.
//
// It is imported only by _test.go files.
package enginetest

import (
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
