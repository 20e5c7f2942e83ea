package features

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cucumber/godog"
	"github.com/google/uuid"

	"github.com/llama-orch/llama-orch/balancer"
	"github.com/llama-orch/llama-orch/engines/fake"
)

// Steps of balancing, resilience and the control plane (SPEC §5, §9):
// per-replica faults, engines killed and restarted, sessions placed by the
// consistent hash, breakers, retries, failover, drain and the control views.
//
// Sessions on a given replica: SPEC §5 makes the consistent hash a pure
// function of the replica ids and the session id, so that several gateways
// with one config agree with no shared state. A client holding the config can
// therefore compute which replica an idle pool gives a new session — the step
// `session "s" hashes to replica "r1"` does so with the balancer's ring built
// from the config's replica ids, as a second gateway would, and picks a
// session id that lands there. Scenarios use it to make every path of a
// 1-faulty + 1-healthy pool deterministic.

func initResilienceSteps(sc *godog.ScenarioContext, w *world) {
	// Configuration.
	sc.Step(`^replica "(\w+)" fails with "([^"]*)"$`, w.givenReplicaFault)
	sc.Step(`^replica "(\w+)" sends its first token after (\d+) ms$`, w.givenReplicaTTFT)
	sc.Step(`^replica "(\w+)" reports engine_version "([^"]*)" after loading for (\d+) ms$`, w.givenReplicaVersion)
	sc.Step(`^the pool's failover is "(error|resume)"$`, w.givenFailover)
	sc.Step(`^replica breakers trip after (\d+) consecutive failures and stay open for (\d+) ms$`, w.givenBreaker)
	sc.Step(`^the affinity load factor is ([\d.]+)$`, w.givenAffinity)
	sc.Step(`^sessions? "([^"]*)" hash(?:es)? to replica "(\w+)"$`, w.givenSessionsOn)
	sc.Step(`^every replica is ready$`, w.everyReplicaReady)

	// Engines.
	sc.Step(`^the engine of replica "(\w+)" is killed$`, w.killReplica)
	sc.Step(`^the engine of replica "(\w+)" restarts healthy$`, w.restartReplica)
	sc.Step(`^the engine of replica "(\w+)" restarts serving model "([^"]*)"$`, w.restartReplicaModel)
	sc.Step(`^the engine of replica "(\w+)" received (\d+) completion requests?$`, w.replicaRequests)
	sc.Step(`^the engine of replica "(\w+)" gets back to 0 requests in flight$`, w.replicaIdle)

	// Tasks and streams.
	sc.Step(`^tasks now name model "([^"]*)"$`, w.tasksNameModel)
	sc.Step(`^task "(\w+)" in session "(\w+)" was submitted for (\d+) tokens with determinism "(strict|best_effort)"$`, w.submittedSessionDeterminism)
	sc.Step(`^I run a (\d+)-token task in each of sessions "([^"]*)", each read to its end by a reader named after its session$`, w.runInSessions)
	sc.Step(`^the last "(\w+)" event of reader "(\w+)" has field "(\w+)" = (.+)$`, w.lastEventFieldIs)
	sc.Step(`^reader "(\w+)" got a "(\w+)" event with "(\w+)" = (\S+) and "(\w+)" = (\S+)$`, w.gotEventWithTwoFields)
	sc.Step(`^the "started" events of readers "(\w+)" and "(\w+)" name (the same|different) replicas?$`, w.sameReplica)

	// Control plane (SPEC §9).
	sc.Step(`^I POST "([^"]*)" with key "([^"]*)"$`, w.postWithKey)
	sc.Step(`^I POST "([^"]*)" with no key$`, w.postNoKey)
	sc.Step(`^I POST "([^"]*)" with body (\{.*\}) and key "([^"]*)"$`, w.postBodyWithKey)
	sc.Step(`^the response JSON at "([^"]*)" equals (.+)$`, w.jsonAtEquals)
	sc.Step(`^the response JSON at "([^"]*)" has the fields "([^"]*)"$`, w.jsonAtHasFields)
	sc.Step(`^the response JSON at "([^"]*)" exceeds (-?\d+)$`, w.jsonAtExceeds)
	sc.Step(`^replica "(\w+)" eventually shows (state|breaker) "([^"]*)" in /v1/replicasets$`, w.replicaEventuallyShows)
	sc.Step(`^the breaker of replica "(\w+)" stays out of "closed" for (\d+) ms$`, w.breakerStaysOpen)
	sc.Step(`^pool "(\w+)" eventually has (\d+) tasks? in flight in /v1/replicasets$`, w.poolInflight)
	sc.Step(`^the health of pool "(\w+)" eventually reports a last_error$`, w.healthLastError)
}

