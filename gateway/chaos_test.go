package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/config"
	"github.com/llama-orch/llama-orch/sse"
)

// Chaos tests (issue 4 item 9, SPEC §5): three fake replicas on loopback
// under 64 concurrent one-round-trip streams while one replica is killed and
// restarted, answers 503, stalls or cuts its streams. Each asserts that
// every task ends with exactly one terminal event, that no token index
// repeats or is skipped, that the faulty replica's breaker opens and later
// closes (the healthy ones' never open), and that nothing leaks: every slot
// is released in the gateway and in the engines, the queue is empty, and
// goleak (TestMain) finds no goroutine left.

const (
	chaosClients = 64
	chaosTokens  = 200
	chaosSlots   = 32 // per replica: 64 streams fit on two replicas
	chaosITL     = 3 * time.Millisecond
	chaosFaulty  = 1 // index of the replica that misbehaves
	// chaosTaskTimeout bounds one stream; chaosTimeout the whole load.
	chaosTaskTimeout = 15 * time.Second
	chaosTimeout     = 20 * time.Second
)

// newChaosEnv starts three replicas; faulty replaces replica 1's options.
// failover "resume" or "error"; idleMs 0 keeps the default.
func newChaosEnv(t *testing.T, failover string, idleMs int, faulty fake.Options) *env {
	t.Helper()
	healthy := fake.Options{Slots: chaosSlots, ITL: chaosITL}
	faulty.Slots, faulty.ITL = chaosSlots, chaosITL
	return newEnv(t, func(c *config.Config) {
		p := &c.Pools[0]
		p.Failover = failover
		p.Queue.Capacity = 4 * chaosClients
		if idleMs > 0 {
			p.Timeouts.IdleMs = idleMs
		}
		for i := range p.Replicas {
			p.Replicas[i].Slots = chaosSlots
		}
		c.Breaker.OpenMs = 300
		c.Breaker.ConsecutiveFailures = 5
		// A first token slower than the TTFT SLO counts against a replica;
		// on a loaded CI machine (-race, 64 streams) the healthy replicas
		// must not trip on scheduling delays.
		c.SLO.Interactive.TTFTP95Ms = 5000
	}, healthy, faulty, healthy)
}

// outcome is what one chaos client saw of one task.
type outcome struct {
	terminal string // "end", or the error event's code
	tokens   int
	failover bool   // a metrics event said failover:true
	started  string // replica_id of `started`
	served   string // replica_id of the last metrics event (the replica that finished it)
}

