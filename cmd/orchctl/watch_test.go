package main

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// Documented event shapes (ops-api.md), as orchd sends them.
const (
	evHello   = `{"type":"hello","at":"2026-01-02T15:04:05.000Z"}`
	evBreaker = `{"type":"breaker","at":"2026-01-02T15:04:06.125Z","pool_id":"llama-demo","replica_id":"r0","from":"closed","to":"open"}`
	evReplica = `{"type":"replica","at":"2026-01-02T15:04:07.000Z","pool_id":"llama-demo","replica_id":"r1","state":"unready","last_error":"health: 503"}`
	evDrain   = `{"type": "drain", "at": "2026-01-02T15:04:08.000Z", "pool_id": "llama-demo", "deadline_ms": 30000}`
	evReload  = `{"type":"reload","at":"2026-01-02T15:04:09.000Z","pool_id":"llama-demo","model":"m2","ok":false,"reason":"replica r0 reports model \"m1\", not \"m2\""}`
	evConfig  = `{"type":"config","at":"2026-01-02T15:04:10.000Z","ok":true,"changes":["pools.llama-demo.replicas","slo"]}`
)

// watchUntil runs `orchctl watch` args against f until stdout holds want
// (or 10 s pass), then interrupts it and returns exit code and output.
func watchUntil(t *testing.T, f *fakeOrchd, args []string, want string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	env := envOf(map[string]string{"ORCHD_URL": f.url(), "ORCHD_KEY": controlKey})
	go func() { done <- runCtx(ctx, append([]string{"watch"}, args...), env, &out, &errb) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), want) {
		select {
		case code := <-done:
			t.Fatalf("watch ended early with %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("stdout never got %q\nstdout:\n%s\nstderr:\n%s", want, out.String(), errb.String())
		}
	}
	cancel()
	select {
	case code := <-done:
		return code, out.String(), errb.String()
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not end after the interrupt")
		return 0, "", ""
	}
}

// waitRun waits (at most 10 s) for a canceled watcher's run to return nil.
func waitRun(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watcher.run did not return within 10s after its context was canceled")
	}
}

