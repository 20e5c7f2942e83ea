package gateway

import (
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/config"
)

// fill starts one long task on a 1-slot pool and waits for it to run.
func (e *env) fill(t *testing.T, spec taskSpec) string {
	t.Helper()
	if spec.id == "" {
		spec.id = newID()
	}
	if spec.maxTokens == 0 {
		spec.maxTokens = 3000
	}
	if r := e.do("POST", "/v1/tasks", testKey, spec.body()); r.status != 202 {
		t.Fatalf("fill: %d %s", r.status, r.body)
	}
	eventually(t, "the slot to be taken", func() bool { return e.fakes[0].InFlight() == 1 })
	return spec.id
}

// TestDropLRU: the oldest queued task of equal or lower priority is dropped
// (its stream ends with QUEUE_FULL_DROP_LRU) and the newcomer admitted; with
// nothing droppable the newcomer gets 429 QUEUE_FULL_DROP_LRU (SPEC §4.2).
func TestDropLRU(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Pools[0].Queue.Capacity = 2
		c.Pools[0].Queue.FullPolicy = "drop-lru"
	}, fake.Options{Slots: 1, ITL: 5 * time.Millisecond})
	e.fill(t, taskSpec{})
	old1, old2 := newID(), newID()
	for _, id := range []string{old1, old2} {
		if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: id, priority: "interactive"}.body()); r.status != 202 {
			t.Fatalf("queue: %d", r.status)
		}
	}
	// A batch newcomer cannot drop interactive work: 429 QUEUE_FULL_DROP_LRU.
	r := e.do("POST", "/v1/tasks", testKey, taskSpec{priority: "batch"}.body())
	if r.status != 429 || r.json(t)["code"] != "QUEUE_FULL_DROP_LRU" || r.json(t)["policy_label"] != "drop-lru" {
		t.Fatalf("batch newcomer: %d %s", r.status, r.body)
	}
	// An interactive newcomer drops the oldest (old1).
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{priority: "interactive"}.body()); r.status != 202 {
		t.Fatalf("newcomer: %d %s", r.status, r.body)
	}
	evs := e.openStream(old1, testKey).all(t)
	if len(evs) != 1 || evs[0].name != "error" || evs[0].data["code"] != "QUEUE_FULL_DROP_LRU" {
		t.Fatalf("dropped task's stream: %s %v", names(evs), evs[0].data)
	}
	if e.srv.poolList()[0].queue.Len() != 2 {
		t.Fatalf("queue holds %d", e.srv.poolList()[0].queue.Len())
	}
}

// TestShedLowPriority: the newest queued batch task is shed for an
// interactive newcomer; an interactive newcomer facing only interactive work
// gets 429 ADMISSION_REJECT; shedding counts as a soft preemption.
func TestShedLowPriority(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Pools[0].Queue.Capacity = 2
		c.Pools[0].Queue.FullPolicy = "shed-low-priority"
	}, fake.Options{Slots: 1, ITL: 5 * time.Millisecond})
	e.fill(t, taskSpec{})
	b1, b2 := newID(), newID()
	for _, id := range []string{b1, b2} {
		e.do("POST", "/v1/tasks", testKey, taskSpec{id: id, priority: "batch"}.body())
	}
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{priority: "interactive"}.body()); r.status != 202 {
		t.Fatalf("interactive newcomer: %d %s", r.status, r.body)
	}
	evs := e.openStream(b2, testKey).all(t)
	if len(evs) != 1 || evs[0].data["code"] != "ADMISSION_REJECT" || !strings.Contains(evs[0].data["message"].(string), "shed") {
		t.Fatalf("shed task: %v", evs[0].data)
	}
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{priority: "interactive"}.body()); r.status != 202 {
		t.Fatalf("second interactive (sheds b1): %d", r.status)
	}
	r := e.do("POST", "/v1/tasks", testKey, taskSpec{priority: "interactive"}.body())
	if r.status != 429 || r.json(t)["code"] != "ADMISSION_REJECT" || r.json(t)["policy_label"] != "shed-low-priority" {
		t.Fatalf("nothing to shed: %d %s", r.status, r.body)
	}
	e.metricEventually(t, `preemptions_total{mode="soft",engine="llamacpp"} 2`)
}

