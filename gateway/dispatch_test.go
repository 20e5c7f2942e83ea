package gateway

import (
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/config"
)

// retryRig is a pool of two replicas for the dispatcher's retry tests: r0
// (2 slots) behind a proxy that can fail the next completion with a 500, r1
// (1 slot) behind a proxy whose health endpoint can be switched off. A long
// task L holds r1's only slot.
type retryRig struct {
	e         *env
	failNext  atomic.Int32 // completions r0's proxy fails before passing any on
	r1Down    atomic.Bool  // r1's /health answers 503
	long      string       // L's task id
	r0Session string
}

func newRetryRig(t *testing.T) *retryRig {
	t.Helper()
	rig := &retryRig{}
	r0 := startFake(t, fake.Options{Slots: 2, ITL: 5 * time.Millisecond})
	r1 := startFake(t, fake.Options{Slots: 1, ITL: 5 * time.Millisecond})
	url0 := engineProxy(t, r0.URL(), func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/completion" || !takeOne(&rig.failNext) {
			return false
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"error":{"code":500,"message":"injected fault","type":"server_error"}}`)
		return true
	})
	url1 := engineProxy(t, r1.URL(), func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/health" || !rig.r1Down.Load() {
			return false
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}`)
		return true
	})
	rig.e = newEnv(t, func(c *config.Config) {
		// One slow probe on a loaded machine must not take r1 away.
		c.Health.UnhealthyAfter = 3
		reps := c.Pools[0].Replicas
		reps[0].URL, reps[0].Slots = url0, 2
		reps[1].URL, reps[1].Slots = url1, 1
	}, fake.Options{}, fake.Options{})
	e := rig.e
	rig.r0Session = sessionOn(t, e, 0)

	// L runs on r1 (3,000 tokens, 5 ms apart: it outlasts the test, which
	// cancels it).
	rig.long = newID()
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: rig.long, session: sessionOn(t, e, 1), maxTokens: 3000}.body()); r.status != 202 {
		t.Fatalf("enqueue L: %d %s", r.status, r.body)
	}
	r1rep := e.srv.poolList()[0].set().replicas[1]
	eventually(t, "L to run on r1", func() bool { return r1rep.InFlight() == 1 })
	t.Cleanup(func() { e.do("POST", "/v1/tasks/"+rig.long+"/cancel", testKey, "") })
	return rig
}

