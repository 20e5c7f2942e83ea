package gatewaytest

import (
	"fmt"
	"runtime"
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind (gateways, fakes,
// the browser's connection). fasthttp's worker-pool cleaner sleeps out its
// 10 s period after Shutdown before it returns, and its Date-header
// refresher is one process-wide goroutine started on first use; both are
// ignored.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"))
}

// recorder is a testing.TB that records Errorf, Fatal and Skip instead of
// acting on the test; Fatal and Skip end the calling goroutine, as the real
// ones do, so call the code under test through run.
type recorder struct {
	testing.TB
	errors  []string
	fatal   string
	skipped string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}
func (r *recorder) Error(args ...any) { r.errors = append(r.errors, fmt.Sprint(args...)) }
func (r *recorder) Fatal(args ...any) { r.fatal = fmt.Sprint(args...); runtime.Goexit() }
func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Skip(args ...any) { r.skipped = fmt.Sprint(args...); runtime.Goexit() }

// run calls f with r on a goroutine of its own and waits for it to end.
func (r *recorder) run(f func(testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
}
