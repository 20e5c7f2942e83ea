package features

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/adapters"
	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway"
	"github.com/llama-orch/llama-orch/gateway/config"
	"github.com/llama-orch/llama-orch/sse"

	"github.com/llama-orch/llama-orch/internal/syncbuf"
)

// API keys of every scenario's config (SPEC §7).
const (
	keyData  = "sk-test"  // tenant t1, roles data + control
	keyOther = "sk-other" // tenant t2, role data
	keyCtl   = "sk-ctl"   // tenant t1, role control only
)

// Bounds of every wait: polls of pollEvery, at most pollMax times (≈ 5 s),
// and one HTTP exchange (stream included) of at most httpTimeout.
const (
	pollEvery   = 10 * time.Millisecond
	pollMax     = 500
	httpTimeout = 10 * time.Second
	maxEvents   = 100000
)

// poolSpec is the scenario's one pool.
type poolSpec struct {
	id, model                 string
	replicas, slots, capacity int
}

// world is one scenario: its config, the running gateway and fakes, and what
// the client has seen so far. Steps configure it until the first request
// starts the gateway.
type world struct {
	pool              poolSpec
	fake              fake.Options
	maxTurns          int
	sessionTTLMs      int
	detachGraceMs     int
	retentionMs       int
	requireMetricsKey bool
	expectReady       bool
	keepAlive         time.Duration // SSE keep-alive period (0: the server's default)

	// Scheduling config, set by sched_steps_test.go.
	fullPolicy  string   // the pool's queue.full_policy ("": reject)
	poolExtra   []string // extra YAML keys of the pool, e.g. "preemption: hard"
	tenants     []string // tenants entries as YAML flow maps
	weights     string   // admission.weights as a YAML flow map ("": defaults)
	tokenBudget int      // sessions.token_budget (0: none)
	sched       schedState

	// Resilience config, set by resilience_steps_test.go.
	topExtra    []string                        // extra top-level YAML lines, e.g. "breaker: {…}"
	replicaMods map[int][]func(o *fake.Options) // per-replica changes to the fake's options

	// The model catalog, set by catalog_steps_test.go (nil: not used).
	cat *catalogState

	fakes []*fake.Server
	srv   *gateway.Server
	url   string
	done  chan error
	hc    *http.Client
	logs  *syncBuffer

	taskIDs  map[string]string // task name → task_id
	bodies   map[string]string // task name → last body submitted
	sessions map[string]string // session name → session_id
	readers  map[string]*reader
	last     *response
	prev     *response
	metrics  []series
	admitted map[string]map[string]any // task name → its 202 body
}

func newWorld() *world {
	return &world{
		pool:          poolSpec{id: "p", model: "m", replicas: 1, slots: 2, capacity: 8},
		maxTurns:      8,
		sessionTTLMs:  600000,
		detachGraceMs: 10000,
		retentionMs:   10000,
		expectReady:   true,
		admitted:      map[string]map[string]any{},
		taskIDs:       map[string]string{},
		bodies:        map[string]string{},
		sessions:      map[string]string{},
		readers:       map[string]*reader{},
	}
}

func (w *world) configurable() error {
	if w.srv != nil {
		return errors.New("configuration step after the gateway started: put Given steps first")
	}
	return nil
}

