package gateway

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/config"
	"github.com/llama-orch/llama-orch/sse"
)

func TestMain(m *testing.M) {
	// fasthttp's worker-pool cleaner sleeps out its idle period after Stop.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"))
}

// TestStreamSixteenTokens: started first, 16 tokens i=0..15, metrics, end
// last with the engine's count [ORCH-2002, OC-CTRL-2020..2023].
func TestStreamSixteenTokens(t *testing.T) {
	e := newEnv(t, nil)
	id := newID()
	r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: id}.body())
	if r.status != 202 {
		t.Fatalf("enqueue: %d %s", r.status, r.body)
	}
	m := r.json(t)
	if m["task_id"] != id {
		t.Fatalf("202 body %s", r.body)
	}
	for _, k := range []string{"queue_position", "predicted_start_ms", "backoff_ms"} {
		if _, ok := m[k]; !ok {
			t.Errorf("202 body lacks %s: %s", k, r.body)
		}
	}
	evs := e.openStream(id, testKey).all(t)
	if got := names(evs); !strings.HasPrefix(got, "started token") || !strings.HasSuffix(got, "metrics end") {
		t.Fatalf("event order: %s", got)
	}
	toks := tokens(t, evs)
	if len(toks) != 16 {
		t.Fatalf("got %d tokens, want 16", len(toks))
	}
	end := evs[len(evs)-1].data
	if end["tokens_out"].(float64) != 16 || end["finish_reason"] != "length" {
		t.Fatalf("end: %v", end)
	}
	for i, ev := range evs {
		if ev.id != strconv.Itoa(i) {
			t.Fatalf("event %d has id %q", i, ev.id)
		}
	}
	st := evs[0].data
	for _, k := range []string{"queue_position", "predicted_start_ms", "queue_time_ms", "engine", "pool_id", "replica_id", "engine_version", "kv_warmth"} {
		if _, ok := st[k]; !ok {
			t.Errorf("started lacks %s: %v", k, st)
		}
	}
	if st["engine_version"] != fake.DefaultEngineVersion {
		t.Errorf("engine_version %v", st["engine_version"])
	}
	// The same seed on the same prompt gives the fake's deterministic text.
	for i, tok := range toks {
		if want := fake.Text(seedFor(id), "Hello", i); tok != want {
			t.Fatalf("token %d = %q, want %q", i, tok, want)
		}
	}
}

// TestReplayAndResume: a late reader gets the whole log; Last-Event-ID
// resumes with no loss or duplicate; two readers each get everything.
func TestReplayAndResume(t *testing.T) {
	e := newEnv(t, nil)
	id := newID()
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: id, maxTokens: 8}.body()); r.status != 202 {
		t.Fatalf("enqueue: %d %s", r.status, r.body)
	}
	a := e.openStream(id, testKey)
	b := e.openStream(id, testKey)
	evA, evB := a.all(t), b.all(t)
	if names(evA) != names(evB) || len(evA) != 8+3 {
		t.Fatalf("readers differ or wrong length: %q vs %q", names(evA), names(evB))
	}
	late := e.openStream(id, testKey).all(t)
	if len(late) != len(evA) {
		t.Fatalf("late reader got %d events, want %d", len(late), len(evA))
	}
	for k := -1; k < len(evA); k++ {
		hdr := []string{}
		if k >= 0 {
			hdr = []string{"Last-Event-ID", strconv.Itoa(k)}
		}
		got := e.openStream(id, testKey, hdr...).all(t)
		if len(got) != len(evA)-(k+1) {
			t.Fatalf("resume after %d: %d events, want %d", k, len(got), len(evA)-(k+1))
		}
		for i, ev := range got {
			if ev.raw != evA[k+1+i].raw || ev.id != evA[k+1+i].id {
				t.Fatalf("resume after %d: event %d differs", k, i)
			}
		}
	}
	if r := e.do("GET", "/v1/tasks/"+id+"/stream", testKey, "", "Last-Event-ID", "x"); r.status != 400 {
		t.Fatalf("bad Last-Event-ID: %d", r.status)
	}
}