// ---- configuration ----

// replicaIndex maps "r<i>" (the ids world.yaml gives) to i.
func (w *world) replicaIndex(id string) (int, error) {
	i, err := strconv.Atoi(strings.TrimPrefix(id, "r"))
	if !strings.HasPrefix(id, "r") || err != nil || i < 0 || i >= w.pool.replicas {
		return 0, fmt.Errorf("no replica %q: the pool has r0..r%d", id, w.pool.replicas-1)
	}
	return i, nil
}

func (w *world) modReplica(id string, mod func(o *fake.Options)) error {
	if err := w.configurable(); err != nil {
		return err
	}
	i, err := w.replicaIndex(id)
	if err != nil {
		return err
	}
	if w.replicaMods == nil {
		w.replicaMods = map[int][]func(*fake.Options){}
	}
	w.replicaMods[i] = append(w.replicaMods[i], mod)
	return nil
}

func (w *world) givenReplicaFault(id, mode string) error {
	return w.modReplica(id, func(o *fake.Options) { o.Fail = mode })
}

func (w *world) givenReplicaTTFT(id string, ms int) error {
	return w.modReplica(id, func(o *fake.Options) { o.TTFT = time.Duration(ms) * time.Millisecond })
}

// givenReplicaVersion gives a replica another build, loading a while so that
// the other replicas report first (the first reported version defines the
// replica set, SPEC §5).
func (w *world) givenReplicaVersion(id, version string, ms int) error {
	return w.modReplica(id, func(o *fake.Options) {
		o.EngineVersion = version
		o.Load = time.Duration(ms) * time.Millisecond
	})
}

func (w *world) givenFailover(mode string) error {
	w.poolExtra = append(w.poolExtra, "failover: "+mode)
	return w.configurable()
}

func (w *world) givenBreaker(failures, openMs int) error {
	w.topExtra = append(w.topExtra, fmt.Sprintf("breaker: { consecutive_failures: %d, open_ms: %d }", failures, openMs))
	return w.configurable()
}

func (w *world) givenAffinity(factor string) error {
	w.topExtra = append(w.topExtra, "balancer: { affinity_load_factor: "+factor+" }")
	return w.configurable()
}

// givenSessionsOn names sessions (a comma-separated list) whose ids the
// consistent hash of an idle pool puts on replica id — computed from the
// config's replica ids, as another gateway with the same config would.
func (w *world) givenSessionsOn(names, id string) error {
	want, err := w.replicaIndex(id)
	if err != nil {
		return err
	}
	reps := make([]*balancer.Replica, w.pool.replicas)
	for i := range reps {
		reps[i] = balancer.NewReplica(i, "r"+strconv.Itoa(i), "http://replica-"+strconv.Itoa(i), w.pool.slots)
		reps[i].SetReady(true)
	}
	ring := balancer.NewRing(reps, 0)
	for _, name := range splitList(names) {
		if _, ok := w.sessions[name]; ok {
			return fmt.Errorf("session %q already has an id", name)
		}
		found := false
		for try := 0; try < 10000 && !found; try++ {
			sid := uuid.NewString()
			if r := ring.Pick(balancer.KeyOf(sid), nil, 0); r != nil && r.Index == want {
				w.sessions[name], found = sid, true
			}
		}
		if !found {
			return fmt.Errorf("no session id hashes to replica %s", id)
		}
	}
	return nil
}

