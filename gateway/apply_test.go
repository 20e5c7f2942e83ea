package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/config"
	"github.com/llama-orch/llama-orch/sse"
)

// TestApplyUnderLoad: a config apply that moves a pool to new replicas and
// changes the keys, while 50 streams run: every stream ends with `end`, new
// work goes to the new replicas, the old key stops working and the new one
// works (SPEC §9 hot reload, issue 6).
func TestApplyUnderLoad(t *testing.T) {
	e := newEnv(t, nil, fake.Options{Slots: 32, ITL: 10 * time.Millisecond}, fake.Options{Slots: 32, ITL: 10 * time.Millisecond})
	r := e.do("GET", "/v1/config", testKey, "")
	cur := string(r.body)
	if r.status != 200 || !strings.Contains(cur, "key_sha256:") || strings.Contains(cur, testKey) || strings.Contains(cur, "sk-other") {
		t.Fatalf("GET /v1/config: %d\n%s", r.status, cur)
	}
	// The running config applied back is no change at all.
	if r := e.do("POST", "/v1/config?dry_run=true", testKey, cur); r.status != 200 || len(r.json(t)["changes"].([]any)) != 0 || r.json(t)["diff"] != "" {
		t.Fatalf("round trip of GET /v1/config: %d %s", r.status, r.body)
	}
	var next []*fake.Server
	for range 2 {
		f, err := fake.New(fake.Options{Slots: 32})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		next = append(next, f)
	}
	// Invalid: nothing changes, every problem named.
	bad := strings.Replace(cur, "capacity: 8", "capacity: -1", 1) + "\nbogus_key: 1\n"
	r = e.do("POST", "/v1/config", testKey, bad)
	if r.status != 400 || !strings.Contains(string(r.body), "bogus_key") || !strings.Contains(string(r.body), "capacity") {
		t.Fatalf("invalid apply: %d %s", r.status, r.body)
	}
	// A key that needs a restart: refused, named.
	r = e.do("POST", "/v1/config", testKey, strings.Replace(cur, "task_retention_ms: 10000", "task_retention_ms: 5000", 1))
	if r.status != 400 || !strings.Contains(string(r.body), "task_retention_ms") || !strings.Contains(string(r.body), "restart") {
		t.Fatalf("restart-only change: %d %s", r.status, r.body)
	}
	// The new file: new replica URLs, and a new control key instead of sk-ctl.
	sum := func(k string) string { s := sha256.Sum256([]byte(k)); return hex.EncodeToString(s[:]) }
	nf := strings.Replace(cur, e.fakes[0].URL(), next[0].URL(), 1)
	nf = strings.Replace(nf, e.fakes[1].URL(), next[1].URL(), 1)
	nf = strings.Replace(nf, sum("sk-ctl"), sum("sk-ctl2"), 1)
	r = e.do("POST", "/v1/config?dry_run=true", testKey, nf)
	if r.status != 200 || r.json(t)["applied"] != false || !strings.Contains(string(r.body), next[0].URL()) {
		t.Fatalf("dry run: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/replicasets", "sk-ctl", ""); r.status != 200 {
		t.Fatalf("a dry run changed the keys: %d", r.status)
	}

	const n = 50
	var wg sync.WaitGroup
	ends := make(chan string, n)
	for range n {
		id := newID()
		if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: id, maxTokens: 300}.body()); r.status != 202 {
			t.Fatalf("enqueue: %d %s", r.status, r.body)
		}
		st := e.openStream(id, testKey)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer st.close()
			var last string
			for {
				ev, ok := st.nextNoFail()
				if !ok {
					break
				}
				last = ev
			}
			ends <- last
		}()
	}
	eventually(t, "the streams to run", func() bool { return e.fakes[0].InFlight()+e.fakes[1].InFlight() >= n*4/5 })
	r = e.do("POST", "/v1/config", testKey, nf)
	if r.status != 200 || r.json(t)["applied"] != true {
		t.Fatalf("apply: %d %s", r.status, r.body)
	}
	wg.Wait()
	close(ends)
	for last := range ends {
		if last != "end" {
			t.Fatalf("a stream across the apply ended with %q", last)
		}
	}
	if r := e.do("GET", "/v1/replicasets", "sk-ctl", ""); r.status != 403 {
		t.Fatalf("removed key still works: %d", r.status)
	}
	if r := e.do("GET", "/v1/replicasets", "sk-ctl2", ""); r.status != 200 || !strings.Contains(string(r.body), next[1].URL()) {
		t.Fatalf("new key / new replicas: %d %s", r.status, r.body)
	}
	before := e.fakes[0].Requests() + e.fakes[1].Requests()
	if evs := e.postStream(taskSpec{maxTokens: 3}.body()).all(t); evs[len(evs)-1].name != "end" {
		t.Fatalf("task after the apply: %v", evs[len(evs)-1])
	}
	if e.fakes[0].Requests()+e.fakes[1].Requests() != before || next[0].Requests()+next[1].Requests() != 1 {
		t.Fatal("a task after the apply did not go to the new replicas")
	}
	if r := e.do("GET", "/v1/config", testKey, ""); !strings.Contains(string(r.body), next[0].URL()) {
		t.Fatalf("running config after the apply: %s", r.body)
	}
}