// TestOneRoundTrip: POST with Accept: text/event-stream answers 200 SSE.
func TestOneRoundTrip(t *testing.T) {
	e := newEnv(t, nil)
	evs := e.postStream(taskSpec{maxTokens: 5}.body()).all(t)
	if got := names(evs); got != "started token token token token token metrics end" {
		t.Fatalf("events: %s", got)
	}
}

// TestCancelRunning: no token after the CANCELED error, and the engine's slot
// is freed (the fake's own in-flight count) [ORCH-2003, ORCH-3017, ORCH-3026].
func TestCancelRunning(t *testing.T) {
	e := newEnv(t, nil, fake.Options{Slots: 1, ITL: 5 * time.Millisecond})
	id := newID()
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: id, maxTokens: 2000}.body()); r.status != 202 {
		t.Fatalf("enqueue: %d %s", r.status, r.body)
	}
	s := e.openStream(id, testKey)
	for n := 0; n < 4; {
		ev, ok := s.next(t)
		if !ok {
			t.Fatal("stream ended early")
		}
		if ev.name == "token" {
			n++
		}
	}
	if e.fakes[0].InFlight() != 1 {
		t.Fatalf("fake in-flight %d before cancel", e.fakes[0].InFlight())
	}
	if r := e.do("POST", "/v1/tasks/"+id+"/cancel", testKey, ""); r.status != 204 {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	} else if r.header.Get("X-Correlation-Id") != "" {
		t.Fatal("204 carries X-Correlation-Id")
	}
	rest := s.all(t)
	last := rest[len(rest)-1]
	if last.name != "error" || last.data["code"] != "CANCELED" {
		t.Fatalf("last event %s %v", last.name, last.data)
	}
	// Replaying the log: nothing follows the error.
	full := e.openStream(id, testKey).all(t)
	if full[len(full)-1].name != "error" {
		t.Fatal("log continues after the error")
	}
	eventually(t, "the fake to free its slot", func() bool { return e.fakes[0].InFlight() == 0 })
	eventually(t, "the replica slot to be released", func() bool { return e.srv.poolList()[0].set().replicas[0].InFlight() == 0 })
	if r := e.do("POST", "/v1/tasks/"+newID()+"/cancel", testKey, ""); r.status != 404 {
		t.Fatalf("cancel unknown: %d", r.status)
	}
}

// TestFullPoolRejects: one slot busy, queue capacity 1 filled, the next task
// gets 429 with Retry-After, X-Backoff-Ms and the full body [ORCH-2007].
func TestFullPoolRejects(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Pools[0].Queue.Capacity = 1 }, fake.Options{Slots: 1, ITL: 5 * time.Millisecond})
	running, queued := newID(), newID()
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: running, maxTokens: 2000}.body()); r.status != 202 {
		t.Fatalf("first: %d %s", r.status, r.body)
	}
	eventually(t, "the first task to start", func() bool { return e.fakes[0].InFlight() == 1 })
	r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: queued}.body())
	if r.status != 202 || r.json(t)["queue_position"].(float64) != 0 {
		t.Fatalf("second: %d %s", r.status, r.body)
	}
	rejectedID := newID()
	r = e.do("POST", "/v1/tasks", testKey, taskSpec{id: rejectedID}.body())
	if r.status != 429 {
		t.Fatalf("third: %d %s", r.status, r.body)
	}
	body := r.json(t)
	if body["code"] != "ADMISSION_REJECT" || body["policy_label"] != "reject" || body["retriable"] != true {
		t.Fatalf("429 body %s", r.body)
	}
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	if bo, err := strconv.Atoi(r.header.Get("X-Backoff-Ms")); err != nil || bo <= 0 || int64(bo) != int64(body["retry_after_ms"].(float64)) {
		t.Fatalf("X-Backoff-Ms %q vs %v", r.header.Get("X-Backoff-Ms"), body["retry_after_ms"])
	}
	// A rejected id is not remembered: once there is room it is admitted.
	e.do("POST", "/v1/tasks/"+running+"/cancel", testKey, "")
	eventually(t, "the queued task to start", func() bool { return e.srv.poolList()[0].queue.Len() == 0 })
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: rejectedID}.body()); r.status != 202 {
		t.Fatalf("retry of rejected id: %d %s", r.status, r.body)
	}
	// An admitted id is: 409.
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: rejectedID}.body()); r.status != 409 {
		t.Fatalf("duplicate: %d %s", r.status, r.body)
	}
	for _, id := range []string{queued, rejectedID} {
		e.do("POST", "/v1/tasks/"+id+"/cancel", testKey, "")
	}
}

