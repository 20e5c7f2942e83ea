package gateway

import (
	"fmt"
	"strings"

	"github.com/llama-orch/llama-orch/balancer"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/config"
)

// sessionOn returns a session id whose consistent-hash choice (idle pool) is
// replica idx, so a test knows where a session's first task lands.
func sessionOn(t *testing.T, e *env, idx int) string {
	t.Helper()
	p := e.srv.poolList()[0]
	for i := 0; i < 1000; i++ {
		sess := newID()
		if p.set().ring.Pick(balancer.KeyOf(sess), nil, p.affinity) == p.set().replicas[idx] {
			return sess
		}
	}
	t.Fatal("no session hashes to replica", idx)
	return ""
}

// TestRetryBeforeFirstToken: a replica failing at start is retried on
// another one; one `started`, a complete stream (SPEC §5).
func TestRetryBeforeFirstToken(t *testing.T) {
	cases := []struct {
		name   string
		first  fake.Options
		mutate func(*config.Config)
	}{
		{"start-500", fake.Options{Fail: fake.FailStart500}, nil}, // 5xx before the first token
		{"start-429", fake.Options{Fail: fake.FailStart429}, nil}, // overloaded
		{"slow first token", fake.Options{TTFT: 3 * time.Second}, func(c *config.Config) { // first_token_ms miss
			c.Pools[0].Timeouts.FirstTokenMs = 1500 // r0 misses it; r1 meets it on a loaded machine
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, c.mutate, c.first, fake.Options{})
			evs := e.postStream(taskSpec{maxTokens: 8, session: sessionOn(t, e, 0)}.body()).all(t)
			if got := names(evs); strings.Count(got, "started") != 1 || evs[len(evs)-1].name != "end" {
				t.Fatalf("events %s, last %v", got, evs[len(evs)-1].data)
			}
			if n := len(tokens(t, evs)); n != 8 {
				t.Fatalf("%d tokens", n)
			}
			e.metricEventually(t, `task_retries_total{engine="llamacpp",why="retry"} 1`)
			eventually(t, "slots released", func() bool {
				return e.srv.poolList()[0].set().replicas[0].InFlight() == 0 && e.srv.poolList()[0].set().replicas[1].InFlight() == 0
			})
		})
	}
}

// TestReplicaExhausted: every replica fails before the first token.
func TestReplicaExhausted(t *testing.T) {
	e := newEnv(t, nil, fake.Options{Fail: fake.FailStart500}, fake.Options{Fail: fake.FailStart503})
	evs := e.postStream(taskSpec{maxTokens: 8}.body()).all(t)
	last := evs[len(evs)-1]
	if last.name != "error" || last.data["code"] != "REPLICA_EXHAUSTED" || len(evs) != 2 {
		t.Fatalf("events %s, last %v", names(evs), last.data)
	}
}

// TestFailoverResume: with failover: resume a stream cut mid-way continues
// on another replica from the text so far: i gap-free, metrics
// failover:true, end.tokens_out = max_tokens.
func TestFailoverResume(t *testing.T) {
	for _, fail := range []string{fake.FailMidstreamDisconnect, fake.FailMidstreamError, fake.FailStall} {
		t.Run(fail, func(t *testing.T) {
			e := newEnv(t, func(c *config.Config) {
				c.Pools[0].Failover = "resume"
				c.Pools[0].Timeouts.IdleMs = 500
			}, fake.Options{Fail: fail}, fake.Options{})
			evs := e.postStream(taskSpec{maxTokens: 10, session: sessionOn(t, e, 0)}.body()).all(t)
			end := evs[len(evs)-1]
			if end.name != "end" || int(end.data["tokens_out"].(float64)) != 10 {
				t.Fatalf("events %s, last %v", names(evs), end.data)
			}
			if n := len(tokens(t, evs)); n != 10 {
				t.Fatalf("%d tokens", n)
			}
			failover := false
			for _, ev := range evs {
				if ev.name == "metrics" && ev.data["failover"] == true && ev.data["kv_warmth"] == false {
					failover = true
				}
			}
			if !failover || strings.Count(names(evs), "started") != 1 {
				t.Fatalf("events %s", names(evs))
			}
		})
	}
}