func TestWatchReconnects(t *testing.T) {
	f := newFakeOrchd(t)
	f.events = func(w http.ResponseWriter, r *http.Request, n int) {
		sendEvent(w, 1, "hello", evHello)
		if n == 1 {
			sendEvent(w, 2, "breaker", evBreaker)
			return // the connection drops
		}
		_, _ = w.Write([]byte(": ping\n\n"))
		sendEvent(w, 3, "replica", evReplica)
		<-r.Context().Done()
	}
	code, out, errOut := watchUntil(t, f, nil, "llama-demo/r1")
	if code != exitOK {
		t.Errorf("exit %d after Ctrl-C, want 0", code)
	}
	want := "2026-01-02T15:04:05.000Z  hello    -\n" +
		"2026-01-02T15:04:06.125Z  breaker  llama-demo/r0         closed -> open\n" +
		"2026-01-02T15:04:05.000Z  hello    -\n" +
		"2026-01-02T15:04:07.000Z  replica  llama-demo/r1         unready: health: 503\n"
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
	checkOutput(t, "stderr", errOut, []string{
		"orchctl: event stream from " + f.url() + " lost: orchd closed the stream; reconnecting in 250ms\n",
		"orchctl: reconnected to " + f.url() + " (events during the gap are not replayed",
	}, nil)
	if n := f.eventConns(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestWatchJSON(t *testing.T) {
	f := newFakeOrchd(t)
	f.events = func(w http.ResponseWriter, r *http.Request, n int) {
		sendEvent(w, 1, "hello", evHello)
		_, _ = w.Write([]byte(": ping\n\n"))
		sendEvent(w, 2, "drain", evDrain)
		<-r.Context().Done()
	}
	code, out, _ := watchUntil(t, f, []string{"--json"}, "drain")
	if code != exitOK {
		t.Errorf("exit %d", code)
	}
	want := evHello + "\n" + `{"type":"drain","at":"2026-01-02T15:04:08.000Z","pool_id":"llama-demo","deadline_ms":30000}` + "\n"
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
}

// TestWatchBackoff: after a stream that was up the wait starts at the
// minimum, doubles on each failed attempt and stops growing at the maximum.
func TestWatchBackoff(t *testing.T) {
	f := newFakeOrchd(t)
	f.events = func(w http.ResponseWriter, r *http.Request, n int) {
		sendEvent(w, 1, "hello", evHello)
		if n == 6 {
			sendEvent(w, 2, "config", evConfig)
			<-r.Context().Done()
		}
	}
	// Connections 2..5 are refused with 503 before reaching the stream.
	inner := f.srv.Config.Handler
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/events" {
			f.mu.Lock()
			n := f.conns + 1
			if n >= 2 && n <= 5 {
				f.conns = n
			}
			f.mu.Unlock()
			if n >= 2 && n <= 5 {
				writeEnvelope(w, http.StatusServiceUnavailable, "POOL_UNREADY", "restarting", nil)
				return
			}
		}
		inner.ServeHTTP(w, r)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	c := newClient(f.url(), controlKey)
	defer c.close()
	wt := &watcher{c: c, out: &out, errw: &errb, minBackoff: 10 * time.Millisecond, maxBackoff: 40 * time.Millisecond, idle: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- wt.run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "applied") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	waitRun(t, done)
	waits := regexp.MustCompile(`reconnecting in (\S+)\n`).FindAllStringSubmatch(errb.String(), -1)
	var got []string
	for _, m := range waits {
		got = append(got, m[1])
	}
	if want := "10ms 20ms 40ms 40ms 40ms"; strings.Join(got, " ") != want {
		t.Errorf("waits %v, want %s\nstderr:\n%s", got, want, errb.String())
	}
	checkOutput(t, "stderr", errb.String(), []string{"orchd answered 503 POOL_UNREADY: restarting"}, nil)
	checkOutput(t, "stdout", out.String(), []string{"config   -                     applied: pools.llama-demo.replicas, slo\n"}, nil)
}

// TestWatchIdle: a stream that goes silent (no event, no keep-alive) past
// the idle bound is treated as lost and reopened. That keep-alives re-arm the
// bound is TestIdleReader's job, on a fake clock: wall-clock pings would make
// this test depend on the machine's load.
func TestWatchIdle(t *testing.T) {
	f := newFakeOrchd(t)
	f.events = func(w http.ResponseWriter, r *http.Request, n int) {
		sendEvent(w, 1, "hello", evHello)
		if n == 1 {
			_, _ = w.Write([]byte(": ping\n\n"))
			sendEvent(w, 2, "drain", evDrain)
		} else {
			sendEvent(w, 3, "reload", evReload)
		}
		<-r.Context().Done() // then silence
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	c := newClient(f.url(), controlKey)
	defer c.close()
	wt := &watcher{c: c, out: &out, errw: &errb, minBackoff: 10 * time.Millisecond, maxBackoff: 40 * time.Millisecond, idle: 300 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- wt.run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "reload") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	waitRun(t, done)
	checkOutput(t, "stdout", out.String(), []string{"deadline 30s\n", `model m2 failed: replica r0 reports model "m1", not "m2"` + "\n"}, nil)
	checkOutput(t, "stderr", errb.String(), []string{"lost: no data (not even a keep-alive) for too long; reconnecting"}, nil)
	if n := f.eventConns(); n < 2 {
		t.Errorf("%d connections, want a reconnect", n)
	}
}

// TestIdleReader: every read that returns data re-arms the idle timer; it
// fires exactly one idle period after the last one (synctest's fake clock).
func TestIdleReader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pr, pw := io.Pipe()
		fired := make(chan struct{})
		r := &idleReader{r: pr, idle: time.Second}
		r.timer = time.AfterFunc(time.Second, func() { close(fired) })
		go func() {
			for range 5 {
				time.Sleep(900 * time.Millisecond)
				_, _ = pw.Write([]byte(": ping\n\n"))
			}
		}()
		buf := make([]byte, 64)
		for range 5 { // 4.5 s: far past one idle period, but never idle
			if _, err := r.Read(buf); err != nil {
				t.Fatal(err)
			}
		}
		isFired := func() bool {
			synctest.Wait()
			select {
			case <-fired:
				return true
			default:
				return false
			}
		}
		if isFired() {
			t.Fatal("fired while reads kept coming")
		}
		time.Sleep(999 * time.Millisecond)
		if isFired() {
			t.Fatal("fired before one idle period without data")
		}
		time.Sleep(time.Millisecond)
		if !isFired() {
			t.Fatal("did not fire after one idle period without data")
		}
		r.stop()
		pw.Close()
	})
}

