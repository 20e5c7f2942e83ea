package gatewaytest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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

// WaitBound bounds every wait of this package on the gateway (WaitReady,
// WaitReplicas, WaitHealthy).
const WaitBound = 10 * time.Second

// BreakerOpen is how long a breaker of PoolYAML's config stays open before
// its half-open trial (breaker.open_ms).
const BreakerOpen = time.Second

// PoolYAML returns a gateway config for TripBreaker: key (tenant ops, roles
// data and control) and one pool, id pool, engine llamacpp, model
// tiny-llama, ctx 4096, queue {capacity: 16, full_policy: reject},
// timeouts {first_token_ms: 5000, idle_ms: 5000, wall_ms: 20000}, whose
// replicas r0, r1, ... are at urls. Health is probed every 50 ms (ready
// after 1 success, unready after 2 failures); a breaker opens after 2
// consecutive failures for BreakerOpen; shutdown_grace_ms is 1000.
func PoolYAML(key, pool string, urls ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `auth:
  keys:
    - { key: %s, tenant: ops, roles: [data, control] }
shutdown_grace_ms: 1000
breaker: { consecutive_failures: 2, open_ms: %d }
health: { interval_ms: 50, timeout_ms: 1000, healthy_after: 1, unhealthy_after: 2 }
pools:
  - id: %s
    engine: llamacpp
    model: tiny-llama
    ctx: 4096
    queue: { capacity: 16, full_policy: reject }
    timeouts: { first_token_ms: 5000, idle_ms: 5000, wall_ms: 20000 }
    replicas:
`, key, BreakerOpen.Milliseconds(), pool)
	for i, u := range urls {
		fmt.Fprintf(&b, "      - { id: r%d, url: %q }\n", i, u)
	}
	return b.String()
}

// Options tune Start; the zero value serves llama.cpp replicas.
type Options struct {
	// Key is the API key Env's requests carry as a Bearer token: Replicas
	// and Get need the control role, Submit the data role. "" sends none.
	Key string
	// Fakes are the fakes the config points at, kept as Env.Fakes for
	// TripBreaker (optional).
	Fakes *Fakes
	// Mutate adjusts the checked config before gateway.New (optional).
	Mutate func(*config.Config)
	// NewAdapter makes the replicas' adapters; default llamacpp.New.
	NewAdapter gateway.AdapterFactory
	// Logger is the gateway's; default zaptest's at error level.
	Logger *zap.Logger
	// KeepAliveInterval is the SSE keep-alive period; default 500 ms.
	KeepAliveInterval time.Duration
}

// Env is a gateway serving on 127.0.0.1.
type Env struct {
	// Srv is the running gateway.
	Srv *gateway.Server
	// URL is its base URL, "http://127.0.0.1:PORT".
	URL string
	// Config is the config it started with (a reload does not change it).
	Config *config.Config
	// Fakes is Options.Fakes.
	Fakes *Fakes
	// Key is Options.Key.
	Key string
	// Client is an HTTP client for the gateway (15 s timeout); Close drops
	// its idle connections.
	Client *http.Client

	t      testing.TB
	ln     *countingListener
	served chan error
	once   sync.Once
}

// Start checks yaml (it must have no error-level problems), starts the
// gateway on a free 127.0.0.1 port and returns at once, without waiting for
// any replica (see WaitReady, WaitReplicas). Cleanup calls Close.
func Start(t testing.TB, yaml string, o Options) *Env {
	t.Helper()
	cfg, problems, err := config.Check([]byte(yaml), config.ValidateOptions{})
	if err != nil || config.HasErrors(problems) {
		t.Fatalf("config: %v %v", err, problems)
	}
	if o.Mutate != nil {
		o.Mutate(cfg)
	}
	if o.NewAdapter == nil {
		o.NewAdapter = func(_ config.Pool, rc config.Replica) (engines.Adapter, error) {
			return llamacpp.New(rc.URL, llamacpp.Options{})
		}
	}
	if o.Logger == nil {
		o.Logger = zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	}
	if o.KeepAliveInterval == 0 {
		o.KeepAliveInterval = 500 * time.Millisecond
	}
	srv, err := gateway.New(cfg, gateway.Options{NewAdapter: o.NewAdapter, Logger: o.Logger, KeepAliveInterval: o.KeepAliveInterval})
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	inner, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	e := &Env{Srv: srv, URL: "http://" + inner.Addr().String(), Config: cfg, Fakes: o.Fakes, Key: o.Key,
		Client: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
		t:      t, ln: &countingListener{Listener: inner}, served: make(chan error, 1)}
	go func() { e.served <- srv.Serve(e.ln) }()
	t.Cleanup(e.Close)
	return e
}

// Close shuts the gateway down gracefully (bounded by 15 s), checks that
// Serve returned no error and drops the client's idle connections. Only the
// first call does anything.
func (e *Env) Close() {
	e.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := e.Srv.Shutdown(ctx); err != nil {
			e.t.Errorf("gateway Shutdown: %v", err)
		}
		if err := <-e.served; err != nil {
			e.t.Errorf("gateway Serve: %v", err)
		}
		e.Client.CloseIdleConnections()
	})
}

