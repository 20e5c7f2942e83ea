package features

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cucumber/godog"
	"github.com/google/uuid"

	"github.com/llama-orch/llama-orch/sse"
)

// Steps of admission and scheduling (SPEC §3.1 pre-admission order, §4):
// full policies, tenant quotas, WFQ shares, deadlines, session budgets, the
// watchdog and preemption.

// loadMax bounds a sustained-load step (it needs a few hundred dispatches).
const loadMax = 30 * time.Second

// schedState is what the scheduling steps keep between steps.
type schedState struct {
	// underLoad is the /metrics snapshot taken while a load step kept
	// every client backlogged.
	underLoad []series
	loaded    bool
}

func initSchedSteps(sc *godog.ScenarioContext, w *world) {
	// Configuration.
	sc.Step(`^the pool's full policy is "(reject|drop-lru|shed-low-priority)"$`, w.givenFullPolicy)
	sc.Step(`^the pool's preemption is "(soft|hard)"$`, w.givenPreemption)
	sc.Step(`^the pool's timeouts are (\{[^}]*\})$`, w.givenTimeouts)
	sc.Step(`^these tenants are configured:$`, w.givenTenants)
	sc.Step(`^the priority weights are interactive (\d+) and batch (\d+)$`, w.givenWeights)
	sc.Step(`^sessions have a token budget of (\d+)$`, w.givenTokenBudget)

	// Enqueue with a priority, a determinism or a deadline.
	sc.Step(`^I submit (interactive|batch) task "(\w+)" for (\d+) tokens$`, w.submitPrio)
	sc.Step(`^(interactive|batch) task "(\w+)" was submitted for (\d+) tokens$`, w.submittedPrio)
	sc.Step(`^(interactive|batch) task "(\w+)" was submitted for (\d+) tokens with determinism "(strict|best_effort)"$`, w.submittedDeterminism)
	sc.Step(`^I submit task "(\w+)" for (\d+) tokens with deadline_ms (\d+)$`, w.submitDeadline)
	sc.Step(`^I submit task "(\w+)" in session "(\w+)" for (\d+) tokens with key "([^"]*)" and deadline_ms (\d+)$`, w.submitSessionKeyDeadline)
	sc.Step(`^I submit task "(\w+)" in session "(\w+)" for (\d+) tokens with key "([^"]*)"$`, w.submitSessionKey)
	sc.Step(`^reader "(\w+)" submits (interactive|batch) task "(\w+)" for (\d+) tokens accepting an event stream$`, w.submitStreamingPrio)
	sc.Step(`^I wait out the last response's X-Backoff-Ms$`, w.waitBackoff)

	// Responses and streams.
	sc.Step(`^the response header "([^"]*)" is an integer of at most (\d+)$`, w.headerIntAtMost)
	sc.Step(`^the response field "([^"]*)" is at most (-?\d+)$`, w.fieldAtMost)
	sc.Step(`^the response is a 429 "(\w+)" with policy_label "([^"]*)" and backoff hints$`, w.is429)
	sc.Step(`^reader "(\w+)" got a "(\w+)" event with field "(\w+)" = (.+)$`, w.gotEventWithField)
	sc.Step(`^reader "(\w+)" got no "(\w+)" event with field "(\w+)" = (.+)$`, w.gotNoEventWithField)
	sc.Step(`^reader "(\w+)" got exactly (\d+) "(\w+)" events?$`, w.gotEventsOfKind)
	sc.Step(`^the "(\w+)" event of reader "(\w+)" has field "(\w+)" mentioning "([^"]*)"$`, w.eventFieldMentions)
	sc.Step(`^the "(\w+)" event of reader "(\w+)" has a smaller "(\w+)" than that of reader "(\w+)"$`, w.eventFieldSmaller)

	// Metrics.
	sc.Step(`^the metric (\w+)\{([^}]*)\} is 0 or absent$`, w.metricZeroOrAbsent)
	sc.Step(`^these clients keep 1-token tasks waiting until the pool has dispatched (\d+) of them:$`, w.sustainLoad)
	sc.Step(`^I run (\d+) 1-token tasks back to back, each submitted as soon as the previous stream ended$`, w.backToBack)
	sc.Step(`^under that load, the ratio of (\w+)\{([^}]*)\} to (\w+)\{([^}]*)\} was ([\d.]+) within (\d+) ?%$`, w.ratioUnderLoad)
	sc.Step(`^under that load, the metric (\w+)\{([^}]*)\} was at least (\d+)$`, w.atLeastUnderLoad)
}

// ---- configuration ----

func (w *world) givenFullPolicy(policy string) error {
	w.fullPolicy = policy
	return w.configurable()
}

