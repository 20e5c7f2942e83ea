package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/config"
)

// TestControlPlane: replica sets, pool health, capabilities and drain
// (SPEC §9), control role only.
func TestControlPlane(t *testing.T) {
	e := newEnv(t, nil, fake.Options{Slots: 2, ITL: 5 * time.Millisecond}, fake.Options{Slots: 2, ITL: 5 * time.Millisecond})
	for _, path := range []string{"/v1/replicasets", "/v1/capabilities", "/v1/pools/p/health"} {
		if r := e.do("GET", path, "sk-other", ""); r.status != 403 {
			t.Fatalf("data-only key on %s: %d", path, r.status)
		}
	}
	e.postStream(taskSpec{maxTokens: 4}.body()).all(t)
	r := e.do("GET", "/v1/replicasets", testKey, "")
	rs := r.json(t)["replicasets"].([]any)[0].(map[string]any)
	reps := rs["replicas"].([]any)
	if r.status != 200 || rs["pool_id"] != "p" || rs["ready"] != true || len(reps) != 2 {
		t.Fatalf("replicasets: %d %s", r.status, r.body)
	}
	r0 := reps[0].(map[string]any)
	if r0["state"] != "ready" || r0["breaker"] != "closed" || r0["slots"].(float64) != 2 {
		t.Fatalf("replica: %v", r0)
	}
	if rs["slo"].(map[string]any)["ttft_ms"].(map[string]any)["p99"].(float64) <= 0 {
		t.Fatalf("no ttft quantiles: %s", r.body)
	}
	if r := e.do("GET", "/v1/capabilities", testKey, ""); r.status != 200 || r.json(t)["api_version"] != "v1" {
		t.Fatalf("capabilities: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/pools/nope/health", testKey, ""); r.status != 404 {
		t.Fatalf("unknown pool: %d", r.status)
	}

	// Drain: running work continues until the deadline, new work is refused.
	long := newID()
	e.do("POST", "/v1/tasks", testKey, taskSpec{id: long, maxTokens: 3000}.body())
	eventually(t, "the long task to run", func() bool { return e.fakes[0].InFlight()+e.fakes[1].InFlight() == 1 })
	if r := e.do("POST", "/v1/pools/p/drain", testKey, `{"deadline_ms":200}`); r.status != 202 {
		t.Fatalf("drain: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{}.body()); r.status != 503 || r.json(t)["code"] != "POOL_UNREADY" {
		t.Fatalf("admission while draining: %d %s", r.status, r.body)
	}
	h := e.do("GET", "/v1/pools/p/health", testKey, "").json(t)
	if h["draining"] != true || h["live"] != true {
		t.Fatalf("health while draining: %v", h)
	}
	evs := e.openStream(long, testKey).all(t)
	if last := evs[len(evs)-1]; last.name != "error" || last.data["code"] != "POOL_UNREADY" || len(tokens(t, evs)) == 0 {
		t.Fatalf("drained task: %d events, last %s %v", len(evs), last.name, last.data)
	}
	eventually(t, "engine slots freed", func() bool { return e.fakes[0].InFlight()+e.fakes[1].InFlight() == 0 })
}

// TestReplicaSetHoldsOutOtherVersions: a replica reporting another
// engine_version is not mixed into the set: held out, not selected (SPEC §5);
// one reporting a model other than engine_model likewise.
func TestReplicaSetHoldsOutOtherVersions(t *testing.T) {
	e := newEnvPartial(t, func(c *config.Config) { c.Pools[0].Replicas[0].Slots = 1 },
		fake.Options{EngineVersion: "b1"}, fake.Options{EngineVersion: "b2", Load: 300 * time.Millisecond}) // r0 reports first: its version defines the set
	p := e.srv.pools[0]
	eventually(t, "r0 ready", func() bool { return p.replicas[0].Ready() })
	eventually(t, "r1 held out", func() bool { return p.states[1].heldOut.Load() })
	rs := e.do("GET", "/v1/replicasets", testKey, "").json(t)["replicasets"].([]any)[0].(map[string]any)
	r1 := rs["replicas"].([]any)[1].(map[string]any)
	if r1["state"] != "held_out" || rs["engine_version"] != "b1" {
		t.Fatalf("replicasets: %v", rs)
	}
	for i := 0; i < 3; i++ {
		if evs := e.postStream(taskSpec{maxTokens: 2}.body()).all(t); evs[0].data["replica_id"] != "r0" {
			t.Fatalf("task ran on %v", evs[0].data["replica_id"])
		}
	}

	m := newEnvPartial(t, func(c *config.Config) { c.Pools[0].EngineModel = "tiny.gguf" },
		fake.Options{}, fake.Options{Model: "other.gguf"})
	eventually(t, "r1 held out for its model", func() bool { return m.srv.pools[0].states[1].heldOut.Load() })
	if m.srv.pools[0].replicas[1].Ready() {
		t.Fatal("a replica with the wrong model is ready")
	}
}

// TestReload: a reload to the model the replicas report switches the pool
// atomically (200); one they do not report is refused with 409 and changes
// nothing (SPEC §9).
func TestReload(t *testing.T) {
	e := newEnv(t, nil, fake.Options{}, fake.Options{}) // fakes report tiny.gguf
	r := e.do("POST", "/v1/pools/p/reload", testKey, `{"new_model_ref":"other.gguf","timeout_ms":300}`)
	if r.status != 409 || !strings.Contains(string(r.body), "other.gguf") {
		t.Fatalf("unverifiable reload: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{maxTokens: 2}.body()); r.status != 202 {
		t.Fatalf("old model after a refused reload: %d", r.status)
	}
	r = e.do("POST", "/v1/pools/p/reload", testKey, `{"new_model_ref":"tiny.gguf","replicas":[{"id":"x","url":"http://127.0.0.1:1"}]}`)
	if r.status != 409 {
		t.Fatalf("new replica list: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/v1/pools/p/reload", testKey, `{"new_model_ref":"tiny.gguf","timeout_ms":2000}`)
	if r.status != 200 || r.json(t)["model"] != "tiny.gguf" {
		t.Fatalf("reload: %d %s", r.status, r.body)
	}
	body := strings.Replace(taskSpec{maxTokens: 2}.body(), `"model_ref":"m"`, `"model_ref":"tiny.gguf"`, 1)
	if r := e.do("POST", "/v1/tasks", testKey, body); r.status != 202 {
		t.Fatalf("new model: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{maxTokens: 2}.body()); r.status != 400 {
		t.Fatalf("old model after reload: %d", r.status)
	}
	if r := e.do("POST", "/v1/pools/p/reload", "sk-other", `{"new_model_ref":"x"}`); r.status != 403 {
		t.Fatalf("data key: %d", r.status)
	}
}
