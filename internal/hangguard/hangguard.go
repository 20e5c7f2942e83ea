// Package hangguard turns a test that hangs into a failure that names it.
//
// `go test -timeout` ends a hung package with every goroutine's stack and,
// at the top of that dump, the running test's name; CI logs keep the tail,
// so the name is lost. A guard armed for one test (or scenario) instead
// prints a compact dump (goroutines grouped by stack) and then panics with
// the test's name, which ends the output.
package hangguard

import (
	"fmt"
	"os"
	"runtime/pprof"
	"time"
)

// Limit is how long one guarded test may run: far above the slowest test on
// a loaded 2-core CI machine (seconds), far below the package timeout.
const Limit = 150 * time.Second

// Start arms a guard for what (a test or scenario name); the returned stop
// disarms it. If stop is not called within limit, the process ends.
func Start(what string, limit time.Duration) (stop func()) {
	tm := time.AfterFunc(limit, func() {
		fmt.Fprintf(os.Stderr, "\nhangguard: %s still running after %s; goroutines by stack:\n", what, limit)
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		panic(fmt.Sprintf("hangguard: %s hung: still running after %s (goroutines above)", what, limit))
	})
	return func() { tm.Stop() }
}