// chaosStream runs one task as a one-round-trip stream and checks the
// stream's invariants: one `started` first, event ids 0, 1, 2, …, token i
// counting 0, 1, 2, … (never repeated or skipped), exactly one terminal
// event and nothing after it, end.tokens_out = max_tokens = tokens seen,
// failover metrics with kv_warmth false.
func chaosStream(ctx context.Context, e *env, body string, maxTokens int) (outcome, error) {
	var o outcome
	ctx, cancel := context.WithTimeout(ctx, chaosTaskTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/tasks", strings.NewReader(body))
	if err != nil {
		return o, err
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Accept", "text/event-stream")
	res, err := e.hc.Do(req)
	if err != nil {
		return o, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
		return o, fmt.Errorf("status %d %s", res.StatusCode, b)
	}
	rd := sse.NewReader(res.Body, 0)
	var trace []string // event names, for error messages
	fail := func(format string, args ...any) (outcome, error) {
		return o, fmt.Errorf(format+" (events: %s)", append(args, strings.Join(trace, " "))...)
	}
	events := 0
	for {
		var f sse.Frame
		if err := rd.Next(&f); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return fail("read: %v", err)
		}
		if f.Comment {
			continue
		}
		name := string(f.Event)
		trace = append(trace, name)
		if o.terminal != "" {
			return fail("event %s after the terminal event", name)
		}
		if string(f.ID) != strconv.Itoa(events) {
			return fail("event %d has id %q", events, f.ID)
		}
		events++
		var d map[string]any
		if err := json.Unmarshal(f.Data, &d); err != nil {
			return fail("event %s data %q: %v", name, f.Data, err)
		}
		switch name {
		case "started":
			if o.started != "" {
				return fail("a second started")
			}
			o.started, _ = d["replica_id"].(string)
		case "token":
			if o.started == "" {
				return fail("token before started")
			}
			if i, ok := d["i"].(float64); !ok || int(i) != o.tokens {
				return fail("token i=%v, want %d", d["i"], o.tokens)
			}
			o.tokens++
		case "metrics":
			if d["failover"] == true {
				o.failover = true
				if d["kv_warmth"] != false {
					return fail("failover metrics with kv_warmth %v", d["kv_warmth"])
				}
			}
			if r, _ := d["replica_id"].(string); r != "" {
				o.served = r
			}
		case "end":
			o.terminal = "end"
			if n, _ := d["tokens_out"].(float64); int(n) != maxTokens || o.tokens != maxTokens {
				return fail("end tokens_out %v after %d tokens, want %d", d["tokens_out"], o.tokens, maxTokens)
			}
		case "error":
			o.terminal, _ = d["code"].(string)
			if o.terminal == "" {
				return fail("error event without a code: %s", f.Data)
			}
		}
	}
	if o.terminal == "" {
		return fail("the stream ended without a terminal event")
	}
	return o, nil
}

// chaosLoad runs chaosClients clients. With loop false each runs one task;
// with loop true each runs tasks back to back until stop is called.
type chaosLoad struct {
	e      *env
	cancel context.CancelFunc
	stopCh chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	mu   sync.Mutex
	outs []outcome
	errs []error
}

func startChaos(t *testing.T, e *env, loop bool) *chaosLoad {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chaosTimeout)
	l := &chaosLoad{e: e, cancel: cancel, stopCh: make(chan struct{})}
	for c := 0; c < chaosClients; c++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				o, err := chaosStream(ctx, e, taskSpec{maxTokens: chaosTokens}.body(), chaosTokens)
				l.mu.Lock()
				if err != nil {
					l.errs = append(l.errs, err)
				} else {
					l.outs = append(l.outs, o)
				}
				l.mu.Unlock()
				if err != nil || !loop {
					return
				}
				select {
				case <-l.stopCh:
					return
				default:
				}
			}
		}()
	}
	return l
}

func (l *chaosLoad) stop() { l.once.Do(func() { close(l.stopCh) }) }

// wait stops the clients, waits for them (bounded by chaosTimeout through
// their contexts) and fails the test on any stream whose invariants broke.
func (l *chaosLoad) wait(t *testing.T) []outcome {
	t.Helper()
	l.stop()
	l.wg.Wait()
	l.cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, err := range l.errs {
		if i == 5 {
			t.Errorf("… and %d more", len(l.errs)-5)
			break
		}
		t.Errorf("stream: %v", err)
	}
	if len(l.errs) > 0 {
		t.FailNow()
	}
	return append([]outcome(nil), l.outs...)
}

// tally counts outcomes by terminal.
func tally(outs []outcome) map[string]int {
	m := map[string]int{}
	for _, o := range outs {
		m[o.terminal]++
		if o.failover {
			m["failover"]++
		}
	}
	return m
}

