package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/admission"
	"github.com/llama-orch/llama-orch/gateway/config"
	"github.com/llama-orch/llama-orch/gateway/tasklog"
)

// TestWatchdogIdle: an engine that stalls after two tokens is ended with
// DECODE_TIMEOUT, its engine request aborted and the slot freed (SPEC §4.5).
func TestWatchdogIdle(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Pools[0].Timeouts.IdleMs = 300 }, fake.Options{Slots: 1, Fail: fake.FailStall})
	evs := e.postStream(taskSpec{maxTokens: 10}.body()).all(t)
	last := evs[len(evs)-1]
	if last.name != "error" || last.data["code"] != "DECODE_TIMEOUT" || len(tokens(t, evs)) != 2 {
		t.Fatalf("events %s, last %v", names(evs), last.data)
	}
	eventually(t, "the stalled slot to be freed", func() bool {
		return e.fakes[0].InFlight() == 0 && e.srv.poolList()[0].set().replicas[0].InFlight() == 0
	})
	eventually(t, "the watchdog cancel to be counted", func() bool {
		var sb strings.Builder
		e.srv.metrics.WritePrometheus(&sb)
		return strings.Contains(sb.String(), `reason="watchdog"`)
	})
}

// TestHugeMaxTokens: max_tokens near MaxInt64 cannot overflow past the
// token budget check.
func TestHugeMaxTokens(t *testing.T) {
	e := newEnv(t, nil)
	body := strings.Replace(taskSpec{}.body(), `"max_tokens":16`, `"max_tokens":9223372036854775807`, 1)
	if r := e.do("POST", "/v1/tasks", testKey, body); r.status != 400 {
		t.Fatalf("status %d %s", r.status, r.body)
	}
}

// TestIDSpellings: one UUID written four ways is one task (409 after the
// first), and the path accepts any spelling.
func TestIDSpellings(t *testing.T) {
	e := newEnv(t, nil)
	id := newID()
	spellings := []string{id, strings.ToUpper(id), "{" + id + "}", "urn:uuid:" + id}
	for i, sp := range spellings {
		r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: sp, maxTokens: 2}.body())
		want := 409
		if i == 0 {
			want = 202
		}
		if r.status != want {
			t.Fatalf("spelling %q: %d, want %d", sp, r.status, want)
		}
	}
	if evs := e.openStream(strings.ToUpper(id), testKey).all(t); evs[len(evs)-1].name != "end" {
		t.Fatalf("stream by upper-case id: %s", names(evs))
	}
}

// TestSessionBudgetAcrossRestart: a turn of an expired session that finishes
// late settles against its own session, never the fresh one.
func TestSessionBudgetAcrossRestart(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Sessions.TokenBudget = 100; c.Sessions.MaxTurns = 2 }, fake.Options{Slots: 1, ITL: 5 * time.Millisecond})
	sess := newID()
	a, b := newID(), newID()
	for _, id := range []string{a, b} {
		if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: id, session: sess, maxTokens: 50}.body()); r.status != 202 {
			t.Fatalf("enqueue: %d %s", r.status, r.body)
		}
	}
	// Two turns used: the next task starts the session afresh with the whole budget.
	c := newID()
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: c, session: sess, maxTokens: 90}.body()); r.status != 202 {
		t.Fatalf("fresh session: %d %s", r.status, r.body)
	}
	for _, id := range []string{a, b, c} {
		e.openStream(id, testKey).all(t)
	}
	r := e.do("GET", "/v1/sessions/"+sess, testKey, "")
	if got := r.json(t)["tokens_budget_remaining"].(float64); got != 10 {
		t.Fatalf("tokens_budget_remaining %v, want 10 (100 - 90 used by the fresh session)", got)
	}
	// Over budget: 429 with policy_label session-budget.
	r = e.do("POST", "/v1/tasks", testKey, taskSpec{session: sess, maxTokens: 11}.body())
	if r.status != 429 || r.json(t)["policy_label"] != "session-budget" {
		t.Fatalf("over budget: %d %s", r.status, r.body)
	}
}

// panicky is an adapter with a bug: it panics mid-stream.
type panicky struct{}

func (panicky) Engine() string { return engines.LlamaCpp }
func (panicky) Stream(ctx context.Context, req *engines.Request, sink engines.Sink) (engines.Result, error) {
	sink.Token([]byte("x"))
	panic("adapter bug")
}

// TestAdapterPanic: a panicking adapter ends the task with INTERNAL and
// frees the slot; the pool keeps dispatching.
func TestAdapterPanic(t *testing.T) {
	cfg, problems, err := config.Check([]byte(`
auth: { keys: [ { key: `+testKey+`, tenant: t1, roles: [data] } ] }
pools:
  - { id: p, engine: llamacpp, model: m, replicas: [ { id: r0, url: "http://127.0.0.1:1", slots: 1 } ] }
`), config.ValidateOptions{})
	if err != nil || config.HasErrors(problems) {
		t.Fatal(err, problems)
	}
	srv, err := New(cfg, Options{NewAdapter: func(config.Pool, config.Replica) (engines.Adapter, error) { return panicky{}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background()) //nolint:errcheck
	p := srv.poolList()[0]
	p.setReady(p.set(), 0, true, "")
	for i := 0; i < 3; i++ {
		tk := &task{key: taskKey{"t1", newID()}, pool: p, log: tasklog.New()}
		if _, _, ae := srv.quotas.acquire("t1"); ae != nil {
			t.Fatal(ae)
		}
		tk.mu.Lock()
		tk.entry, _, _, _ = p.queue.Push(admission.Meta{Tenant: "t1"}, tk)
		srv.tasks.add(tk)
		tk.mu.Unlock()
		p.signal()
		eventually(t, "the task to end", func() bool { return tk.log.Closed() && p.set().replicas[0].InFlight() == 0 })
		cur := tk.log.Subscribe(-1)
		data, _ := cur.Next()
		if !strings.Contains(string(data), `"code":"INTERNAL"`) {
			t.Fatalf("log: %s", data)
		}
	}
}