// TestAbandonedTaskCanceled: a running task whose reader left is canceled
// after detach_grace_ms and its engine slot freed.
func TestAbandonedTaskCanceled(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.DetachGraceMs = 100 }, fake.Options{Slots: 1, ITL: 5 * time.Millisecond})
	s := e.postStream(taskSpec{maxTokens: 3000}.body())
	if ev, _ := s.next(t); ev.name != "started" {
		t.Fatalf("first event %s", ev.name)
	}
	s.close()
	eventually(t, "the abandoned task's slot to be freed", func() bool {
		return e.fakes[0].InFlight() == 0 && e.srv.poolList()[0].set().replicas[0].InFlight() == 0
	})
	e.metricEventually(t, `reason="abandoned"`)
}

// TestEngineFaults maps each fake fault to its canonical error event.
func TestEngineFaults(t *testing.T) {
	cases := []struct {
		fail   string
		code   string
		tokens int
	}{
		{fake.FailMidstreamError, "WORKER_RESET", 2},      // error frame after tokens
		{fake.FailMidstreamDisconnect, "WORKER_RESET", 3}, // cut before the final frame: never a fake end
		{fake.FailMalformed, "WORKER_RESET", 2},           // not JSON after tokens
		{fake.FailStart500, "REPLICA_EXHAUSTED", 0},       // 5xx before the first token
		{fake.FailStart429, "REPLICA_EXHAUSTED", 0},       // overloaded before the first token
	}
	for _, c := range cases {
		t.Run(c.fail, func(t *testing.T) {
			e := newEnv(t, nil, fake.Options{Fail: c.fail})
			evs := e.postStream(taskSpec{maxTokens: 10}.body()).all(t)
			last := evs[len(evs)-1]
			if last.name != "error" || last.data["code"] != c.code {
				t.Fatalf("events %s, last %v", names(evs), last.data)
			}
			if n := len(tokens(t, evs)); n != c.tokens {
				t.Fatalf("%d tokens before the error, want %d", n, c.tokens)
			}
			eventually(t, "slot release", func() bool { return e.srv.poolList()[0].set().replicas[0].InFlight() == 0 })
		})
	}
}

// TestSplitUTF8: multi-byte characters split by the engine arrive whole.
func TestSplitUTF8(t *testing.T) {
	e := newEnv(t, nil, fake.Options{Fail: fake.FailSplitUTF8})
	evs := e.postStream(taskSpec{maxTokens: 12}.body()).all(t)
	if evs[len(evs)-1].name != "end" {
		t.Fatalf("events %s", names(evs))
	}
	for _, tok := range tokens(t, evs) {
		if strings.ContainsRune(tok, '\uFFFD') || tok == "" {
			t.Fatalf("token %q is not whole UTF-8", tok)
		}
	}
	if evs[len(evs)-1].data["tokens_out"].(float64) != 12 {
		t.Fatalf("tokens_out %v", evs[len(evs)-1].data)
	}
}

