package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"
	"go.uber.org/zap"

	"github.com/llama-orch/llama-orch/balancer"
	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	tritonfake "github.com/llama-orch/llama-orch/engines/fake/triton"
	"github.com/llama-orch/llama-orch/engines/llamacpp"
	tritonad "github.com/llama-orch/llama-orch/engines/triton"
	"github.com/llama-orch/llama-orch/gateway/admission"
	"github.com/llama-orch/llama-orch/gateway/config"
)

// Metrics contract (issue 6 item 2): a mixed workload on fake engines —
// success, client cancel, a reject on a really full queue, drop-lru, the
// watchdog ending a stalled stream, a breaker tripped by a failing engine,
// a hard preemption and its resumption, and a Triton pool whose engine
// reports KV-cache and GPU gauges — then GET /metrics: every exposed series
// must be in testdata/metrics_contract.tsv with exactly the contract's label
// names, every implemented contract metric must appear, histograms expose
// _bucket (with le), _sum and _count.

// ---- the contract file ----

// contractMetric is one row of testdata/metrics_contract.tsv.
type contractMetric struct {
	name, typ     string
	labels        []string
	unimplemented bool
	note          string
}

const contractPath = "testdata/metrics_contract.tsv"

// loadContract reads the contract file.
func loadContract(t testing.TB) map[string]contractMetric {
	t.Helper()
	f, err := os.Open(contractPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]contractMetric{}
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		s := sc.Text()
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		cols := strings.Split(s, "\t")
		if len(cols) != 5 {
			t.Fatalf("%s:%d: %d columns, want 5 (name, type, labels, status, note)", contractPath, line, len(cols))
		}
		m := contractMetric{name: cols[0], typ: cols[1], note: cols[4]}
		if !metricNameOK(m.name) {
			t.Fatalf("%s:%d: bad metric name %q", contractPath, line, m.name)
		}
		switch m.typ {
		case "counter", "gauge", "histogram":
		default:
			t.Fatalf("%s:%d: type %q", contractPath, line, m.typ)
		}
		if cols[2] != "-" {
			m.labels = strings.Split(cols[2], ",")
		}
		for _, l := range m.labels {
			if !labelNameOK(l) || l == "le" {
				t.Fatalf("%s:%d: bad label name %q", contractPath, line, l)
			}
		}
		switch cols[3] {
		case "implemented":
		case "unimplemented":
			m.unimplemented = true
			if m.note == "" {
				t.Fatalf("%s:%d: an unimplemented metric needs its reason", contractPath, line)
			}
		default:
			t.Fatalf("%s:%d: status %q", contractPath, line, cols[3])
		}
		if m.typ == "counter" && !strings.HasSuffix(m.name, "_total") {
			t.Fatalf("%s:%d: counter %s does not end in _total", contractPath, line, m.name)
		}
		if _, dup := out[m.name]; dup {
			t.Fatalf("%s:%d: %s listed twice", contractPath, line, m.name)
		}
		out[m.name] = m
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// contractFamily maps an exposed sample name to its contract row and the
// histogram suffix ("" for counters and gauges).
func contractFamily(c map[string]contractMetric, name string) (contractMetric, string, bool) {
	if m, ok := c[name]; ok && m.typ != "histogram" {
		return m, "", true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if m, ok := c[base]; ok && m.typ == "histogram" {
				return m, suf, true
			}
		}
	}
	return contractMetric{}, "", false
}

// ---- a strict parser of the Prometheus text format (version 0.0.4) ----

// promSample is one exposed sample.
type promSample struct {
	name   string
	labels map[string]string
	keys   []string // label names in exposition order
	value  float64
}

// key is the sample's series identity: name and labels sorted by name.
func (s promSample) key() string {
	ks := append([]string(nil), s.keys...)
	sort.Strings(ks)
	var b strings.Builder
	b.WriteString(s.name)
	for _, k := range ks {
		b.WriteString("|" + k + "=" + s.labels[k])
	}
	return b.String()
}

func metricNameOK(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r == ':' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func labelNameOK(s string) bool { return metricNameOK(s) && !strings.Contains(s, ":") }

// parseProm parses an exposition strictly: names and label names must be
// valid, label values may only use the \\, \" and \n escapes and must be
// UTF-8, no label repeats within a sample and no series repeats (Prometheus
// refuses a scrape with a duplicate series). Comments are allowed.
func parseProm(text string) ([]promSample, error) {
	var out []promSample
	seen := map[string]bool{}
	for n, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := parsePromLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d %q: %w", n+1, line, err)
		}
		k := s.key()
		if seen[k] {
			return nil, fmt.Errorf("line %d: duplicate series %s", n+1, line)
		}
		seen[k] = true
		out = append(out, s)
	}
	return out, nil
}