// nextNoFail returns the next event name (skipping comments), for readers on
// other goroutines; ok=false at EOF or on a read error.
func (s *stream) nextNoFail() (string, bool) {
	var f sse.Frame
	for {
		if err := s.rd.Next(&f); err != nil {
			return "", false
		}
		if !f.Comment {
			return string(f.Event), true
		}
	}
}

// TestApplyAddsAndRemovesPools: an apply that adds pool q and removes pool p
// while a stream runs on p: the stream finishes with `end` (p drains), p is
// no longer routed to and its dispatcher stops once idle, q serves.
func TestApplyAddsAndRemovesPools(t *testing.T) {
	e := newEnv(t, nil, fake.Options{ITL: 5 * time.Millisecond})
	f, err := fake.New(fake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	cur := string(e.do("GET", "/v1/config", testKey, "").body)
	i := strings.Index(cur, "pools:\n")
	if i < 0 {
		t.Fatalf("no pools in\n%s", cur)
	}
	nf := cur[:i] + "pools:\n  - id: q\n    engine: llamacpp\n    model: mq\n    replicas:\n      - { id: q0, url: \"" + f.URL() + "\" }\n"
	old := e.srv.poolList()[0]

	long := newID()
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: long, maxTokens: 200}.body()); r.status != 202 {
		t.Fatalf("enqueue: %d", r.status)
	}
	st := e.openStream(long, testKey)
	eventually(t, "the long task to run", func() bool { return e.fakes[0].InFlight() == 1 })
	r := e.do("POST", "/v1/config", testKey, nf)
	if r.status != 200 || !strings.Contains(string(r.body), "pools.q (added)") || !strings.Contains(string(r.body), "pools.p (removed: drained)") {
		t.Fatalf("apply: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{}.body()); r.status != 400 {
		t.Fatalf("a task for the removed pool's model: %d %s", r.status, r.body)
	}
	qb := strings.Replace(taskSpec{maxTokens: 3}.body(), `"model_ref":"m"`, `"model_ref":"mq"`, 1)
	if evs := e.postStream(qb).all(t); evs[len(evs)-1].name != "end" {
		t.Fatalf("task on the added pool: %v", evs[len(evs)-1])
	}
	evs := st.all(t)
	if last := evs[len(evs)-1]; last.name != "end" || len(tokens(t, evs)) != 200 {
		t.Fatalf("stream on the removed pool: %d events, last %s %v", len(evs), last.name, last.data)
	}
	eventually(t, "the removed pool's runners to stop", func() bool {
		select {
		case <-old.done:
			return true
		default:
			return false
		}
	})
	sets := e.do("GET", "/v1/replicasets", testKey, "")
	if strings.Contains(string(sets.body), `"pool_id":"p"`) || !strings.Contains(string(sets.body), `"pool_id":"q"`) {
		t.Fatalf("replicasets after the apply: %s", sets.body)
	}
}

// applyEdit fetches the running config, applies the replacements to it and
// POSTs it; it fails the test unless the apply answers 200 with changes.
func (e *env) applyEdit(t *testing.T, wantChanges string, oldNew ...string) {
	t.Helper()
	r := e.do("GET", "/v1/config", testKey, "")
	if r.status != 200 {
		t.Fatalf("GET /v1/config: %d %s", r.status, r.body)
	}
	cfg := string(r.body)
	for i := 0; i+1 < len(oldNew); i += 2 {
		if !strings.Contains(cfg, oldNew[i]) {
			t.Fatalf("the running config has no %q:\n%s", oldNew[i], cfg)
		}
		cfg = strings.Replace(cfg, oldNew[i], oldNew[i+1], 1)
	}
	r = e.do("POST", "/v1/config", testKey, cfg)
	if r.status != 200 || r.json(t)["applied"] != true {
		t.Fatalf("apply: %d %s", r.status, r.body)
	}
	got := fmt.Sprint(r.json(t)["changes"])
	if got != wantChanges {
		t.Fatalf("changes = %s, want %s", got, wantChanges)
	}
}

