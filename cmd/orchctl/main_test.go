package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/llama-orch/llama-orch/gateway/config"

	"github.com/llama-orch/llama-orch/internal/syncbuf"
)

// fasthttp's worker-pool cleaner outlives a shut-down server by its idle
// period (as in gateway/server_test.go).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"))
}

// Keys of the fake orchd.
const (
	controlKey = "sk-control"
	dataKey    = "sk-data" // data role only: 403 on the control API
)

// fakeOrchd is the peer of these tests: an HTTP server with the shapes of
// orchd's control API (ops-api.md), holding a little state so that a drain,
// reload or config apply has effects a later request can see.
type fakeOrchd struct {
	srv *httptest.Server

	mu       sync.Mutex
	sets     []map[string]any // /v1/replicasets entries
	reports  map[string]string
	running  []byte // running config YAML
	requests []recorded
	conns    int  // GET /v1/events connections so far
	revoked  bool // controlKey no longer accepted (a key rotated away)

	// events serves the n-th (1-based) GET /v1/events connection after auth.
	events func(w http.ResponseWriter, r *http.Request, n int)
}

// recorded is one request the fake received.
type recorded struct {
	method, path, query, ctype, auth string
	body                             []byte
}

const runningYAML = `listen: 127.0.0.1:8090
pools:
  - id: llama-demo
    engine: llamacpp
    model: tiny-llama
    replicas:
      - { id: r0, url: "http://127.0.0.1:18081" }
`

func newFakeOrchd(t *testing.T) *fakeOrchd {
	t.Helper()
	f := &fakeOrchd{
		running: []byte(runningYAML),
		reports: map[string]string{"r0": "tiny-llama-v2", "r1": "tiny-llama-v2"},
		sets: []map[string]any{{
			"pool_id": "llama-demo", "engine": "llamacpp", "engine_version": "b4500", "model": "tiny-llama",
			"ready": true, "draining": false, "queue_depth": 3,
			"queue":          map[string]any{"capacity": 64, "by_priority": map[string]any{"interactive": 2, "batch": 1}},
			"slo_attainment": map[string]any{"interactive": 0.99}, // a field orchctl does not know
			"slo":            map[string]any{"ttft_ms": map[string]any{"p50": 120.0, "p95": 412.4, "p99": 800.0}},
			"replicas": []any{
				map[string]any{"id": "r0", "url": "http://127.0.0.1:18081", "state": "ready", "breaker": "closed",
					"inflight": 2, "slots": 4, "engine_load": map[string]any{"requests_processing": 2, "requests_deferred": 1},
					"last_error": "", "engine_version": "b4500"},
				map[string]any{"id": "r1", "url": "http://127.0.0.1:18082", "state": "unready", "breaker": "open",
					"inflight": 0, "slots": 4, "engine_load": map[string]any{},
					"last_error": "dial tcp 127.0.0.1:18082: connect: connection refused\nretrying", "engine_version": "b4500"},
			},
		}},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/replicasets", f.auth(f.handleReplicaSets))
	mux.HandleFunc("POST /v1/pools/{id}/drain", f.auth(f.handleDrain))
	mux.HandleFunc("POST /v1/pools/{id}/reload", f.auth(f.handleReload))
	mux.HandleFunc("POST /v1/config", f.auth(f.handleConfig))
	mux.HandleFunc("GET /v1/events", f.auth(f.handleEvents))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeEnvelope(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint: "+r.Method+" "+r.URL.Path, nil)
	})
	f.srv = httptest.NewServer(mux) // 127.0.0.1
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeOrchd) url() string { return f.srv.URL }

func (f *fakeOrchd) recorded() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.requests...)
}

func (f *fakeOrchd) runningConfig() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return string(f.running)
}

func writeEnvelope(w http.ResponseWriter, status int, code, msg string, extra map[string]any) {
	body := map[string]any{"code": code, "message": msg, "retriable": false}
	for k, v := range extra {
		body[k] = v
	}
	w.Header().Set("X-Correlation-Id", "corr-"+code)
	writeJSONBody(w, status, body)
}

