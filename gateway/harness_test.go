package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/llamacpp"
	"github.com/llama-orch/llama-orch/gateway/config"
	"github.com/llama-orch/llama-orch/internal/hangguard"
	"github.com/llama-orch/llama-orch/sse"
)

// env is a running orchd on loopback in front of real fake engines.
type env struct {
	t     *testing.T
	srv   *Server
	url   string
	fakes []*fake.Server
	done  chan error
	hc    *http.Client
	once  sync.Once
}

const testKey = "sk-test"

// clientTimeout bounds every test request, a stream read to its end
// included: a task that never ends fails its test instead of hanging.
const clientTimeout = 60 * time.Second

// newEnv starts one pool ("p", model "m", engine llamacpp) with one replica
// per fake option set; mutate adjusts the config before start.
func newEnv(t *testing.T, mutate func(*config.Config), fakes ...fake.Options) *env {
	t.Helper()
	e := startEnv(t, mutate, fakes...)
	e.waitReady()
	return e
}

// newEnvPartial is newEnv for tests where some replicas never become ready:
// it waits only for the gateway to be ready.
func newEnvPartial(t *testing.T, mutate func(*config.Config), fakes ...fake.Options) *env {
	t.Helper()
	e := startEnv(t, mutate, fakes...)
	eventually(t, "the gateway to be ready", e.srv.Ready)
	return e
}