func (w *world) yaml() string {
	var reps strings.Builder
	for i, f := range w.fakes {
		fmt.Fprintf(&reps, "      - { id: r%d, url: %q, slots: %d }\n", i, f.URL(), w.pool.slots)
	}
	policy := w.fullPolicy
	if policy == "" {
		policy = "reject"
	}
	var sched strings.Builder
	if len(w.tenants) > 0 {
		sched.WriteString("tenants:\n")
		for _, t := range w.tenants {
			sched.WriteString("  - " + t + "\n")
		}
	}
	if w.weights != "" {
		sched.WriteString("admission: { weights: " + w.weights + " }\n")
	}
	var extra strings.Builder
	for _, e := range w.poolExtra {
		extra.WriteString("    " + e + "\n")
	}
	var top strings.Builder
	for _, e := range w.topExtra {
		top.WriteString(e + "\n")
	}
	return top.String() + `
auth:
  keys:
    - { key: ` + keyData + `, tenant: t1, roles: [data, control] }
    - { key: ` + keyOther + `, tenant: t2, roles: [data] }
    - { key: ` + keyCtl + `, tenant: t1, roles: [control] }
health: { interval_ms: 20, timeout_ms: 1000, healthy_after: 1, unhealthy_after: 1 }
shutdown_grace_ms: 0
detach_grace_ms: ` + strconv.Itoa(w.detachGraceMs) + `
task_retention_ms: ` + strconv.Itoa(w.retentionMs) + `
metrics: { require_key: ` + strconv.FormatBool(w.requireMetricsKey) + ` }
sessions: { max_turns: ` + strconv.Itoa(w.maxTurns) + `, ttl_ms: ` + strconv.Itoa(w.sessionTTLMs) + `, token_budget: ` + strconv.Itoa(w.tokenBudget) + ` }
` + sched.String() + `pools:
  - id: ` + w.pool.id + `
    engine: llamacpp
    model: ` + w.pool.model + `
    ctx: 4096
    queue: { capacity: ` + strconv.Itoa(w.pool.capacity) + `, full_policy: ` + policy + ` }
` + extra.String() + `    replicas:
` + reps.String()
}

// start runs the fakes and the gateway once, then waits (bounded) for
// GET /readyz to answer 200 unless the scenario expects an unready pool.
func (w *world) start() error {
	if w.srv != nil {
		return nil
	}
	fo := w.fake
	fo.Slots = w.pool.slots
	for i := 0; i < w.pool.replicas; i++ {
		o := fo
		for _, mod := range w.replicaMods[i] {
			mod(&o)
		}
		f, err := fake.New(o)
		if err != nil {
			return fmt.Errorf("fake.New: %w", err)
		}
		if err := f.Start("127.0.0.1:0"); err != nil {
			return fmt.Errorf("fake.Start: %w", err)
		}
		w.fakes = append(w.fakes, f)
	}
	cfg, problems, err := config.Check([]byte(w.yaml()), config.ValidateOptions{})
	if err != nil || config.HasErrors(problems) {
		return fmt.Errorf("config: %v %v", err, problems)
	}
	w.logs = &syncBuffer{}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(w.logs), zap.WarnLevel))
	srv, err := gateway.New(cfg, gateway.Options{NewAdapter: newAdapter, Logger: log, KeepAliveInterval: w.keepAlive})
	if err != nil {
		return fmt.Errorf("gateway.New: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	w.srv, w.url, w.done = srv, "http://"+ln.Addr().String(), make(chan error, 1)
	go func() { w.done <- srv.Serve(ln) }()
	w.hc = &http.Client{Timeout: httpTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	if !w.expectReady {
		return nil
	}
	for i := 0; i < pollMax; i++ {
		res, err := w.hc.Get(w.url + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(pollEvery)
	}
	return errors.New("GET /readyz never answered 200")
}

func newAdapter(pc config.Pool, rc config.Replica) (engines.Adapter, error) {
	return adapters.New(pc.Engine, rc.URL, adapters.Options{Model: pc.EngineModel})
}

// close ends the scenario: readers, gateway (graceful, with grace 0 so
// running tasks end at once), client connections, fakes.
func (w *world) close() error {
	var errs []error
	for _, r := range w.readers {
		r.disconnect()
	}
	if w.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("gateway Shutdown: %w", err))
		}
		if err := <-w.done; err != nil {
			errs = append(errs, fmt.Errorf("gateway Serve: %w", err))
		}
		w.hc.CloseIdleConnections()
	}
	for _, f := range w.fakes {
		if err := f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("fake Close: %w", err))
		}
	}
	if w.cat != nil {
		if err := os.RemoveAll(w.cat.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// syncBuffer collects the gateway's warnings, shown when a scenario fails.
type syncBuffer = syncbuf.Buffer

// response is one complete HTTP exchange as the client saw it.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *response) json() (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		return nil, fmt.Errorf("response body %q is not a JSON object: %w", r.body, err)
	}
	return m, nil
}

// request is what the client sends; key "" sends no key.
type request struct {
	method, path, body, key string
	header                  []string // name, value pairs
}