func (w *world) givenPreemption(mode string) error {
	w.poolExtra = append(w.poolExtra, "preemption: "+mode)
	return w.configurable()
}

func (w *world) givenTimeouts(flow string) error {
	w.poolExtra = append(w.poolExtra, "timeouts: "+flow)
	return w.configurable()
}

// givenTenants reads a table whose first row names the tenant keys (id,
// weight, max_concurrent, rps, burst); empty cells are left out.
func (w *world) givenTenants(table *godog.Table) error {
	if len(table.Rows) < 2 {
		return errors.New("the tenants table needs a header row and at least one tenant")
	}
	head := table.Rows[0].Cells
	for _, row := range table.Rows[1:] {
		if len(row.Cells) != len(head) {
			return errors.New("every tenants row needs a cell per column")
		}
		var fields []string
		for i, c := range row.Cells {
			if v := strings.TrimSpace(c.Value); v != "" {
				fields = append(fields, head[i].Value+": "+v)
			}
		}
		w.tenants = append(w.tenants, "{ "+strings.Join(fields, ", ")+" }")
	}
	return w.configurable()
}

func (w *world) givenWeights(interactive, batch int) error {
	w.weights = fmt.Sprintf("{ interactive: %d, batch: %d }", interactive, batch)
	return w.configurable()
}

func (w *world) givenTokenBudget(n int) error {
	w.tokenBudget = n
	return w.configurable()
}

// ---- enqueue ----

func (w *world) submitPrio(prio, task string, tokens int) error {
	return w.post(w.taskBody(task, "", tokens, "priority", prio), keyData)
}

func (w *world) admittedOK(task string) error {
	if w.last.status != http.StatusAccepted {
		return fmt.Errorf("task %q: want 202, got %d %s", task, w.last.status, w.last.body)
	}
	m, err := w.last.json()
	w.admitted[task] = m
	return err
}

func (w *world) submittedPrio(prio, task string, tokens int) error {
	if err := w.submitPrio(prio, task, tokens); err != nil {
		return err
	}
	return w.admittedOK(task)
}

func (w *world) submittedDeterminism(prio, task string, tokens int, det string) error {
	if err := w.post(w.taskBody(task, "", tokens, "priority", prio, "determinism", det), keyData); err != nil {
		return err
	}
	return w.admittedOK(task)
}

func (w *world) submitDeadline(task string, tokens, deadline int) error {
	return w.post(w.taskBody(task, "", tokens, "deadline_ms", deadline), keyData)
}

func (w *world) submitSessionKey(task, session string, tokens int, key string) error {
	return w.post(w.taskBody(task, session, tokens), key)
}

func (w *world) submitSessionKeyDeadline(task, session string, tokens int, key string, deadline int) error {
	return w.post(w.taskBody(task, session, tokens, "deadline_ms", deadline), key)
}

// submitStreamingPrio is the one-round-trip form with a priority.
func (w *world) submitStreamingPrio(name, prio, task string, tokens int) error {
	r := &reader{path: w.streamRequest(task, keyData).path}
	w.readers[name] = r
	if err := w.openStream(r, request{method: "POST", path: "/v1/tasks", body: w.taskBody(task, "", tokens, "priority", prio), key: keyData,
		header: []string{"Accept", "text/event-stream"}}); err != nil {
		return err
	}
	return r.readAll()
}

// waitBackoff honours the last response's X-Backoff-Ms (a margin added), so
// that a retry lands after the moment the server named.
func (w *world) waitBackoff() error {
	ms, err := w.headerInt("X-Backoff-Ms")
	if err != nil {
		return err
	}
	if ms <= 0 || ms > 5000 {
		return fmt.Errorf("X-Backoff-Ms %d: want 1..5000 for this scenario", ms)
	}
	time.Sleep(time.Duration(ms)*time.Millisecond + 50*time.Millisecond)
	return nil
}

// ---- responses and streams ----

func (w *world) headerIntAtMost(name string, most int) error {
	n, err := w.headerInt(name)
	if err != nil {
		return err
	}
	if n > most {
		return fmt.Errorf("header %s is %d, want at most %d", name, n, most)
	}
	return nil
}

func (w *world) fieldAtMost(field string, n int) error {
	m, err := w.lastJSON()
	if err != nil {
		return err
	}
	v, ok := m[field].(float64)
	if !ok || v > float64(n) {
		return fmt.Errorf("field %q is %v, want a number of at most %d", field, m[field], n)
	}
	return nil
}

