package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/engines/llamacpp"
	"github.com/llama-orch/llama-orch/gateway"
	"github.com/llama-orch/llama-orch/gateway/config"
)

// End-to-end: orchctl against the real gateway (gateway.New + Serve on
// loopback) in front of llama.cpp fakes. One gateway serves every step, in
// order: status, status --json, watch while r1's breaker is tripped for
// real, apply (dry run, then --commit) of a new r1 URL, an invalid file
// refused before any request, drain, status.

const (
	e2eKey  = "sk-e2e-control"
	e2ePool = "llama-e2e"
)

// e2eConfigText is the gateway's config file; %s are the replica URLs.
const e2eConfigText = `auth:
  keys:
    - { key: ` + e2eKey + `, tenant: ops, roles: [data, control] }
shutdown_grace_ms: 1000
breaker: { consecutive_failures: 2, open_ms: 1000 }
health: { interval_ms: 50, timeout_ms: 1000, healthy_after: 1, unhealthy_after: 2 }
pools:
  - id: ` + e2ePool + `
    engine: llamacpp
    model: tiny-llama
    ctx: 4096
    queue: { capacity: 16, full_policy: reject }
    timeouts: { first_token_ms: 5000, idle_ms: 5000, wall_ms: 20000 }
    replicas:
      - { id: r0, url: "%s" }
      - { id: r1, url: "%s" }
`

// e2eListener counts accepted connections: orchctl opens a new one per
// run, so an unchanged count proves it sent nothing.
type e2eListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *e2eListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// e2eGateway is a running gateway and its fakes.
type e2eGateway struct {
	t    *testing.T
	base string
	ln   *e2eListener
	yaml string // the config file it runs
	hc   *http.Client

	mu     sync.Mutex
	engine map[string]*fake.Server // current fake per name
	addr   map[string]string       // fixed loopback address per name
}

func startE2EGateway(t *testing.T) *e2eGateway {
	t.Helper()
	g := &e2eGateway{t: t, engine: map[string]*fake.Server{}, addr: map[string]string{},
		hc: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}}
	// Registered first, so it runs last: after the gateway shut down,
	// fasthttp's worker-pool cleaner sleeps out its 10 s idle period before
	// it returns, and this package's goleak check admits no exception.
	t.Cleanup(func() {
		g.hc.CloseIdleConnections()
		g.mu.Lock()
		defer g.mu.Unlock()
		for name, f := range g.engine {
			if err := f.Close(); err != nil {
				t.Errorf("close fake %s: %v", name, err)
			}
		}
	})
	g.startEngine("r0", "127.0.0.1:0", fake.Options{})
	g.startEngine("r1", "127.0.0.1:0", fake.Options{})
	g.yaml = fmt.Sprintf(e2eConfigText, "http://"+g.addr["r0"], "http://"+g.addr["r1"])
	cfg, problems, err := config.Check([]byte(g.yaml), config.ValidateOptions{})
	if err != nil || config.HasErrors(problems) {
		t.Fatalf("config: %v %v", err, problems)
	}
	srv, err := gateway.New(cfg, gateway.Options{
		NewAdapter: func(_ config.Pool, rc config.Replica) (engines.Adapter, error) {
			return llamacpp.New(rc.URL, llamacpp.Options{})
		},
		Logger:            zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)),
		KeepAliveInterval: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	inner, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	g.ln = &e2eListener{Listener: inner}
	g.base = "http://" + inner.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(g.ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("gateway Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("gateway Serve: %v", err)
		}
	})
	g.waitReplicas("both replicas ready and closed", func(r map[string]replica) bool {
		return r["r0"].State == "ready" && r["r0"].Breaker == "closed" && r["r1"].State == "ready" && r["r1"].Breaker == "closed"
	})
	return g
}