// TestFailoverStrictErrors: a strict task is not resumed: WORKER_RESET.
func TestFailoverStrictErrors(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Pools[0].Failover = "resume" }, fake.Options{Fail: fake.FailMidstreamDisconnect}, fake.Options{})
	body := strings.Replace(taskSpec{maxTokens: 10, session: sessionOn(t, e, 0)}.body(), `"max_tokens":10`, `"max_tokens":10,"determinism":"strict"`, 1)
	evs := e.postStream(body).all(t)
	if last := evs[len(evs)-1]; last.name != "error" || last.data["code"] != "WORKER_RESET" {
		t.Fatalf("events %s, last %v", names(evs), last.data)
	}
}

// TestBreakerOpensAndCloses: a replica failing every stream trips its
// breaker (out of selection, shown in /v1/replicasets, counted); once the
// engine recovers, the half-open health probe closes it (SPEC §5).
func TestBreakerOpensAndCloses(t *testing.T) {
	// open_ms leaves the checks below time to see the breaker open before
	// the half-open probe (the fake's health is fine) closes it.
	e := newEnv(t, func(c *config.Config) { c.Breaker.OpenMs = 2000 }, fake.Options{Fail: fake.FailStart500}, fake.Options{})
	p := e.srv.poolList()[0]
	var onR0 []string // sessions that hash to r0 while it is selectable
	for i := 0; i < 6; i++ {
		onR0 = append(onR0, sessionOn(t, e, 0))
	}
	for i := 0; i < 5; i++ {
		evs := e.postStream(taskSpec{maxTokens: 2, session: onR0[i]}.body()).all(t)
		if evs[len(evs)-1].name != "end" {
			t.Fatalf("task %d: %s", i, names(evs))
		}
	}
	eventually(t, "the breaker to open", func() bool { return p.set().replicas[0].BreakerState().String() == "open" })
	e.metricEventually(t, `breaker_transitions_total{pool_id="p",replica_id="r0",to="open"} 1`)
	e.metricEventually(t, `breaker_state{pool_id="p",replica_id="r0"} 2`)
	rs := e.do("GET", "/v1/replicasets", testKey, "").json(t)["replicasets"].([]any)[0].(map[string]any)
	if b := rs["replicas"].([]any)[0].(map[string]any)["breaker"]; b != "open" && b != "half-open" {
		t.Fatalf("replicasets shows breaker %v", b)
	}
	// While open, r0's sessions go elsewhere without a failed attempt.
	evs := e.postStream(taskSpec{maxTokens: 2, session: onR0[5]}.body()).all(t)
	if evs[0].data["replica_id"] != "r1" {
		t.Fatalf("started on %v while r0's breaker is open", evs[0].data["replica_id"])
	}
	// The engine recovers on the same address: the probe closes the breaker.
	addr := e.fakes[0].Addr()
	e.fakes[0].Close()
	healthy, err := fake.New(fake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := healthy.Start(addr); err != nil {
		t.Skipf("cannot rebind %s: %v", addr, err)
	}
	e.fakes[0] = healthy
	eventually(t, "the breaker to close", func() bool { return p.set().replicas[0].BreakerState().String() == "closed" })
	e.metricEventually(t, `to="closed"`)
}

// TestResumedSegmentMissingFirstToken: with failover: resume, a task that
// streamed tokens, stalled, and then missed its first token on the replica
// it resumed on ends DECODE_TIMEOUT — a failure after the first token — not
// REPLICA_EXHAUSTED (SPEC §5).
func TestResumedSegmentMissingFirstToken(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		p := &c.Pools[0]
		p.Failover = config.FailoverResume
		p.Timeouts.IdleMs, p.Timeouts.FirstTokenMs = 1000, 1000 // r0's healthy start must meet them on a loaded machine
		c.Breaker.ConsecutiveFailures = 100
	}, fake.Options{Fail: fake.FailStall}, fake.Options{TTFT: 5 * time.Second})
	// Start on the stalling replica r0: its session hashes there.
	p := e.srv.poolList()[0]
	sess := ""
	for i := 0; sess == "" && i < 10000; i++ {
		s := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		if p.set().ring.Pick(balancer.KeyOf(s), nil, p.affinity) == p.set().replicas[0] {
			sess = s
		}
	}
	if sess == "" {
		t.Fatal("no session hashes to r0 (is it ready?)")
	}
	evs := e.postStream(taskSpec{maxTokens: 10, session: sess}.body()).all(t)
	last := evs[len(evs)-1]
	if len(tokens(t, evs)) != 2 || last.name != "error" || last.data["code"] != "DECODE_TIMEOUT" {
		t.Fatalf("events %s, last %v", names(evs), last.data)
	}
}