// is429 checks a backpressure answer (SPEC §3.6, ORCH-2007): status 429,
// the code, its policy_label, retriable, Retry-After in whole seconds ≥ 1,
// X-Backoff-Ms > 0 and retry_after_ms equal to it.
func (w *world) is429(code, policy string) error {
	if err := w.statusIs(http.StatusTooManyRequests); err != nil {
		return err
	}
	if err := w.isError(code); err != nil {
		return err
	}
	for _, c := range [][2]string{{"policy_label", strconv.Quote(policy)}, {"retriable", "true"}} {
		if err := w.fieldIs(c[0], c[1]); err != nil {
			return err
		}
	}
	if err := w.headerIntAtLeast("Retry-After", 1); err != nil {
		return err
	}
	if err := w.headerIntAtLeast("X-Backoff-Ms", 1); err != nil {
		return err
	}
	return w.fieldEqualsHeader("retry_after_ms", "X-Backoff-Ms")
}

func (w *world) eventsWithField(name, kind, field, literal string) (*reader, int, error) {
	r, err := w.reader(name)
	if err != nil {
		return nil, 0, err
	}
	n := 0
	for _, ev := range r.events {
		if ev.name == kind && jsonEquals(ev.data, field, literal) == nil {
			n++
		}
	}
	return r, n, nil
}

func (w *world) gotEventWithField(name, kind, field, literal string) error {
	r, n, err := w.eventsWithField(name, kind, field, literal)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("reader %q got no %q event with %s = %s; events:%s", name, kind, field, literal, r.dump())
	}
	return nil
}

func (w *world) gotNoEventWithField(name, kind, field, literal string) error {
	r, n, err := w.eventsWithField(name, kind, field, literal)
	if err != nil {
		return err
	}
	if n != 0 {
		return fmt.Errorf("reader %q got %d %q events with %s = %s; events:%s", name, n, kind, field, literal, r.dump())
	}
	return nil
}

func (w *world) gotEventsOfKind(name string, n int, kind string) error {
	r, err := w.reader(name)
	if err != nil {
		return err
	}
	got := 0
	for _, ev := range r.events {
		if ev.name == kind {
			got++
		}
	}
	if got != n {
		return fmt.Errorf("reader %q got %d %q events, want %d; events:%s", name, got, kind, n, r.dump())
	}
	return nil
}

func (w *world) eventFieldMentions(kind, name, field, s string) error {
	r, err := w.reader(name)
	if err != nil {
		return err
	}
	ev, ok := r.find(kind)
	if !ok {
		return fmt.Errorf("reader %q got no %q event; events:%s", name, kind, r.dump())
	}
	if v, _ := ev.data[field].(string); !strings.Contains(v, s) {
		return fmt.Errorf("%q event field %q is %q, want it to mention %q", kind, field, ev.data[field], s)
	}
	return nil
}

// eventFieldSmaller compares a numeric field of the first kind event of two
// readers (an order, e.g. of dispatch, not a duration).
func (w *world) eventFieldSmaller(kind, a, field, b string) error {
	var vals [2]float64
	for i, name := range []string{a, b} {
		r, err := w.reader(name)
		if err != nil {
			return err
		}
		ev, ok := r.find(kind)
		if !ok {
			return fmt.Errorf("reader %q got no %q event; events:%s", name, kind, r.dump())
		}
		v, ok := ev.data[field].(float64)
		if !ok {
			return fmt.Errorf("%q event of reader %q has no number %q: %s", kind, name, field, ev)
		}
		vals[i] = v
	}
	if vals[0] >= vals[1] {
		return fmt.Errorf("%s %s: reader %q %v, reader %q %v; want the first smaller", kind, field, a, vals[0], b, vals[1])
	}
	return nil
}

// ---- metrics ----

// metricZeroOrAbsent scrapes once: the step follows the events that would
// have moved the counter.
func (w *world) metricZeroOrAbsent(name, matchers string) error {
	if err := w.scrape(); err != nil {
		return err
	}
	sum, _, err := w.metricSum(name, matchers)
	if err != nil {
		return err
	}
	if sum != 0 {
		return fmt.Errorf("%s{%s} is %v, want 0 or absent", name, matchers, sum)
	}
	return nil
}

// loadClient is one row of a load table: clients closed-loop clients of key
// at priority.
type loadClient struct {
	key, priority string
	clients       int
}