// startEngine (re)starts the fake called name on addr, closing the one it
// replaces.
func (g *e2eGateway) startEngine(name, addr string, o fake.Options) {
	g.t.Helper()
	g.stopEngine(name)
	f, err := fake.New(o)
	if err != nil {
		g.t.Fatalf("fake.New: %v", err)
	}
	for i := 0; ; i++ { // the port was just freed by this process
		if err = f.Start(addr); err == nil || i == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		g.t.Fatalf("start fake %s on %s: %v", name, addr, err)
	}
	g.mu.Lock()
	g.engine[name], g.addr[name] = f, f.Addr()
	g.mu.Unlock()
}

func (g *e2eGateway) stopEngine(name string) {
	g.t.Helper()
	g.mu.Lock()
	f := g.engine[name]
	delete(g.engine, name)
	g.mu.Unlock()
	if f != nil {
		if err := f.Close(); err != nil {
			g.t.Errorf("close fake %s: %v", name, err)
		}
	}
}

// get does an authenticated GET and returns the body of a 200.
func (g *e2eGateway) get(path string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, g.base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+e2eKey)
	res, err := g.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %d %s", path, res.StatusCode, b)
	}
	return b, err
}

// sets reads GET /v1/replicasets (orchctl's own decoding types).
func (g *e2eGateway) sets() (replicaSet, map[string]replica, error) {
	b, err := g.get("/v1/replicasets")
	if err != nil {
		return replicaSet{}, nil, err
	}
	var v replicaSets
	if err := json.Unmarshal(b, &v); err != nil {
		return replicaSet{}, nil, err
	}
	for _, s := range v.ReplicaSets {
		if s.PoolID == e2ePool {
			m := map[string]replica{}
			for _, r := range s.Replicas {
				m[r.ID] = r
			}
			return s, m, nil
		}
	}
	return replicaSet{}, nil, fmt.Errorf("no pool %s in %s", e2ePool, b)
}

func (g *e2eGateway) waitReplicas(what string, cond func(map[string]replica) bool) {
	g.t.Helper()
	var last map[string]replica
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		_, r, err := g.sets()
		if err == nil && cond(r) {
			return
		}
		last = r
	}
	g.t.Fatalf("timed out waiting for %s; last replicas: %+v", what, last)
}

// submit runs one small streamed task to its end.
func (g *e2eGateway) submit(ctx context.Context) error {
	body, _ := json.Marshal(map[string]any{"task_id": uuid.NewString(), "session_id": uuid.NewString(),
		"model_ref": "tiny-llama", "engine": "llamacpp", "prompt": "Hello there", "max_tokens": 4})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.base+"/v1/tasks", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+e2eKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	res, err := g.hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode != http.StatusOK {
		err = fmt.Errorf("POST /v1/tasks: %d %s", res.StatusCode, b)
	}
	return err
}

// tripR1 opens r1's breaker through real failed requests: r1 comes back on
// its port failing every completion with 500 while its health stays good,
// and tasks are submitted until the breaker is open; r1 is then stopped, so
// the half-open trials (health probes) fail and the breaker stays open.
// (Stopping r1 alone would not do: 50 ms health probes mark it unready
// before any task reaches it.)
func (g *e2eGateway) tripR1(ctx context.Context) {
	g.t.Helper()
	g.startEngine("r1", g.addr["r1"], fake.Options{Fail: fake.FailStart500})
	g.waitReplicas("r1 ready while failing completions", func(r map[string]replica) bool {
		return r["r1"].State == "ready" && r["r1"].Breaker == "closed"
	})
	for n := 1; n <= 100; n++ {
		if err := g.submit(ctx); err != nil {
			g.t.Fatalf("task %d: %v", n, err)
		}
		_, r, err := g.sets()
		if err != nil {
			g.t.Fatalf("after task %d: %v", n, err)
		}
		if r["r1"].Breaker == "open" {
			g.stopEngine("r1")
			return
		}
	}
	g.t.Fatal("r1's breaker did not open after 100 tasks")
}