func (w *world) newRequest(rq request) (*http.Request, error) {
	if err := w.start(); err != nil {
		return nil, err
	}
	req, err := http.NewRequest(rq.method, w.url+rq.path, strings.NewReader(rq.body))
	if err != nil {
		return nil, err
	}
	if rq.key != "" {
		req.Header.Set("Authorization", "Bearer "+rq.key)
	}
	if rq.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(rq.header); i += 2 {
		req.Header.Set(rq.header[i], rq.header[i+1])
	}
	return req, nil
}

// do sends rq, reads the whole answer and makes it the last response.
func (w *world) do(rq request) (*response, error) {
	req, err := w.newRequest(rq)
	if err != nil {
		return nil, err
	}
	res, err := w.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", rq.method, rq.path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading body: %w", rq.method, rq.path, err)
	}
	r := &response{status: res.StatusCode, header: res.Header, body: b}
	w.prev, w.last = w.last, r
	return r, nil
}

func (w *world) taskID(name string) string {
	id, ok := w.taskIDs[name]
	if !ok {
		id = uuid.NewString()
		w.taskIDs[name] = id
	}
	return id
}

func (w *world) sessionID(name string) string {
	if name == "" {
		return uuid.NewString()
	}
	id, ok := w.sessions[name]
	if !ok {
		id = uuid.NewString()
		w.sessions[name] = id
	}
	return id
}

// taskBody is a valid completion request for the scenario's pool; extra
// adds or overrides fields.
func (w *world) taskBody(task, session string, tokens int, extra ...any) string {
	m := map[string]any{
		"task_id": w.taskID(task), "session_id": w.sessionID(session),
		"model_ref": w.pool.model, "engine": "llamacpp", "prompt": "Hello there", "max_tokens": tokens,
	}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i].(string)] = extra[i+1]
	}
	b, _ := json.Marshal(m)
	w.bodies[task] = string(b)
	return string(b)
}

// event is one canonical SSE event (data parsed as JSON).
type event struct {
	id, name, raw string
	data          map[string]any
}

func (e event) String() string { return "id:" + e.id + " " + e.name + " " + e.raw }

func (e event) terminal() bool { return e.name == "end" || e.name == "error" }

// reader is one SSE client of a task; reconnecting keeps its events.
type reader struct {
	path   string // GET path of the task's stream, for reconnecting
	res    *http.Response
	rd     *sse.Reader
	events []event
	ended  bool // the stream reached EOF after a terminal event
	// pings counts keep-alive comments; pingsBeforeStart those before the
	// first event.
	pings, pingsBeforeStart int
}

// openStream starts (or resumes, after lastID ≥ 0) reading a task stream and
// returns the response head as the last response.
func (w *world) openStream(r *reader, rq request) error {
	req, err := w.newRequest(rq)
	if err != nil {
		return err
	}
	res, err := w.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", rq.method, rq.path, err)
	}
	w.prev, w.last = w.last, &response{status: res.StatusCode, header: res.Header}
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		w.last.body = b
		return fmt.Errorf("%s %s: want 200 with an event stream, got %d %s", rq.method, rq.path, res.StatusCode, b)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		res.Body.Close()
		return fmt.Errorf("%s %s: Content-Type %q, want text/event-stream", rq.method, rq.path, ct)
	}
	r.res, r.rd, r.ended = res, sse.NewReader(bufio.NewReader(res.Body), 0), false
	if rq.method == http.MethodGet {
		r.path = rq.path
	}
	return nil
}

// next returns the next event, skipping keep-alives; io.EOF at the end of
// the stream.
func (r *reader) next() (event, error) {
	for {
		ev, ping, err := r.frame()
		if err != nil || !ping {
			return ev, err
		}
	}
}

// frame reads one event or keep-alive comment (ping true). It enforces
// SPEC §3.2's "after end or error nothing more is written".
func (r *reader) frame() (_ event, ping bool, _ error) {
	if r.rd == nil {
		return event{}, false, errors.New("reader is not connected")
	}
	var f sse.Frame
	if err := r.rd.Next(&f); err != nil {
		if err == io.EOF {
			r.ended = true
		}
		return event{}, false, err
	}
	if f.Comment {
		r.pings++
		if len(r.events) == 0 {
			r.pingsBeforeStart++
		}
		return event{}, true, nil
	}
	ev := event{id: string(f.ID), name: string(f.Event), raw: string(f.Data)}
	if err := json.Unmarshal(f.Data, &ev.data); err != nil {
		return event{}, false, fmt.Errorf("event %s: data is not a JSON object: %w", ev, err)
	}
	if n := len(r.events); n > 0 && r.events[n-1].terminal() {
		return event{}, false, fmt.Errorf("event %s follows the terminal event %s", ev, r.events[n-1])
	}
	if len(r.events) >= maxEvents {
		return event{}, false, fmt.Errorf("more than %d events", maxEvents)
	}
	r.events = append(r.events, ev)
	return ev, false, nil
}