func parsePromLine(line string) (promSample, error) {
	s := promSample{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		return s, fmt.Errorf("no value")
	}
	s.name = line[:i]
	if !metricNameOK(s.name) {
		return s, fmt.Errorf("bad metric name %q", s.name)
	}
	rest := line[i:]
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.IndexByte(rest, '=')
			if eq < 0 {
				return s, fmt.Errorf("label without =")
			}
			name := rest[:eq]
			if !labelNameOK(name) {
				return s, fmt.Errorf("bad label name %q", name)
			}
			if _, dup := s.labels[name]; dup {
				return s, fmt.Errorf("label %s repeats", name)
			}
			rest = rest[eq+1:]
			if !strings.HasPrefix(rest, `"`) {
				return s, fmt.Errorf("label %s: value not quoted", name)
			}
			rest = rest[1:]
			var v strings.Builder
			closed := false
			for j := 0; j < len(rest); j++ {
				c := rest[j]
				if c == '"' {
					rest, closed = rest[j+1:], true
					break
				}
				if c == '\\' {
					if j+1 >= len(rest) {
						return s, fmt.Errorf("label %s: dangling escape", name)
					}
					j++
					switch rest[j] {
					case '\\':
						v.WriteByte('\\')
					case '"':
						v.WriteByte('"')
					case 'n':
						v.WriteByte('\n')
					default:
						return s, fmt.Errorf("label %s: invalid escape \\%c", name, rest[j])
					}
					continue
				}
				v.WriteByte(c)
			}
			if !closed {
				return s, fmt.Errorf("label %s: unterminated value", name)
			}
			if !utf8.ValidString(v.String()) {
				return s, fmt.Errorf("label %s: value is not UTF-8", name)
			}
			s.labels[name] = v.String()
			s.keys = append(s.keys, name)
			if strings.HasPrefix(rest, ",") {
				rest = rest[1:]
			} else if !strings.HasPrefix(rest, "}") {
				return s, fmt.Errorf("label %s: want , or } after the value", name)
			}
		}
	}
	if !strings.HasPrefix(rest, " ") {
		return s, fmt.Errorf("no space before the value")
	}
	f := strings.Fields(rest)
	if len(f) < 1 || len(f) > 2 {
		return s, fmt.Errorf("want value [timestamp], got %q", rest)
	}
	v, err := parsePromFloat(f[0])
	if err != nil {
		return s, err
	}
	s.value = v
	if len(f) == 2 {
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			return s, fmt.Errorf("timestamp %q", f[1])
		}
	}
	return s, nil
}

func parsePromFloat(s string) (float64, error) {
	switch s {
	case "+Inf", "Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	case "NaN":
		return math.NaN(), nil
	}
	if strings.ContainsAny(s, "iInN_xX") { // ParseFloat's extras the format lacks
		return 0, fmt.Errorf("value %q", s)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("value %q", s)
	}
	return v, nil
}

// formatProm writes samples back in the text format (the fuzz target's
// round trip).
func formatProm(ss []promSample) string {
	var b strings.Builder
	for _, s := range ss {
		b.WriteString(s.name)
		if len(s.keys) > 0 {
			b.WriteByte('{')
			for i, k := range s.keys {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(k + `="`)
				b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s.labels[k]))
				b.WriteByte('"')
			}
			b.WriteByte('}')
		}
		b.WriteString(" " + strconv.FormatFloat(s.value, 'g', -1, 64) + "\n")
	}
	return b.String()
}

// FuzzContractPromText: the test parser never panics, and what it accepts
// survives a format/parse round trip unchanged. Seeds are real gateway
// output and documented text-format lines.
func FuzzContractPromText(f *testing.F) {
	f.Add("tasks_enqueued_total{engine=\"llamacpp\",engine_version=\"-\",pool_id=\"p\",replica_id=\"-\",priority=\"interactive\"} 3\n")
	f.Add("latency_first_token_ms_bucket{engine=\"llamacpp\",engine_version=\"b1\",pool_id=\"p\",priority=\"batch\",le=\"+Inf\"} 2\nlatency_first_token_ms_sum{engine=\"llamacpp\",engine_version=\"b1\",pool_id=\"p\",priority=\"batch\"} 12.5\n")
	f.Add("# HELP x help\n# TYPE x gauge\nx 1 1700000000000\n")
	f.Add("a{b=\"q\\\"\\\\\\n\"} NaN\n")
	f.Add("a{b=\"1\",} -Inf\n")
	f.Add("a{b=\"\\x\"} 1\n")
	f.Fuzz(func(t *testing.T, text string) {
		ss, err := parseProm(text)
		if err != nil {
			return
		}
		again, err := parseProm(formatProm(ss))
		if err != nil {
			t.Fatalf("round trip refused: %v", err)
		}
		if len(again) != len(ss) {
			t.Fatalf("round trip: %d samples, want %d", len(again), len(ss))
		}
		for i := range ss {
			if again[i].key() != ss[i].key() {
				t.Fatalf("round trip changed %q into %q", ss[i].key(), again[i].key())
			}
		}
	})
}

