package gateway

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/adapters"
	"github.com/llama-orch/llama-orch/engines/fake"
	faketgi "github.com/llama-orch/llama-orch/engines/fake/tgi"
	faketriton "github.com/llama-orch/llama-orch/engines/fake/triton"
	fakevllm "github.com/llama-orch/llama-orch/engines/fake/vllm"
	"github.com/llama-orch/llama-orch/gateway/config"
)

// engineFakes start one fake replica per engine that has both a fake and an
// adapter in this build.
// fakeReplica is what every engine's fake offers.
type fakeReplica interface {
	Start(string) error
	URL() string
	Close() error
}

var engineFakes = map[string]func(fake.Options) (fakeReplica, error){
	engines.LlamaCpp: func(o fake.Options) (fakeReplica, error) {
		return fake.New(o)
	},
	engines.VLLM: func(o fake.Options) (fakeReplica, error) {
		return fakevllm.New(o)
	},
	engines.TGI: func(o fake.Options) (fakeReplica, error) {
		return faketgi.New(o)
	},
	engines.Triton: func(o fake.Options) (fakeReplica, error) {
		return faketriton.New(o)
	},
}

// TestCanonicalEquivalence: the same seeded request through a pool per
// engine, each on its own engine's fake, gives byte-identical canonical
// token sequences and the same end.tokens_out (issue 5, SPEC §6).
func TestCanonicalEquivalence(t *testing.T) {
	guard(t)
	var pools strings.Builder
	var closers []func() error
	for _, eng := range adapters.Engines() {
		start, ok := engineFakes[eng]
		if !ok {
			t.Fatalf("engine %s has an adapter but no fake in this test", eng)
		}
		f, err := start(fake.Options{Slots: 4})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		closers = append(closers, f.Close)
		model := ""
		if eng == engines.Triton {
			model = "engine_model: " + faketriton.DefaultModel
		}
		fmt.Fprintf(&pools, "  - id: %s\n    engine: %s\n    model: m-%s\n    %s\n    replicas:\n      - { id: r0, url: %q }\n", eng, eng, eng, model, f.URL())
	}
	t.Cleanup(func() {
		for _, c := range closers {
			_ = c()
		}
	})
	yml := "auth:\n  keys:\n    - { key: " + testKey + ", tenant: t1, roles: [data, control] }\nhealth: { interval_ms: 20, timeout_ms: 1000 }\npools:\n" + pools.String()
	cfg, problems, err := config.Check([]byte(yml), config.ValidateOptions{})
	if err != nil || config.HasErrors(problems) {
		t.Fatalf("config: %v %v\n%s", err, problems, yml)
	}
	srv, err := New(cfg, Options{Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
		NewAdapter: func(pc config.Pool, rc config.Replica) (engines.Adapter, error) {
			return adapters.New(pc.Engine, rc.URL, adapters.Options{Model: pc.EngineModel})
		}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: srv, url: "http://" + ln.Addr().String(), done: make(chan error, 1), hc: &http.Client{Timeout: clientTimeout}}
	go func() { e.done <- srv.Serve(ln) }()
	t.Cleanup(e.close)
	eventually(t, "every pool to be ready", func() bool {
		for _, p := range srv.poolList() {
			if !p.ready() {
				return false
			}
		}
		return true
	})
	// Capabilities per adapter (OC-ADAPT-5011), as each engine reports them.
	r := e.do("GET", "/v1/capabilities", testKey, "")
	caps := r.json(t)["engines"].(map[string]any)
	for _, eng := range adapters.Engines() {
		c, ok := caps[eng].(map[string]any)
		if !ok {
			t.Fatalf("capabilities lack %s: %s", eng, r.body)
		}
		reps := c["replicas"].([]any)
		rc := reps[0].(map[string]any)
		if len(reps) != 1 || rc["interruptible_decode"] != true || rc["engine_version"] == "unknown" || rc["engine_version"] == "" ||
			rc["model"] == "" || rc["slots"].(float64) < 1 {
			t.Fatalf("%s replica capabilities: %v", eng, rc)
		}
		if eng == engines.TGI && rc["model_digest"] == nil {
			t.Fatalf("TGI reports model_sha, capabilities lack it: %v", rc)
		}
	}
	for _, n := range []int{1, 7, 64} {
		var want string
		var wantOut any
		for _, eng := range adapters.Engines() {
			body := fmt.Sprintf(`{"task_id":%q,"session_id":%q,"model_ref":"m-%s","engine":%q,"prompt":"The capital of France is","max_tokens":%d,"seed":42}`,
				newID(), newID(), eng, eng, n)
			evs := e.postStream(body).all(t)
			last := evs[len(evs)-1]
			if last.name != "end" {
				t.Fatalf("%s, %d tokens: ended with %s %v", eng, n, last.name, last.data)
			}
			var toks []string
			for i, tk := range tokens(t, evs) {
				toks = append(toks, fmt.Sprintf("%d:%s", i, tk))
			}
			got := strings.Join(toks, "|")
			if want == "" {
				want, wantOut = got, last.data["tokens_out"]
				if len(toks) != n {
					t.Fatalf("%s: %d tokens, want %d", eng, len(toks), n)
				}
				continue
			}
			if got != want || last.data["tokens_out"] != wantOut {
				t.Fatalf("%s differs from %s for %d tokens:\n got %s (tokens_out %v)\nwant %s (tokens_out %v)",
					eng, adapters.Engines()[0], n, got, last.data["tokens_out"], want, wantOut)
			}
		}
	}
}

// TestReloadNewModelOnVLLM: a reload to a new model rebuilds the replicas'
// adapters with it — vLLM requests name the model, so tasks after the
// reload must ask the engine for the new one.
func TestReloadNewModelOnVLLM(t *testing.T) {
	guard(t)
	start := func(model string) *fakevllm.Server {
		f, err := fakevllm.New(fake.Options{Model: model})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		return f
	}
	old, next := start("m"), start("next")
	yml := "auth:\n  keys:\n    - { key: " + testKey + ", tenant: t1, roles: [data, control] }\nhealth: { interval_ms: 20, timeout_ms: 1000 }\n" +
		"pools:\n  - id: p\n    engine: vllm\n    model: m\n    engine_model: m\n    replicas:\n      - { id: r0, url: \"" + old.URL() + "\" }\n"
	cfg, problems, err := config.Check([]byte(yml), config.ValidateOptions{})
	if err != nil || config.HasErrors(problems) {
		t.Fatalf("config: %v %v", err, problems)
	}
	srv, err := New(cfg, Options{Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
		NewAdapter: func(pc config.Pool, rc config.Replica) (engines.Adapter, error) {
			return adapters.New(pc.Engine, rc.URL, adapters.Options{Model: pc.EngineModel})
		}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: srv, url: "http://" + ln.Addr().String(), done: make(chan error, 1), hc: &http.Client{Timeout: clientTimeout}}
	go func() { e.done <- srv.Serve(ln) }()
	t.Cleanup(e.close)
	eventually(t, "the pool to be ready", srv.Ready)
	r := e.do("POST", "/v1/pools/p/reload", testKey, `{"new_model_ref":"next","timeout_ms":5000,"replicas":[{"id":"r0","url":"`+next.URL()+`"}]}`)
	if r.status != 200 {
		t.Fatalf("reload: %d %s", r.status, r.body)
	}
	body := fmt.Sprintf(`{"task_id":%q,"session_id":%q,"model_ref":"next","prompt":"hi","max_tokens":3}`, newID(), newID())
	evs := e.postStream(body).all(t)
	if last := evs[len(evs)-1]; last.name != "end" {
		t.Fatalf("task after the reload: %s %v", last.name, last.data)
	}
}