// readUntil reads until stop(ev) holds or the stream ends (io.EOF).
func (r *reader) readUntil(stop func(event) bool) error {
	for {
		ev, err := r.next()
		if err != nil {
			return err
		}
		if stop != nil && stop(ev) {
			return nil
		}
	}
}

// readAll reads to the end of the stream and closes it.
func (r *reader) readAll() error {
	err := r.readUntil(nil)
	r.disconnect()
	if err != io.EOF {
		return fmt.Errorf("stream read: %w (after %d events)", err, len(r.events))
	}
	return nil
}

func (r *reader) disconnect() {
	if r.res != nil {
		r.res.Body.Close()
		r.res, r.rd = nil, nil
	}
}

func (r *reader) lastID() (string, error) {
	if len(r.events) == 0 {
		return "", errors.New("the reader saw no event yet")
	}
	return r.events[len(r.events)-1].id, nil
}

func (r *reader) tokens() []event {
	var out []event
	for _, ev := range r.events {
		if ev.name == "token" {
			out = append(out, ev)
		}
	}
	return out
}

func (r *reader) find(name string) (event, bool) {
	for _, ev := range r.events {
		if ev.name == name {
			return ev, true
		}
	}
	return event{}, false
}

func (r *reader) dump() string {
	var b strings.Builder
	for _, ev := range r.events {
		b.WriteString("\n  ")
		b.WriteString(ev.String())
	}
	return b.String()
}

// series is one sample of GET /metrics.
type series struct {
	name   string
	keys   []string
	labels map[string]string
	value  float64
}

// parseMetrics reads the Prometheus text format (SPEC §8).
func parseMetrics(text string) ([]series, error) {
	var out []series
	for ln, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s := series{labels: map[string]string{}}
		rest := line
		if i := strings.IndexAny(line, "{ "); i < 0 {
			return nil, fmt.Errorf("metrics line %d: %q has no value", ln+1, line)
		} else {
			s.name, rest = line[:i], line[i:]
		}
		if strings.HasPrefix(rest, "{") {
			rest = rest[1:]
			for {
				rest = strings.TrimLeft(rest, ", ")
				if strings.HasPrefix(rest, "}") {
					rest = rest[1:]
					break
				}
				eq := strings.Index(rest, `="`)
				if eq < 0 {
					return nil, fmt.Errorf("metrics line %d: bad labels in %q", ln+1, line)
				}
				key := rest[:eq]
				rest = rest[eq+1:]
				q, err := strconv.QuotedPrefix(rest)
				if err != nil {
					return nil, fmt.Errorf("metrics line %d: bad label value in %q", ln+1, line)
				}
				val, _ := strconv.Unquote(q)
				rest = rest[len(q):]
				s.keys = append(s.keys, key)
				s.labels[key] = val
			}
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, fmt.Errorf("metrics line %d: %q has no value", ln+1, line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: value of %q: %w", ln+1, line, err)
		}
		s.value = v
		out = append(out, s)
	}
	return out, nil
}

// parseLabelMatchers reads `a="x",b="y"` into a map.
func parseLabelMatchers(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	ss, err := parseMetrics("x{" + s + "} 0")
	if err != nil || len(ss) != 1 {
		return nil, fmt.Errorf("bad label matchers %q", s)
	}
	return ss[0].labels, nil
}

// eventually polls cond (bounded); cond returns nil when satisfied.
func eventually(cond func() error) error {
	var err error
	for i := 0; i < pollMax; i++ {
		if err = cond(); err == nil {
			return nil
		}
		time.Sleep(pollEvery)
	}
	return fmt.Errorf("gave up waiting: %w", err)
}