// TestTenantQuota: max_concurrent and the rps token bucket reject with
// policy_label tenant-quota before anything is queued.
func TestTenantQuota(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Tenants = []config.Tenant{{ID: "t1", Weight: 1, MaxConcurrent: 1}, {ID: "t2", Weight: 1, RPS: 0.001, Burst: 1}}
	}, fake.Options{Slots: 2, ITL: 5 * time.Millisecond})
	e.fill(t, taskSpec{})
	r := e.do("POST", "/v1/tasks", testKey, taskSpec{}.body())
	if r.status != 429 || r.json(t)["policy_label"] != "tenant-quota" || r.header.Get("Retry-After") == "" {
		t.Fatalf("max_concurrent: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/v1/tasks", "sk-other", taskSpec{maxTokens: 2}.body()); r.status != 202 {
		t.Fatalf("t2 first: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/v1/tasks", "sk-other", taskSpec{maxTokens: 2}.body())
	if r.status != 429 || r.json(t)["policy_label"] != "tenant-quota" {
		t.Fatalf("rps: %d %s", r.status, r.body)
	}
	if ms, _ := strconv.Atoi(r.header.Get("X-Backoff-Ms")); ms < 1000 {
		t.Fatalf("rps backoff %q: the bucket refills in ~1000 s", r.header.Get("X-Backoff-Ms"))
	}
}

// TestDeadlineUnmet: an infeasible deadline gets 400 DEADLINE_UNMET with
// predicted_end_ms; a feasible one is admitted and met.
func TestDeadlineUnmet(t *testing.T) {
	e := newEnv(t, nil)
	body := strings.Replace(taskSpec{maxTokens: 100}.body(), `"max_tokens":100`, `"max_tokens":100,"deadline_ms":5`, 1)
	r := e.do("POST", "/v1/tasks", testKey, body)
	if r.status != 400 || r.json(t)["code"] != "DEADLINE_UNMET" || r.json(t)["predicted_end_ms"].(float64) <= 5 {
		t.Fatalf("infeasible: %d %s", r.status, r.body)
	}
	body = strings.Replace(taskSpec{maxTokens: 4}.body(), `"max_tokens":4`, `"max_tokens":4,"deadline_ms":60000`, 1)
	evs := e.postStream(body).all(t)
	var me map[string]any
	for _, ev := range evs {
		if ev.name == "metrics" {
			me = ev.data
		}
	}
	if me["on_time_probability"].(float64) != 1 {
		t.Fatalf("metrics %v", me)
	}
	e.metricEventually(t, `deadlines_met_ratio{priority="interactive"} 1`)
}

// TestHardPreemption: an interactive newcomer aborts a running batch decode;
// the batch stream says preempted:true, resumes, and reads as one gap-free
// sequence whose end.tokens_out sums the segments (SPEC §4.4).
func TestHardPreemption(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Pools[0].Preemption = "hard" }, fake.Options{Slots: 1, ITL: 10 * time.Millisecond})
	batch := newID()
	// 200 tokens at 10 ms leave the newcomer ~2 s to arrive on a loaded machine.
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: batch, maxTokens: 200, priority: "batch"}.body()); r.status != 202 {
		t.Fatalf("batch: %d", r.status)
	}
	s := e.openStream(batch, testKey)
	var got []event
	for n := 0; n < 5; {
		ev, ok := s.next(t)
		if !ok {
			t.Fatalf("the batch stream ended before its fifth token: %s", names(got))
		}
		got = append(got, ev)
		if ev.name == "token" {
			n++
		}
	}
	urgent := e.postStream(taskSpec{maxTokens: 3, priority: "interactive"}.body()).all(t)
	if urgent[len(urgent)-1].name != "end" {
		t.Fatalf("urgent: %s", names(urgent))
	}
	got = append(got, s.all(t)...)
	toks := tokens(t, got) // checks i is gap-free
	preempted := false
	for _, ev := range got {
		if ev.name == "metrics" && ev.data["preempted"] == true {
			preempted = true
		}
	}
	end := got[len(got)-1]
	if !preempted || end.name != "end" || int(end.data["tokens_out"].(float64)) != 200 || len(toks) != 200 {
		t.Fatalf("preempted=%v, %d tokens, end %v", preempted, len(toks), end.data)
	}
	if strings.Count(names(got), "started") != 1 {
		t.Fatalf("more than one started: %s", names(got))
	}
	for _, want := range []string{`preemptions_total{mode="hard",engine="llamacpp"} 1`, `resumptions_total{engine="llamacpp"} 1`} {
		e.metricEventually(t, want)
	}
}

