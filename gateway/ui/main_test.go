package ui

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind (servers, SSE
// writers, the browser's connection). fasthttp's worker-pool cleaner sleeps
// out its 10 s period after Shutdown before it returns, and its Date-header
// refresher is one process-wide goroutine started on first use (the
// router's default 404 comes from ctx.Error, whose header reset drops
// NoDefaultDate); both are ignored.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"))
}