// Accepted returns how many connections the gateway accepted so far: a
// client that opens a connection per run sent nothing if it is unchanged.
func (e *Env) Accepted() int64 { return e.ln.accepted.Load() }

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// WaitReady waits until the gateway reports ready (a pool can serve).
func (e *Env) WaitReady() {
	e.t.Helper()
	for deadline := time.Now().Add(WaitBound); !e.Srv.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			e.t.Fatalf("gateway not ready after %s", WaitBound)
		}
	}
}

// Get does a GET with the key and returns the body of a 200; another
// status is an error carrying the body.
func (e *Env) Get(path string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, e.URL+path, nil)
	if err != nil {
		return nil, err
	}
	return e.do(req)
}

func (e *Env) do(req *http.Request) ([]byte, error) {
	if e.Key != "" {
		req.Header.Set("Authorization", "Bearer "+e.Key)
	}
	res, err := e.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s %s: %d %s", req.Method, req.URL.Path, res.StatusCode, b)
	}
	return b, err
}

// Replica is the part of a GET /v1/replicasets replica these helpers read.
type Replica struct {
	ID        string `json:"id"`
	URL       string `json:"url"`
	State     string `json:"state"`
	Breaker   string `json:"breaker"`
	LastError string `json:"last_error"`
}

// Replicas reads GET /v1/replicasets and returns pool's replicas by id; an
// unknown pool is an error.
func (e *Env) Replicas(pool string) (map[string]Replica, error) {
	body, err := e.Get("/v1/replicasets")
	if err != nil {
		return nil, err
	}
	var v struct {
		ReplicaSets []struct {
			PoolID   string    `json:"pool_id"`
			Replicas []Replica `json:"replicas"`
		} `json:"replicasets"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("GET /v1/replicasets: %w: %s", err, body)
	}
	for _, s := range v.ReplicaSets {
		if s.PoolID == pool {
			out := map[string]Replica{}
			for _, r := range s.Replicas {
				out[r.ID] = r
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("GET /v1/replicasets: no pool %s in %s", pool, body)
}

// WaitReplicas polls Replicas(pool) every 20 ms until cond holds, failing
// the test after WaitBound with what and the last replicas seen.
func (e *Env) WaitReplicas(pool, what string, cond func(map[string]Replica) bool) {
	e.t.Helper()
	var last map[string]Replica
	for deadline := time.Now().Add(WaitBound); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		r, err := e.Replicas(pool)
		if err == nil && cond(r) {
			return
		}
		last = r
	}
	e.t.Fatalf("timed out after %s waiting for %s; last replicas: %+v", WaitBound, what, last)
}

// WaitHealthy waits (WaitReplicas) until each of pool's replicas ids is
// ready with its breaker closed.
func (e *Env) WaitHealthy(pool string, ids ...string) {
	e.t.Helper()
	e.WaitReplicas(pool, strings.Join(ids, ", ")+" ready with the breaker closed", func(r map[string]Replica) bool {
		for _, id := range ids {
			if r[id].State != "ready" || r[id].Breaker != "closed" {
				return false
			}
		}
		return true
	})
}

// Submit runs one small streamed task (POST /v1/tasks: the prompt "Hello
// there", 4 tokens at most) for pool's model and engine to its end; a
// status other than 200 is an error.
func (e *Env) Submit(ctx context.Context, pool string) error {
	var p *config.Pool
	for i := range e.Config.Pools {
		if e.Config.Pools[i].ID == pool {
			p = &e.Config.Pools[i]
		}
	}
	if p == nil {
		return fmt.Errorf("submit: no pool %s in the config", pool)
	}
	body, _ := json.Marshal(map[string]any{"task_id": uuid.NewString(), "session_id": uuid.NewString(),
		"model_ref": p.Model, "engine": p.Engine, "prompt": "Hello there", "max_tokens": 4})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL+"/v1/tasks", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	_, err = e.do(req)
	return err
}

// TripBreaker opens the breaker of pool's replica through real failed
// requests and returns how many tasks it took. The replica's fake (in
// Env.Fakes, named after the replica) comes back on its address failing
// every completion with 500 (fake.FailStart500) while its health stays
// good; tasks are submitted until GET /v1/replicasets shows the breaker
// open (at most 100, each with the odds the balancer gives the replica);
// then the fake is stopped, so the half-open trials (health probes) fail
// and the breaker stays open until Fakes.Start brings a healthy one back.
//
// Stopping the fake alone would not do: with frequent health probes the
// gateway marks a stopped replica unready before any task reaches it, so
// no request fails there and the breaker never trips.
func (e *Env) TripBreaker(ctx context.Context, pool, replica string) int {
	e.t.Helper()
	if e.Fakes == nil {
		e.t.Fatal("TripBreaker: Options.Fakes was not set")
	}
	e.Fakes.Start(replica, fake.Options{Fail: fake.FailStart500}) // failing completions, healthy
	e.WaitHealthy(pool, replica)
	const most = 100
	for n := 1; n <= most; n++ {
		if err := e.Submit(ctx, pool); err != nil {
			e.t.Fatalf("task %d: %v", n, err)
		}
		r, err := e.Replicas(pool)
		if err != nil {
			e.t.Fatalf("after task %d: %v", n, err)
		}
		if r[replica].Breaker == "open" {
			e.Fakes.Stop(replica)
			return n
		}
	}
	e.t.Fatalf("%s's breaker did not open after %d tasks", replica, most)
	return 0
}