// TestWFQShare: one slot saturated by two tenants weighted 3:1, each
// keeping about 12 tasks waiting at all times: admission_share approaches 3:1
// (±15 %) under sustained contention (SPEC §4.3).
func TestWFQShare(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Tenants = []config.Tenant{{ID: "t1", Weight: 3}, {ID: "t2", Weight: 1}}
		c.Pools[0].Queue.Capacity = 64
	}, fake.Options{Slots: 1, ITL: 2 * time.Millisecond})
	const target = 400 // dispatches under contention
	var done atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, key := range []string{testKey, "sk-other"} {
		for w := 0; w < 12; w++ {
			wg.Add(1)
			go func(key string) {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					// Tasks of a few ms keep both tenants backlogged: a worker
					// resubmits long before its tenant's queue could drain.
					req, _ := http.NewRequest("POST", e.url+"/v1/tasks", strings.NewReader(taskSpec{maxTokens: 3}.body()))
					req.Header.Set("Authorization", "Bearer "+key)
					req.Header.Set("Accept", "text/event-stream")
					res, err := e.hc.Do(req)
					if err != nil {
						return
					}
					io.Copy(io.Discard, res.Body) //nolint:errcheck
					res.Body.Close()
					done.Add(1)
				}
			}(key)
		}
	}
	eventually(t, "enough dispatches", func() bool { return done.Load() >= target })
	var sb strings.Builder
	e.srv.metrics.WritePrometheus(&sb) // read while both tenants are still backlogged
	close(stop)
	wg.Wait()
	shares := map[string]float64{}
	for _, line := range strings.Split(sb.String(), "\n") {
		for _, tn := range []string{"t1", "t2"} {
			if strings.HasPrefix(line, `admission_share{tenant="`+tn+`",priority="interactive"}`) {
				shares[tn], _ = strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
			}
		}
	}
	if shares["t2"] == 0 || math.Abs(shares["t1"]/shares["t2"]-3)/3 > 0.15 {
		t.Fatalf("admission_share %v: ratio %.2f, want 3 ±15%%", shares, shares["t1"]/shares["t2"])
	}
}

// TestTokenizeEngine: with admission.tokenize: engine the guardrail counts
// the prompt with the engine's tokenizer, not the chars_per_token estimate.
func TestTokenizeEngine(t *testing.T) {
	prompt := strings.TrimSpace(strings.Repeat("a ", 30)) // 59 bytes: ~15 by estimate, 30 words (+BOS) by the fake's tokenizer
	body := strings.Replace(taskSpec{maxTokens: 10}.body(), `"prompt":"Hello"`, `"prompt":"`+prompt+`"`, 1)
	for _, c := range []struct {
		tokenize string
		want     int
	}{
		{"", 202},       // estimate: 15 + 10 <= 40
		{"engine", 400}, // engine: 31 + 10 > 40
	} {
		e := newEnv(t, func(cfg *config.Config) {
			cfg.Admission.Tokenize = c.tokenize
			cfg.Pools[0].Ctx = 40
		})
		if r := e.do("POST", "/v1/tasks", testKey, body); r.status != c.want {
			t.Fatalf("tokenize %q: %d %s", c.tokenize, r.status, r.body)
		}
		e.close()
	}
}

// TestPeriodicMetrics: a running task gets `metrics` events while it runs,
// not only the final one (SPEC §3.2 "periodic"), each with the SPEC fields.
func TestPeriodicMetrics(t *testing.T) {
	old := metricsInterval
	metricsInterval = 60 * time.Millisecond
	t.Cleanup(func() { metricsInterval = old }) // after the env's own cleanup stops the watchdog
	e := newEnv(t, nil, fake.Options{ITL: 5 * time.Millisecond})
	evs := e.postStream(taskSpec{maxTokens: 120}.body()).all(t)
	n := 0
	for i, ev := range evs {
		if ev.name != "metrics" {
			continue
		}
		for _, k := range []string{"on_time_probability", "queue_depth", "kv_warmth", "tokens_out"} {
			if _, ok := ev.data[k]; !ok {
				t.Fatalf("metrics event lacks %s: %v", k, ev.data)
			}
		}
		if i < len(evs)-2 {
			n++ // a metrics event before the final one
		}
	}
	if n < 2 || evs[len(evs)-1].name != "end" {
		t.Fatalf("%d periodic metrics events in %d events", n, len(evs))
	}
}