// TestShutdownEndsStreams: Shutdown after the grace ends a running stream
// with an error and frees the engine slot.
func TestShutdownEndsStreams(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.ShutdownGraceMs = 50 }, fake.Options{Slots: 1, ITL: 5 * time.Millisecond})
	s := e.postStream(taskSpec{maxTokens: 3000}.body())
	if ev, _ := s.next(t); ev.name != "started" {
		t.Fatal("no started")
	}
	done := make(chan []event, 1)
	var rerr error
	go func() {
		var evs []event
		evs, rerr = s.collect()
		done <- evs
	}()
	e.shutdown()
	evs := <-done // bounded: the client times out
	if rerr != nil || len(evs) == 0 {
		t.Fatalf("stream after shutdown: %v, events %s", rerr, names(evs))
	}
	if last := evs[len(evs)-1]; last.name != "error" {
		t.Fatalf("last event %s", last.name)
	}
	eventually(t, "fake slot freed", func() bool { return e.fakes[0].InFlight() == 0 })
}

// TestKeepAliveWhileQueued: a queued task's stream carries `: ping`
// comments (SPEC §3.2; the harness sets a 50 ms interval).
func TestKeepAliveWhileQueued(t *testing.T) {
	e := newEnv(t, nil, fake.Options{Slots: 1, ITL: 5 * time.Millisecond})
	busy := newID()
	e.do("POST", "/v1/tasks", testKey, taskSpec{id: busy, maxTokens: 2000}.body())
	eventually(t, "the first task to start", func() bool { return e.fakes[0].InFlight() == 1 })
	queued := newID()
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: queued}.body()); r.status != 202 {
		t.Fatalf("enqueue: %d", r.status)
	}
	s := e.openStream(queued, testKey)
	var f sse.Frame
	if err := s.rd.Next(&f); err != nil || !f.Comment {
		t.Fatalf("first frame of a queued task: %+v %v, want a keep-alive comment", f, err)
	}
	s.close()
	e.do("POST", "/v1/tasks/"+busy+"/cancel", testKey, "")
	e.do("POST", "/v1/tasks/"+queued+"/cancel", testKey, "")
}

// TestRetentionDropsLog: a finished task's log is dropped after
// task_retention_ms, but its id is still remembered (409, not a rerun).
func TestRetentionDropsLog(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.TaskRetentionMs = 50 })
	id := newID()
	e.do("POST", "/v1/tasks", testKey, taskSpec{id: id, maxTokens: 2}.body())
	if evs := e.openStream(id, testKey).all(t); evs[len(evs)-1].name != "end" {
		t.Fatalf("events %s", names(evs))
	}
	eventually(t, "the log to be dropped", func() bool {
		return e.do("GET", "/v1/tasks/"+id+"/stream", testKey, "").status == 404
	})
	if n, _ := e.srv.tasks.counts(); n != 0 {
		t.Fatalf("%d tasks still held", n)
	}
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: id}.body()); r.status != 409 {
		t.Fatalf("resubmitted id after retention: %d", r.status)
	}
}

// TestSlotsFromConfigOrProps: slots come from config when set, else from
// the engine's /props total_slots.
func TestSlotsFromConfigOrProps(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Pools[0].Replicas[1].Slots = 1 }, fake.Options{Slots: 3}, fake.Options{Slots: 3})
	eventually(t, "props to be read", func() bool { return e.srv.poolList()[0].set().replicas[0].Slots() == 3 })
	if got := e.srv.poolList()[0].set().replicas[1].Slots(); got != 1 {
		t.Fatalf("configured slots: %d, want 1", got)
	}
}