// ---- an orchd with several pools on fake engines ----

// obsPool is one pool of an obsEnv.
type obsPool struct {
	id, engine, model string
	extra             string // more pool keys, YAML at 4 spaces
	replicas          []fake.Options
}

// obsEnv is an env with several pools (llama.cpp and Triton fakes) and a
// caller's logger.
type obsEnv struct {
	*env
	llama map[string][]*fake.Server // by pool id
}

// startObs starts one fake per replica and orchd in front of them. top is
// more top-level YAML (breaker, slo, …).
func startObs(t *testing.T, top string, log *zap.Logger, pools ...obsPool) *obsEnv {
	t.Helper()
	guard(t)
	oe := &obsEnv{env: &env{t: t, done: make(chan error, 1)}, llama: map[string][]*fake.Server{}}
	var yml strings.Builder
	yml.WriteString("auth:\n  keys:\n    - { key: " + testKey + ", tenant: t1, roles: [data, control] }\n" +
		"health: { interval_ms: 20, timeout_ms: 1000, healthy_after: 1, unhealthy_after: 1 }\n" +
		"shutdown_grace_ms: 500\n" + top + "pools:\n")
	for _, pc := range pools {
		fmt.Fprintf(&yml, "  - id: %s\n    engine: %s\n    model: %s\n%s    replicas:\n", pc.id, pc.engine, pc.model, pc.extra)
		for i, fo := range pc.replicas {
			var url string
			switch pc.engine {
			case engines.Triton:
				fs, err := tritonfake.New(fo)
				if err != nil {
					t.Fatalf("triton fake: %v", err)
				}
				if err := fs.Start("127.0.0.1:0"); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = fs.Close() }) // runs after the gateway's cleanup
				url = fs.URL()
			default:
				fs, err := fake.New(fo)
				if err != nil {
					t.Fatalf("fake: %v", err)
				}
				if err := fs.Start("127.0.0.1:0"); err != nil {
					t.Fatal(err)
				}
				oe.fakes = append(oe.fakes, fs)
				oe.llama[pc.id] = append(oe.llama[pc.id], fs)
				url = fs.URL()
			}
			fmt.Fprintf(&yml, "      - { id: r%d, url: %q }\n", i, url)
		}
	}
	cfg, problems, err := config.Check([]byte(yml.String()), config.ValidateOptions{})
	if err != nil || config.HasErrors(problems) {
		for _, f := range oe.fakes {
			_ = f.Close()
		}
		t.Fatalf("config: %v %v\n%s", err, problems, yml.String())
	}
	factory := func(pc config.Pool, rc config.Replica) (engines.Adapter, error) {
		if pc.Engine == engines.Triton {
			return tritonad.New(rc.URL, tritonad.Options{Model: tritonfake.DefaultModel})
		}
		return llamacpp.New(rc.URL, llamacpp.Options{})
	}
	srv, err := New(cfg, Options{NewAdapter: factory, Logger: log, KeepAliveInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	oe.srv, oe.url = srv, "http://"+ln.Addr().String()
	go func() { oe.done <- srv.Serve(ln) }()
	oe.hc = &http.Client{Timeout: clientTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.Cleanup(oe.close)
	eventually(t, "every replica to be ready", func() bool {
		for _, p := range srv.poolList() {
			for _, r := range p.set().replicas {
				if !r.Ready() {
					return false
				}
			}
		}
		return true
	})
	return oe
}

// obsTask is a task request to any pool.
type obsTask struct {
	id, model, engine, prompt, priority string
	maxTokens                           int
	deadlineMs                          int64
}

// obsPrompt is the prompt of every workload task: the logs test checks no
// log line contains it.
const obsPrompt = "Describe the okapi-quartz-5813 migration"

func (o obsTask) body() string {
	if o.id == "" {
		o.id = newID()
	}
	if o.engine == "" {
		o.engine = engines.LlamaCpp
	}
	if o.prompt == "" {
		o.prompt = obsPrompt
	}
	if o.maxTokens == 0 {
		o.maxTokens = 8
	}
	m := map[string]any{"task_id": o.id, "session_id": newID(), "model_ref": o.model, "engine": o.engine,
		"prompt": o.prompt, "max_tokens": o.maxTokens}
	if o.priority != "" {
		m["priority"] = o.priority
	}
	if o.deadlineMs > 0 {
		m["deadline_ms"] = o.deadlineMs
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// enqueue admits a task (202) and returns its id.
func (oe *obsEnv) enqueue(t *testing.T, o obsTask) string {
	t.Helper()
	if o.id == "" {
		o.id = newID()
	}
	if r := oe.do("POST", "/v1/tasks", testKey, o.body()); r.status != 202 {
		t.Fatalf("enqueue to %s: %d %s", o.model, r.status, r.body)
	}
	return o.id
}

func (oe *obsEnv) cancel(t *testing.T, id string) {
	t.Helper()
	if r := oe.do("POST", "/v1/tasks/"+id+"/cancel", testKey, ""); r.status != 204 {
		t.Fatalf("cancel %s: %d %s", id, r.status, r.body)
	}
}

// terminal returns the last event of a stream read to its end.
func terminal(t *testing.T, evs []event) event {
	t.Helper()
	if len(evs) == 0 {
		t.Fatal("empty stream")
	}
	return evs[len(evs)-1]
}

func wantError(t *testing.T, what string, evs []event, code string) {
	t.Helper()
	if ev := terminal(t, evs); ev.name != "error" || ev.data["code"] != code {
		t.Fatalf("%s: stream ends with %s %v, want error %s (events: %s)", what, ev.name, ev.data, code, names(evs))
	}
}

func wantEnd(t *testing.T, what string, evs []event) {
	t.Helper()
	if ev := terminal(t, evs); ev.name != "end" {
		t.Fatalf("%s: stream ends with %s %v, want end (events: %s)", what, ev.name, ev.data, names(evs))
	}
}

// The mixed workload's pools.
const (
	poolOK      = "pa" // llama.cpp, 1 slot, preemption hard: success, deadline, preemption, cancel
	poolFull    = "pq" // llama.cpp, 1 slot, queue 2, reject
	poolDrop    = "pd" // llama.cpp, 1 slot, queue 1, drop-lru
	poolStall   = "ps" // llama.cpp that stalls after 2 tokens, idle_ms 150
	poolBroken  = "pb" // two llama.cpp replicas answering 500 at start
	poolTriton  = "pt" // Triton (vLLM backend): reports KV-cache and GPU gauges
	modelTriton = "mt"
)

// obsTop: breakers trip after 2 consecutive failures and stay open for the
// test; a TTFT SLO loose enough that a slow -race run never counts against a
// healthy replica.
const obsTop = "breaker: { consecutive_failures: 2, open_ms: 60000 }\n" +
	"slo: { interactive: { ttft_p95_ms: 5000, e2e_64_tokens_p95_ms: 10000 } }\n"

// startMixed starts the mixed workload's orchd.
func startMixed(t *testing.T, log *zap.Logger) *obsEnv {
	t.Helper()
	one := fake.Options{Slots: 1, ITL: 5 * time.Millisecond}
	return startObs(t, obsTop, log,
		obsPool{id: poolOK, engine: engines.LlamaCpp, model: "ma", extra: "    preemption: hard\n", replicas: []fake.Options{{Slots: 1, ITL: 10 * time.Millisecond}}},
		obsPool{id: poolFull, engine: engines.LlamaCpp, model: "mq", extra: "    queue: { capacity: 2, full_policy: reject }\n", replicas: []fake.Options{one}},
		obsPool{id: poolDrop, engine: engines.LlamaCpp, model: "md", extra: "    queue: { capacity: 1, full_policy: drop-lru }\n", replicas: []fake.Options{one}},
		obsPool{id: poolStall, engine: engines.LlamaCpp, model: "ms", extra: "    timeouts: { idle_ms: 150 }\n",
			replicas: []fake.Options{{Slots: 1, ITL: 5 * time.Millisecond, Fail: fake.FailStall}}},
		obsPool{id: poolBroken, engine: engines.LlamaCpp, model: "mb",
			replicas: []fake.Options{{Slots: 1, Fail: fake.FailStart500}, {Slots: 1, Fail: fake.FailStart500}}},
		obsPool{id: poolTriton, engine: engines.Triton, model: modelTriton, replicas: []fake.Options{{Slots: 2, ITL: 2 * time.Millisecond}}},
	)
}

// runMixedWorkload drives every path that moves a metric or writes a task
// log line. It checks each step's outcome as a client sees it.
func runMixedWorkload(t *testing.T, oe *obsEnv) {
	t.Helper()
	// Success with a deadline: tasks_*, latencies, tokens, deadlines, SLO.
	wantEnd(t, "success", oe.postStream(obsTask{model: "ma", maxTokens: 4, deadlineMs: 60000}.body()).all(t))
	// Triton success: its engine-reported gauges.
	wantEnd(t, "triton", oe.postStream(obsTask{model: modelTriton, engine: engines.Triton, maxTokens: 6}.body()).all(t))

	// The model catalog: "ma" registered, verified (pass) and activated
	// (model_state, catalog_verifications_total); "mq" declared with a digest
	// its bytes do not have (a failed verification).
	art := filepath.Join(t.TempDir(), "ma.gguf")
	if err := os.WriteFile(art, []byte("GGUF weights"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct{ path, body string }{
		{"/v1/catalog/models", `{"id":"ma","ref":` + strconv.Quote(art) + `}`},
		{"/v1/catalog/models/ma/verify", ""},
		{"/v1/catalog/models/ma/state", `{"state":"Active"}`},
		{"/v1/catalog/models", `{"id":"mq","ref":` + strconv.Quote(art) + `,"digest":"sha256:` + strings.Repeat("0", 64) + `"}`},
		{"/v1/catalog/models/mq/verify", ""},
	} {
		if r := oe.do("POST", step.path, testKey, step.body); r.status != 200 && r.status != 201 {
			t.Fatalf("POST %s: %d %s", step.path, r.status, r.body)
		}
	}
	wantEnd(t, "success on an active catalog model", oe.postStream(obsTask{model: "ma", maxTokens: 2}.body()).all(t))

	// Hard preemption: a running batch decode is aborted for an interactive
	// newcomer and resumes afterwards (preemptions_total, resumptions_total).
	// 200 tokens at 10 ms leave the newcomer ~2 s to arrive on a loaded machine.
	batch := oe.enqueue(t, obsTask{model: "ma", maxTokens: 200, priority: "batch"})
	s := oe.openStream(batch, testKey)
	for n := 0; n < 5; {
		ev, ok := s.next(t)
		if !ok {
			t.Fatal("batch stream ended early")
		}
		if ev.name == "token" {
			n++
		}
	}
	wantEnd(t, "urgent", oe.postStream(obsTask{model: "ma", maxTokens: 3, priority: "interactive"}.body()).all(t))
	wantEnd(t, "preempted batch", s.all(t))

	// Client cancel of a running task.
	run := oe.enqueue(t, obsTask{model: "ma", maxTokens: 3000})
	eventually(t, "the cancel victim to run", func() bool { return oe.llama[poolOK][0].InFlight() == 1 })
	rs := oe.openStream(run, testKey)
	oe.cancel(t, run)
	wantError(t, "canceled", rs.all(t), CodeCanceled)

	// A really full queue: one running, two queued, the next one rejected.
	long := oe.enqueue(t, obsTask{model: "mq", maxTokens: 3000})
	eventually(t, "the queue's slot to be taken", func() bool { return oe.llama[poolFull][0].InFlight() == 1 })
	q1, q2 := oe.enqueue(t, obsTask{model: "mq"}), oe.enqueue(t, obsTask{model: "mq"})
	if r := oe.do("POST", "/v1/tasks", testKey, obsTask{model: "mq"}.body()); r.status != 429 || r.json(t)["code"] != CodeAdmissionReject {
		t.Fatalf("full queue: %d %s", r.status, r.body)
	}
	for _, id := range []string{q1, q2, long} { // two queued cancels, one running
		oe.cancel(t, id)
	}

	// drop-lru: the queued task is dropped for a newcomer.
	dlong := oe.enqueue(t, obsTask{model: "md", maxTokens: 3000})
	eventually(t, "the drop pool's slot to be taken", func() bool { return oe.llama[poolDrop][0].InFlight() == 1 })
	old := oe.enqueue(t, obsTask{model: "md"})
	newer := oe.enqueue(t, obsTask{model: "md"})
	wantError(t, "dropped", oe.openStream(old, testKey).all(t), CodeQueueFullDropLRU)
	oe.cancel(t, newer)
	oe.cancel(t, dlong)

	// The watchdog ends a stalled stream.
	wantError(t, "stalled", oe.postStream(obsTask{model: "ms", maxTokens: 20}.body()).all(t), CodeDecodeTimeout)

	// A failing engine trips both replicas' breakers (each task fails on one
	// replica, is retried on the other, then ends).
	var broken *pool
	for _, p := range oe.srv.poolList() {
		if p.id == poolBroken {
			broken = p
		}
	}
	allOpen := func() bool {
		for _, r := range broken.set().replicas {
			if r.BreakerState() != balancer.Open {
				return false
			}
		}
		return true
	}
	for i := 0; i < 8 && !allOpen(); i++ {
		id := oe.enqueue(t, obsTask{model: "mb"})
		// It ends REPLICA_EXHAUSTED, or waits in the queue once one breaker
		// opened and the other replica was tried: then it is canceled.
		eventually(t, "the broken pool's task to end", func() bool {
			tk, ok := oe.srv.tasks.get(taskKey{"t1", id})
			return !ok || tk.log.Closed() || allOpen()
		})
		oe.cancel(t, id)
	}
	eventually(t, "both breakers to open", allOpen)

	// An unknown key (403) and none (401): rejected before anything else.
	if r := oe.do("POST", "/v1/tasks", obsWrongKey, obsTask{model: "ma"}.body()); r.status != 403 {
		t.Fatalf("unknown key: %d %s", r.status, r.body)
	}
	if r := oe.do("POST", "/v1/tasks", "", obsTask{model: "ma"}.body()); r.status != 401 {
		t.Fatalf("no key: %d %s", r.status, r.body)
	}
	// The engine gauges come with the next health probe's scrape.
	eventually(t, "the Triton replica's scraped load", func() bool {
		for _, p := range oe.srv.poolList() {
			if p.id == poolTriton {
				l := p.set().states[0].load.Load()
				return l != nil && l.HasKVCacheUsage && len(l.Devices) > 0
			}
		}
		return false
	})
}

// obsWrongKey is a key no tenant has.
const obsWrongKey = "sk-wrong-7d41c9"

// scrape reads GET /metrics over HTTP and parses it strictly.
func (oe *obsEnv) scrape(t *testing.T) []promSample {
	t.Helper()
	r := oe.do("GET", "/metrics", "", "")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %d %s", r.status, r.header.Get("Content-Type"))
	}
	ss, err := parseProm(string(r.body))
	if err != nil {
		t.Fatalf("/metrics is not valid Prometheus text: %v", err)
	}
	return ss
}

// find returns the samples named name whose labels include want.
func find(ss []promSample, name string, want map[string]string) []promSample {
	var out []promSample
next:
	for _, s := range ss {
		if s.name != name {
			continue
		}
		for k, v := range want {
			if s.labels[k] != v {
				continue next
			}
		}
		out = append(out, s)
	}
	return out
}

// TestMetricsContract runs the mixed workload and checks /metrics against
// the contract file.
func TestMetricsContract(t *testing.T) {
	contract := loadContract(t)
	oe := startMixed(t, nil)
	runMixedWorkload(t, oe)
	var ss []promSample
	// Counters move just after the event a client sees: wait for the last
	// step's series.
	eventually(t, "the breaker transitions to be counted", func() bool {
		ss = oe.scrape(t)
		return len(find(ss, "breaker_transitions_total", map[string]string{"pool_id": poolBroken, "to": "open"})) == 2
	})

	t.Run("every series is in the contract with its exact labels", func(t *testing.T) {
		for _, s := range ss {
			m, suffix, ok := contractFamily(contract, s.name)
			if !ok {
				t.Errorf("%s is not in %s", s.name, contractPath)
				continue
			}
			if m.unimplemented {
				t.Errorf("%s is marked unimplemented in the contract but is exposed", s.name)
			}
			want := append([]string(nil), m.labels...)
			if suffix == "_bucket" {
				want = append(want, "le")
			}
			got := append([]string(nil), s.keys...)
			sort.Strings(want)
			sort.Strings(got)
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("%s has labels %v, contract says %v", s.name, got, want)
			}
			for k, v := range s.labels {
				if v == "" {
					t.Errorf("%s: label %s is empty (unknown is %q)", s.name, k, unknownLabel)
				}
				if strings.Contains(v, testKey) || strings.Contains(v, obsWrongKey) {
					t.Errorf("%s: label %s carries an API key", s.name, k)
				}
			}
			if m.typ == "counter" && (s.value < 0 || s.value != math.Trunc(s.value)) {
				t.Errorf("counter %s = %v", s.name, s.value)
			}
		}
	})

	t.Run("every implemented contract metric is exposed", func(t *testing.T) {
		for _, m := range contract {
			if m.unimplemented {
				continue
			}
			name := m.name
			if m.typ == "histogram" {
				name += "_count"
			}
			if len(find(ss, name, nil)) == 0 {
				t.Errorf("%s (%s) never appeared after the mixed workload", m.name, m.typ)
			}
		}
	})

	for _, m := range contract {
		if !m.unimplemented {
			continue
		}
		t.Run("unimplemented/"+m.name, func(t *testing.T) {
			if len(find(ss, m.name, nil)) > 0 {
				t.Fatalf("%s is exposed: mark it implemented in the contract", m.name)
			}
			t.Skipf("%s{%s} is not emitted: %s", m.name, strings.Join(m.labels, ","), m.note)
		})
	}

	t.Run("histograms expose buckets with le, sum and count", func(t *testing.T) {
		for _, m := range contract {
			if m.typ != "histogram" || m.unimplemented {
				continue
			}
			for _, c := range find(ss, m.name+"_count", nil) {
				base := map[string]string{}
				for _, k := range m.labels {
					base[k] = c.labels[k]
				}
				if len(find(ss, m.name+"_sum", base)) != 1 {
					t.Errorf("%s %v: no _sum", m.name, base)
				}
				buckets := find(ss, m.name+"_bucket", base)
				var inf *promSample
				prev := -1.0
				sort.Slice(buckets, func(i, j int) bool {
					a, _ := parsePromFloat(buckets[i].labels["le"])
					b, _ := parsePromFloat(buckets[j].labels["le"])
					return a < b
				})
				for i, b := range buckets {
					if _, err := parsePromFloat(b.labels["le"]); err != nil {
						t.Errorf("%s: le=%q", m.name, b.labels["le"])
					}
					if b.value < prev {
						t.Errorf("%s %v: buckets not cumulative at le=%s", m.name, base, b.labels["le"])
					}
					prev = b.value
					if b.labels["le"] == "+Inf" {
						inf = &buckets[i]
					}
				}
				if inf == nil || inf.value != c.value {
					t.Errorf("%s %v: le=\"+Inf\" bucket %v, _count %v", m.name, base, inf, c.value)
				}
			}
		}
	})

	t.Run("the workload's outcomes are counted", func(t *testing.T) {
		for _, w := range []struct {
			name   string
			labels map[string]string
		}{
			{"tasks_canceled_total", map[string]string{"pool_id": poolOK, "reason": reasonClient}},
			{"tasks_canceled_total", map[string]string{"pool_id": poolFull, "reason": reasonClient, "replica_id": unknownLabel}},
			{"tasks_canceled_total", map[string]string{"pool_id": poolDrop, "reason": "dropped"}},
			{"tasks_canceled_total", map[string]string{"pool_id": poolStall, "reason": reasonWatchdog, "replica_id": "r0"}},
			{"tasks_rejected_total", map[string]string{"engine": engines.LlamaCpp, "reason": "reject"}},
			{"tasks_rejected_total", map[string]string{"engine": unknownLabel, "reason": "unauthorized"}},
			{"tasks_rejected_total", map[string]string{"engine": unknownLabel, "reason": "forbidden"}},
			{"admission_backpressure_events_total", map[string]string{"engine": engines.LlamaCpp, "policy": admission.PolicyReject}},
			{"admission_backpressure_events_total", map[string]string{"engine": engines.LlamaCpp, "policy": admission.PolicyDropLRU}},
			{"preemptions_total", map[string]string{"mode": "hard", "engine": engines.LlamaCpp}},
			{"resumptions_total", map[string]string{"engine": engines.LlamaCpp}},
			{"task_retries_total", map[string]string{"engine": engines.LlamaCpp, "why": "retry"}},
			{"tokens_out_total", map[string]string{"engine": engines.Triton, "pool_id": poolTriton, "replica_id": "r0"}},
			{"tasks_started_total", map[string]string{"engine": engines.Triton, "engine_version": tritonfake.DefaultEngineVersion}},
			{"deadlines_met_ratio", map[string]string{"priority": "interactive"}},
			{"slo_attainment", map[string]string{"priority": "interactive", "objective": "ttft"}},
			{"admission_share", map[string]string{"tenant": "t1"}},
		} {
			if len(find(ss, w.name, w.labels)) == 0 {
				t.Errorf("no %s%v", w.name, w.labels)
			}
		}
		for _, rid := range []string{"r0", "r1"} {
			got := find(ss, "breaker_state", map[string]string{"pool_id": poolBroken, "replica_id": rid})
			if len(got) != 1 || got[0].value != 2 {
				t.Errorf("breaker_state{pool_id=%q,replica_id=%q} = %v, want 2 (open)", poolBroken, rid, got)
			}
		}
		if got := find(ss, "queue_capacity", map[string]string{"pool_id": poolFull}); len(got) != 1 || got[0].value != 2 {
			t.Errorf("queue_capacity of %s: %v", poolFull, got)
		}
	})

	t.Run("engine gauges are absent, not zero, where the engine reports none", func(t *testing.T) {
		for _, name := range []string{"kv_cache_usage_ratio", "gpu_utilization", "vram_used_bytes"} {
			got := find(ss, name, nil)
			if len(got) == 0 {
				t.Errorf("no %s from the Triton pool", name)
			}
			for _, s := range got {
				if s.labels["pool_id"] != poolTriton || s.labels["engine"] != engines.Triton {
					t.Errorf("%s from %v: llama.cpp reports no such gauge", name, s.labels)
				}
				if name != "vram_used_bytes" && (s.value < 0 || s.value > 1) {
					t.Errorf("%s = %v, want a ratio", name, s.value)
				}
				if name == "vram_used_bytes" && s.value <= 0 {
					t.Errorf("vram_used_bytes = %v", s.value)
				}
				if name != "kv_cache_usage_ratio" && !strings.HasPrefix(s.labels["device"], "GPU-") {
					t.Errorf("%s device %q, want the engine's GPU UUID", name, s.labels["device"])
				}
			}
		}
	})
}

// TestContractEngineGaugeWriter: the pool gauge writer emits exactly the
// engine gauges a stored engines.Load reports — nothing for a replica with
// no load or a load without them — and escapes what an engine reported.
func TestContractEngineGaugeWriter(t *testing.T) {
	q, err := admission.NewQueue[*task](admission.Config{Capacity: 4})
	if err != nil {
		t.Fatal(err)
	}
	p := &pool{id: "g", engine: engines.VLLM, queue: q}
	rs := &replicaSet{}
	loads := []*engines.Load{
		nil,                                      // never scraped
		{Processing: 1},                          // llama.cpp: neither KV usage nor devices
		{KVCacheUsage: 0, HasKVCacheUsage: true}, // a reported zero is a zero
		{Devices: []engines.DeviceLoad{
			{Device: "0", Utilization: 0.5, HasUtilization: true},            // no VRAM reported
			{Device: "1\"\n\x01", VRAMUsedBytes: 1 << 30, HasVRAMUsed: true}, // odd name: escaped
		}},
	}
	for i, l := range loads {
		rs.replicas = append(rs.replicas, balancer.NewReplica(i, "r"+strconv.Itoa(i), "http://127.0.0.1:1", 1))
		st := &replicaState{}
		v := "0.11.0"
		st.engineVersion.Store(&v)
		st.load.Store(l)
		rs.states = append(rs.states, st)
	}
	p.cur.Store(rs)
	m := newMetrics()
	m.registerPoolGauges(func() []*pool { return []*pool{p} })
	var sb strings.Builder
	m.WritePrometheus(&sb)
	ss, err := parseProm(sb.String())
	if err != nil {
		t.Fatalf("%v\n%s", err, sb.String())
	}
	got := map[string][]string{}
	for _, s := range ss {
		switch s.name {
		case "kv_cache_usage_ratio", "gpu_utilization", "vram_used_bytes":
			got[s.name] = append(got[s.name], s.labels["replica_id"]+"/"+s.labels["device"]+"="+strconv.FormatFloat(s.value, 'g', -1, 64))
			if s.labels["engine_version"] != "0.11.0" || s.labels["engine"] != engines.VLLM {
				t.Errorf("%s labels %v", s.name, s.labels)
			}
		}
	}
	want := map[string][]string{
		"kv_cache_usage_ratio": {"r2/=0"},
		"gpu_utilization":      {"r3/0=0.5"},
		"vram_used_bytes":      {"r3/1\"\n =1.073741824e+09"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("engine gauges:\n got %q\nwant %q\n%s", got, want, sb.String())
	}
}

// FuzzContractSeries: any label value an engine or a config may bring (an
// engine_version, a device name, a tenant) makes a series the metrics
// package accepts and the exposition parser reads back: the value itself
// where it is printable UTF-8, else with control characters as spaces and
// invalid bytes as U+FFFD.
func FuzzContractSeries(f *testing.F) {
	for _, s := range []string{"b10470-34af94cd9", "0.11.0", "GPU-1a2b", `q"uote\back`, "new\nline", "tab\there", "\xff\xfe", "é€𝄞", "\uFFFD", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		s := series("x", "a", v, "b", "-")
		if err := metrics.ValidateMetric(s); err != nil {
			t.Fatalf("%q: the metrics package refuses %s: %v", v, s, err)
		}
		ss, err := parseProm(s + " 1\n")
		if err != nil {
			t.Fatalf("%q: %s: %v", v, s, err)
		}
		var want strings.Builder // each invalid byte is one U+FFFD
		for _, r := range v {
			if r != '\n' && (r < 0x20 || r == 0x7f) {
				r = ' '
			}
			want.WriteRune(r)
		}
		if len(ss) != 1 || ss[0].labels["a"] != want.String() {
			t.Fatalf("%q: read back %q, want %q", v, ss[0].labels["a"], want.String())
		}
	})
}