// TestApplyTimeoutsToRunningTasks: new watchdog limits reach a task that is
// already running. A stream stalled under idle_ms 60 s ends with
// DECODE_TIMEOUT naming the new limit soon after an apply sets 300 ms.
func TestApplyTimeoutsToRunningTasks(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Pools[0].Timeouts.IdleMs = 60000 }, fake.Options{Fail: fake.FailStall})
	s := e.postStream(taskSpec{maxTokens: 8}.body())
	defer s.close()
	// Without the new limit the stall lasts 60 s: fail in 20.
	cut := time.AfterFunc(20*time.Second, s.close)
	defer cut.Stop()
	for toks := 0; toks < 2; {
		ev, ok := s.next(t)
		if !ok {
			t.Fatal("the stream ended before the stall")
		}
		if ev.name == "token" {
			toks++
		}
	}
	e.applyEdit(t, "[pools.p.timeouts]", "idle_ms: 60000", "idle_ms: 300")
	evs := s.all(t)
	last := evs[len(evs)-1]
	if last.name != "error" || last.data["code"] != "DECODE_TIMEOUT" || !strings.Contains(fmt.Sprint(last.data["message"]), "idle_ms 300") {
		t.Fatalf("the stalled task ended with %s %v", last.name, last.data)
	}
}

// TestApplyQueueLimits: a pool's queue takes new limits live. Shrunk below
// its backlog it keeps every queued task and refuses newcomers; under
// drop-lru the next newcomer evicts the oldest queued task; grown, it admits.
func TestApplyQueueLimits(t *testing.T) {
	e := newEnv(t, nil, fake.Options{Slots: 1, ITL: 5 * time.Millisecond})
	long := newID()
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: long, maxTokens: 4000}.body()); r.status != 202 {
		t.Fatalf("enqueue: %d %s", r.status, r.body)
	}
	eventually(t, "the long task to run", func() bool { return e.fakes[0].InFlight() == 1 })
	var queued []string
	for range 3 {
		id := newID()
		if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: id, maxTokens: 4}.body()); r.status != 202 {
			t.Fatalf("enqueue: %d %s", r.status, r.body)
		}
		queued = append(queued, id)
	}
	// Capacity 8 → 2, three queued: all stay, the next is refused.
	e.applyEdit(t, "[pools.p.queue]", "capacity: 8", "capacity: 2")
	r := e.do("POST", "/v1/tasks", testKey, taskSpec{maxTokens: 4}.body())
	if r.status != 429 || !strings.Contains(string(r.body), "3 queued, capacity 2") {
		t.Fatalf("a newcomer to a queue shrunk below its backlog: %d %s", r.status, r.body)
	}
	// drop-lru at capacity 3: the newcomer takes the oldest one's place.
	e.applyEdit(t, "[pools.p.queue]", "capacity: 2", "capacity: 3", "full_policy: reject", "full_policy: drop-lru")
	newer := newID()
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: newer, maxTokens: 4}.body()); r.status != 202 {
		t.Fatalf("drop-lru newcomer: %d %s", r.status, r.body)
	}
	evs := e.openStream(queued[0], testKey).all(t)
	if last := evs[len(evs)-1]; last.name != "error" || last.data["code"] != "QUEUE_FULL_DROP_LRU" {
		t.Fatalf("the oldest queued task ended with %s %v", last.name, last.data)
	}
	// Grown back: admitted at once.
	e.applyEdit(t, "[pools.p.queue]", "capacity: 3", "capacity: 8", "full_policy: drop-lru", "full_policy: reject")
	grown := newID()
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: grown, maxTokens: 4}.body()); r.status != 202 {
		t.Fatalf("after growing the queue: %d %s", r.status, r.body)
	}
	// Everything admitted is still there: the long task ends, and every
	// queued one then runs to its end.
	if r := e.do("POST", "/v1/tasks/"+long+"/cancel", testKey, ""); r.status != 204 {
		t.Fatalf("cancel: %d", r.status)
	}
	for _, id := range append(queued[1:], newer, grown) {
		evs := e.openStream(id, testKey).all(t)
		if last := evs[len(evs)-1]; last.name != "end" {
			t.Fatalf("queued task %s ended with %s %v", id, last.name, last.data)
		}
	}
}