// TestIdentityAndTenancy: correlation ids are echoed or made; another
// tenant's task and session answer 404, never 409.
func TestIdentityAndTenancy(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do("GET", "/healthz", "", "", "X-Correlation-Id", "abc-123")
	if r.status != 200 || r.header.Get("X-Correlation-Id") != "abc-123" {
		t.Fatalf("healthz: %d %q", r.status, r.header.Get("X-Correlation-Id"))
	}
	if r := e.do("GET", "/nope", "", ""); r.status != 404 || r.header.Get("X-Correlation-Id") == "" {
		t.Fatalf("404: %d, correlation %q", r.status, r.header.Get("X-Correlation-Id"))
	}
	id, sess := newID(), newID()
	e.do("POST", "/v1/tasks", testKey, taskSpec{id: id, session: sess, maxTokens: 2}.body())
	e.openStream(id, testKey).all(t)
	for _, path := range []string{"/v1/tasks/" + id + "/stream", "/v1/sessions/" + sess} {
		if r := e.do("GET", path, "sk-other", ""); r.status != 404 {
			t.Fatalf("other tenant GET %s: %d", path, r.status)
		}
	}
	if r := e.do("POST", "/v1/tasks/"+id+"/cancel", "sk-other", ""); r.status != 404 {
		t.Fatalf("other tenant cancel: %d", r.status)
	}
	// The other tenant may use the same task id: ids are per tenant.
	other := e.do("POST", "/v1/tasks", "sk-other", taskSpec{id: id, maxTokens: 2}.body())
	if other.status != 202 {
		t.Fatalf("same id, other tenant: %d %s", other.status, other.body)
	}
	e.openStream(id, "sk-other").all(t)
	if r := e.do("POST", "/v1/tasks", "sk-ctl", taskSpec{}.body()); r.status != 403 {
		t.Fatalf("control-only key on the data plane: %d", r.status)
	}
}

// TestShutdownBoundedByContext: a goroutine Shutdown waits for that never
// ends (modelled by an extra count on the background loops' WaitGroup) does
// not hang it: it returns when ctx ends, saying what still ran.
func TestShutdownBoundedByContext(t *testing.T) {
	e := newEnv(t, nil)
	// A keep-alive connection stays open: ShutdownWithContext then also
	// runs out of time, and the error still names the stuck loop.
	if r := e.do("GET", "/healthz", "", ""); r.status != 200 {
		t.Fatalf("healthz: %d", r.status)
	}
	e.srv.bgWG.Add(1) // a stuck background loop
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := e.srv.Shutdown(ctx)
	e.srv.bgWG.Done()
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "background loops") {
		t.Fatalf("Shutdown = %v, want the deadline, naming the background loops", err)
	}
	e.once.Do(func() { <-e.done }) // shut down already: the harness only collects Serve's result
}

// TestShutdownBeforeServeStarts: Shutdown that runs before the goroutine
// calling Serve got going, or before Serve reached fasthttp's, still ends
// that Serve (fasthttp alone only closes the listeners its Serve already
// registered); a Serve after Shutdown returns at once.
func TestShutdownBeforeServeStarts(t *testing.T) {
	yml := "auth:\n  keys:\n    - { key: " + testKey + ", tenant: t1, roles: [data] }\n" +
		"pools:\n  - id: p\n    engine: llamacpp\n    model: m\n    replicas:\n      - { id: r0, url: \"http://127.0.0.1:1\" }\n"
	cfg, problems, err := config.Check([]byte(yml), config.ValidateOptions{})
	if err != nil || config.HasErrors(problems) {
		t.Fatalf("config: %v %v", err, problems)
	}
	for i := 0; i < 50; i++ {
		srv, err := New(cfg, Options{NewAdapter: testAdapter, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		if i%2 == 1 {
			runtime.Gosched() // sometimes Serve is under way, sometimes not
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Fatalf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: Serve still running 5 s after Shutdown", i)
		}
		ln2, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { served <- srv.Serve(ln2) }()
		select {
		case err := <-served:
			if err != nil {
				t.Fatalf("Serve after Shutdown: %v", err)
			}
		case <-time.After(5 * time.Second):
			_ = ln2.Close()
			<-served
			t.Fatalf("round %d: a Serve after Shutdown still serves", i)
		}
	}
}
