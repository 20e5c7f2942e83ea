package gateway

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/config"
	"github.com/llama-orch/llama-orch/sse"
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
	p := e.srv.poolList()[0]
	eventually(t, "r0 ready", func() bool { return p.set().replicas[0].Ready() })
	eventually(t, "r1 held out", func() bool { return p.set().states[1].heldOut.Load() })
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
	eventually(t, "r1 held out for its model", func() bool { return m.srv.poolList()[0].set().states[1].heldOut.Load() })
	if m.srv.poolList()[0].set().replicas[1].Ready() {
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
	r = e.do("POST", "/v1/pools/p/reload", testKey, `{"new_model_ref":"tiny.gguf","timeout_ms":300,"replicas":[{"id":"x","url":"http://127.0.0.1:1"}]}`)
	if r.status != 409 || !strings.Contains(string(r.body), "replica x") {
		t.Fatalf("unreachable new replica list: %d %s", r.status, r.body)
	}
	for _, bad := range []string{
		`{"new_model_ref":"tiny.gguf","replicas":[{"id":"a","url":"http://127.0.0.1:2"},{"id":"a","url":"http://127.0.0.1:3"}]}`, // duplicate id
		`{"new_model_ref":"tiny.gguf","replicas":[{"id":"a"}]}`,                                                                  // no url
		`{"new_model_ref":"tiny.gguf","replicas":[{"id":"a","url":"ftp://x"}]}`,                                                  // not http
	} {
		if r := e.do("POST", "/v1/pools/p/reload", testKey, bad); r.status != 400 {
			t.Fatalf("bad replica list %s: %d %s", bad, r.status, r.body)
		}
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

// TestReloadNewReplicaSet: a reload naming new replicas builds a new set,
// proves it healthy with the new model, then switches atomically; a task
// streaming on the old set finishes there, new tasks go to the new set, and
// the old set's adapters are released once it is idle.
func TestReloadNewReplicaSet(t *testing.T) {
	e := newEnv(t, nil, fake.Options{Slots: 2, ITL: 2 * time.Millisecond}, fake.Options{Slots: 2, ITL: 2 * time.Millisecond})
	feed := e.openEvents(t, testKey)
	defer feed.close()

	var next []*fake.Server
	for range 2 {
		f, err := fake.New(fake.Options{Slots: 3, Model: "next.gguf"})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		next = append(next, f)
	}
	// A task streams on the old set across the switch.
	long := newID()
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: long, maxTokens: 300}.body()); r.status != 202 {
		t.Fatalf("enqueue: %d %s", r.status, r.body)
	}
	st := e.openStream(long, testKey)
	eventually(t, "the long task to run", func() bool { return e.fakes[0].InFlight()+e.fakes[1].InFlight() == 1 })

	body := `{"new_model_ref":"next.gguf","timeout_ms":5000,"replicas":[{"id":"n0","url":"` + next[0].URL() + `"},{"id":"r1","url":"` + next[1].URL() + `"}]}`
	oldSet := e.srv.poolList()[0].set()
	r := e.do("POST", "/v1/pools/p/reload", testKey, body)
	if r.status != 200 {
		t.Fatalf("reload: %d %s", r.status, r.body)
	}
	set := r.json(t)
	reps := set["replicas"].([]any)
	if set["model"] != "next.gguf" || len(reps) != 2 || reps[0].(map[string]any)["url"] != next[0].URL() ||
		reps[1].(map[string]any)["id"] != "r1" || reps[0].(map[string]any)["state"] != "ready" {
		t.Fatalf("reloaded set: %s", r.body)
	}
	evs := st.all(t)
	if last := evs[len(evs)-1]; last.name != "end" || len(tokens(t, evs)) != 300 {
		t.Fatalf("task across the switch: %d events, last %s %v", len(evs), last.name, last.data)
	}
	// New work goes to the new set only.
	oldReqs := e.fakes[0].Requests() + e.fakes[1].Requests()
	for range 4 {
		nb := strings.Replace(taskSpec{maxTokens: 3}.body(), `"model_ref":"m"`, `"model_ref":"next.gguf"`, 1)
		s := e.postStream(nb).all(t)
		if last := s[len(s)-1]; last.name != "end" {
			t.Fatalf("task on the new set: %s %v", last.name, last.data)
		}
	}
	if got := e.fakes[0].Requests() + e.fakes[1].Requests(); got != oldReqs {
		t.Fatalf("old replicas got %d more requests after the switch", got-oldReqs)
	}
	if next[0].Requests()+next[1].Requests() < 4 {
		t.Fatalf("new replicas served %d requests", next[0].Requests()+next[1].Requests())
	}
	// The old set is retired once idle: its health loops stop.
	eventually(t, "the old set to be released", func() bool {
		select {
		case <-oldSet.stop:
			return true
		default:
			return false
		}
	})
	// The running config records the reload: GET /v1/config shows it, and
	// applying it back changes nothing.
	cfgNow := e.do("GET", "/v1/config", testKey, "")
	if !strings.Contains(string(cfgNow.body), next[0].URL()) || !strings.Contains(string(cfgNow.body), "next.gguf") {
		t.Fatalf("running config after the reload:\n%s", cfgNow.body)
	}
	if r := e.do("POST", "/v1/config?dry_run=true", testKey, string(cfgNow.body)); r.status != 200 || len(r.json(t)["changes"].([]any)) != 0 {
		t.Fatalf("dry run of the running config after a reload: %d %s", r.status, r.body)
	}
	feed.waitFor(t, func(ev event) bool {
		return ev.name == "reload" && ev.data["ok"] == true && ev.data["model"] == "next.gguf"
	})
}