// TestApplyPreemptionToNewTasks: turning preemption to hard reaches tasks
// dispatched after the apply; one that started under soft kept no text to
// resume from, so it is never aborted for a newcomer.
func TestApplyPreemptionToNewTasks(t *testing.T) {
	e := newEnv(t, nil, fake.Options{Slots: 1, ITL: 10 * time.Millisecond})
	preempted := func(evs []event) bool {
		for _, ev := range evs {
			if ev.name == "metrics" && ev.data["preempted"] == true {
				return true
			}
		}
		return false
	}
	runBatch := func() (*stream, []event) {
		id := newID()
		// 200 tokens at 10 ms leave a newcomer ~2 s to arrive on a loaded machine.
		if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: id, maxTokens: 200, priority: "batch"}.body()); r.status != 202 {
			t.Fatalf("batch: %d %s", r.status, r.body)
		}
		s := e.openStream(id, testKey)
		var got []event
		for n := 0; n < 5; {
			ev, ok := s.next(t)
			if !ok {
				t.Fatal("the batch stream ended early")
			}
			got = append(got, ev)
			if ev.name == "token" {
				n++
			}
		}
		return s, got
	}
	old, got := runBatch() // dispatched under soft
	e.applyEdit(t, "[pools.p.preemption]", "preemption: soft", "preemption: hard")
	urgent := e.postStream(taskSpec{maxTokens: 3, priority: "interactive"}.body())
	got = append(got, old.all(t)...)
	if preempted(got) || got[len(got)-1].name != "end" || len(tokens(t, got)) != 200 {
		t.Fatalf("the task dispatched under soft preemption: %s", names(got))
	}
	if u := urgent.all(t); u[len(u)-1].name != "end" {
		t.Fatalf("urgent: %s", names(u))
	}
	// A batch task dispatched now is preempted for an interactive newcomer.
	s, got := runBatch()
	if u := e.postStream(taskSpec{maxTokens: 3, priority: "interactive"}.body()).all(t); u[len(u)-1].name != "end" {
		t.Fatalf("urgent: %s", names(u))
	}
	got = append(got, s.all(t)...)
	if !preempted(got) || got[len(got)-1].name != "end" || len(tokens(t, got)) != 200 {
		t.Fatalf("the task dispatched under hard preemption: %s", names(got))
	}
}

// TestApplicablePoolChanges: what an apply lists, applies in place, or
// refuses for a pool's keys.
func TestApplicablePoolChanges(t *testing.T) {
	base := `
auth: { keys: [ { key: sk-a, tenant: t1, roles: [data, control] } ] }
pools:
  - id: p
    engine: llamacpp
    model: m
    queue: { capacity: 8 }
    replicas: [ { id: r0, url: "http://127.0.0.1:18081" } ]
`
	cur, problems, err := config.Check([]byte(base), config.ValidateOptions{})
	if err != nil || config.HasErrors(problems) {
		t.Fatal(err, problems)
	}
	tests := []struct {
		name    string
		edit    func(p *config.Pool)
		changes string
		why     string // a substring of the refusal; "" = applicable (then changes is checked)
	}{
		{"nothing", func(p *config.Pool) {}, "[]", ""},
		{"per_priority of zeros is no cap", func(p *config.Pool) { p.Queue.PerPriority = &config.PerPriority{} }, "[]", ""},
		{"a batch cap", func(p *config.Pool) { p.Queue.PerPriority = &config.PerPriority{Batch: 2} }, "[pools.p.queue]", ""},
		{"timeouts and failover", func(p *config.Pool) { p.Timeouts.IdleMs = 100; p.Failover = "resume" }, "[pools.p.timeouts pools.p.failover]", ""},
		{"ctx and preemption", func(p *config.Pool) { p.Ctx = 2048; p.Preemption = "hard" }, "[pools.p.ctx pools.p.preemption]", ""},
		{"engine_model spelled out as the model", func(p *config.Pool) { p.EngineModel = "m" }, "[]", ""},
		{"a new model", func(p *config.Pool) { p.Model = "m2" }, "[]", "/v1/pools/p/reload"},
		{"a new model and the same engine_model", func(p *config.Pool) { p.Model, p.EngineModel = "m2", "m2" }, "[]", "/v1/pools/p/reload"},
		{"a public name other than the engine's", func(p *config.Pool) { p.Model, p.EngineModel = "m2", "org/m2" }, "[]", "needs a restart"},
		{"another engine", func(p *config.Pool) { p.Engine = "tgi" }, "[]", "under a new id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := *cur
			next.Pools = append([]config.Pool(nil), cur.Pools...)
			tt.edit(&next.Pools[0])
			changes, why := applicable(cur, &next)
			if got := fmt.Sprint(changes); tt.why == "" && got != tt.changes {
				t.Errorf("changes = %s, want %s", got, tt.changes)
			}
			if tt.why == "" && why != "" || tt.why != "" && !strings.Contains(why, tt.why) {
				t.Errorf("why = %q, want %q", why, tt.why)
			}
		})
	}
}

// TestApplyCtx: a smaller ctx applies to the next admission.
func TestApplyCtx(t *testing.T) {
	e := newEnv(t, nil, fake.Options{})
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{maxTokens: 100}.body()); r.status != 202 {
		t.Fatalf("before: %d %s", r.status, r.body)
	}
	e.applyEdit(t, "[pools.p.ctx]", "ctx: 4096", "ctx: 64")
	r := e.do("POST", "/v1/tasks", testKey, taskSpec{maxTokens: 100}.body())
	if r.status != 400 || !strings.Contains(string(r.body), "> ctx 64") {
		t.Fatalf("after ctx 64: %d %s", r.status, r.body)
	}
}