// orchctl runs the command against g and returns exit code, stdout, stderr.
func (g *e2eGateway) orchctl(ctx context.Context, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := runCtx(ctx, args, envOf(map[string]string{"ORCHD_URL": g.base, "ORCHD_KEY": e2eKey}), &out, &errb)
	return code, out.String(), errb.String()
}

// e2eReplicaRow matches a row of status's replica table.
func e2eReplicaRow(id, state, breaker string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^` + e2ePool + `\s+` + id + `\s+` + state + `\s+` + breaker + `\s+\d+/\d+\s`)
}

func TestE2EAgainstGateway(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	g := startE2EGateway(t)
	dir := t.TempDir()
	must := func(t *testing.T, code int, stdout, stderr string) {
		t.Helper()
		if code != exitOK {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
	}

	t.Run("status", func(t *testing.T) {
		code, out, errs := g.orchctl(ctx, "status")
		must(t, code, out, errs)
		// Pools table: engine with its version, model, ready, not draining, queue 0/16.
		pools := regexp.MustCompile(`(?m)^` + e2ePool + `\s+llamacpp ` + fake.DefaultEngineVersion + `\s+tiny-llama\s+yes\s+no\s+0/16\s`)
		if !pools.MatchString(out) {
			t.Errorf("status lacks the pool row %v:\n%s", pools, out)
		}
		for _, id := range []string{"r0", "r1"} {
			if re := e2eReplicaRow(id, "ready", "closed"); !re.MatchString(out) {
				t.Errorf("status lacks %s ready/closed (%v):\n%s", id, re, out)
			}
		}
	})

	t.Run("status --json", func(t *testing.T) {
		code, out, errs := g.orchctl(ctx, "status", "--json")
		must(t, code, out, errs)
		var v struct {
			ReplicaSets []struct {
				PoolID   string `json:"pool_id"`
				Ready    bool   `json:"ready"`
				Draining bool   `json:"draining"`
				Replicas []struct {
					ID, URL, State, Breaker string
				} `json:"replicas"`
			} `json:"replicasets"`
			SLOAttainment json.RawMessage `json:"slo_attainment"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("status --json does not parse: %v\n%s", err, out)
		}
		if len(v.ReplicaSets) != 1 || v.ReplicaSets[0].PoolID != e2ePool || !v.ReplicaSets[0].Ready || v.ReplicaSets[0].Draining {
			t.Fatalf("status --json pools = %+v", v.ReplicaSets)
		}
		if v.SLOAttainment == nil {
			t.Error("status --json dropped slo_attainment (it must print the server's JSON as it is)")
		}
		got := map[string]string{}
		for _, r := range v.ReplicaSets[0].Replicas {
			got[r.ID] = r.URL + " " + r.State + " " + r.Breaker
		}
		want := map[string]string{"r0": "http://" + g.addr["r0"] + " ready closed", "r1": "http://" + g.addr["r1"] + " ready closed"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("status --json replicas = %v, want %v", got, want)
		}
	})

	t.Run("watch shows the breaker trip", func(t *testing.T) {
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		var out, errb syncBuffer
		done := make(chan int, 1)
		env := envOf(map[string]string{"ORCHD_URL": g.base, "ORCHD_KEY": e2eKey})
		go func() { done <- runCtx(wctx, []string{"watch"}, env, &out, &errb) }()
		waitOut := func(what string, re *regexp.Regexp) {
			t.Helper()
			for deadline := time.Now().Add(15 * time.Second); !re.MatchString(out.String()); time.Sleep(10 * time.Millisecond) {
				select {
				case code := <-done:
					t.Fatalf("watch ended early with %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
				default:
				}
				if time.Now().After(deadline) {
					wcancel()
					<-done
					t.Fatalf("watch never printed %s (%v)\nstdout:\n%s\nstderr:\n%s", what, re, out.String(), errb.String())
				}
			}
		}
		// The hello line: the stream is open, no later event is missed.
		waitOut("the hello line", regexp.MustCompile(`(?m)^\S+\s+hello\s`))
		g.tripR1(ctx)
		waitOut("the breaker line", regexp.MustCompile(`(?m)^\S+\s+breaker\s+`+e2ePool+`/r1\s+closed -> open$`))
		wcancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("watch ended by its context: exit %d, want 0\nstderr:\n%s", code, errb.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watch did not end after its context was canceled")
		}
		if s := errb.String(); s != "" {
			t.Errorf("watch wrote to stderr:\n%s", s)
		}
		if strings.Contains(out.String(), e2eKey) {
			t.Error("watch printed the key")
		}
		// status shows it too.
		code, st, errs := g.orchctl(ctx, "status")
		must(t, code, st, errs)
		if re := e2eReplicaRow("r1", `\S+`, `(open|half-open)`); !re.MatchString(st) {
			t.Errorf("status after the trip lacks r1 with its breaker open (%v):\n%s", re, st)
		}
		// A healthy r1 on the same port closes it again (next probe after open_ms).
		g.startEngine("r1", g.addr["r1"], fake.Options{})
		g.waitReplicas("r1 ready and closed again", func(r map[string]replica) bool {
			return r["r1"].State == "ready" && r["r1"].Breaker == "closed"
		})
	})

	// A new URL for r1: a third fake.
	g.startEngine("r1-new", "127.0.0.1:0", fake.Options{})
	oldURL, newURL := "http://"+g.addr["r1"], "http://"+g.addr["r1-new"]
	newFile := filepath.Join(dir, "new.yaml")
	if err := os.WriteFile(newFile, []byte(strings.Replace(g.yaml, oldURL, newURL, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	diffLine := func(sign, url string) *regexp.Regexp {
		return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sign) + `\s.*url: "?` + regexp.QuoteMeta(url) + `"?$`)
	}

	t.Run("apply dry run", func(t *testing.T) {
		code, out, errs := g.orchctl(ctx, "apply", "-f", newFile)
		must(t, code, out, errs)
		if want := "dry run: 1 change (pools." + e2ePool + ".replicas); nothing applied (rerun with --commit to apply)\n"; !strings.HasPrefix(out, want) {
			t.Errorf("apply dry run: first line is not %q:\n%s", want, out)
		}
		for _, re := range []*regexp.Regexp{diffLine("-", oldURL), diffLine("+", newURL)} {
			if !re.MatchString(out) {
				t.Errorf("apply dry run: the diff lacks a line %v:\n%s", re, out)
			}
		}
		if _, r, err := g.sets(); err != nil || r["r1"].URL != oldURL {
			t.Errorf("after a dry run r1 = %+v (err %v), want it unchanged at %s", r["r1"], err, oldURL)
		}
	})

	t.Run("apply --commit", func(t *testing.T) {
		code, out, errs := g.orchctl(ctx, "apply", "-f", newFile, "--commit")
		must(t, code, out, errs)
		if want := "applied: 1 change (pools." + e2ePool + ".replicas)\n"; !strings.HasPrefix(out, want) {
			t.Errorf("apply --commit: first line is not %q:\n%s", want, out)
		}
		code, out, errs = g.orchctl(ctx, "status", "--json")
		must(t, code, out, errs)
		if !strings.Contains(out, `"url": "`+newURL+`"`) || strings.Contains(out, `"url": "`+oldURL+`"`) {
			t.Errorf("status --json after the commit does not show r1 at %s:\n%s", newURL, out)
		}
		code, out, errs = g.orchctl(ctx, "status")
		must(t, code, out, errs)
		if re := e2eReplicaRow("r1", "ready", "closed"); !re.MatchString(out) {
			t.Errorf("status after the commit lacks r1 ready/closed:\n%s", out)
		}
		// Applying the same file again changes nothing.
		code, out, errs = g.orchctl(ctx, "apply", "-f", newFile)
		must(t, code, out, errs)
		if out != "dry run: no changes\n" {
			t.Errorf("dry run of the running file = %q, want %q", out, "dry run: no changes\n")
		}
	})

	t.Run("apply of the config GET /v1/config returns", func(t *testing.T) {
		running, err := g.get("/v1/config")
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(running, []byte(e2eKey)) {
			t.Fatalf("GET /v1/config shows the key:\n%s", running)
		}
		file := filepath.Join(dir, "running.yaml")
		if err := os.WriteFile(file, running, 0o644); err != nil {
			t.Fatal(err)
		}
		code, out, errs := g.orchctl(ctx, "apply", "-f", file)
		must(t, code, out, errs)
		if out != "dry run: no changes\n" {
			t.Errorf("dry run of GET /v1/config's own answer = %q, want %q (the diff is empty, yet orchd lists changes: it compares `key` with `key_sha256` of the same key, and an absent tenants list with `tenants: []`)", out, "dry run: no changes\n")
		}
	})

	t.Run("invalid file refused before any request", func(t *testing.T) {
		bad := strings.Replace(g.yaml, "capacity: 16", "capacity: 0", 1) + "bogus_key: 1\n"
		lines := strings.Split(bad, "\n")
		capLine, bogusLine := 0, 0
		for i, l := range lines {
			switch {
			case strings.Contains(l, "capacity: 0"):
				capLine = i + 1
			case strings.HasPrefix(l, "bogus_key:"):
				bogusLine = i + 1
			}
		}
		file := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		before := g.ln.accepted.Load()
		code, out, errs := g.orchctl(ctx, "apply", "-f", file, "--commit")
		if code != exitFailed {
			t.Errorf("exit %d, want %d", code, exitFailed)
		}
		if out != "" {
			t.Errorf("stdout = %q, want nothing", out)
		}
		for _, want := range []string{
			fmt.Sprintf("%s:%d: pools[0].queue.capacity: ", file, capLine),
			fmt.Sprintf("%s:%d: ", file, bogusLine),
			"refusing " + file + ": 2 problems; nothing was sent to orchd",
		} {
			if !strings.Contains(errs, want) {
				t.Errorf("stderr lacks %q:\n%s", want, errs)
			}
		}
		if n := g.ln.accepted.Load() - before; n != 0 {
			t.Errorf("orchctl opened %d connection(s) to orchd for an invalid file", n)
		}
		if _, r, err := g.sets(); err != nil || r["r1"].URL != newURL {
			t.Errorf("r1 = %+v (err %v), want it still at %s", r["r1"], err, newURL)
		}
	})

	t.Run("drain then status", func(t *testing.T) {
		code, out, errs := g.orchctl(ctx, "drain", e2ePool, "--deadline", "1s")
		must(t, code, out, errs)
		if want := "drain of pool " + e2ePool + " accepted: no new admissions; in-flight work is canceled if not done within 1s\n"; out != want {
			t.Errorf("drain printed %q, want %q", out, want)
		}
		code, out, errs = g.orchctl(ctx, "status")
		must(t, code, out, errs)
		if re := regexp.MustCompile(`(?m)^` + e2ePool + `\s+llamacpp \S+\s+tiny-llama\s+(yes|no)\s+yes\s`); !re.MatchString(out) {
			t.Errorf("status after the drain lacks DRAINING yes (%v):\n%s", re, out)
		}
		for _, id := range []string{"r0", "r1"} {
			if re := e2eReplicaRow(id, "draining", "closed"); !re.MatchString(out) {
				t.Errorf("status after the drain lacks %s draining (%v):\n%s", id, re, out)
			}
		}
		// A second drain is accepted and says so.
		code, out, errs = g.orchctl(ctx, "drain", e2ePool, "--deadline", "1s")
		must(t, code, out, errs)
		if !strings.Contains(out, "already draining") {
			t.Errorf("second drain printed %q", out)
		}
	})
}