// replicaSets reads GET /v1/replicasets with the control key.
func (w *world) replicaSets() (map[string]any, error) {
	r, err := w.do(request{method: "GET", path: "/v1/replicasets", key: keyCtl})
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/replicasets: %d %s", r.status, r.body)
	}
	return r.json()
}

// replicaView returns replica id's entry of the scenario's pool in
// GET /v1/replicasets.
func (w *world) replicaView(id string) (map[string]any, error) {
	m, err := w.replicaSets()
	if err != nil {
		return nil, err
	}
	v, err := jsonAt(m, "replicasets[pool_id="+w.pool.id+"].replicas[id="+id+"]")
	if err != nil {
		return nil, err
	}
	rv, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("replica %s is not an object: %v", id, v)
	}
	return rv, nil
}

// everyReplicaReady starts the gateway and waits (bounded) until every
// replica shows state "ready": /readyz needs only one.
func (w *world) everyReplicaReady() error {
	if err := w.start(); err != nil {
		return err
	}
	return eventually(func() error {
		for i := 0; i < w.pool.replicas; i++ {
			rv, err := w.replicaView("r" + strconv.Itoa(i))
			if err != nil {
				return err
			}
			if rv["state"] != "ready" {
				return fmt.Errorf("replica r%d is %v", i, rv["state"])
			}
		}
		return nil
	})
}

// ---- engines ----

func (w *world) fakeOf(id string) (int, *fake.Server, error) {
	if err := w.start(); err != nil {
		return 0, nil, err
	}
	i, err := w.replicaIndex(id)
	if err != nil {
		return 0, nil, err
	}
	return i, w.fakes[i], nil
}

// killReplica closes the replica's engine: its listener and every connection
// (streams end without their final frame).
func (w *world) killReplica(id string) error {
	_, f, err := w.fakeOf(id)
	if err != nil {
		return err
	}
	return f.Close()
}

// restartReplica starts a healthy engine (the scenario's engine options
// without the replica's own faults) on the killed one's address.
func (w *world) restartReplica(id string) error { return w.restartReplicaWith(id, nil) }

// restartReplicaModel restarts the replica's engine healthy, serving another
// model (what an operator does before POST /v1/pools/{id}/reload).
func (w *world) restartReplicaModel(id, model string) error {
	return w.restartReplicaWith(id, func(o *fake.Options) { o.Model = model })
}

func (w *world) restartReplicaWith(id string, mod func(o *fake.Options)) error {
	i, old, err := w.fakeOf(id)
	if err != nil {
		return err
	}
	addr := old.Addr()
	if err := old.Close(); err != nil {
		return err
	}
	o := w.fake
	o.Slots = w.pool.slots
	o.Fail = ""
	if mod != nil {
		mod(&o)
	}
	f, err := fake.New(o)
	if err != nil {
		return err
	}
	// The old listener is closed; the port may take a moment to be free.
	if err := eventually(func() error { return f.Start(addr) }); err != nil {
		return fmt.Errorf("restarting replica %s on %s: %w", id, addr, err)
	}
	w.fakes[i] = f
	return nil
}

func (w *world) replicaRequests(id string, n int) error {
	_, f, err := w.fakeOf(id)
	if err != nil {
		return err
	}
	if got := f.Requests(); got != int64(n) {
		return fmt.Errorf("engine of replica %s received %d completion requests, want %d", id, got, n)
	}
	return nil
}

func (w *world) replicaIdle(id string) error {
	_, f, err := w.fakeOf(id)
	if err != nil {
		return err
	}
	return eventually(func() error {
		if n := f.InFlight(); n != 0 {
			return fmt.Errorf("engine of replica %s has %d requests in flight", id, n)
		}
		return nil
	})
}

// ---- tasks and streams ----

// tasksNameModel changes the model_ref of the tasks submitted next (after
// a reload to another model).
func (w *world) tasksNameModel(model string) error {
	w.pool.model = model
	return nil
}

func (w *world) submittedSessionDeterminism(task, session string, tokens int, det string) error {
	if err := w.post(w.taskBody(task, session, tokens, "determinism", det), keyData); err != nil {
		return err
	}
	return w.admittedOK(task)
}