func TestWatchErrors(t *testing.T) {
	down := "http://" + closedPort(t)
	cases := []struct {
		name   string
		env    map[string]string // $FAKE → fake URL
		events bool              // the fake serves /v1/events
		revoke bool              // the key is revoked after the first stream
		code   int
		stderr string
		conns  int
	}{
		// Never connected: unreachable is exit 2, no retries.
		{name: "closed port", env: map[string]string{"ORCHD_URL": down, "ORCHD_KEY": controlKey}, code: exitUnreachable,
			stderr: "orchctl: cannot reach orchd at " + down},
		// Auth refusals are not retried.
		{name: "no key", env: map[string]string{"ORCHD_URL": "$FAKE"}, events: true, code: exitFailed,
			stderr: "set ORCHD_KEY or pass --key (401 UNAUTHORIZED", conns: 0},
		{name: "data-only key", env: map[string]string{"ORCHD_URL": "$FAKE", "ORCHD_KEY": dataKey}, events: true, code: exitFailed,
			stderr: "lacks the control role (403 FORBIDDEN", conns: 0},
		// An orchd without the endpoint: the first answer is final.
		{name: "404 on first connect", env: map[string]string{"ORCHD_URL": "$FAKE", "ORCHD_KEY": controlKey}, code: exitFailed,
			stderr: "watch: orchd answered 404 NOT_FOUND: no such endpoint: GET /v1/events", conns: 1},
		// A key revoked while watching ends the watch instead of retrying forever.
		{name: "key revoked after connecting", env: map[string]string{"ORCHD_URL": "$FAKE", "ORCHD_KEY": controlKey}, events: true, revoke: true,
			code: exitFailed, stderr: "403 FORBIDDEN: API key not recognised", conns: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeOrchd(t)
			if tc.events {
				f.events = func(w http.ResponseWriter, r *http.Request, n int) {
					sendEvent(w, 1, "hello", evHello)
					if tc.revoke {
						f.mu.Lock()
						f.revoked = true
						f.mu.Unlock()
						return
					}
					<-r.Context().Done()
				}
			}
			env := map[string]string{}
			for k, v := range tc.env {
				env[k] = strings.ReplaceAll(v, "$FAKE", f.url())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var out, errb syncBuffer
			code := runCtx(ctx, []string{"watch"}, envOf(env), &out, &errb)
			if ctx.Err() != nil {
				t.Fatal("watch did not end by itself")
			}
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstderr:\n%s", code, tc.code, errb.String())
			}
			checkOutput(t, "stderr", errb.String(), []string{tc.stderr}, nil)
			if n := f.eventConns(); n != tc.conns {
				t.Errorf("%d streams served, want %d", n, tc.conns)
			}
		})
	}
}

func TestFormatEvent(t *testing.T) {
	f := func(event, data, want string) {
		t.Helper()
		if got := formatEvent([]byte(event), []byte(data)); got != want {
			t.Errorf("formatEvent(%s)\n got %q\nwant %q", data, got, want)
		}
	}
	f("hello", evHello, "2026-01-02T15:04:05.000Z  hello    -")
	f("breaker", evBreaker, "2026-01-02T15:04:06.125Z  breaker  llama-demo/r0         closed -> open")
	f("replica", evReplica, "2026-01-02T15:04:07.000Z  replica  llama-demo/r1         unready: health: 503")
	f("drain", evDrain, "2026-01-02T15:04:08.000Z  drain    llama-demo            deadline 30s")
	f("reload", evReload, `2026-01-02T15:04:09.000Z  reload   llama-demo            model m2 failed: replica r0 reports model "m1", not "m2"`)
	f("reload", `{"type":"reload","at":"A","pool_id":"p","model":"m2","ok":true}`, "A                         reload   p                     model m2 ok")
	f("config", evConfig, "2026-01-02T15:04:10.000Z  config   -                     applied: pools.llama-demo.replicas, slo")
	f("config", `{"type":"config","at":"A","ok":true,"changes":[]}`, "A                         config   -                     applied: no changes")
	f("config", `{"type":"config","at":"A","ok":false,"reason":"pools[0].ctx: must be > 0\n(line 4)"}`,
		`A                         config   -                     rejected: pools[0].ctx: must be > 0\n(line 4)`)
	f("model_state", `{"type":"model_state","at":"A","model":"m","from":"Deprecated","to":"Retired","deadline_ms":30000}`,
		"A                         model_state  m                     Deprecated -> Retired (deadline 30s)")
	f("model_state", `{"type":"model_state","at":"A","model":"m","to":"Draft"}`, "A                         model_state  m                     Draft")
	f("model_verification", `{"type":"model_verification","at":"A","model":"org/m","ok":false,"reason":"digest_mismatch"}`,
		"A                         model_verification  org/m                 verification failed: digest_mismatch")
	// Unknown types and fields are shown as key=value, sorted.
	f("slo", `{"type":"slo","at":"A","pool_id":"p","attainment":0.97,"note":"two words","tags":["a"]}`,
		`A                         slo      p                     attainment=0.97 note="two words" tags=["a"]`)
	// No type in the JSON: the SSE event name.
	f("breaker", `{"at":"A","pool_id":"p","replica_id":"r","from":"open","to":"half-open"}`, "A                         breaker  p/r                   open -> half-open")
	// Not JSON: shown as it is, on one line.
	f("", "not json\nat all", `-                         message  -                     not json\nat all`)
}