func writeJSONBody(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// auth records the request and enforces the control role as orchd does.
func (f *fakeOrchd) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		f.mu.Lock()
		f.requests = append(f.requests, recorded{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery,
			ctype: r.Header.Get("Content-Type"), auth: r.Header.Get("Authorization"), body: body})
		f.mu.Unlock()
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if key == "" {
			key = r.Header.Get("X-API-Key")
		}
		f.mu.Lock()
		if f.revoked && key == controlKey {
			key = "revoked"
		}
		f.mu.Unlock()
		switch key {
		case "":
			writeEnvelope(w, http.StatusUnauthorized, "UNAUTHORIZED", "missing API key: send Authorization: Bearer <key> or X-API-Key: <key>", nil)
		case dataKey:
			writeEnvelope(w, http.StatusForbidden, "FORBIDDEN", "API key lacks the control role", nil)
		case controlKey:
			h(w, r)
		default:
			writeEnvelope(w, http.StatusForbidden, "FORBIDDEN", "API key not recognised", nil)
		}
	}
}

func (f *fakeOrchd) handleReplicaSets(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	writeJSONBody(w, http.StatusOK, map[string]any{"replicasets": f.sets})
}

func (f *fakeOrchd) pool(id string) map[string]any {
	for _, s := range f.sets {
		if s["pool_id"] == id {
			return s
		}
	}
	return nil
}