// sustainLoad runs closed-loop clients, each posting a 1-token task with
// Accept: text/event-stream and reading its stream to the end, then the
// next: with more clients than slots every client keeps a task waiting, so
// the pool stays saturated. Once target streams ended (every one with
// `end`), it scrapes /metrics while the clients still run (the snapshot the
// "under that load" steps read), then stops them.
func (w *world) sustainLoad(target int, table *godog.Table) error {
	var rows []loadClient
	for i, row := range table.Rows {
		if i == 0 {
			continue // header: key | priority | clients
		}
		if len(row.Cells) != 3 {
			return errors.New("load rows need: key | priority | clients")
		}
		n, err := strconv.Atoi(row.Cells[2].Value)
		if err != nil || n < 1 {
			return fmt.Errorf("clients %q: want a positive integer", row.Cells[2].Value)
		}
		rows = append(rows, loadClient{row.Cells[0].Value, row.Cells[1].Value, n})
	}
	if err := w.start(); err != nil {
		return err
	}
	var (
		done atomic.Int64
		stop = make(chan struct{})
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return errors.Join(errs...)
	}
	for _, row := range rows {
		for range row.clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := w.oneRoundTrip(row.key, row.priority); err != nil {
						fail(err)
						return
					}
					done.Add(1)
				}
			}()
		}
	}
	stopClients := func() {
		close(stop)
		wg.Wait()
	}
	for t0 := time.Now(); done.Load() < int64(target); time.Sleep(pollEvery) {
		if err := failed(); err != nil {
			stopClients()
			return err
		}
		if time.Since(t0) > loadMax {
			stopClients()
			return fmt.Errorf("only %d of %d tasks ended within %s", done.Load(), target, loadMax)
		}
	}
	err := w.scrape() // every client still has a task waiting
	snapshot := w.metrics
	stopClients()
	if err != nil {
		return err
	}
	if err := failed(); err != nil {
		return err
	}
	w.sched.underLoad, w.sched.loaded = snapshot, true
	return nil
}

// oneRoundTrip posts one 1-token task with Accept: text/event-stream and
// reads its stream to the end; it must end with `end`. Safe for concurrent
// use (it touches no world state but the HTTP client).
func (w *world) oneRoundTrip(key, priority string) error {
	b, _ := json.Marshal(map[string]any{
		"task_id": uuid.NewString(), "session_id": uuid.NewString(), "model_ref": w.pool.model,
		"engine": "llamacpp", "prompt": "Hello there", "max_tokens": 1, "priority": priority,
	})
	req, err := http.NewRequest("POST", w.url+"/v1/tasks", strings.NewReader(string(b)))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	res, err := w.hc.Do(req)
	if err != nil {
		return fmt.Errorf("load client %s/%s: %w", key, priority, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
		return fmt.Errorf("load client %s/%s: status %d %s", key, priority, res.StatusCode, b)
	}
	rd := sse.NewReader(bufio.NewReader(res.Body), 0)
	last := ""
	for {
		var f sse.Frame
		if err := rd.Next(&f); err != nil {
			if err == io.EOF {
				break
			}
			return fmt.Errorf("load client %s/%s: stream: %w", key, priority, err)
		}
		if !f.Comment {
			last = string(f.Event) + " " + string(f.Data)
		}
	}
	if !strings.HasPrefix(last, "end ") {
		return fmt.Errorf("load client %s/%s: stream ended with %q, want end", key, priority, last)
	}
	return nil
}

// backToBack runs n one-round-trip tasks one after the other with key
// sk-test; each must be admitted and end.
func (w *world) backToBack(n int) error {
	if err := w.start(); err != nil {
		return err
	}
	for i := range n {
		if err := w.oneRoundTrip(keyData, "interactive"); err != nil {
			return fmt.Errorf("task %d of %d: %w", i+1, n, err)
		}
	}
	return nil
}

func (w *world) loadSum(name, matchers string) (float64, error) {
	if !w.sched.loaded {
		return 0, errors.New("no load step ran in this scenario")
	}
	saved := w.metrics
	defer func() { w.metrics = saved }()
	w.metrics = w.sched.underLoad
	sum, n, err := w.metricSum(name, matchers)
	if err == nil && n == 0 {
		err = fmt.Errorf("no series %s{%s} under load", name, matchers)
	}
	return sum, err
}

func (w *world) ratioUnderLoad(a, am, b, bm, want string, pct int) error {
	x, err := w.loadSum(a, am)
	if err != nil {
		return err
	}
	y, err := w.loadSum(b, bm)
	if err != nil {
		return err
	}
	r, err := strconv.ParseFloat(want, 64)
	if err != nil {
		return err
	}
	if y == 0 || math.Abs(x/y-r)/r > float64(pct)/100 {
		return fmt.Errorf("%s{%s} = %v, %s{%s} = %v: ratio %.3f, want %v ±%d %%", a, am, x, b, bm, y, x/y, r, pct)
	}
	return nil
}

func (w *world) atLeastUnderLoad(name, matchers string, min int) error {
	v, err := w.loadSum(name, matchers)
	if err != nil {
		return err
	}
	if v < float64(min) {
		return fmt.Errorf("%s{%s} was %v under load, want at least %d", name, matchers, v, min)
	}
	return nil
}