// takeOne decrements n if it is positive and reports whether it did.
func takeOne(n *atomic.Int32) bool {
	for {
		v := n.Load()
		if v <= 0 {
			return false
		}
		if n.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

func startFake(t *testing.T, o fake.Options) *fake.Server {
	t.Helper()
	f, err := fake.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// failOnR0 enqueues a task whose session is on r0, fails its first attempt
// there, and waits until it is queued again for a replica it has not tried.
func (rig *retryRig) failOnR0(t *testing.T) string {
	t.Helper()
	e := rig.e
	rig.failNext.Store(1)
	id := newID()
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: id, session: rig.r0Session, maxTokens: 8}.body()); r.status != 202 {
		t.Fatalf("enqueue: %d %s", r.status, r.body)
	}
	eventually(t, "the task to wait for a replica it has not tried", func() bool {
		tk, ok := e.srv.tasks.get(taskKey{"t1", id})
		if !ok {
			return false
		}
		tk.mu.Lock()
		defer tk.mu.Unlock()
		return tk.state == stateQueued && len(tk.tried) == 1
	})
	return id
}

func (rig *retryRig) longRunning(t *testing.T) bool {
	tk, ok := rig.e.srv.tasks.get(taskKey{"t1", rig.long})
	return ok && !tk.log.Closed()
}

// TestRetryDoesNotHoldUpTheQueue: a task that failed on r0 may only go to
// r1, which is busy; it keeps its place at the head of the queue, but a task
// behind it that may go anywhere runs on r0's free slot meanwhile instead of
// waiting for r1 too (SPEC §5 retries; §4 the queue is work-conserving).
// Once r1 frees, the retried task runs there and completes.
func TestRetryDoesNotHoldUpTheQueue(t *testing.T) {
	rig := newRetryRig(t)
	e := rig.e
	retried := rig.failOnR0(t)

	evs := e.postStream(taskSpec{session: rig.r0Session, maxTokens: 4}.body()).all(t)
	if last := evs[len(evs)-1]; last.name != "end" || evs[0].data["replica_id"] != "r0" {
		t.Fatalf("task behind the retry: started on %v, events %s", evs[0].data["replica_id"], names(evs))
	}
	if !rig.longRunning(t) {
		t.Fatal("the task behind the retry ran only after r1 freed: the retry held up the queue")
	}

	if r := e.do("POST", "/v1/tasks/"+rig.long+"/cancel", testKey, ""); r.status != 204 {
		t.Fatalf("cancel L: %d %s", r.status, r.body)
	}
	evs = e.openStream(retried, testKey).all(t)
	// `started` named r0, where it was first dispatched; `metrics` names the
	// replica that finished it.
	if last, m := evs[len(evs)-1], evs[len(evs)-2]; last.name != "end" || m.name != "metrics" || m.data["replica_id"] != "r1" {
		t.Fatalf("the retried task: events %s, finished on %v", names(evs), m.data["replica_id"])
	}
	if n := len(tokens(t, evs)); n != 8 {
		t.Fatalf("the retried task streamed %d tokens, want 8", n)
	}
}

// TestRetryExhaustedWhenLastReplicaLeaves: a task that failed on r0 waits
// for r1, the only replica it has not tried, while r0 fills up with other
// work; when r1 turns unready the task ends at once with REPLICA_EXHAUSTED
// (SPEC §5: "REPLICA_EXHAUSTED when out of replicas") — not when a slot
// frees somewhere, and not never, as it did when it waited at the head of
// the queue for as long as r1 was gone.
func TestRetryExhaustedWhenLastReplicaLeaves(t *testing.T) {
	rig := newRetryRig(t)
	e := rig.e
	retried := rig.failOnR0(t)

	// Two long tasks fill r0: no slot is free anywhere.
	var busy []string
	for i := 0; i < 2; i++ {
		id := newID()
		if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: id, session: rig.r0Session, maxTokens: 3000}.body()); r.status != 202 {
			t.Fatalf("enqueue: %d %s", r.status, r.body)
		}
		busy = append(busy, id)
		t.Cleanup(func() { e.do("POST", "/v1/tasks/"+id+"/cancel", testKey, "") })
	}
	r0 := e.srv.poolList()[0].set().replicas[0]
	eventually(t, "r0 to be full", func() bool { return r0.InFlight() == 2 })

	rig.r1Down.Store(true)
	evs := e.openStream(retried, testKey).all(t)
	last := evs[len(evs)-1]
	if last.name != "error" || last.data["code"] != CodeReplicaExhausted || last.data["retriable"] != true {
		t.Fatalf("the retried task ended with %s %v, want error %s", last.name, last.data, CodeReplicaExhausted)
	}
	if !rig.longRunning(t) || r0.InFlight() != 2 {
		t.Fatal("the retried task ended only once a slot freed")
	}
	if n := e.srv.poolList()[0].queue.Len(); n != 0 {
		t.Fatalf("queue length %d after the retry ended", n)
	}
	// r0 still serves once a slot frees.
	if r := e.do("POST", "/v1/tasks/"+busy[0]+"/cancel", testKey, ""); r.status != 204 {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	evs = e.postStream(taskSpec{session: rig.r0Session, maxTokens: 2}.body()).all(t)
	if evs[len(evs)-1].name != "end" {
		t.Fatalf("r0 after the exhausted retry: %s", names(evs))
	}
}

// TestQueuedTaskRunsWhenBreakerHalfOpens: the pool's only replica trips its
// breaker; a task queued meanwhile runs once open_ms has passed (the
// half-open trial), without waiting for a release or a health probe — here
// the next probe is ten minutes away.
func TestQueuedTaskRunsWhenBreakerHalfOpens(t *testing.T) {
	var failNext atomic.Int32
	up := startFake(t, fake.Options{Slots: 2})
	url := engineProxy(t, up.URL(), func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/completion" || !takeOne(&failNext) {
			return false
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"error":{"code":500,"message":"injected fault","type":"server_error"}}`)
		return true
	})
	e := newEnv(t, func(c *config.Config) {
		c.Health.IntervalMs = 600000 // after the first probe, none within the test
		c.Breaker.ConsecutiveFailures, c.Breaker.OpenMs = 1, 300
		c.Pools[0].Replicas[0].URL = url
	}, fake.Options{})
	r0 := e.srv.poolList()[0].set().replicas[0]

	failNext.Store(1)
	evs := e.postStream(taskSpec{maxTokens: 2}.body()).all(t)
	if last := evs[len(evs)-1]; last.name != "error" || last.data["code"] != CodeReplicaExhausted {
		t.Fatalf("the failing task: %s %v", last.name, last.data)
	}
	if s := r0.BreakerState().String(); s != "open" {
		t.Fatalf("breaker %s after the failure, want open", s)
	}
	evs = e.postStream(taskSpec{maxTokens: 2}.body()).all(t)
	if last := evs[len(evs)-1]; last.name != "end" {
		t.Fatalf("the task queued behind the open breaker: %s", names(evs))
	}
}