func (f *fakeOrchd) handleDrain(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.pool(r.PathValue("id"))
	if p == nil {
		writeEnvelope(w, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("no pool %q", r.PathValue("id")), nil)
		return
	}
	var body struct {
		DeadlineMs *int64 `json:"deadline_ms"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.DeadlineMs == nil || *body.DeadlineMs < 0 {
		writeEnvelope(w, http.StatusBadRequest, "INVALID_PARAMS", `body must be {"deadline_ms": N}`, nil)
		return
	}
	if p["draining"] == true {
		writeJSONBody(w, http.StatusAccepted, map[string]any{"pool_id": p["pool_id"], "draining": true, "already": true})
		return
	}
	p["draining"], p["ready"] = true, false
	writeJSONBody(w, http.StatusAccepted, map[string]any{"pool_id": p["pool_id"], "draining": true, "deadline_ms": *body.DeadlineMs})
}

func (f *fakeOrchd) handleReload(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.pool(r.PathValue("id"))
	if p == nil {
		writeEnvelope(w, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("no pool %q", r.PathValue("id")), nil)
		return
	}
	var body struct {
		NewModelRef string `json:"new_model_ref"`
		Replicas    []struct {
			ID  string `json:"id"`
			URL string `json:"url"`
		} `json:"replicas"`
		TimeoutMs *int64 `json:"timeout_ms"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.NewModelRef == "" || (body.TimeoutMs != nil && *body.TimeoutMs <= 0) {
		writeEnvelope(w, http.StatusBadRequest, "INVALID_PARAMS", `body must be {"new_model_ref": "...", "replicas"?: [{"id","url"}], "timeout_ms"?: N}`, nil)
		return
	}
	reps := p["replicas"].([]any)
	for _, x := range reps {
		id := x.(map[string]any)["id"].(string)
		if got := f.reports[id]; got != body.NewModelRef {
			writeEnvelope(w, http.StatusConflict, "RELOAD_FAILED",
				fmt.Sprintf("new replica set not verified within 30s: replica %s reports model %q, not %q", id, got, body.NewModelRef),
				map[string]any{"pool_id": p["pool_id"]})
			return
		}
	}
	if len(body.Replicas) > 0 {
		var nr []any
		for _, x := range body.Replicas {
			nr = append(nr, map[string]any{"id": x.ID, "url": x.URL, "state": "ready", "breaker": "closed", "slots": 4})
		}
		p["replicas"] = nr
	}
	p["model"] = body.NewModelRef
	writeJSONBody(w, http.StatusOK, p)
}

// handleConfig validates with the real config package, adds one rule only
// the running server knows (listen cannot change at run time), diffs and
// applies unless dry_run=true.
func (f *fakeOrchd) handleConfig(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	_, probs, err := config.Check(body, config.ValidateOptions{})
	if err != nil {
		writeEnvelope(w, http.StatusBadRequest, "INVALID_PARAMS", err.Error(), nil)
		return
	}
	var out []map[string]any
	for _, p := range probs {
		if !p.Warning {
			out = append(out, map[string]any{"path": p.Path, "line": p.Line, "message": p.Message})
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var oldM, newM map[string]any
	_ = yaml.Unmarshal(f.running, &oldM)
	_ = yaml.Unmarshal(body, &newM)
	if newM["listen"] != nil && newM["listen"] != oldM["listen"] {
		out = append(out, map[string]any{"path": "listen", "line": lineOf(body, "listen:"),
			"message": "cannot change at run time; restart orchd"})
	}
	if len(out) > 0 {
		writeEnvelope(w, http.StatusBadRequest, "INVALID_PARAMS", fmt.Sprintf("%d problems", len(out)), map[string]any{"problems": out})
		return
	}
	var changes []string
	for k := range newM {
		if !reflect.DeepEqual(oldM[k], newM[k]) {
			changes = append(changes, k)
		}
	}
	for k := range oldM {
		if _, ok := newM[k]; !ok {
			changes = append(changes, k)
		}
	}
	sort.Strings(changes)
	diff := lineDiff(string(f.running), string(body))
	dry := r.URL.Query().Get("dry_run") == "true"
	if !dry {
		f.running = body
	}
	writeJSONBody(w, http.StatusOK, map[string]any{"dry_run": dry, "applied": !dry, "diff": diff, "changes": changes})
}

func lineOf(b []byte, prefix string) int {
	for i, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			return i + 1
		}
	}
	return 0
}

// lineDiff is a crude diff (lines only in a, then lines only in b); the
// fake's diff only has to be something orchctl prints as it is.
func lineDiff(a, b string) string {
	if a == b {
		return ""
	}
	in := func(s, l string) bool {
		for _, x := range strings.Split(s, "\n") {
			if x == l {
				return true
			}
		}
		return false
	}
	var d strings.Builder
	d.WriteString("--- running\n+++ new\n")
	for _, l := range strings.Split(strings.TrimSuffix(a, "\n"), "\n") {
		if !in(b, l) {
			d.WriteString("-" + l + "\n")
		}
	}
	for _, l := range strings.Split(strings.TrimSuffix(b, "\n"), "\n") {
		if !in(a, l) {
			d.WriteString("+" + l + "\n")
		}
	}
	return d.String()
}

func (f *fakeOrchd) handleEvents(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.conns++
	n, h := f.conns, f.events
	f.mu.Unlock()
	if h == nil {
		writeEnvelope(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint: GET /v1/events", nil)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	h(w, r, n)
}

func (f *fakeOrchd) eventConns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns
}

// sendEvent writes one SSE frame of the /v1/events shape and flushes it.
func sendEvent(w http.ResponseWriter, id int, typ, data string) {
	fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", id, typ, data)
	w.(http.Flusher).Flush()
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// envOf returns an env lookup over m.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// syncBuffer is a bytes.Buffer safe for a writer and a concurrent reader.
type syncBuffer = syncbuf.Buffer

// runCase runs orchctl and returns exit code, stdout and stderr.
func runCase(args []string, env map[string]string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, envOf(env), &out, &errb)
	return code, out.String(), errb.String()
}

// checkOutput fails t unless every want is in got and no wantNot is.
func checkOutput(t *testing.T, name, got string, want, wantNot []string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s lacks %q:\n%s", name, w, got)
		}
	}
	for _, w := range wantNot {
		if strings.Contains(got, w) {
			t.Errorf("%s has %q:\n%s", name, w, got)
		}
	}
}