// runInSessions runs one task per session, one after the other, each read
// to its end by a reader named after the session; every stream must have
// one `started`, n tokens numbered 0..n-1 and end with `end`.
func (w *world) runInSessions(n int, sessions string) error {
	for _, s := range splitList(sessions) {
		task := "task-in-" + s
		if err := w.submittedInSession(task, s, n); err != nil {
			return err
		}
		if err := w.readStream(s, task); err != nil {
			return err
		}
		r := w.readers[s]
		started := 0
		for _, ev := range r.events {
			if ev.name == "started" {
				started++
			}
		}
		if started != 1 {
			return fmt.Errorf("session %s: %d started events; events:%s", s, started, r.dump())
		}
		if err := w.gotTokens(s, n, n-1); err != nil {
			return fmt.Errorf("session %s: %w", s, err)
		}
		if err := w.lastIsEnd(s, n); err != nil {
			return fmt.Errorf("session %s: %w", s, err)
		}
	}
	return nil
}

func (w *world) lastEventFieldIs(kind, name, field, literal string) error {
	r, err := w.reader(name)
	if err != nil {
		return err
	}
	for i := len(r.events) - 1; i >= 0; i-- {
		if r.events[i].name == kind {
			return jsonEquals(r.events[i].data, field, literal)
		}
	}
	return fmt.Errorf("reader %q got no %q event; events:%s", name, kind, r.dump())
}

func (w *world) gotEventWithTwoFields(name, kind, f1, v1, f2, v2 string) error {
	r, err := w.reader(name)
	if err != nil {
		return err
	}
	for _, ev := range r.events {
		if ev.name == kind && jsonEquals(ev.data, f1, v1) == nil && jsonEquals(ev.data, f2, v2) == nil {
			return nil
		}
	}
	return fmt.Errorf("reader %q got no %q event with %s = %s and %s = %s; events:%s", name, kind, f1, v1, f2, v2, r.dump())
}

func (w *world) sameReplica(a, b, same string) error {
	var ids [2]any
	for i, name := range []string{a, b} {
		r, err := w.reader(name)
		if err != nil {
			return err
		}
		ev, ok := r.find("started")
		if !ok || ev.data["replica_id"] == nil {
			return fmt.Errorf("reader %q has no started event with a replica_id; events:%s", name, r.dump())
		}
		ids[i] = ev.data["replica_id"]
	}
	if (ids[0] == ids[1]) != (same == "the same") {
		return fmt.Errorf("started replica_id: reader %q %v, reader %q %v; want %s", a, ids[0], b, ids[1], same)
	}
	return nil
}

// ---- control plane ----

func (w *world) postWithKey(path, key string) error {
	_, err := w.do(request{method: "POST", path: path, key: key})
	return err
}

func (w *world) postNoKey(path string) error { return w.postWithKey(path, "") }

func (w *world) postBodyWithKey(path, body, key string) error {
	_, err := w.do(request{method: "POST", path: path, body: body, key: key})
	return err
}

var pathSegment = regexp.MustCompile(`^([^\[\]]+)(?:\[([^\]=]+)(?:=([^\]]*))?\])?$`)

// jsonAt follows a path through decoded JSON: dot-separated keys, each
// optionally followed by [N] (an array index) or [key=value] (the array
// element whose key has that value, compared as text).
func jsonAt(v any, path string) (any, error) {
	for _, seg := range strings.Split(path, ".") {
		m := pathSegment.FindStringSubmatch(seg)
		if m == nil {
			return nil, fmt.Errorf("bad path segment %q in %q", seg, path)
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%q: not an object at %q: %v", path, seg, v)
		}
		if v, ok = obj[m[1]]; !ok {
			return nil, fmt.Errorf("%q: no field %q in %v", path, m[1], obj)
		}
		if m[2] == "" {
			continue
		}
		arr, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("%q: %q is not an array: %v", path, m[1], v)
		}
		if !strings.Contains(seg, "=") {
			i, err := strconv.Atoi(m[2])
			if err != nil || i < 0 || i >= len(arr) {
				return nil, fmt.Errorf("%q: no element %s in %q (%d elements)", path, m[2], m[1], len(arr))
			}
			v = arr[i]
			continue
		}
		found := false
		for _, el := range arr {
			if o, ok := el.(map[string]any); ok && fmt.Sprint(o[m[2]]) == m[3] {
				v, found = el, true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("%q: no element of %q with %s = %s: %v", path, m[1], m[2], m[3], arr)
		}
	}
	return v, nil
}