// TestEventsAndUISession: the ops feed and the ops page's cookie: the cookie
// authenticates control reads only, never data endpoints or state changes.
func TestEventsAndUISession(t *testing.T) {
	e := newEnv(t, nil, fake.Options{}, fake.Options{})
	if r := e.do("GET", "/v1/events", "sk-other", ""); r.status != 403 {
		t.Fatalf("events with a data key: %d", r.status)
	}
	if r := e.do("POST", "/v1/ui/session", "", ""); r.status != 401 {
		t.Fatalf("ui session without a key: %d", r.status)
	}
	if r := e.do("POST", "/v1/ui/session", "sk-other", ""); r.status != 403 {
		t.Fatalf("ui session with a data key: %d", r.status)
	}
	r := e.do("POST", "/v1/ui/session", "sk-ctl", "")
	if r.status != 204 {
		t.Fatalf("ui session: %d %s", r.status, r.body)
	}
	c := r.header.Get("Set-Cookie")
	for _, want := range []string{"orchd_ui=", "httponly", "samesite=strict", "path=/"} {
		if !strings.Contains(strings.ToLower(c), strings.ToLower(want)) {
			t.Fatalf("cookie %q lacks %s", c, want)
		}
	}
	cookie := strings.SplitN(c, ";", 2)[0]
	if r := e.do("GET", "/v1/replicasets", "", "", "Cookie", cookie); r.status != 200 {
		t.Fatalf("replicasets with the cookie: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/replicasets", "", "", "Cookie", "orchd_ui=forged"); r.status != 401 {
		t.Fatalf("forged cookie: %d", r.status)
	}
	if r := e.do("POST", "/v1/pools/p/drain", "", `{"deadline_ms":1}`, "Cookie", cookie); r.status != 401 {
		t.Fatalf("drain with only the cookie: %d", r.status)
	}
	if r := e.do("POST", "/v1/tasks", "", taskSpec{}.body(), "Cookie", cookie); r.status != 401 {
		t.Fatalf("data endpoint with only the cookie: %d", r.status)
	}
	// The feed, by cookie: a drain shows up as an event.
	feed := e.openEvents(t, "", "Cookie", cookie)
	defer feed.close()
	if r := e.do("POST", "/v1/pools/p/drain", "sk-ctl", `{"deadline_ms":60000}`); r.status != 202 {
		t.Fatalf("drain: %d", r.status)
	}
	ev := feed.waitFor(t, func(ev event) bool { return ev.name == "drain" })
	if ev.data["pool_id"] != "p" || ev.data["deadline_ms"].(float64) != 60000 || ev.data["at"] == "" {
		t.Fatalf("drain event: %v", ev.data)
	}
}

// events is an open ops feed.
type events struct {
	s    *stream
	ch   chan event
	stop chan struct{} // closed by close: the reader stops even if ch is full
	once sync.Once
}

func (e *env) openEvents(t *testing.T, key string, hdr ...string) *events {
	t.Helper()
	req, _ := http.NewRequest("GET", e.url+"/v1/events", nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	f := &events{s: &stream{res: res, rd: sse.NewReader(bufio.NewReader(res.Body), 0)}, ch: make(chan event, 1024), stop: make(chan struct{})}
	t.Cleanup(f.close)
	go func() {
		defer close(f.ch)
		var fr sse.Frame
		for f.s.rd.Next(&fr) == nil {
			if fr.Comment {
				continue
			}
			ev := event{id: string(fr.ID), name: string(fr.Event), raw: string(fr.Data)}
			if json.Unmarshal(fr.Data, &ev.data) != nil {
				return // waitFor then reports the feed ended
			}
			select {
			case f.ch <- ev:
			case <-f.stop:
				return
			}
		}
	}()
	hello := f.waitFor(t, func(event) bool { return true })
	if hello.name != "hello" {
		t.Fatalf("first event %q, want hello", hello.name)
	}
	return f
}

func (f *events) waitFor(t *testing.T, match func(event) bool) event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-f.ch:
			if !ok {
				t.Fatal("events feed ended")
			}
			if match(ev) {
				return ev
			}
		case <-timeout:
			t.Fatal("timed out waiting for an ops event")
		}
	}
}

func (f *events) close() {
	f.once.Do(func() {
		close(f.stop)
		_ = f.s.res.Body.Close()
	})
}

// TestShutdownWithRetiredSetBusy: orchd shuts down while a stream still runs
// on a replica set a reload replaced: the stream gets its terminal event and
// nothing panics (the old set's state travels with its replicas).
func TestShutdownWithRetiredSetBusy(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.ShutdownGraceMs = 100 }, fake.Options{ITL: 20 * time.Millisecond})
	f, err := fake.New(fake.Options{Model: "next.gguf"})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	long := newID()
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: long, maxTokens: 1000}.body()); r.status != 202 {
		t.Fatalf("enqueue: %d", r.status)
	}
	st := e.openStream(long, testKey)
	eventually(t, "the long task to run", func() bool { return e.fakes[0].InFlight() == 1 })
	r := e.do("POST", "/v1/pools/p/reload", testKey, `{"new_model_ref":"next.gguf","timeout_ms":5000,"replicas":[{"id":"n0","url":"`+f.URL()+`"}]}`)
	if r.status != 200 {
		t.Fatalf("reload: %d %s", r.status, r.body)
	}
	e.shutdown()
	evs := st.all(t)
	if last := evs[len(evs)-1]; last.name != "error" {
		t.Fatalf("stream across shutdown ended with %s %v", last.name, last.data)
	}
}