func startEnv(t *testing.T, mutate func(*config.Config), fakes ...fake.Options) *env {
	t.Helper()
	if len(fakes) == 0 {
		fakes = []fake.Options{{}}
	}
	guard(t)
	e := &env{t: t, done: make(chan error, 1)}
	var reps []string
	for i, fo := range fakes {
		f, err := fake.New(fo)
		if err != nil {
			t.Fatalf("fake.New: %v", err)
		}
		if err := f.Start("127.0.0.1:0"); err != nil {
			t.Fatalf("fake.Start: %v", err)
		}
		e.fakes = append(e.fakes, f)
		reps = append(reps, fmt.Sprintf("      - { id: r%d, url: %q }\n", i, f.URL()))
	}
	yml := `
auth:
  keys:
    - { key: ` + testKey + `, tenant: t1, roles: [data, control] }
    - { key: sk-other, tenant: t2, roles: [data] }
    - { key: sk-ctl, tenant: t1, roles: [control] }
health: { interval_ms: 20, timeout_ms: 1000, healthy_after: 1, unhealthy_after: 1 }
shutdown_grace_ms: 2000
pools:
  - id: p
    engine: llamacpp
    model: m
    ctx: 4096
    queue: { capacity: 8, full_policy: reject }
    replicas:
` + strings.Join(reps, "")
	cfg, problems, err := config.Check([]byte(yml), config.ValidateOptions{})
	if err != nil || config.HasErrors(problems) {
		t.Fatalf("config: %v %v", err, problems)
	}
	if mutate != nil {
		mutate(cfg)
	}
	var log *zap.Logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	srv, err := New(cfg, Options{NewAdapter: testAdapter, Logger: log, KeepAliveInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.srv, e.url = srv, "http://"+ln.Addr().String()
	go func() { e.done <- srv.Serve(ln) }()
	e.hc = &http.Client{Timeout: clientTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.Cleanup(e.close)
	return e
}

// guard fails the process, naming t, if t runs past hangguard.Limit. Call it
// before registering other cleanups: it then runs last, so a shutdown that
// hangs is caught too.
func guard(t *testing.T) { t.Cleanup(hangguard.Start(t.Name(), hangguard.Limit)) }

func testAdapter(pc config.Pool, rc config.Replica) (engines.Adapter, error) {
	a, err := llamacpp.New(rc.URL, llamacpp.Options{})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// shutdown stops the gateway (once).
func (e *env) shutdown() {
	e.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			e.t.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-e.done:
			if err != nil {
				e.t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			e.t.Error("Serve still running 10 s after Shutdown")
		}
		e.hc.CloseIdleConnections()
	})
}

func (e *env) close() {
	e.shutdown()
	for _, f := range e.fakes {
		_ = f.Close()
	}
}

// waitReady polls until every replica passed its health check (bounded),
// so tests know which replicas a task can use.
func (e *env) waitReady() {
	e.t.Helper()
	for i := 0; i < 500; i++ {
		all := true
		for _, p := range e.srv.poolList() {
			for _, r := range p.set().replicas {
				all = all && r.Ready()
			}
		}
		if all {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.t.Fatal("replicas never all became ready")
}

// eventually polls cond up to ~5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not JSON: %v", r.body, err)
	}
	return m
}

func (e *env) do(method, path, key string, body string, hdr ...string) resp {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, b}
}

type taskSpec struct {
	id, session, prompt string
	maxTokens           int
	priority            string
}

func newID() string { return uuid.NewString() }

func (s taskSpec) body() string {
	if s.id == "" {
		s.id = newID()
	}
	if s.session == "" {
		s.session = newID()
	}
	if s.prompt == "" {
		s.prompt = "Hello"
	}
	if s.maxTokens == 0 {
		s.maxTokens = 16
	}
	m := map[string]any{"task_id": s.id, "session_id": s.session, "model_ref": "m", "engine": "llamacpp",
		"prompt": s.prompt, "max_tokens": s.maxTokens}
	if s.priority != "" {
		m["priority"] = s.priority
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// event is one parsed canonical event.
type event struct {
	id   string
	name string
	data map[string]any
	raw  string
}

// stream is an open SSE response.
type stream struct {
	res *http.Response
	rd  *sse.Reader
}

func (e *env) openStream(id, key string, hdr ...string) *stream {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.url+"/v1/tasks/"+id+"/stream", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		e.t.Fatalf("stream %s: %d %s", id, res.StatusCode, b)
	}
	return &stream{res: res, rd: sse.NewReader(bufio.NewReader(res.Body), 0)}
}

// postStream is the one-round-trip form.
func (e *env) postStream(body string) *stream {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.url+"/v1/tasks", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Accept", "text/event-stream")
	res, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		e.t.Fatalf("POST stream: %d %s", res.StatusCode, b)
	}
	return &stream{res: res, rd: sse.NewReader(res.Body, 0)}
}

// next returns the next event, skipping comments; ok=false at EOF.
func (s *stream) next(t *testing.T) (event, bool) {
	t.Helper()
	var f sse.Frame
	for {
		err := s.rd.Next(&f)
		if err == io.EOF {
			return event{}, false
		}
		if err != nil {
			t.Fatalf("stream read: %v", err)
		}
		if f.Comment {
			continue
		}
		ev := event{id: string(f.ID), name: string(f.Event), raw: string(f.Data)}
		if err := json.Unmarshal(f.Data, &ev.data); err != nil {
			t.Fatalf("event data %q: %v", f.Data, err)
		}
		return ev, true
	}
}

// collect reads to EOF without failing a test (for readers that run off
// the test's goroutine); it returns what it read and the first error.
func (s *stream) collect() ([]event, error) {
	defer s.close()
	var out []event
	var f sse.Frame
	for {
		err := s.rd.Next(&f)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if f.Comment {
			continue
		}
		ev := event{id: string(f.ID), name: string(f.Event), raw: string(f.Data)}
		if err := json.Unmarshal(f.Data, &ev.data); err != nil {
			return out, fmt.Errorf("event data %q: %w", f.Data, err)
		}
		out = append(out, ev)
	}
}

// all reads to EOF.
func (s *stream) all(t *testing.T) []event {
	t.Helper()
	out, err := s.collect()
	if err != nil {
		t.Fatalf("stream read: %v", err)
	}
	return out
}

func (s *stream) close() { s.res.Body.Close() }

// tokens returns the token texts and checks i runs 0..n-1.
func tokens(t *testing.T, evs []event) []string {
	t.Helper()
	var out []string
	for _, ev := range evs {
		if ev.name != "token" {
			continue
		}
		if int(ev.data["i"].(float64)) != len(out) {
			t.Fatalf("token i=%v, want %d", ev.data["i"], len(out))
		}
		out = append(out, ev.data["t"].(string))
	}
	return out
}

func names(evs []event) string {
	var b strings.Builder
	for i, ev := range evs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(ev.name)
	}
	return b.String()
}

// metricEventually waits until /metrics contains want (series are updated
// just after the event that a client sees).
func (e *env) metricEventually(t *testing.T, want string) {
	t.Helper()
	eventually(t, "metrics to contain "+want, func() bool {
		var sb strings.Builder
		e.srv.metrics.WritePrometheus(&sb)
		return strings.Contains(sb.String(), want)
	})
}