func (w *world) lastAt(path string) (any, error) {
	r, err := w.lastResponse()
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(r.body, &v); err != nil {
		return nil, fmt.Errorf("response body %q (status %d) is not JSON: %w", r.body, r.status, err)
	}
	return jsonAt(v, path)
}

func (w *world) jsonAtEquals(path, literal string) error {
	got, err := w.lastAt(path)
	if err != nil {
		return err
	}
	var want any
	if err := json.Unmarshal([]byte(literal), &want); err != nil {
		return fmt.Errorf("bad JSON literal %s: %w", literal, err)
	}
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("%s is %v, want %s; body %s", path, got, literal, w.last.body)
	}
	return nil
}

func (w *world) jsonAtHasFields(path, fields string) error {
	v, err := w.lastAt(path)
	if err != nil {
		return err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("%s is not an object: %v", path, v)
	}
	for _, f := range splitList(fields) {
		if _, ok := m[f]; !ok {
			return fmt.Errorf("%s lacks %q: %v", path, f, m)
		}
	}
	return nil
}

func (w *world) jsonAtExceeds(path string, n int) error {
	v, err := w.lastAt(path)
	if err != nil {
		return err
	}
	if f, ok := v.(float64); !ok || f <= float64(n) {
		return fmt.Errorf("%s is %v, want a number greater than %d", path, v, n)
	}
	return nil
}

func (w *world) replicaEventuallyShows(id, field, want string) error {
	if err := w.start(); err != nil {
		return err
	}
	return eventually(func() error {
		rv, err := w.replicaView(id)
		if err != nil {
			return err
		}
		if rv[field] != want {
			return fmt.Errorf("replica %s shows %s %v, want %q: %v", id, field, rv[field], want, rv)
		}
		return nil
	})
}

// breakerStaysOpen polls the replica's breaker for ms: it must never read
// "closed" (open, or half-open while its trial decides).
func (w *world) breakerStaysOpen(id string, ms int) error {
	for t0 := time.Now(); time.Since(t0) < time.Duration(ms)*time.Millisecond; time.Sleep(pollEvery) {
		rv, err := w.replicaView(id)
		if err != nil {
			return err
		}
		if rv["breaker"] == "closed" {
			return fmt.Errorf("the breaker of replica %s closed after %s: %v", id, time.Since(t0).Round(time.Millisecond), rv)
		}
	}
	return nil
}

// poolInflight waits until the gateway's own account of running tasks (the
// replicas' inflight in /v1/replicasets) sums to n.
func (w *world) poolInflight(pool string, n int) error {
	return eventually(func() error {
		m, err := w.replicaSets()
		if err != nil {
			return err
		}
		v, err := jsonAt(m, "replicasets[pool_id="+pool+"]")
		if err != nil {
			return err
		}
		reps, _ := v.(map[string]any)["replicas"].([]any)
		sum := 0.0
		for _, r := range reps {
			f, _ := r.(map[string]any)["inflight"].(float64)
			sum += f
		}
		if sum != float64(n) {
			return fmt.Errorf("pool %s has %v tasks in flight, want %d", pool, sum, n)
		}
		return nil
	})
}

func (w *world) healthLastError(pool string) error {
	if err := w.start(); err != nil {
		return err
	}
	return eventually(func() error {
		r, err := w.do(request{method: "GET", path: "/v1/pools/" + pool + "/health", key: keyCtl})
		if err != nil {
			return err
		}
		m, err := r.json()
		if err != nil {
			return err
		}
		if s, _ := m["last_error"].(string); s == "" {
			return errors.New("health has no last_error yet: " + string(r.body))
		}
		return nil
	})
}