// metricValue reads one series (exact name and labels) from /metrics; 0
// when absent.
func metricValue(e *env, series string) float64 {
	var sb strings.Builder
	e.srv.metrics.WritePrometheus(&sb)
	for _, line := range strings.Split(sb.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	return 0
}

func transitions(e *env, replica, to string) float64 {
	return metricValue(e, `breaker_transitions_total{pool_id="p",replica_id="`+replica+`",to="`+to+`"}`)
}

// restartFake closes replica i's engine and starts one with opts on the same
// address (a process restart, as the gateway sees it).
func restartFake(t *testing.T, e *env, i int, opts fake.Options) {
	t.Helper()
	addr := e.fakes[i].Addr()
	_ = e.fakes[i].Close()
	opts.Slots, opts.ITL = chaosSlots, chaosITL
	f, err := fake.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	for try := 0; try < 100; try++ { // the port may take a moment to be free
		if serr = f.Start(addr); serr == nil {
			e.fakes[i] = f
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Skipf("cannot rebind %s: %v", addr, serr)
}

// waitStreaming waits until every client's task is running (the pool holds
// chaosClients slots), then lets tokens flow for d.
func waitStreaming(t *testing.T, e *env, d time.Duration) {
	t.Helper()
	p := e.srv.poolList()[0]
	eventually(t, "every chaos task to run", func() bool {
		n := 0
		for _, r := range p.set().replicas {
			n += r.InFlight()
		}
		return n == chaosClients
	})
	time.Sleep(d)
}

// checkRecovered asserts the end state: the faulty replica's breaker opened
// and is closed again, the healthy ones' never opened; no slot is held in
// the gateway or the engines and the queue is empty; tasks of sessions the
// ring gives the faulty replica run there again.
func checkRecovered(t *testing.T, e *env) {
	t.Helper()
	p := e.srv.poolList()[0]
	faulty := p.set().replicas[chaosFaulty].ID
	if n := transitions(e, faulty, "open"); n < 1 {
		t.Errorf("the breaker of %s never opened", faulty)
	}
	eventually(t, "the breaker of "+faulty+" to close", func() bool { return p.set().replicas[chaosFaulty].BreakerState().String() == "closed" })
	eventually(t, faulty+" to be ready", func() bool { return p.set().replicas[chaosFaulty].Ready() })
	if n := transitions(e, faulty, "closed"); n < 1 {
		t.Errorf("no transition of %s to closed was counted", faulty)
	}
	for i, r := range p.set().replicas {
		if i == chaosFaulty {
			continue
		}
		if n := transitions(e, r.ID, "open"); n != 0 {
			t.Errorf("the breaker of healthy replica %s opened %v times", r.ID, n)
		}
	}
	// The API shows it too. Polled: with unhealthy_after 1, one failed probe
	// around the restart (seen once under load: a fresh connection ended
	// with EOF) flips the replica to unready until the next probe, 20 ms on.
	var rv map[string]any
	for i := 0; i < 100; i++ {
		if rv = replicaInSets(t, e, faulty); rv["breaker"] == "closed" && rv["state"] == "ready" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if rv["breaker"] != "closed" || rv["state"] != "ready" {
		t.Errorf("/v1/replicasets after recovery: %v", rv)
	}
	checkReleased(t, e)
	// The recovered replica serves again: sessions the ring gives it run
	// there (once every engine's scraped load has caught up with idleness,
	// as the ring counts it).
	for i := 0; i < 3; i++ {
		waitIdleLoads(t, e)
		evs := e.postStream(taskSpec{maxTokens: 4, session: sessionOn(t, e, chaosFaulty)}.body()).all(t)
		if evs[0].data["replica_id"] != faulty || evs[len(evs)-1].name != "end" {
			t.Fatalf("after recovery: started on %v, events %s", evs[0].data["replica_id"], names(evs))
		}
	}
	checkReleased(t, e)
}

// replicaInSets returns replica id's entry in GET /v1/replicasets.
func replicaInSets(t *testing.T, e *env, id string) map[string]any {
	t.Helper()
	r := e.do("GET", "/v1/replicasets", "sk-ctl", "")
	if r.status != http.StatusOK {
		t.Fatalf("GET /v1/replicasets: %d %s", r.status, r.body)
	}
	for _, rv := range r.json(t)["replicasets"].([]any)[0].(map[string]any)["replicas"].([]any) {
		if m := rv.(map[string]any); m["id"] == id {
			return m
		}
	}
	t.Fatalf("no replica %s in %s", id, r.body)
	return nil
}

// waitIdleLoads waits until no engine reports a request in its last
// scraped load (the scrape follows each health probe).
func waitIdleLoads(t *testing.T, e *env) {
	t.Helper()
	// A scrape read while the last task ran may be stored after it ended.
	// Each replica's probes run one after another, so once two scrapes were
	// stored from here on, the second was read with the engines idle and no
	// older reading can land later.
	rs := e.srv.poolList()[0].set()
	last, seen := make([]*engines.Load, len(rs.states)), make([]int, len(rs.states))
	for i, st := range rs.states {
		last[i] = st.load.Load()
	}
	eventually(t, "two load scrapes of every replica", func() bool {
		done := true
		for i, st := range rs.states {
			if l := st.load.Load(); l != last[i] {
				last[i], seen[i] = l, seen[i]+1
			}
			done = done && seen[i] >= 2
		}
		return done
	})
	eventually(t, "scraped engine loads to show idle engines", func() bool {
		for _, r := range e.srv.poolList()[0].set().replicas {
			if proc, def, _ := r.EngineLoad(); proc+def != 0 {
				return false
			}
		}
		return true
	})
}

// checkReleased waits until no slot is held, in the gateway or any engine,
// and the queue is empty.
func checkReleased(t *testing.T, e *env) {
	t.Helper()
	p := e.srv.poolList()[0]
	eventually(t, "every slot released", func() bool {
		for i, r := range p.set().replicas {
			if r.InFlight() != 0 || e.fakes[i].InFlight() != 0 {
				return false
			}
		}
		return p.queue.Len() == 0
	})
}

// TestChaosKillAndRestart: replica r1's engine process dies mid-stream under
// 64 streams and comes back on the same address. With failover: resume the
// cut streams continue elsewhere (≥ 90 % end with `end`; in fact all should);
// with the default, they end with WORKER_RESET and the others are untouched.
func TestChaosKillAndRestart(t *testing.T) {
	for _, mode := range []string{config.FailoverResume, config.FailoverError} {
		t.Run(mode, func(t *testing.T) {
			e := newChaosEnv(t, mode, 0, fake.Options{})
			p := e.srv.poolList()[0]
			l := startChaos(t, e, false)
			waitStreaming(t, e, 100*time.Millisecond)
			onFaulty := p.set().replicas[chaosFaulty].InFlight()
			_ = e.fakes[chaosFaulty].Close() // killed: listener and every connection
			eventually(t, "the breaker of r1 to open", func() bool { return transitions(e, "r1", "open") >= 1 })
			// While its engine is down, /v1/replicasets shows r1 unready with
			// its breaker not closed (a half-open probe fails and reopens it).
			eventually(t, "/v1/replicasets to show r1 down", func() bool {
				rv := replicaInSets(t, e, "r1")
				return rv["state"] == "unready" && (rv["breaker"] == "open" || rv["breaker"] == "half-open")
			})
			time.Sleep(200 * time.Millisecond)
			restartFake(t, e, chaosFaulty, fake.Options{})
			outs := l.wait(t)

			n := tally(outs)
			t.Logf("%s: %d tasks, %d on r1 at the kill: %v", mode, len(outs), onFaulty, n)
			if len(outs) != chaosClients {
				t.Fatalf("%d outcomes, want %d", len(outs), chaosClients)
			}
			if onFaulty == 0 {
				t.Fatal("no stream ran on r1 when it was killed")
			}
			for _, o := range outs {
				if o.started != "r1" && o.terminal != "end" {
					t.Errorf("a task on healthy %s ended with %s", o.started, o.terminal)
				}
				if o.served == "r1" {
					t.Errorf("a task finished on the killed replica: %+v", o)
				}
			}
			switch mode {
			case config.FailoverResume:
				if n["end"]*100 < 90*len(outs) {
					t.Errorf("only %d of %d tasks ended with end", n["end"], len(outs))
				}
				if n["failover"] == 0 {
					t.Error("no task failed over")
				}
			case config.FailoverError:
				if n["WORKER_RESET"] == 0 || n["end"]+n["WORKER_RESET"] != len(outs) {
					t.Errorf("want end or WORKER_RESET, some WORKER_RESET: %v", n)
				}
				if n["failover"] != 0 {
					t.Errorf("%d tasks failed over without failover: resume", n["failover"])
				}
			}
			checkRecovered(t, e)
		})
	}
}

// TestChaosUnavailable: r1 answers 503 to every completion for about a
// second (overloaded; its health endpoint still answers), then restarts and
// loads its model for 300 ms (503 everywhere), then serves. Failures come
// before the first token, so every task is retried elsewhere and ends.
func TestChaosUnavailable(t *testing.T) {
	e := newChaosEnv(t, config.FailoverError, 0, fake.Options{Fail: fake.FailStart503})
	l := startChaos(t, e, true)
	eventually(t, "the breaker of r1 to open", func() bool { return transitions(e, "r1", "open") >= 1 })
	time.Sleep(time.Second)
	restartFake(t, e, chaosFaulty, fake.Options{Load: 300 * time.Millisecond})
	time.Sleep(500 * time.Millisecond)
	outs := l.wait(t)

	n := tally(outs)
	t.Logf("%d tasks: %v; r1 breaker opened %v times", len(outs), n, transitions(e, "r1", "open"))
	if n["end"] != len(outs) || len(outs) < chaosClients {
		t.Errorf("want every task to end with end: %v", n)
	}
	if metricValue(e, `task_retries_total{engine="llamacpp",why="retry"}`) == 0 {
		t.Error("no task was retried")
	}
	checkRecovered(t, e)
}

// TestChaosStall: r1 sends two tokens and then nothing; idle_ms is short.
// With failover: resume each stalled stream is aborted by the watchdog and
// continues elsewhere; the stalled engine requests are aborted (their slots
// freed in the engine).
func TestChaosStall(t *testing.T) {
	// idle_ms well above the healthy streams' worst gap on a loaded machine
	// (-race, 64 streams, two CPUs, other suites in parallel), or healthy
	// replicas trip too: 500 ms was seen to trip one once.
	e := newChaosEnv(t, config.FailoverResume, 1500, fake.Options{Fail: fake.FailStall})
	l := startChaos(t, e, true)
	eventually(t, "the breaker of r1 to open", func() bool { return transitions(e, "r1", "open") >= 1 })
	time.Sleep(700 * time.Millisecond)
	outs := l.wait(t)
	// Every stalled engine request was aborted: the stalling engine holds
	// no slot once the load is over.
	eventually(t, "the stalling engine to free its slots", func() bool { return e.fakes[chaosFaulty].InFlight() == 0 })
	restartFake(t, e, chaosFaulty, fake.Options{})

	n := tally(outs)
	t.Logf("%d tasks: %v; r1 breaker opened %v times", len(outs), n, transitions(e, "r1", "open"))
	if n["end"]*100 < 90*len(outs) || len(outs) < chaosClients {
		t.Errorf("want ≥ 90 %% of tasks to end with end: %v", n)
	}
	if n["failover"] == 0 {
		t.Error("no task failed over")
	}
	checkRecovered(t, e)
}

// TestChaosCutStreams: r1 cuts every stream after three tokens (the TCP
// connection closes with no final frame). With failover: resume every cut
// stream continues elsewhere.
func TestChaosCutStreams(t *testing.T) {
	e := newChaosEnv(t, config.FailoverResume, 0, fake.Options{Fail: fake.FailMidstreamDisconnect})
	l := startChaos(t, e, true)
	eventually(t, "the breaker of r1 to open", func() bool { return transitions(e, "r1", "open") >= 1 })
	time.Sleep(700 * time.Millisecond)
	restartFake(t, e, chaosFaulty, fake.Options{})
	outs := l.wait(t)

	n := tally(outs)
	t.Logf("%d tasks: %v; r1 breaker opened %v times", len(outs), n, transitions(e, "r1", "open"))
	if n["end"]*100 < 90*len(outs) || len(outs) < chaosClients {
		t.Errorf("want ≥ 90 %% of tasks to end with end: %v", n)
	}
	if n["failover"] == 0 {
		t.Error("no task failed over")
	}
	checkRecovered(t, e)
}

// TestChaosEngineLoadGoesStale: an engine's scraped load (llama.cpp
// requests_processing) is blended into the replica's score and the ring's
// bounded loads. When the scrape starts failing — the engine restarted
// without --metrics, a proxy in between, a timeout — the last value should
// be forgotten (balancer.Replica.ClearEngineLoad: "its scrape failed or the
// replica restarted"); a stale "busy" must not keep an idle replica out of
// its sessions.
func TestChaosEngineLoadGoesStale(t *testing.T) {
	var metricsOff atomic.Bool
	up := startFake(t, fake.Options{Slots: 4, ITL: 10 * time.Millisecond})
	proxied := engineProxy(t, up.URL(), func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/metrics" || !metricsOff.Load() {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotImplemented)
		_, _ = io.WriteString(w, `{"error":{"code":501,"message":"This server does not support metrics endpoint. Start it with `+"`--metrics`"+`","type":"not_supported_error"}}`)
		return true
	})

	e := newEnv(t, func(c *config.Config) {
		c.Pools[0].Replicas[0].URL = proxied
		for i := range c.Pools[0].Replicas {
			c.Pools[0].Replicas[i].Slots = 4
		}
	}, fake.Options{Slots: 4}, fake.Options{Slots: 4}, fake.Options{Slots: 4})
	p := e.srv.poolList()[0]
	r0 := p.set().replicas[0]
	sess := sessionOn(t, e, 0)

	// A task runs on r0 until its load was scraped, then the scrape fails.
	id := newID()
	if r := e.do("POST", "/v1/tasks", testKey, taskSpec{id: id, session: sess, maxTokens: 3000}.body()); r.status != 202 {
		t.Fatalf("enqueue: %d %s", r.status, r.body)
	}
	eventually(t, "r0's engine load to be scraped", func() bool { proc, _, _ := r0.EngineLoad(); return proc >= 1 })
	metricsOff.Store(true)
	if r := e.do("POST", "/v1/tasks/"+id+"/cancel", testKey, ""); r.status != 204 {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	eventually(t, "r0 idle", func() bool { return r0.InFlight() == 0 && up.InFlight() == 0 })
	time.Sleep(200 * time.Millisecond) // ten health intervals, every scrape failing

	if proc, def, ok := r0.EngineLoad(); ok && proc+def > 0 {
		t.Fatalf("r0 is idle but keeps its last scraped engine load "+
			"(processing %d, deferred %d) while every scrape fails: ClearEngineLoad is never called, so "+
			"its Score stays %.2f and bounded-load hashing sends its new sessions elsewhere for as long as the scrape fails",
			proc, def, r0.Score())
	}
	// Fixed: a new session the ring gives r0 runs there.
	evs := e.postStream(taskSpec{maxTokens: 2, session: sessionOn(t, e, 0)}.body()).all(t)
	if evs[0].data["replica_id"] != "r0" {
		t.Fatalf("started on %v", evs[0].data["replica_id"])
	}
}

// engineProxy fronts the engine at upstream with a reverse proxy on
// loopback and returns its URL; intercept may answer a request itself (a
// fault the engine would not produce on its own) and return true, or pass
// it on. Closed when t ends.
func engineProxy(t *testing.T, upstream string, intercept func(w http.ResponseWriter, r *http.Request) bool) string {
	t.Helper()
	target, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1
	rp.ErrorLog = log.New(io.Discard, "", 0) // canceled streams are routine here
	tr := &http.Transport{}
	rp.Transport = tr
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if intercept != nil && intercept(w, r) {
			return
		}
		// Read the request body before proxying: net/http may close it once
		// the response header is flushed, and the transport, still copying
		// it upstream to see its EOF, would then drop the engine connection
		// mid-stream (the fake answers as soon as it has the body).
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		rp.ServeHTTP(w, r)
	}), ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		_ = hs.Close()
		tr.CloseIdleConnections()
	})
	return "http://" + ln.Addr().String()
}
